"""herdwatch: find thundering herds in metrics and logs, explain them, and prove the fix."""

import os as _os
import sys as _sys

# herdwatch.cache ships in its own distribution (herdwatch-cache): find it in another sys.path
# entry too (a --target directory, a venv's system site-packages). This is pkgutil.extend_path's
# rule for plain directories, written out: importing pkgutil (with typing and re) takes tens of
# milliseconds, before the console script's Ctrl-C handling can start.
for _entry in _sys.path:
    if isinstance(_entry, str) and _os.path.isdir(_entry):
        _sub = _os.path.join(_entry, __name__)
        if _sub not in __path__ and _os.path.isdir(_sub):
            __path__.append(_sub)

__version__ = "0.1.0"
__all__ = ["__version__"]
