"""Atomic outputs, refusal to overwrite, and file checksums shared by every stage."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.lock import claim, release


def _writable_parent(p: Path) -> None:
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise MlpdesignError(f"cannot write {p}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise MlpdesignError(f"cannot write {p}: folder {parent} is not writable")


def check_output(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse an existing output file unless ``force``, and a folder always.

    ``--force`` replaces files, never a folder (it may hold results).  Call this before any
    long work, so a run is refused at once rather than at the end. Claims the output for
    this run (:mod:`mlpdesign.io.lock`): another run writing it is refused, and what killed
    runs of it left behind is removed.
    """

    def check(p: Path) -> None:
        if p.is_dir():
            raise MlpdesignError(f"{p} is a folder; --force replaces files, never a folder")
        if p.exists() and not force:
            raise MlpdesignError(f"{p} exists; use --force to overwrite it")

    return _claimed(Path(path), check)


def check_output_dir(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse an existing output folder unless ``force``, and an existing non-folder always.

    Claims the output like :func:`check_output`."""

    def check(p: Path) -> None:
        if p.exists() and not p.is_dir():
            raise MlpdesignError(f"{p} exists and is not a folder")
        if p.exists() and not force:
            raise MlpdesignError(f"{p} exists; use --force to overwrite it")

    return _claimed(Path(path), check)


def _claimed(p: Path, check) -> Path:
    """``p`` claimed (its lock) and checked by ``check(p)`` and for a writable folder; the
    claim is given back when a check fails."""
    taken = claim(p)
    try:
        check(p)
        _writable_parent(p)
    except MlpdesignError:
        if taken:
            release(p)
        raise
    return p


def umask() -> int:
    """The process umask (read without changing it for good)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike, mode: int = 0o777) -> None:
    """Give a folder made by :func:`tempfile.mkdtemp` (always 0700) the umask's permissions."""
    os.chmod(path, mode & ~umask())


def _tmp_name(p: Path) -> Path:
    return p.with_name(f".{p.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only on success.

    On any exception the temporary file is removed and ``path`` is left untouched,
    so a reader never sees a half-written output. The run's claim on ``path`` ends here.
    """
    p = check_output(path, force)
    tmp = _tmp_name(p)
    try:
        try:
            yield tmp
        except OSError as e:  # a full disk while writing: name the output, not the temporary
            raise named_os_error(e, p) from None
        if not tmp.exists():
            raise MlpdesignError(f"internal error: nothing was written for {p}")
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        raise
    finally:
        release(p)


def named_os_error(e: OSError, path: Path) -> OSError:
    """``e`` with ``path`` as its file name where it names none or a temporary of ``path``."""
    name = str(e.filename or "")
    if name and f".{path.name}.tmp-" not in name:
        return e
    if e.errno is None:
        return OSError(errno.EIO, " ".join(str(e).split()), str(path))
    return OSError(e.errno, e.strerror or os.strerror(e.errno), str(path))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Like :func:`atomic_path` for an output folder: built in a temporary folder.

    A new folder is renamed into place whole.  An existing one (``force``) is never deleted:
    each file built is moved into it, replacing a file of the same name, and anything else
    in it stays.
    """
    p = check_output_dir(path, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.tmp-", dir=p.parent if str(p.parent) else "."))
    try:
        honour_umask(tmp)
        try:
            yield tmp
        except OSError as e:
            raise named_os_error(e, p) from None
        if p.exists():
            merge_into(tmp, p)
            tmp.rmdir()
        else:
            os.replace(tmp, p)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        release(p)


def merge_into(src: Path, dest: Path) -> None:
    """Move every file below ``src`` to the same place below ``dest`` (files replaced, folders
    kept); a file in ``dest`` where ``src`` has a folder, or the reverse, is an error."""
    for entry in sorted(src.iterdir()):
        target = dest / entry.name
        if entry.is_dir():
            if target.exists() and not target.is_dir():
                raise MlpdesignError(f"{target} is a file; expected a folder")
            if not target.exists():
                os.replace(entry, target)
                continue
            merge_into(entry, target)
            entry.rmdir()
        else:
            if target.is_dir():
                raise MlpdesignError(f"{target} is a folder; --force replaces files only")
            os.replace(entry, target)


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
