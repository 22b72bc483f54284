"""Hypothesis settings for the fuzz targets (issue 13: >= 2,000 examples per target in the test command).

``FASTDIFF_FUZZ`` selects the profile: ``ci`` (the default, what ``./dev test`` and CI run: 2,000
examples per target), ``quick`` (200, for an edit-test loop) or ``deep`` (20,000, run by hand before
a release, with ``--timeout 0``: it outlasts the suite's 900 s per-test limit). Targets take it as
``@FUZZ``; other hypothesis tests keep their own settings. Examples are drawn afresh on every run
(no example database), so each run adds new ones.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILES = {"ci": 2_000, "quick": 200, "deep": 20_000}
for _name, _n in PROFILES.items():
    settings.register_profile(f"fuzz-{_name}", max_examples=_n, deadline=None, database=None,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.filter_too_much])
_selected = os.environ.get("FASTDIFF_FUZZ", "ci")
if _selected not in PROFILES:
    raise ValueError(f"FASTDIFF_FUZZ={_selected!r} is not one of {sorted(PROFILES)}")
FUZZ = settings.get_profile(f"fuzz-{_selected}")
FUZZ_EXAMPLES = PROFILES[_selected]
