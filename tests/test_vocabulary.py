"""One option vocabulary over every subcommand (docs/cli.md, 'Options every command shares'),
and ``info`` reading pools, stores and selections."""

from __future__ import annotations

import json

import pytest
from clihelpers import one_line_error, run

from mlpdesign.cli import cli
from mlpdesign.cli.options import PRINT_FORMATS
from mlpdesign.io.selection import FORMATS as FILE_FORMATS

COMMANDS = sorted(cli.commands)


def _opts(name: str) -> dict[str, set[str]]:
    """Each option's names (first long name -> all names, hidden aliases included)."""
    out = {}
    for p in cli.commands[name].params:
        names = set(p.opts) | set(p.secondary_opts)
        longs = sorted(o for o in names if o.startswith("--"))
        if longs:
            out[longs[0]] = names
    return out


@pytest.mark.parametrize("name", COMMANDS)
def test_shared_options_mean_one_thing(name):
    opts = _opts(name)
    every = set().union(*opts.values()) if opts else set()
    if "--force" in every:
        assert "-f" in every, name
    if every & {"--jobs", "--threads"}:
        assert "-j" in every and "--jobs" in every, name
    assert "-q" in every, f"{name} has no -q/--quiet"
    fmt = next((p for p in cli.commands[name].params if "--format" in p.opts), None)
    if fmt is not None:
        choices = set(fmt.type.choices)
        assert choices <= set(FILE_FORMATS) | {"hdf5"} or choices == set(PRINT_FORMATS), (
            name,
            choices,
        )


def test_old_spellings_still_work_but_are_hidden(tmp_path, small_store):
    sel = tmp_path / "s.h5"
    res = run("select", small_store, "-n", "3", "-o", sel, "--threads", "2", "-q")
    assert res.exit_code == 0, res.stderr
    assert run("select", small_store, "-n", "3", "-o", sel, "-f", "-j", "2", "-q").exit_code == 0
    shown = run("select", "--help").output
    assert "-j, --jobs" in shown and "--threads" not in shown
    assert "-f, --force" in shown
    old = run("info", small_store, "--json")
    new = run("info", small_store, "--format", "json")
    assert old.exit_code == new.exit_code == 0 and old.output == new.output
    assert "--json" not in run("info", "--help").output


def test_info_reads_pools_stores_and_selections(tmp_path, small_pool, small_store):
    sel = tmp_path / "sel.json"
    assert run("select", small_store, "-n", "4", "-o", sel, "-q").exit_code == 0
    res = run("info", small_pool, small_store, sel)
    assert res.exit_code == 0, res.stderr
    assert f"{small_pool}: extxyz pool" in res.output and "configs:     40, " in res.output
    assert f"{small_store}: mlpdesign descriptor store" in res.output
    assert f"{sel}: mlpdesign selection, 4 picks" in res.output
    docs = json.loads(run("info", small_pool, sel, "--format", "json").output)
    assert [d["kind"] for d in docs] == ["pool", "selection"]
    assert docs[0]["elements"] == ["Zr"] and docs[1]["n"] == 4
    quiet = run("info", small_pool, small_store, sel, "-q")
    assert quiet.exit_code == 0 and quiet.output == ""
    (tmp_path / "bad.xyz").write_text("3\nnot a frame\n")
    err = one_line_error(run("info", tmp_path / "bad.xyz", "--format", "none"))
    assert f"{tmp_path / 'bad.xyz'}" in err
