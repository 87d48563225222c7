"""Atomic outputs, refusal to overwrite, and file checksums shared by every stage."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import MlpdesignError


def check_output(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse an existing output unless ``force``; check the folder is writable.

    Call this before any long work, so a run is refused at once rather than at the end.
    """
    p = Path(path)
    if p.exists() and not force:
        raise MlpdesignError(f"{p} exists; use --force to overwrite it")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise MlpdesignError(f"cannot write {p}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise MlpdesignError(f"cannot write {p}: folder {parent} is not writable")
    if p.is_dir() and not force:
        raise MlpdesignError(f"{p} is a folder")
    return p


def _tmp_name(p: Path) -> Path:
    return p.with_name(f".{p.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only on success.

    On any exception the temporary file is removed and ``path`` is left untouched,
    so a reader never sees a half-written output.
    """
    p = check_output(path, force)
    tmp = _tmp_name(p)
    try:
        yield tmp
        if not tmp.exists():
            raise MlpdesignError(f"internal error: nothing was written for {p}")
        if p.is_dir():
            shutil.rmtree(p)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Like :func:`atomic_path` for an output folder: built in a temporary folder, then renamed."""
    p = check_output(path, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.tmp-", dir=p.parent if str(p.parent) else "."))
    try:
        yield tmp
        if p.exists():
            old = _tmp_name(p).with_suffix(".old")
            os.replace(p, old)
            os.replace(tmp, p)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, p)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: str | os.PathLike, bufsize: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes (streamed), used to tie stores and selections to a pool."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(bufsize):
                h.update(chunk)
    except FileNotFoundError:
        raise MlpdesignError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MlpdesignError(f"{path}: is a folder, expected a file") from None
    return h.hexdigest()


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``Path(path)`` if it is a readable file, else raise a one-line error."""
    p = Path(path)
    if not p.exists():
        raise MlpdesignError(f"{p}: no such {what}")
    if p.is_dir():
        raise MlpdesignError(f"{p}: is a folder, expected a {what}")
    if not os.access(p, os.R_OK):
        raise MlpdesignError(f"{p}: not readable")
    return p
