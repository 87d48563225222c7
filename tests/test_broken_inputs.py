"""Every subcommand against one corpus of broken inputs: one line on stderr, exit 2, nothing
left behind (no output, no temporary, no lock), whatever is wrong with the file.

The corpus, per kind of input (pool or configurations, labelled set, store, selection):
missing, empty, a folder, truncated, a NaN where a number must be, a foreign file, and
an HDF5 file with a damaged heap.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ase.io
import numpy as np
import pytest
from clihelpers import one_line_error, run
from conftest import SMALL_GAP

CASES = ("missing", "empty", "folder", "truncated", "nan", "foreign", "damaged-hdf5")
LJ = ["--calculator", "ase.calculators.lj:LennardJones", "--calc-arg", "sigma=2.9"]


def _damaged_hdf5(src, dest):
    data = bytearray(src.read_bytes())
    at = data.index(b"HEAP")
    data[at + 4 : at + 64] = b"\xff" * 60
    dest.write_bytes(bytes(data))


def _half(src, dest):
    data = src.read_bytes()
    dest.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def good(tmp_path_factory, small_pool, small_store):
    """Sound inputs of every kind, made once."""
    d = tmp_path_factory.mktemp("good")
    sel = d / "sel.h5"
    assert run("select", small_store, "-n", "4", "-o", sel, "-q").exit_code == 0
    lab = d / "lab.xyz"
    res = run("label", small_pool, *LJ, "-o", lab, "-q")
    assert res.exit_code == 0, res.stderr
    return {"pool": small_pool, "store": small_store, "selection": sel, "labelled": lab}


def _nan_file(kind: str, good: dict, dest):
    if kind in ("pool", "labelled"):
        frames = ase.io.read(good[kind], ":")
        frames[1].positions[0, 0] = np.nan
        if kind == "labelled":
            frames[2].info["dft_energy"] = float("nan")
        ase.io.write(dest, frames, format="extxyz")
    elif kind == "store":
        import h5py

        shutil.copy(good["store"], dest)
        with h5py.File(dest, "r+") as f:
            f["descriptors/1/rows"][5, 2] = np.nan
    else:  # a selection whose candidate ids hold a NaN
        doc = {"format": "mlpdesign-selection", "format_version": 1}
        dest.write_text(json.dumps({**doc, "candidate_id": [1, float("nan")], "psi": [1, 1]}))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, good):
    """``corpus[kind][case]`` -> a broken input of that kind."""
    d = tmp_path_factory.mktemp("broken")
    out = {}
    for kind in ("pool", "labelled", "store", "selection"):
        k = d / kind
        k.mkdir()
        src = good[kind]
        paths = {c: k / f"{c}{src.suffix}" for c in CASES}
        paths["empty"].write_bytes(b"")
        paths["folder"].mkdir()
        _half(src, paths["truncated"])
        _nan_file(kind, good, paths["nan"])
        paths["foreign"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
        _damaged_hdf5(good["store"], paths["damaged-hdf5"])
        out[kind] = paths
    return out


def _commands(good, x, o):
    """(command line, kind of the broken input ``x``) for every subcommand; outputs in ``o``."""
    return {
        "describe": (["describe", x, "-o", o / "o.h5", "--gap", SMALL_GAP], "pool"),
        "merge": (["merge", x, "-o", o / "o.h5"], "store"),
        "info": (["info", x], "store"),
        "select": (["select", x, "-n", "3", "-o", o / "o.h5"], "store"),
        "select-given": (
            ["select", good["store"], "-n", "3", "--given", x, "-o", o / "o.h5"],
            "pool",
        ),
        "write-pool": (["write", x, good["selection"], "-o", o / "o.xyz"], "pool"),
        "write-selection": (["write", good["pool"], x, "-o", o / "o.xyz"], "selection"),
        "vasp": (["vasp", x, "-o", o / "runs"], "pool"),
        "gap-command": (["gap-command", x, "--at-file", o / "later.xyz"], "store"),
        "label": (["label", x, *LJ, "-o", o / "o.xyz"], "pool"),
        "fit": (["fit", x, "--store", good["store"], "-o", o / "model"], "labelled"),
        "crossval": (["crossval", f"A={x}", "--store", good["store"], "-o", o / "cv"], "labelled"),
        "report-store": (["report", x, good["selection"], "-o", o / "rep"], "store"),
        "report-selection": (["report", good["store"], x, "-o", o / "rep"], "selection"),
    }


NAMES = sorted(_commands(dict.fromkeys(("store", "selection", "pool"), ""), "", Path()))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", NAMES)
def test_broken_input_is_one_line_and_leaves_nothing(name, case, tmp_path, good, corpus):
    out = tmp_path / "out"
    out.mkdir()
    kind = _commands(good, "", out)[name][1]
    x = corpus[kind][case]
    if case == "missing":
        x = x.with_name("does-not-exist" + x.suffix)
    before = sorted(p.name for p in x.parent.iterdir())
    args, _ = _commands(good, x, out)[name]
    err = one_line_error(run(*args))
    assert x.name in err or str(x) in err, err
    assert list(out.iterdir()) == [], sorted(out.iterdir())
    assert sorted(p.name for p in x.parent.iterdir()) == before
