"""Sources: each reads one system and returns raw series in exporter names (see base.py)."""

__all__: list[str] = []
