"""Atomic file writes: a temporary file in the same folder, fsync, then ``os.replace``.

A reader (or a resumed run) never sees a half-written checkpoint, summary or cache.
The file gets the permissions an ordinary ``open`` would give it (0666 less the
umask). A writer killed mid-write leaves its temporary file (``.NAME.*.tmp``);
:func:`remove_orphaned_temporaries` clears them once the folder's lock is held.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

TEMPORARY_SUFFIX = ".tmp"
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting and restoring it, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a write refused for want of space (a full file system, or a quota reached)."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(handle)`` on a temporary file, then move it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: str | Path, values: Any) -> None:
    """JSON with 2-space indent; NaN and infinities are refused (they are not JSON)."""
    atomic_write_bytes(path, (json.dumps(values, indent=2, allow_nan=False) + "\n").encode())


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_write` (``.NAME.*.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(TEMPORARY_SUFFIX)


def remove_orphaned_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` left in ``folder`` when its writer was killed.

    Call only while holding the folder (:func:`constrained_vae.run.locks.hold`): a live
    writer's temporary file would go too.
    """
    removed = [p for p in Path(folder).iterdir() if is_temporary(p) and p.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
