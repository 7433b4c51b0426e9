"""Benchmarks, not tests: `python -m benchmarks.run`, `python -m benchmarks.recipes`, `python -m benchmarks.serve_load`
from the repository root (docs/PERFORMANCE.md)."""
