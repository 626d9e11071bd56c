"""What a sweep that starts its own Ray leaves behind when its process is killed: nothing.

A sweep started without ``--address`` runs Ray's processes (its GCS, raylet, agents, workers) as
descendants of its own. When the sweep's process is killed outright (``kill -9``: no handler runs,
``ray.shutdown`` never happens), some of them (Ray's dashboard and runtime-env agents) outlive it.
This watchdog, a small process of its own started beside the sweep's Ray (:func:`start`), notes the
sweep's descendants every :data:`POLL_S` seconds and, once the sweep's process is gone, kills those
still alive. Run as a script (``python ray_watchdog.py PID``), it imports nothing but the standard
library.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.5


def parents() -> dict[int, int]:
    """Every live process → its parent (zombies left out: they are dead already)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            table[int(entry.name)] = int(fields[1])
    return table


def descendants(root: int, table: dict[int, int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, parent in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def watch(driver: int) -> None:
    """Until ``driver`` dies, note its descendants; then kill those still alive."""
    known: set[int] = set()
    me = os.getpid()
    while True:
        table = parents()
        if driver not in table:
            break
        known |= descendants(driver, table) - {me}
        time.sleep(POLL_S)
    alive = set(parents())
    for pid in known & alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def start() -> subprocess.Popen | None:
    """The watchdog of this process's Ray, started (None where there is no ``/proc`` to watch through)."""
    if not Path("/proc/self/stat").exists():
        return None
    return subprocess.Popen(
        [sys.executable, __file__, str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not stopped with the sweep's process group by Ctrl-C or a kill of the group
    )


def stop(watchdog: subprocess.Popen | None) -> None:
    """End the watchdog once Ray has shut down in order."""
    if watchdog is not None:
        watchdog.kill()
        watchdog.wait()


if __name__ == "__main__":
    watch(int(sys.argv[1]))
