"""Hypothesis settings for the fuzz tests: derandomized (the same examples every run) and no example database.

``HYPOTHESIS_PROFILE=explore`` draws new examples from a random seed instead (Hypothesis prints the
seed and the failing example, so a find can be replayed with ``@seed``/``@reproduce_failure``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, **_COMMON)
settings.register_profile("explore", derandomize=False, print_blob=True, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
