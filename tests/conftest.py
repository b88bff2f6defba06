"""Fixtures and test-session settings. Helpers (generators, tolerances) live in ``helpers.py``."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import settings

# Property tests run on a shared 2-core CI machine: bound their cost, and do
# not let timing noise fail a correct test.
settings.register_profile("ci", max_examples=40, deadline=None)
settings.load_profile("ci")


@pytest.fixture
def rng(request) -> np.random.Generator:
    # A fresh, reproducible stream per test, so failures can be replayed.
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
