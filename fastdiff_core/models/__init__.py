"""fastdiff_core/models."""
