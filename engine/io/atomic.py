"""Durable whole-file writes and the disk-full error, shared by the embedded log's files.

:func:`write_atomic` replaces a small file (``meta.json``, a snapshot) so that a reader or a
restarted process sees either the old content or the new one, never a mix:

1. write the bytes to a temporary file ``.<name>.tmp`` in the same directory;
2. fsync it;
3. ``rename`` it over the final name (atomic on POSIX);
4. fsync the directory, so the rename itself survives a power loss.

Crash points: dying in 1–2 leaves a ``.tmp`` file that the next writer removes
(:func:`remove_temp_files`) and the old file untouched; dying after 3 leaves the new file (a
power loss before 4 may bring the old one back: both are complete). Any error in 1–4 removes the
temporary file before it propagates, so nothing partial is left behind; ``ENOSPC``/``EDQUOT``
become :class:`DiskFull`, naming the file that could not be written.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Final

__all__ = ["DISK_FULL_ERRNOS", "DiskFull", "disk_full", "fsync_dir", "remove_temp_files", "temp_path", "write_atomic"]

#: ``errno`` values that mean "no room left": no space, or over the quota.
DISK_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFull(OSError):
    """Writing ``path`` failed because the file system is full (``ENOSPC``) or over quota.

    An :class:`OSError` (``errno`` is the original one) so callers that handle I/O errors in
    general still do. What was durable before the failure stays durable; what was being written
    is either cut by the next open (a log's torn tail) or was never renamed into place.
    """

    def __init__(self, path: str | os.PathLike[str], cause: OSError) -> None:
        code = cause.errno if cause.errno is not None else errno.ENOSPC
        reason = cause.strerror or os.strerror(code)
        super().__init__(code, f"disk full: cannot write {os.fspath(path)} ({reason})")
        self.path = os.fspath(path)
        self.filename = self.path

    def __str__(self) -> str:
        return str(self.strerror)


def disk_full(exc: BaseException, path: str | os.PathLike[str]) -> BaseException:
    """``exc`` as a :class:`DiskFull` for ``path`` when it means a full disk, else ``exc``."""
    if isinstance(exc, DiskFull):
        return exc
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        full = DiskFull(path, exc)
        full.__cause__ = exc
        return full
    return exc


def temp_path(path: Path) -> Path:
    """The temporary name :func:`write_atomic` uses for ``path``: ``.<name>.tmp`` beside it."""
    return path.with_name(f".{path.name}.tmp")


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync a directory, making the renames and creations in it durable."""
    fd = os.open(os.fspath(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (a seam: fault tests replace it)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_atomic(path: Path, data: bytes, sync: bool = True) -> None:
    """Replace ``path`` by ``data`` durably and atomically (module doc); ``sync=False`` skips
    the two fsyncs (tests and benchmarks)."""
    temp = temp_path(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
        if sync:
            fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        full = disk_full(exc, path)
        if full is exc:
            raise
        raise full from exc


def remove_temp_files(directory: Path) -> list[Path]:
    """Remove the ``.*.tmp`` files :func:`write_atomic` leaves when a process dies while
    writing (only the directory's single writer may call this); return what was removed."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for temp in sorted(directory.glob(".*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
            removed.append(temp)
    return removed
