"""The single-writer lock of a log directory.

A log directory has at most one writer (``marginbook run``, ``demo --log``, ``recover``): two
appending at once would interleave their records into a log nothing can read. The writer holds
an exclusive ``flock`` on ``DIR/writer.lock`` for its whole lifetime and writes who it is into
the file (``{"pid", "host", "started"}``, JSON). A second writer is refused with
:class:`LogLocked`, naming the holder; with ``wait > 0`` it first waits that many seconds for
the lock. The kernel drops an ``flock`` when its holder dies (kill -9 included), so a lock file
left by a dead process never blocks anyone: the next writer takes it and overwrites the holder.

Readers (``replay``, ``audit``, …) never take the lock: :func:`live_writer` only probes it (a
shared, non-blocking ``flock`` released at once) to learn whether a writer is at work, so a
tail it is still writing is not judged as damage. Because a probe holds the lock for an instant,
a writer retries for :data:`PROBE_GRACE` seconds before it calls the lock taken.

``flock`` is advisory and local: it protects against every marginbook process on the same
machine, not against other programs writing the files or a directory shared over NFS.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.io.atomic import disk_full
from engine.io.filelog import LogError

__all__ = ["LOCK_FILE", "PROBE_GRACE", "LockHolder", "LogLocked", "WriterLock", "live_writer"]

LOCK_FILE: Final = "writer.lock"
#: Seconds a writer keeps retrying a lock held only by a reader's probe.
PROBE_GRACE: Final = 0.25
_POLL: Final = 0.02


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds (or last held) a directory's lock, as written in the lock file."""

    pid: int | None
    host: str | None
    started: str | None

    def describe(self) -> str:
        if self.pid is None:
            return "a writer that has not recorded itself yet"
        host = f" on host {self.host}" if self.host else ""
        since = f", started {self.started}" if self.started else ""
        return f"pid {self.pid}{host}{since}"


class LogLocked(LogError):
    """Another writer holds the directory's lock."""

    def __init__(self, directory: Path, holder: LockHolder, waited: float) -> None:
        waited_text = f" (waited {waited:g} s)" if waited else ""
        super().__init__(
            f"{directory} is locked by another writer: {holder.describe()}{waited_text}; "
            f"lock file {directory / LOCK_FILE}; wait for it to finish, or pass --wait-lock SECONDS"
        )
        self.directory = directory
        self.holder = holder


def _read_holder(path: Path) -> LockHolder:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return LockHolder(None, None, None)
    if not isinstance(data, dict):
        return LockHolder(None, None, None)
    pid, host, started = data.get("pid"), data.get("host"), data.get("started")
    return LockHolder(
        pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        host if isinstance(host, str) else None,
        started if isinstance(started, str) else None,
    )


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


class WriterLock:
    """An acquired directory lock; :meth:`release` (or process death) gives it up."""

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory = directory
        self.path = directory / LOCK_FILE
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: str | os.PathLike[str], wait: float = 0.0) -> WriterLock:
        """Take the lock of ``directory`` (created if missing), waiting up to ``wait`` seconds
        (at least :data:`PROBE_GRACE`); raise :class:`LogLocked` naming the holder."""
        folder = Path(directory)
        path = folder / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise disk_full(exc, path) from None
        try:
            deadline = time.monotonic() + max(wait, PROBE_GRACE)
            while not _try_flock(fd, fcntl.LOCK_EX):
                if time.monotonic() >= deadline:
                    raise LogLocked(folder, _read_holder(path), wait)
                time.sleep(_POLL)
            record = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            data = (json.dumps(record) + "\n").encode()
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
            except OSError as exc:
                raise disk_full(exc, path) from None
        except BaseException:
            os.close(fd)
            raise
        return cls(folder, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (idempotent). The lock file stays: its content is only a hint."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def live_writer(directory: str | os.PathLike[str]) -> LockHolder | None:
    """The writer holding ``directory``'s lock right now, or ``None`` (probe only; module doc)."""
    path = Path(directory) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if _try_flock(fd, fcntl.LOCK_SH):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return _read_holder(path)
    finally:
        os.close(fd)
