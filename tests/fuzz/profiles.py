"""The fuzz profiles' settings and the per-target example budgets (see conftest.py)."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
# The long profile runs every target with this many times the ci profile's examples.
LONG_FACTOR = 20

_COMMON: dict[str, Any] = {
    "database": None,
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
CI: dict[str, Any] = {**_COMMON, "max_examples": 200, "derandomize": True}
LONG: dict[str, Any] = {**_COMMON, "max_examples": 200 * LONG_FACTOR, "derandomize": False}


def examples(ci: int) -> int:
    """A target's example budget: ``ci`` in the ci profile, LONG_FACTOR times that in long."""
    return ci * LONG_FACTOR if PROFILE == "long" else ci
