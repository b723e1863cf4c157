"""The lab: real servers on free loopback ports, load drivers and capture helpers for tests,
fixtures and benchmarks."""

__all__: list[str] = []
