"""herdwatch: find thundering herds in metrics and logs, explain them, and prove the fix."""

__version__ = "0.1.0"
__all__ = ["__version__"]
