"""One writer per folder: an OS file lock on ``FOLDER/.lock`` for as long as a process writes there.

A run folder is held by the process training it, a sweep folder by the sweep
that plans and records it. The lock is ``flock(2)`` (POSIX: Linux, macOS; on a
network file system it needs working ``flock``/``fcntl`` locks): the operating
system drops it when its holder exits in any way, ``kill -9`` included, so a
dead writer never leaves a folder blocked. The holder writes its process id into
the lock file, so that a refused writer can say who holds the folder.

A folder that :func:`hold` had to create and that is still empty when it is
released (its writer was refused or failed before writing) is removed again,
with the parents created for it: bad input leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from constrained_vae.errors import FolderInUse, RunFolderError
from constrained_vae.files import is_temporary, remove_orphaned_temporaries

LOCK_FILE = ".lock"
HOLDER_WAIT = 0.2  # seconds a refused process waits for the holder to write its id in the lock file


@contextmanager
def hold(folder: str | Path) -> Iterator[Path]:
    """Create ``folder`` if needed and hold it; :class:`FolderInUse` when another process does.

    On entry, temporary files that a killed writer left half-written are removed
    (no living process can be writing them while the lock is held).
    """
    folder = Path(folder)
    created = make_folder(folder)
    try:
        fd = _acquire(folder)
    except BaseException:
        _remove_if_empty(created)
        raise
    try:
        remove_orphaned_temporaries(folder)
        yield folder
    finally:
        if created and folder.is_dir() and not any(p.name != LOCK_FILE for p in folder.iterdir()):
            (folder / LOCK_FILE).unlink(missing_ok=True)  # unlinked while held: no one else can take it
            _remove_if_empty(created)
        os.close(fd)  # releases the lock


def is_bookkeeping(path: Path) -> bool:
    """The lock file, or a temporary file a killed writer left: not content of the folder."""
    return path.name == LOCK_FILE or is_temporary(path)


def make_folder(folder: Path) -> list[Path]:
    """``mkdir -p folder``; the folders it created (deepest first), or :class:`RunFolderError` saying why not."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunFolderError(f"{folder} exists and is not a folder") from None
    except OSError as error:
        raise RunFolderError(f"cannot create the folder {folder}: {error.strerror or error}") from None
    return missing


def _remove_if_empty(created: list[Path]) -> None:
    for path in created:  # deepest first
        try:
            path.rmdir()
        except OSError:
            return


def _acquire(folder: Path) -> int:
    """An open descriptor of ``folder/.lock`` holding an exclusive lock, with this process's id written in it."""
    path = folder / LOCK_FILE
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise RunFolderError(f"cannot write in {folder}: {error.strerror or error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderInUse(f"{folder} is in use by {holder}; wait for it to finish, or stop it") from None
        except OSError as error:
            os.close(fd)
            raise RunFolderError(f"cannot lock {path}: {error.strerror or error}") from None
        if _still_at(fd, path):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the holder removed the file as we opened it: take the new one
    raise FolderInUse(f"{folder} is in use by another process (its lock file keeps being replaced)")


def _still_at(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _holder(fd: int) -> str:
    """``process N`` from the lock file, or ``another process`` when it has not written its id yet.

    The holder writes its id just after taking the lock (:func:`_acquire`), over the id of whichever
    process held it before (a killed one's stays): the file is read again for up to :data:`HOLDER_WAIT`
    seconds while it names no process alive on this machine (a holder on another machine of a cluster
    is named once the wait is over).
    """
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        try:
            text = os.pread(fd, 32, 0).decode().strip()
        except (OSError, UnicodeDecodeError):
            text = ""
        waited = time.monotonic() >= deadline
        if text.isdigit() and (waited or _alive(int(text))):
            return f"process {text}"
        if waited:
            return "another process"
        time.sleep(0.005)


def _alive(pid: int) -> bool:
    """Whether a process of that id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    except (OverflowError, ValueError):
        return False
    return True
