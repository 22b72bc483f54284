"""Command-line front ends of core features (``fastdiff run``); thin over ``fastdiff_core.run``."""
