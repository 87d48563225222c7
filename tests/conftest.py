"""Shared fixtures: small pools (and, later, stores) made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpdesign.pool import PoolSpec, generate


@pytest.fixture(scope="session")
def small_pool(tmp_path_factory) -> Path:
    """A 40-candidate mixed hcp/fcc/bcc Zr pool (seed 7), max strain 0.05."""
    path = tmp_path_factory.mktemp("pool") / "pool.xyz"
    generate(path, 40, PoolSpec(seed=7))
    return path
