"""Benchmarks and reference baselines for scratchformer (run as python -m bench.<name>)."""
