"""herdwatch: find thundering herds in metrics and logs, explain them, and prove the fix."""

# herdwatch.cache ships in its own distribution (herdwatch-cache): find it in another sys.path
# entry too (a --target directory, a venv's system site-packages).
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
__all__ = ["__version__"]
