"""A describe run killed mid-way (SIGKILL) resumes and ends with the same bytes."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

from mlpdesign.generate.pool import PoolSpec, generate

CMD = [
    sys.executable,
    "-c",
    "from mlpdesign.cli import main; main()",
    "describe",
    "pool.xyz",
    "-o",
    "pool.h5",
    "--chunk-size",
    "10",
]


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_sigkill_then_resume_gives_identical_store(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    generate(a / "pool.xyz", 300, PoolSpec(seed=11))
    shutil.copy(a / "pool.xyz", b / "pool.xyz")

    # reference: one uninterrupted run (paper default descriptors)
    subprocess.run(CMD + ["-q"], cwd=a, check=True, timeout=300)

    # killed run: two workers, the whole process group gets SIGKILL once chunks exist
    proc = subprocess.Popen(
        CMD + ["-q", "-j", "2"],
        cwd=b,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = b / "pool.h5.partial"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.is_dir() and len(list(partial.glob("chunk-*.npz"))) >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done = len(list(partial.glob("chunk-*.npz")))
    assert not (b / "pool.h5").exists() and 3 <= done < 30

    # the same command again (here with one job) continues and finishes
    r = subprocess.run(CMD, cwd=b, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resuming:" in r.stderr
    assert not partial.exists()
    assert _sha(b / "pool.h5") == _sha(a / "pool.h5")
