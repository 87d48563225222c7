"""Every select and report engine path gives today what it gave before the "one engine"
restructure: picks, Psi (to the bit), selection attributes and report metrics.

tests/data/golden.json was written by ``tests/golden_cases.py`` at commit 296a177.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golden_cases import run_all

GOLDEN = Path(__file__).parent / "data" / "golden.json"


@pytest.fixture(scope="module")
def now(tmp_path_factory) -> dict:
    return run_all(tmp_path_factory.mktemp("golden") / "work")


@pytest.mark.parametrize("case", sorted(json.loads(GOLDEN.read_text())))
def test_same_as_before_the_restructure(case, now):
    assert now[case] == json.loads(GOLDEN.read_text())[case]
