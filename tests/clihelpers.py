"""Helpers shared by the CLI tests: invoke the command, and check a one-line error."""

from __future__ import annotations

from click.testing import CliRunner

from mlpdesign.cli import cli


def run(*args):
    """Invoke ``mlpdesign ARGS`` in-process (stdout and stderr kept apart)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(res, code: int = 2) -> str:
    """Assert exit ``code`` with exactly one ``mlpdesign: error:`` line on stderr; return it."""
    assert res.exit_code == code, (res.exit_code, res.output, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlpdesign: error: "), res.stderr
    return lines[0]


#: a small distance_2b + SOAP model: fits in seconds with the real gap_fit
TINY_GAP = (
    "distance_2b cutoff=6.0 covariance_type=ard_se delta=0.8 theta_uniform=0.3 : "
    "soap cutoff=5.0 l_max=4 n_max=4 normalize=T atom_sigma=0.3 n_Z=1 Z={40} "
    "covariance_type=dot_product zeta=4 delta=0.3"
)


def fit_tiny(labelled, out, *extra):
    """``mlpdesign fit`` of ``labelled`` into ``out`` with :data:`TINY_GAP` and 20 SOAP
    sparse points (``extra``: more options)."""
    return run("fit", labelled, "--gap", TINY_GAP, "--n-sparse", "soap=20", "-o", out, *extra)


def select_maxent(store, out, n, *args):
    """``mlpdesign select STORE -n N --criterion maxent ARGS -o OUT -q``, asserted to succeed."""
    res = run("select", store, "-n", n, "--criterion", "maxent", *args, "-o", out, "-q")
    assert res.exit_code == 0, (res.output, res.stderr)
    return res
