"""Click's option and usage errors take the one-line form of every other error (exit 2)."""

from __future__ import annotations

import pytest
from clihelpers import one_line_error, run


@pytest.mark.parametrize(
    "args, words",
    [
        (["describe", "p.xyz", "-o", "x.h5", "--shard", "5/4"], ["describe", "--shard", "5/4"]),
        (["describe", "p.xyz", "-o", "x.h5", "--jobs", "0"], ["describe", "--jobs"]),
        (["select", "s.h5", "-n", "3", "-o", "x.h5", "--threads", "0"], ["select", "--threads"]),
        (["report", "s.h5", "a.h5", "--format", "xml"], ["report", "--format", "xml"]),
        (["generate", "-o", "p.xyz"], ["generate", "Missing option '-n'"]),
        (["label", "in.xyz", "-o", "o.xyz", "--calc", "x"], ["label", "No such option"]),
        (["bogus"], ["No such command 'bogus'"]),
        (["--bogus"], ["No such option '--bogus'"]),
    ],
)
def test_option_errors_are_one_line(args, words):
    err = one_line_error(run(*args))
    for w in words:
        assert w in err, err
    assert "--help" in err
