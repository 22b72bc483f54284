"""fastdiff_core/students."""
