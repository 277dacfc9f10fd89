"""Benchmarks: `make bench` (python -m benchmarks) or one module at a time."""
