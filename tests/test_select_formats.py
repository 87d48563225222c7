"""Selection files: HDF5 / JSON / txt round trips, detection by content, refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.selection import Selection, load_selection, write_selection


def _sel() -> Selection:
    return Selection(
        [5, 2, 9],
        [4, 1, 8],
        [math.inf, 0.123456789012345678, 1e-17],
        {
            "method": "maxmin",
            "pool_sha256": "ab" * 32,
            "seed": 3,
            "kernel": {"normalize": True, "dtype": "float32"},
            "n_requested": 3,
            "given": [{"path": "x.xyz"}],
        },
    )


@pytest.mark.parametrize("fmt", ["h5", "json", "txt"])
def test_round_trip_any_format_by_content(tmp_path, fmt):
    path = tmp_path / "selection.any"  # the suffix says nothing: content decides
    write_selection(path, _sel(), fmt)
    s = load_selection(path)
    assert s.candidate_id.tolist() == [5, 2, 9]
    assert np.array_equal(s.psi, _sel().psi)  # exact, inf included
    assert s.pool_sha256 == "ab" * 32 and s.method == "maxmin" and s.attrs["seed"] == 3
    assert s.attrs["format"] == "mlpdesign-selection" and s.attrs["stopped_early"] in (False, 0)
    assert (s.index is None) if fmt == "txt" else s.index.tolist() == [4, 1, 8]
    assert s.prefix(2).candidate_id.tolist() == [5, 2]


def test_same_input_same_bytes_and_no_overwrite(tmp_path):
    for fmt in ("h5", "json", "txt"):
        a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
        write_selection(a, _sel(), fmt)
        write_selection(b, _sel(), fmt)
        assert a.read_bytes() == b.read_bytes()
        with pytest.raises(MlpdesignError, match="exists"):
            write_selection(a, _sel(), fmt)


def test_refuses_what_is_not_a_selection(tmp_path):
    (tmp_path / "junk.txt").write_text("hello\n")
    with pytest.raises(MlpdesignError, match="not a selection"):
        load_selection(tmp_path / "junk.txt")
    (tmp_path / "other.json").write_text('{"format": "something"}')
    with pytest.raises(MlpdesignError, match="not an mlpdesign selection"):
        load_selection(tmp_path / "other.json")
    (tmp_path / "bad.txt").write_text("# format: mlpdesign-selection\n0 1\n")
    with pytest.raises(MlpdesignError, match="rank candidate_id psi"):
        load_selection(tmp_path / "bad.txt")
    with pytest.raises(MlpdesignError, match="no such"):
        load_selection(tmp_path / "missing.h5")
    with pytest.raises(MlpdesignError, match="unknown selection format"):
        write_selection(tmp_path / "x.h5", _sel(), "csv")


def test_dash_writes_the_selection_to_stdout(small_store, tmp_path):
    """``-o -``: the text (or JSON) selection on standard output, the same bytes as a file."""
    from clihelpers import one_line_error, run

    res = run("select", str(small_store), "-n", "4", "-o", "-", "--format", "json", "-q")
    assert res.exit_code == 0, res.output
    assert (
        run("select", str(small_store), "-n", "4", "-o", str(tmp_path / "s.json"), "-q").exit_code
        == 0
    )
    file_doc = json.loads((tmp_path / "s.json").read_text())
    out_doc = json.loads(res.stdout)
    file_doc.pop("command"), out_doc.pop("command")
    assert out_doc == file_doc
    bad = run("select", str(small_store), "-n", "4", "-o", "-", "--format", "h5", "-q")
    assert "standard output" in one_line_error(bad)
