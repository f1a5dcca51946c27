"""Benchmarks and reusable media tooling (``python -m madoguchi.bench``)."""
