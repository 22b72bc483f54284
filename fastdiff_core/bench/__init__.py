"""Benchmarks that print measured figures (``fastdiff bench ...``)."""
