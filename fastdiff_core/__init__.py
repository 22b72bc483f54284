"""fastdiff_core: the science. Pure library over torch/numpy; no I/O services.

Nothing is imported here on purpose: torch-free modules (spec, catalog, registry, budget) must stay
importable by the dashboard and the store without pulling torch in.
"""

__version__ = "0.1.0"
