"""fastdiff_core/solvers."""
