"""The ``fastdiff`` command's front ends: argument parsing and table printing for the commands whose
work lives in ``fastdiff_core`` (the core computes and returns rows; it never prints). ``workers.cli``
is the entry point and imports a module of this package only when its command runs.

A command module exposes ``add_arguments(parser)`` and ``main(args) -> int``. fastdiff_core imports
nothing from here (tests/test_layers.py)."""
