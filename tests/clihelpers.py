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
