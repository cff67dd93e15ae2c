"""Run ``marginbook`` with a kill point: the process SIGKILLs itself at an exact place of a write,
so a test can kill a real process *during* a snapshot or ``meta.json`` write, not only near one.

``KILL_AT`` (environment):

* ``snapshot:N`` — halfway through writing the temporary file of the N-th snapshot;
* ``renamed:N`` — right after the N-th snapshot is renamed into place, before the directory fsync;
* ``meta`` — halfway through writing the temporary ``meta.json``.

Usage: ``PYTHONPATH=tests python -c "import killpoint; killpoint.main()" run FILE --log DIR``.
The production code has no kill points: this module replaces two seams of
``engine.io.atomic`` in the child process only.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from engine.io import atomic


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    kind, _, number = os.environ.get("KILL_AT", "").partition(":")
    target = int(number) if number else 1
    seen = 0
    write_all, fsync_dir = atomic._write_all, atomic.fsync_dir

    def killing_write_all(fd: int, data: bytes) -> None:
        nonlocal seen
        name = os.readlink(f"/proc/self/fd/{fd}")
        wanted = {"snapshot": ".msgpack.tmp", "meta": f".{'meta.json'}.tmp"}.get(kind)
        if wanted is not None and name.endswith(wanted):
            seen += 1
            if seen == target:
                write_all(fd, data[: len(data) // 2])
                _die()
        write_all(fd, data)

    def killing_fsync_dir(directory: str | os.PathLike[str]) -> None:
        nonlocal seen
        if kind == "renamed" and Path(directory).name == "snapshots":
            seen += 1
            if seen == target:
                _die()
        fsync_dir(directory)

    atomic._write_all = killing_write_all  # type: ignore[assignment]
    atomic.fsync_dir = killing_fsync_dir  # type: ignore[assignment]
    from cli.main import main as cli

    sys.exit(cli(sys.argv[1:]))
