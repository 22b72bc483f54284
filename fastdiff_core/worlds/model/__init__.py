"""The user-model world plugin: sampling a user's own model (``fastdiff_core.models.loading``) and measuring
its coverage without ground truth against its own converged reference. ``plugin`` is the torch-free
declaration; ``runner`` runs it."""
