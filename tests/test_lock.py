"""One run per output (a lock beside it), and what a killed run leaves is cleaned by the next."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from clihelpers import one_line_error, run
from conftest import SMALL_GAP

from mlpdesign.io.lock import claim, holding, lock_path, release

ROOT = Path(__file__).resolve().parents[1]


def _other_run_holds(path: Path):
    """Hold ``path``'s lock as another run would (its own open file description)."""
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"4242\n")
    return fd


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.mark.parametrize("command", ["generate", "describe", "select", "report"])
def test_second_run_on_one_output_fails_at_once(command, tmp_path, small_pool, small_store):
    out = tmp_path / ("rep" if command == "report" else "out.h5")
    sel = tmp_path / "sel.h5"
    args = {
        "generate": ["generate", "-n", "3"],
        "describe": ["describe", small_pool, "--gap", SMALL_GAP],
        "select": ["select", small_store, "-n", "3"],
        "report": ["report", small_store, sel, "--random", "2"],
    }[command]
    if command == "report":
        assert run("select", small_store, "-n", "4", "-o", sel, "-q").exit_code == 0
    fd = _other_run_holds(out)
    try:
        err = one_line_error(run(*args, "-o", out, "-q"))
        assert "being written by another mlpdesign run (pid 4242)" in err and str(out) in err
        assert not out.exists() and not Path(f"{out}.partial").exists()
    finally:
        os.close(fd)
    lock_path(out).unlink()
    if command == "report":
        return  # its rerun is in test_stale_temporaries_of_killed_runs_are_cleaned
    res = run(*args, "-o", out, "-q")
    assert res.exit_code == 0, res.stderr
    assert _leftovers(tmp_path, {out.name, sel.name}) == []  # no lock file, no temporary


def test_claim_is_reentrant_and_holding_outlives_atomic_writes(tmp_path):
    out = tmp_path / "x.h5"
    with holding(out):
        assert lock_path(out).exists()
        assert claim(out) is False  # this process holds it already
        release(out)  # what atomic_path does at its end: the block's claim stays
        assert lock_path(out).exists()
    assert not lock_path(out).exists()


def test_stale_temporaries_of_killed_runs_are_cleaned(tmp_path, small_store):
    out = tmp_path / "sel.h5"
    (tmp_path / f".{out.name}.tmp-99999").write_text("half a selection")
    (tmp_path / ".rep.tmp-abc123").mkdir()
    (tmp_path / ".rep.tmp-abc123" / "fig.png").write_bytes(b"\x89PNG")
    (tmp_path / ".rep.lock").write_text("77777\n")  # a killed run's lock file (no flock)
    (tmp_path / ".other.h5.tmp-1").write_text("another output's: not ours to remove")
    assert run("select", small_store, "-n", "3", "-o", out, "-q").exit_code == 0
    res = run("report", small_store, out, "--random", "2", "-o", tmp_path / "rep", "-q")
    assert res.exit_code == 0, res.stderr
    assert _leftovers(tmp_path, {"sel.h5", "rep"}) == [".other.h5.tmp-1"]


#: Runs describe in a child and SIGKILLs it at a chosen moment: after N saved chunks, or in
#: the middle of writing the store (``.pool.h5.tmp-PID`` on disk).
_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from mlpdesign.describe import runner
    from mlpdesign.io import store
    pool, out, gap, moment = sys.argv[1:5]
    if moment == "chunk":
        save = store.ChunkData.save
        def save_then_die(self, path, sync=False):
            save(self, path, sync)
            os.kill(os.getpid(), signal.SIGKILL)
        store.ChunkData.save = save_then_die
    else:
        append = store.StoreWriter.append
        def append_then_die(self, chunk):
            append(self, chunk)
            self.f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        store.StoreWriter.append = append_then_die
    runner.describe(pool, out, gap=gap, chunk_size=8)
    """
)


@pytest.mark.parametrize("moment", ["chunk", "assemble"])
def test_describe_killed_then_rerun_leaves_no_temporaries(moment, tmp_path, small_pool):
    out = tmp_path / "pool.h5"
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    child = subprocess.run(
        [sys.executable, "-c", _KILLER, str(small_pool), str(out), SMALL_GAP, moment],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    left = _leftovers(tmp_path, set())
    assert ".pool.h5.lock" in left and "pool.h5.partial" in left
    if moment == "assemble":
        assert any(n.startswith(".pool.h5.tmp-") for n in left)
    res = run("describe", small_pool, "-o", out, "--gap", SMALL_GAP, "--chunk-size", "8", "-q")
    assert res.exit_code == 0, res.stderr
    assert _leftovers(tmp_path, set()) == ["pool.h5"]


#: Runs a command in a child and SIGKILLs it just before its output is renamed into place,
#: when the whole temporary (a file, or a folder of figures) is on disk.
_KILL_AT_RENAME = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    real = os.replace
    def replace_then_die(src, dst, *a, **k):
        if Path(dst).name == sys.argv[1]:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *a, **k)
    os.replace = replace_then_die
    from mlpdesign.cli import main
    main(sys.argv[2:])
    """
)


@pytest.mark.parametrize("command", ["select", "report"])
def test_killed_at_the_rename_then_rerun_leaves_no_temporaries(command, tmp_path, small_store):
    sel = tmp_path / "sel.h5"
    if command == "report":
        assert run("select", small_store, "-n", "4", "-o", sel, "-q").exit_code == 0
    out = tmp_path / ("rep" if command == "report" else "out.h5")
    args = {
        "select": ["select", str(small_store), "-n", "3", "-o", str(out), "-q"],
        "report": ["report", str(small_store), str(sel), "--random", "2", "-o", str(out), "-q"],
    }[command]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    child = subprocess.run(
        [sys.executable, "-c", _KILL_AT_RENAME, out.name, *args],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    left = _leftovers(tmp_path, {sel.name})
    assert not out.exists() and any(n.startswith(f".{out.name}.tmp-") for n in left), left
    res = run(*args)
    assert res.exit_code == 0, res.stderr
    assert _leftovers(tmp_path, {sel.name}) == [out.name]
