"""Every select and report engine path gives today what it gave before the "one engine"
restructure: picks, Psi, selection attributes and report metrics.

tests/data/golden.json was written by ``tests/golden_cases.py`` at commit 296a177. Picks,
attributes and labels must be equal; floating-point values (Psi, metrics) equal to a few
units in the last place, because the BLAS kernels that numpy's OpenBLAS picks for the CPU
(Intel vs AMD) sum the same dot products in another order. On one machine the paths are
bitwise reproducible, and ``python tests/golden_cases.py --check OUT.json`` compares a
capture made on this machine to the bit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from golden_cases import run_all

GOLDEN = Path(__file__).parent / "data" / "golden.json"
#: D² and Psi are in [0, 2]; rounding bounds (KernelData.eps) are ~1e-13 on this kernel
ABS, REL = 1e-12, 1e-9


def _float(x):
    if isinstance(x, float):
        return x
    if isinstance(x, str) and x.startswith(("0x", "-0x")):
        return float.fromhex(x)
    return None


def close(a, b, where: str = "") -> list[str]:
    """Differences of capture ``a`` from the golden ``b``: exact for everything but floats;
    keys of ``a`` that ``b`` lacks (features added since) are not compared."""
    fa, fb = _float(a), _float(b)
    if fa is not None and fb is not None:
        ok = math.isclose(fa, fb, rel_tol=REL, abs_tol=ABS) or (math.isnan(fa) and math.isnan(fb))
        return [] if ok else [f"{where}: {fa!r} != {fb!r}"]
    if isinstance(a, dict) and isinstance(b, dict):  # a key added since is a new feature
        if set(b) - set(a):
            return [f"{where}: keys {sorted(set(b) - set(a))} gone"]
        return [d for k in b for d in close(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in close(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


@pytest.fixture(scope="module")
def now(tmp_path_factory) -> dict:
    return run_all(tmp_path_factory.mktemp("golden") / "work")


@pytest.mark.parametrize("case", sorted(json.loads(GOLDEN.read_text())))
def test_same_as_before_the_restructure(case, now):
    old = json.loads(GOLDEN.read_text())[case]
    assert close(now[case], old, case) == []
    if isinstance(old, dict) and "index" in old:
        assert now[case]["index"] == old["index"]  # picks: exactly


def test_close_tells_apart():
    assert close({"psi": ["0x1.8p-1"]}, {"psi": ["0x1.8000000000001p-1"]}) == []
    assert close({"psi": ["0x1.8p-1"]}, {"psi": ["0x1.9p-1"]}) != []
    assert close({"index": [1, 2]}, {"index": [2, 1]}) != []
