"""Test-only helpers shared by tests, fixtures' capture scripts and benchmarks (real servers on
free loopback ports); never shipped in the wheel."""
