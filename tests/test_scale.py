"""Scale out: streamed selection under a memory limit, MPI describe/select/report, SLURM examples.

Serial, streamed (``--memory-limit`` far below the store) and ``mpiexec -n 2`` / ``-n 3``
(uneven shards) runs must give the same stores and the same picks. The MPI tests run the
``mpiexec`` of this environment (the ``mpich`` wheel); they skip, saying why, only when no
MPI launcher or mpi4py is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clihelpers import one_line_error, run
from conftest import SMALL_GAP

from mlpdesign.errors import MlpdesignError
from mlpdesign.generate.pool import PoolSpec, generate
from mlpdesign.io.selection import load_selection
from mlpdesign.io.store import stores_equal
from mlpdesign.kernels.blocks import parse_memory
from mlpdesign.select.scaled import select_streamed

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MLPDESIGN = BIN / "mlpdesign"


def _mpiexec() -> str | None:
    exe = BIN / "mpiexec"
    if exe.is_file():
        return str(exe)
    return shutil.which("mpiexec") or shutil.which("mpirun")


def _mpi_missing() -> str | None:
    if _mpiexec() is None:
        return "no mpiexec/mpirun installed (pip install 'mlpdesign[mpi]' brings the mpich wheel)"
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install 'mlpdesign[mpi]')"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


def mpirun(n: int, *args, cwd=None, check=True):
    """``mpiexec -n N mlpdesign ARGS`` in a subprocess (serial MLPDESIGN_MPI unset)."""
    env = {k: v for k, v in os.environ.items() if k != "MLPDESIGN_MPI"}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [_mpiexec(), "-n", str(n), str(MLPDESIGN), *[str(a) for a in args]]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    if check:
        assert res.returncode == 0, (cmd, res.stdout, res.stderr)
    return res


def mpi_selection(n_ranks: int, store, out, *args, cwd):
    """``mpiexec -n N mlpdesign select STORE ARGS -o OUT -q``: (the run, its selection)."""
    res = mpirun(n_ranks, "select", store, *args, "-o", out, "-q", cwd=cwd)
    return res, load_selection(out)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    """120 mixed hcp/fcc/bcc candidates, some 2-atom cells."""
    path = tmp_path_factory.mktemp("scale") / "pool.xyz"
    generate(path, 120, PoolSpec(seed=3))
    return path


@pytest.fixture(scope="module")
def store(pool) -> Path:
    from mlpdesign.describe.runner import describe

    path = pool.with_name("pool.h5")
    describe(pool, path, gap=SMALL_GAP)
    return path


@pytest.fixture(scope="module")
def serial(store) -> dict:
    """The in-memory selection of 30 (the reference of every other run)."""
    out = store.with_name("serial.json")
    res = run("select", store, "-n", 30, "-o", out, "-q")
    assert res.exit_code == 0, res.stderr
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """20000 one-row configs x 606 float32 (48 MB of rows): benchmarks/synthetic.py."""
    spec = importlib.util.spec_from_file_location("synthetic", ROOT / "benchmarks/synthetic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = tmp_path_factory.mktemp("synth") / "synth.h5"
    mod.write_synthetic_store(path, 20000, seed=2, block=5000)
    return path


def test_parse_memory():
    assert parse_memory("4G") == 4 << 30
    assert parse_memory("1.5g") == 3 << 29
    assert parse_memory("512MiB") == 512 << 20
    assert parse_memory("64K") == 64 << 10
    assert parse_memory("1000") == 1000
    assert parse_memory(None) is None
    for bad in ("", "lots", "-1G", "0"):
        with pytest.raises(MlpdesignError):
            parse_memory(bad)


def test_streamed_select_equals_in_memory(store, serial, tmp_path):
    out = tmp_path / "s.json"
    res = run("select", store, "-n", 30, "-o", out, "--memory-limit", "480K", "--block-rows", 8)
    assert res.exit_code == 0, res.stderr
    assert "streamed" in res.stderr
    got = json.loads(out.read_text())
    assert got["index"] == serial["index"] and got["candidate_id"] == serial["candidate_id"]
    np.testing.assert_allclose(got["psi"][1:], serial["psi"][1:], rtol=1e-9, atol=1e-12)
    for key in ("method", "first", "kernel", "gap", "pool_sha256", "n_requested"):
        assert got[key] == serial[key], key


def test_streamed_rereads_and_psi_same_for_any_limit(store, serial):
    a = select_streamed(store, 30, memory_limit="480K", block_rows=8)
    b = select_streamed(store, 30, memory_limit="1G", block_rows=8)
    assert a.index.tolist() == b.index.tolist() == serial["index"]
    assert np.array_equal(a.psi, b.psi)  # bitwise: same block grid, any cache
    assert a.stats["cached_blocks"] < a.stats["blocks"]  # the limit is binding...
    assert a.stats["blocks_read"] > a.stats["blocks"]  # ...so blocks are read again
    assert b.stats["blocks_read"] == b.stats["blocks"]  # everything fits: read once


def test_streamed_far_below_store_size(synthetic, tmp_path):
    """A limit of a fifth of the rows' size: same picks as the in-memory path."""
    size = synthetic.stat().st_size
    ref = tmp_path / "m.json"
    assert run("select", synthetic, "-n", 25, "-o", ref, "-q", "--dtype", "float32").exit_code == 0
    d = select_streamed(synthetic, 25, memory_limit=size // 5, block_rows=256, dtype="float32")
    assert len(d.index) == 25
    assert d.index.tolist() == json.loads(ref.read_text())["index"]
    assert d.stats["peak_cache_bytes"] < size // 5
    assert d.stats["bytes_read"] > 2 * size  # streamed again and again


def test_memory_limit_too_small_is_one_line(store, tmp_path):
    res = run("select", store, "-n", 5, "-o", tmp_path / "x.json", "--memory-limit", "10K")
    line = one_line_error(res)
    assert "--memory-limit 10K is too small" in line and "give at least" in line
    assert not (tmp_path / "x.json").exists()
    line = one_line_error(
        run("select", store, "-n", 5, "-o", tmp_path / "x.json", "--memory-limit", "lots")
    )
    assert "expected a size" in line


def test_streamed_given_and_random(store, tmp_path):
    from mlpdesign.select.greedy import select_store

    base = tmp_path / "given.h5"
    given_sel = tmp_path / "g.json"
    assert run("select", store, "-n", 5, "-o", given_sel, "-q").exit_code == 0
    # a given set: the first 10 configs as their own store
    from ase.io import read, write

    from mlpdesign.describe.runner import describe

    frames = read(str(store.with_name("pool.xyz")), ":10")
    write(tmp_path / "given.xyz", frames, format="extxyz")
    describe(tmp_path / "given.xyz", base, gap=SMALL_GAP)
    sel, _ = select_store(store, 12, tmp_path / "a.json", given=base)
    d = select_streamed(store, 12, given=base, memory_limit="520K", block_rows=8)
    assert d.index.tolist() == sel.index.tolist()
    sel, _ = select_store(store, 12, tmp_path / "r.json", method="random", seed=4)
    d = select_streamed(store, 12, method="random", seed=4, memory_limit="520K", block_rows=8)
    assert d.index.tolist() == sel.index.tolist()


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_mpi_select_equals_serial(store, serial, tmp_path, ranks):
    out = tmp_path / "mpi.json"
    mpirun(ranks, "select", store, "-n", 30, "-o", out, "-q", "--block-rows", 16)
    got = json.loads(out.read_text())
    assert got["index"] == serial["index"]
    # the same file as a serial streamed run on the same block grid, bit for bit
    ser = tmp_path / "ser.json"
    res = run("select", store, "-n", 30, "-o", ser, "-q", "--block-rows", 16)
    assert res.exit_code == 0, res.stderr
    a, b = json.loads(ser.read_text()), got
    a.pop("command"), b.pop("command")
    assert a == b


@needs_mpi
def test_mpi_streamed_select_uneven(store, serial, tmp_path):
    out = tmp_path / "mpi.json"
    mpirun(
        3, "select", store, "-n", 30, "-o", out, "-q", "--block-rows", 8, "--memory-limit", "480K"
    )
    assert json.loads(out.read_text())["index"] == serial["index"]


@needs_mpi
def test_mpi_error_is_one_line_no_hang(store, tmp_path):
    res = mpirun(2, "select", store, "-n", 100000, "-o", tmp_path / "x.json", check=False)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "larger than the pool" in lines[0], res.stderr
    assert not (tmp_path / "x.json").exists()


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_mpi_describe_equals_serial(small_pool, small_store, tmp_path, ranks):
    out = tmp_path / "pool.h5"
    quiet = ["-q"] if ranks == 2 else ["--chunk-size", "4"]
    res = mpirun(ranks, "describe", small_pool, "-o", out, "--gap", SMALL_GAP, *quiet)
    assert stores_equal(small_store, out) == []
    assert not list(tmp_path.glob(".pool.h5.mpi-*"))  # parts removed after the merge
    if ranks == 3:  # the progress counts the whole pool, not rank 0's part (14 of 40)
        lines = [ln for ln in res.stderr.splitlines() if ln.startswith("describe: ")]
        totals = {ln.split("/")[1].split()[0] for ln in lines}
        assert "describe: 40/40 (100%)" in res.stderr and totals == {"40"}, res.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.h5"]  # no lock, no part
        return
    # refused: an MPI launch and --shard together
    res = mpirun(2, "describe", small_pool, "-o", tmp_path / "x.h5", "--shard", "1/2", check=False)
    assert res.returncode == 2 and "--shard and an MPI launch" in res.stderr


def test_report_covering_streamed_and_mpi(store, serial, tmp_path):
    sel = store.with_name("serial.json")
    ref = run("report", store, sel, "--random", 3, "--format", "json")
    assert ref.exit_code == 0, ref.stderr
    want = json.loads(ref.stdout)
    got = run(
        "report",
        store,
        sel,
        "--random",
        3,
        "--format",
        "json",
        "--memory-limit",
        "700K",
        "--block-rows",
        8,
    )
    assert got.exit_code == 0, got.stderr
    _same_metrics(json.loads(got.stdout), want)
    if _mpi_missing() is None:
        res = mpirun(3, "report", store, sel, "--random", 3, "--format", "json", "--block-rows", 8)
        _same_metrics(json.loads(res.stdout), want)


def _same_metrics(a, b, where="") -> None:
    """Equal metrics JSON: floats to 1e-6 (the covering pass sums in another order)."""
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for k in a:
            _same_metrics(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_metrics(x, y, f"{where}[{k}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), where
    else:
        assert a == b, where


# ---------------------------------------------------------------------------- SLURM examples

SLURM = ROOT / "examples" / "slurm"


def test_slurm_scripts_parse_and_declare_resources():
    for name in ("describe_array.sbatch", "select_mpi.sbatch"):
        text = (SLURM / name).read_text()
        assert text.startswith("#!/bin/bash\n")
        assert subprocess.run(["bash", "-n", str(SLURM / name)]).returncode == 0
        directives = [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]
        assert any("--time=" in d for d in directives)
        assert all(d.split()[1].startswith("--") for d in directives), directives
    assert "--array=" in (SLURM / "describe_array.sbatch").read_text()


def test_describe_array_task_runs_locally(small_pool, small_store, tmp_path):
    env = dict(
        os.environ,
        POOL=str(small_pool),
        PARTS=str(tmp_path / "parts"),
        GAP=SMALL_GAP,
        MLPDESIGN=str(MLPDESIGN),
        SLURM_ARRAY_TASK_COUNT="2",
    )
    for task in ("1", "2"):
        env["SLURM_ARRAY_TASK_ID"] = task
        res = subprocess.run(
            ["bash", str(SLURM / "describe_array.sbatch")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr
    merged = tmp_path / "m.h5"
    res = run(
        "merge", tmp_path / "parts/part-1.h5", tmp_path / "parts/part-2.h5", "-o", merged, "-q"
    )
    assert res.exit_code == 0, res.stderr
    assert stores_equal(small_store, merged) == []
    env.pop("SLURM_ARRAY_TASK_ID")
    res = subprocess.run(
        ["bash", str(SLURM / "describe_array.sbatch")], env=env, capture_output=True, text=True
    )
    assert res.returncode != 0 and "SLURM_ARRAY_TASK_ID" in res.stderr


def test_slurm_makefile_pipeline_locally(small_store, tmp_path):
    """The Makefile in MODE=local: generate, array tasks with SLURM_ARRAY_TASK_ID, merge,
    MPI select (mpiexec -n 2 when MPI is here, else one process), write and report; the
    merged store equals a serial describe, the picks a serial select; a second make has
    nothing to do, and a newer pool makes everything after it out of date."""
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    from mlpdesign.select.greedy import select_store

    launch = "" if _mpi_missing() else f"{_mpiexec()} -n 2"
    args = [
        "make",
        "-j2",
        "-f",
        str(SLURM / "Makefile"),
        "MODE=local",
        f"MLPDESIGN={MLPDESIGN}",
        "N_POOL=40",
        "SEED=7",
        "NSHARDS=2",
        "PICKS=12",
        f"GAP={SMALL_GAP}",
        f"LAUNCH={launch}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MAKEFLAGS"}
    res = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    for f in ("parts/part-2.h5", "pool.h5", "selection.h5", "train.xyz", "report/metrics.json"):
        assert (tmp_path / f).exists(), f
    assert (
        stores_equal(small_store, tmp_path / "pool.h5", ("command", "pool_path", "pool_files"))
        == []
    )
    sel, _ = select_store(tmp_path / "pool.h5", 12, tmp_path / "serial.json")
    assert load_selection(tmp_path / "selection.h5").index.tolist() == sel.index.tolist()
    assert subprocess.run([*args, "-q"], cwd=tmp_path, env=env).returncode == 0  # up to date
    os.utime(tmp_path / "pool.xyz")
    assert subprocess.run([*args, "-q"], cwd=tmp_path, env=env).returncode == 1  # out of date


def test_slurm_makefile_defaults_and_parameter_stamps(tmp_path):
    """MODE=local with every other default runs (PICKS <= N_POOL), makes logs/, and the
    parameter stamps make a changed PICKS remake select and what follows, not the pool."""
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    args = ["make", "-f", str(SLURM / "Makefile"), "MODE=local", f"MLPDESIGN={MLPDESIGN}"]
    env = {k: v for k, v in os.environ.items() if k != "MAKEFLAGS"}
    res = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "report" / "metrics.json").exists() and (tmp_path / "logs").is_dir()
    assert subprocess.run([*args, "-q"], cwd=tmp_path, env=env).returncode == 0  # up to date
    plan = subprocess.run([*args, "-n", "PICKS=10"], cwd=tmp_path, env=env, capture_output=True)
    steps = plan.stdout.decode()
    assert "N=10" in steps and " write " in steps and " report " in steps
    assert " generate " not in steps and "describe_array" not in steps and " merge " not in steps
    assert subprocess.run([*args, "-q", "PICKS=10"], cwd=tmp_path, env=env).returncode == 1


def test_covering_streamed_equals_in_memory(store, serial):
    from mlpdesign.io.store import open_store
    from mlpdesign.report.metrics import covering_curves, store_oracle
    from mlpdesign.report.streamed import covering_streamed

    designs = [np.array(serial["index"]), np.arange(0, 120, 7)]
    opts = {"dtype": "float64"}
    got = covering_streamed(store, designs, opts, memory_limit="700K", block_rows=8)
    with open_store(store) as s:
        want = covering_curves(store_oracle(s, opts), designs)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


@needs_mpi
def test_stratified_streamed_and_mpi_equal_in_memory(store, tmp_path):
    mem = tmp_path / "mem.json"
    assert run("select", store, "-n", 30, "--stratify", "-o", mem, "-q").exit_code == 0
    ref = json.loads(mem.read_text())
    ser = tmp_path / "ser.json"
    res = run(
        "select",
        store,
        "-n",
        30,
        "--stratify",
        "-o",
        ser,
        "-q",
        "--memory-limit",
        "480K",
        "--block-rows",
        8,
    )
    assert res.exit_code == 0, res.stderr
    out = tmp_path / "mpi.json"
    mpirun(3, "select", store, "-n", 30, "--stratify", "-o", out, "-q", "--block-rows", 8)
    for got in (json.loads(ser.read_text()), json.loads(out.read_text())):
        assert got["index"] == ref["index"]
        assert got["stratify"] == "structure" and got["strata"] == ref["strata"]
