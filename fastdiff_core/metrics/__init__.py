"""Metrics: solver error against exact references, and coverage against ground-truth branch rates."""
