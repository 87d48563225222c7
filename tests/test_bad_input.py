"""Bad input and OS failures end in one line naming the file (exit 2), never garbage or a
traceback: OS errors, damaged selections, MPI without mpi4py, empty shards, nonsense options."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ase.io
from clihelpers import one_line_error, run

ROOT = Path(__file__).resolve().parents[1]


def _child(code: str, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_full_disk_names_the_output(tmp_path):
    """A write the OS refuses (here: a file size limit, as a full disk would) -> one line
    '<output>: <strerror>', exit 2, no temporary left."""
    res = _child(
        """
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        from mlpdesign.cli import main
        main(["generate", "-n", "500", "-o", "pool.xyz", "-q"])
        """,
        tmp_path,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == "mlpdesign: error: pool.xyz: File too large"
    assert list(tmp_path.iterdir()) == []


def test_mpi_launcher_without_mpi4py_is_one_line(tmp_path):
    """Under mpiexec without mpi4py: one line from rank 0, none from the others, exit 2."""
    blocker = tmp_path / "block" / "mpi4py"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no mpi4py here')\n")
    code = """
        import sys
        sys.path.insert(0, "block")
        from mlpdesign.cli import main
        main(["describe", "missing.xyz", "-o", "p.h5"])
        """
    for rank, lines in (("0", 1), ("1", 0)):
        res = _child(code, tmp_path, {"PMI_SIZE": "2", "PMI_RANK": rank})
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.splitlines()) == lines, res.stderr
    assert "mpi4py is not installed" in _child(code, tmp_path, {"PMI_SIZE": "2"}).stderr
    assert not (tmp_path / "p.h5").exists()


def test_truncated_selection_names_the_file(tmp_path, small_pool, small_store):
    sel = tmp_path / "sel.h5"
    assert run("select", small_store, "-n", "5", "-o", sel, "-q").exit_code == 0
    data = sel.read_bytes()
    sel.write_bytes(data[: len(data) // 2])
    err = one_line_error(run("write", small_pool, sel, "-o", tmp_path / "t.xyz"))
    assert f"{sel}: is damaged" in err
    assert not (tmp_path / "t.xyz").exists()


def test_empty_generate_shard(tmp_path):
    """More shards than candidates: the empty shards write empty parts, and the parts
    concatenate to the whole pool."""
    parts = []
    for i in range(1, 8):
        out = tmp_path / f"p{i}.xyz"
        res = run("generate", "-n", "5", "--shard", f"{i}/7", "-o", out, "--seed", "3")
        assert res.exit_code == 0, res.stderr
        assert "--count" not in res.stderr
        parts.append(out.read_text())
    assert (
        "wrote 0 candidates (shard 1/7 of 5 candidates is empty)"
        in run("generate", "-n", "5", "--shard", "1/7", "-o", tmp_path / "again.xyz").stderr
    )
    assert run("generate", "-n", "5", "--seed", "3", "-o", tmp_path / "all.xyz").exit_code == 0
    assert "".join(parts) == (tmp_path / "all.xyz").read_text()


def test_vasp_refuses_a_non_finite_incar_value(tmp_path, small_pool):
    train = tmp_path / "train.xyz"
    ase.io.write(train, ase.io.read(small_pool, index=":2"), format="extxyz")
    for value in ("nan", "inf", "-Infinity"):
        err = one_line_error(
            run("vasp", train, "-o", tmp_path / "runs", "--incar", f"ENCUT={value}")
        )
        assert f"ENCUT={value}: expected a finite number" in err
    assert not (tmp_path / "runs").exists()


def test_label_refuses_an_unknown_calculator_argument(tmp_path, small_pool):
    out = tmp_path / "lab.xyz"
    args = ["label", small_pool, "--calculator", "ase.calculators.lj:LennardJones", "-o", out]
    err = one_line_error(run(*args, "--calc-arg", "sigma=2.9", "--calc-arg", "bogus=1"))
    assert "--calc-arg bogus: LennardJones has no such parameter" in err and "epsilon" in err
    assert not out.exists()
    res = run(*args, "--calc-arg", "sigma=2.9", "--calc-arg", "rc=6.0", "-q")
    assert res.exit_code == 0, res.stderr


def test_crossval_warns_when_a_set_is_given_twice(tmp_path):
    lab = tmp_path / "lab.xyz"
    lab.write_text("not a labelled set\n")
    (tmp_path / "copy.xyz").write_text("not a labelled set\n")
    res = run(
        "crossval", f"A={lab}", f"B={lab}", f"C={tmp_path / 'copy.xyz'}", "-o", tmp_path / "cv"
    )
    warnings = [ln for ln in res.stderr.splitlines() if "warning" in ln]
    assert warnings == [
        f"mlpdesign: warning: sets A and B are the same file ({lab}): their off-sample "
        "numbers are on-sample",
        f"mlpdesign: warning: sets A and C are equal ({tmp_path / 'copy.xyz'}): their "
        "off-sample numbers are on-sample",
    ]
