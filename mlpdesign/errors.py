"""Errors that the CLI turns into one line on stderr and a non-zero exit code."""

from __future__ import annotations


class MlpdesignError(Exception):
    """Bad input or a refused operation: reported as one line, exit code 2.

    Library code raises this (never ``sys.exit``) so that the same checks serve
    the shell and Python callers alike.
    """

    exit_code = 2


class PartialFailure(MlpdesignError):
    """The work completed but some items failed (e.g. unconverged VASP runs): exit code 1."""

    exit_code = 1
