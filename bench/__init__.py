"""The benchmark and its tools (run as modules from the repository root: python -m bench.benchmark)."""
