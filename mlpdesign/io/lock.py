"""One run per output: an advisory lock beside each output, and cleaning of stale temporaries.

A run *claims* its output before any work (:func:`claim`, called by
:func:`mlpdesign.io.atomic.check_output` and ``check_output_dir``): it takes an exclusive
``flock`` on ``.NAME.lock`` beside the output, so a second run on the same output (and its
``NAME.partial/``) fails at once with one line instead of racing the first. The claim is
held until the output is in place (:func:`release`, called by ``atomic_path`` /
``atomic_dir``), until the command ends (:func:`release_all`, called by the CLI), or until
the process dies: the kernel drops a ``flock`` with its process, so a ``kill -9`` never
leaves a lock that blocks the next run.

Holding the claim also proves that no other run is writing the output, so the temporaries
that a killed run left beside it (``.NAME.tmp-*``: files of ``atomic_path``, folders of
``atomic_dir``) are removed when it is taken.

Under MPI only rank 0 claims (every rank checks the same output). Locks are advisory and
need a file system with ``flock`` (local disks, NFSv4, Lustre and GPFS mounted with
locking); where ``flock`` is not supported the run goes on unlocked.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from mlpdesign.errors import MlpdesignError
from mlpdesign.launcher import launched_rank

#: resolved output path -> (open lock file descriptor, lock file path)
_HELD: dict[Path, tuple[int, Path]] = {}
#: claims taken by :func:`holding`: kept until its block ends, whoever calls :func:`release`
_PINNED: set[Path] = set()


def _key(path: str | os.PathLike) -> Path:
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    return Path(os.path.realpath(parent)) / p.name


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of output ``path``: ``.NAME.lock`` in the same folder."""
    k = _key(path)
    return k.with_name(f".{k.name}.lock")


def _holder(lock: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(lock.read_text().split()[0])
        return f" (pid {pid})"
    return ""


def _lock_fd(lock: Path, shown: str) -> int | None:
    """An open descriptor of ``lock`` holding its exclusive flock; None where unsupported."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MlpdesignError(
                f"{shown} is being written by another mlpdesign run{_holder(lock)}; "
                "wait for it to finish or choose another output"
            ) from None
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                return None
            raise
        try:  # the holder before us may have removed the file after we opened it
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def claim(path: str | os.PathLike) -> bool:
    """Lock output ``path`` for this run; True when newly taken, False when already held
    by this process (or not rank 0 under MPI, or ``flock`` is unsupported).

    Another run holding it: one-line :class:`MlpdesignError`. Taking it removes the stale
    temporaries of killed runs of the same output (:func:`clean_stale`).
    """
    key = _key(path)
    if key in _HELD or launched_rank() != 0:
        return False
    if not key.parent.is_dir():
        return False  # the caller reports the missing folder
    lock = lock_path(path)
    try:
        fd = _lock_fd(lock, str(path))
    except OSError:  # not MlpdesignError (another run holds it): that one is raised
        return False  # a read-only folder or file system: the caller reports it
    if fd is None:
        return False
    _HELD[key] = (fd, lock)
    clean_stale(key)
    return True


def release(path: str | os.PathLike, pinned: bool = False) -> None:
    """Give up the claim on ``path`` (its lock file removed); nothing if not held, or if
    a :func:`holding` block holds it (unless ``pinned``: the end of that block)."""
    key = _key(path)
    if key in _PINNED and not pinned:
        return
    _PINNED.discard(key)
    held = _HELD.pop(key, None)
    if held is None:
        return
    fd, lock = held
    with contextlib.suppress(OSError):
        lock.unlink()  # before unlocking: a waiting opener then sees a new inode and retries
    os.close(fd)


def release_all() -> None:
    """Give up every claim of this process (end of a command)."""
    for key in list(_HELD):
        release(key, pinned=True)


@contextlib.contextmanager
def holding(path: str | os.PathLike) -> Iterator[None]:
    """Claim ``path`` for the whole ``with`` block (an ``atomic_path`` inside it does not
    end the claim); released at its end if taken here."""
    taken = claim(path)
    if taken:
        _PINNED.add(_key(path))
    try:
        yield
    finally:
        if taken:
            release(path, pinned=True)


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """What killed runs of output ``path`` may have left beside it: ``.NAME.tmp-*``."""
    key = _key(path)
    return sorted(key.parent.glob(f".{_glob_escape(key.name)}.tmp-*"))


def _glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def clean_stale(path: str | os.PathLike) -> None:
    """Remove the temporaries of killed runs of ``path`` (call only while holding it)."""
    for tmp in stale_temporaries(path):
        with contextlib.suppress(OSError):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()


atexit.register(release_all)
