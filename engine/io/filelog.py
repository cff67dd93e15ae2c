"""Embedded append-only file log, used by the engine when no Kafka is configured.

One :class:`FileLog` owns one file. The file is a plain concatenation of records; there is no
file header, no footer and no padding, so an empty file is an empty log.

Record layout (all integers little-endian, ``struct`` format ``<4sIIQ`` + payload)::

    offset  size  field
    ------  ----  -----------------------------------------------------------------
         0     4  magic    b"\\x89MBL" (0x89 0x4D 0x42 0x4C)
         4     4  crc      uint32, zlib.crc32 of bytes 8 .. 20+length of the record,
                           i.e. of (length, seq, payload) in that order
         8     4  length   uint32, payload length in bytes (0 .. MAX_PAYLOAD)
        12     8  seq      uint64, sequence number
        20     n  payload  ``length`` opaque bytes

The checksum covers the length, the sequence number and the payload, so a damaged length or
sequence number is detected like a damaged payload. Sequence numbers are dense: the first
record has seq 1 and every record has seq = previous + 1.

Durability (``FsyncPolicy``). "Process crash" means the Python process dies (kill -9,
segfault, OOM) while the OS keeps running; "power loss" also covers kernel panics and hard
resets. In every case, what survives is *a prefix* of the appended records, possibly followed
by a torn tail that is cut on the next :meth:`FileLog.open`.

* ``ALWAYS`` -- every :meth:`FileLog.append` / :meth:`FileLog.append_many` writes the records
  and fdatasyncs before returning. Once the call returns, the records survive a process crash
  and power loss (as far as the disk honours cache flushes). Slowest.
* ``BATCH`` (default) -- appends go to an in-process buffer; :meth:`FileLog.flush` (call it
  once per batch, before acknowledging the batch) writes the buffer and fdatasyncs, and
  :meth:`FileLog.close` does the same. Once ``flush()`` returns, everything appended so far
  survives a process crash and power loss. Records appended after the last ``flush()`` may be
  lost by either kind of crash (some of them may already have reached the OS when the buffer
  filled up, and those survive a process crash).
* ``NEVER`` -- ``flush()`` only hands the buffer to the OS, nothing is ever fsynced. After
  ``flush()`` returns the records survive a process crash but NOT power loss: the OS may lose
  any amount of the unsynced suffix. Meant for benchmarks and tests. (Without fsync the OS
  could in theory persist a later page but not an earlier one; that leaves a hole in the
  middle of the log, which :meth:`FileLog.open` refuses to repair -- see below.)

``append_many`` issues one ``write()`` for the whole batch, but a batch is not atomic on a
crash: a prefix of it may survive.

Recovery rule, applied by :meth:`FileLog.open` (which is the only thing that ever modifies
existing bytes): the file is scanned from the start and every record is checked (magic,
plausible length, checksum, seq = previous + 1). At the first record that fails:

* if no valid record (magic + plausible length + matching checksum, any seq) starts anywhere
  after the failure offset, the failure is a *torn tail* -- an interrupted write, or garbage /
  zero-fill after the last write. The file is truncated to the end of the last good record
  and ``warn`` is called with the file, the offset and the number of bytes cut;
* if a valid record starts somewhere after it, the damage is in the *middle* of the log:
  :class:`LogCorruptError` is raised (file, byte offset, expected seq) and nothing is
  modified. Good data is never silently truncated;
* a record whose checksum is fine but whose seq is not previous + 1 always raises
  :class:`LogCorruptError` (expected and found seq), even if it is the last record.

The rule errs on the side of refusing: if a torn last record's payload happens to contain
the bytes of a complete, valid record, the tail is treated as mid-log corruption and open
raises; use :func:`scan` and repair by hand. :func:`scan` never modifies the file; it reports
every checksum failure, sequence gap and torn tail for audits.

Reads (:meth:`FileLog.read`) re-verify checksums and sequence numbers and raise
:class:`LogCorruptError` on any failure. They use large reads plus a sparse in-memory index
(byte offset of every ``INDEX_STRIDE``-th record), so ``read(from_seq)`` starts at most
``INDEX_STRIDE - 1`` records before ``from_seq``.

A ``FileLog`` is not thread-safe and assumes a single writer per file; it does not lock the
file itself (two writers on one file would corrupt it): a log directory's writer holds the
directory's lock (``engine/io/lock.py``).

A write that fails because the disk is full raises ``engine.io.atomic.DiskFull`` naming the
file; like any failed write it leaves the log unusable until reopened, and reopening cuts the
torn tail the failure may have left.
"""

from __future__ import annotations

import contextlib
import enum
import io
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO, Final, NoReturn, Self

from engine.io.atomic import disk_full

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "INDEX_STRIDE",
    "MAGIC",
    "MAX_PAYLOAD",
    "FileLog",
    "FsyncPolicy",
    "LogCorruptError",
    "LogError",
    "ScanReport",
    "find_next_valid",
    "scan",
    "truncate_after",
    "valid_prefix",
    "valid_record_at",
]

_log = logging.getLogger(__name__)

MAGIC: Final = b"\x89MBL"
HEADER: Final = struct.Struct("<4sIIQ")  # magic, crc, length, seq
HEADER_SIZE: Final = HEADER.size  # 20
_LEN_SEQ: Final = struct.Struct("<IQ")
_U32: Final = struct.Struct("<I")
_CRC_START: Final = 8  # the checksum covers bytes [8, 20 + length) of a record
#: Largest accepted payload. Also bounds the memory a corrupt length field can make a reader
#: allocate.
MAX_PAYLOAD: Final = 64 * 1024 * 1024
#: The sparse index keeps the byte offset of records 1, 1 + INDEX_STRIDE, 1 + 2*INDEX_STRIDE...
INDEX_STRIDE: Final = 4096

_READ_CHUNK: Final = 1 << 20
_WRITE_BUFFER: Final = 1 << 18

_fdatasync: Final[Callable[[int], None]] = getattr(os, "fdatasync", os.fsync)


def _sync_fd(fd: int) -> None:
    """Make written data durable (fdatasync where available). Tests patch this."""
    _fdatasync(fd)


def _open_append(path: str) -> io.RawIOBase:
    """The raw file appends go to (a seam: fault tests return one that fills up)."""
    return io.FileIO(path, "ab")


class FsyncPolicy(enum.Enum):
    """When :class:`FileLog` fsyncs; see the module docstring for the crash guarantees."""

    ALWAYS = "always"
    BATCH = "batch"
    NEVER = "never"


class LogError(Exception):
    """Base class for file log errors (also raised when a log is unusable after an I/O error)."""


class LogCorruptError(LogError):
    """The log is damaged in a way that must not be repaired automatically.

    ``offset`` is the byte offset of the bad record, ``expected_seq`` the seq that should have
    been there and ``found_seq`` the seq actually found (``None`` when the record itself is
    unreadable).
    """

    def __init__(self, path: str, offset: int, expected_seq: int, reason: str, found_seq: int | None = None) -> None:
        super().__init__(f"{path}: corrupt log at byte offset {offset} (expected seq {expected_seq}): {reason}")
        self.path = path
        self.offset = offset
        self.expected_seq = expected_seq
        self.found_seq = found_seq
        self.reason = reason


@dataclass(slots=True)
class ScanReport:
    """What :func:`scan` found.

    ``records``: records with a valid checksum. ``last_seq``: seq of the last such record
    (0 if none). ``good_bytes``: bytes occupied by those records. ``total_bytes``: file size.
    ``torn_tail_bytes``: bytes after the last valid record that :meth:`FileLog.open` would cut.
    ``errors``: one message per checksum failure, sequence gap and torn tail.
    """

    records: int = 0
    last_seq: int = 0
    good_bytes: int = 0
    total_bytes: int = 0
    torn_tail_bytes: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True, slots=True)
class _Bad:
    offset: int
    reason: str


def _records(f: BinaryIO, start: int, end: int, copy: bool, bad: list[_Bad]) -> Iterator[tuple[int, int, int, bytes]]:
    """Yield ``(offset, seq, end_offset, payload)`` for checksum-valid records in [start, end).

    Stops at the first record that is unreadable (bad magic, implausible length, truncated,
    checksum mismatch) and appends a :class:`_Bad` to ``bad``; a clean stop leaves ``bad``
    empty. Sequence numbers are not checked here. With ``copy=False`` payloads are ``b""``.
    """
    hs = HEADER_SIZE
    cs = _CRC_START
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    f.seek(start)
    buf = b""
    mv = memoryview(buf)
    base = start  # file offset of buf[0]
    i = 0
    while True:
        avail = len(buf) - i
        if avail >= hs:
            magic, crc, n, seq = unpack(buf, i)
            if magic != MAGIC:
                bad.append(_Bad(base + i, f"bad magic {bytes(magic)!r}"))
                return
            if n > MAX_PAYLOAD:
                bad.append(_Bad(base + i, f"implausible payload length {n}"))
                return
            rec_end = i + hs + n
            if rec_end <= len(buf):
                if crc32(mv[i + cs : rec_end]) != crc:
                    bad.append(_Bad(base + i, f"checksum mismatch (record claims seq {seq})"))
                    return
                yield base + i, seq, base + rec_end, (buf[i + hs : rec_end] if copy else b"")
                i = rec_end
                continue
            need = hs + n - avail
        else:
            need = hs - avail
        file_pos = base + len(buf)
        if file_pos >= end:
            if avail == 0:
                return
            if avail < hs:
                bad.append(_Bad(base + i, f"truncated header ({avail} of {hs} bytes)"))
            else:
                bad.append(_Bad(base + i, f"truncated payload ({avail - hs} of {avail - hs + need} bytes)"))
            return
        data = f.read(min(max(_READ_CHUNK, need), end - file_pos))
        if not data:  # the file is shorter than expected
            end = file_pos
            continue
        mv.release()
        buf = buf[i:] + data
        mv = memoryview(buf)
        base += i
        i = 0


def valid_record_at(f: BinaryIO, pos: int, end: int) -> int | None:
    """Return the seq of the valid record starting at ``pos`` (ending by ``end``), else None."""
    if end - pos < HEADER_SIZE:
        return None
    f.seek(pos)
    hdr = f.read(HEADER_SIZE)
    if len(hdr) < HEADER_SIZE:
        return None
    magic, crc, n, seq = HEADER.unpack(hdr)
    if magic != MAGIC or n > MAX_PAYLOAD or pos + HEADER_SIZE + n > end:
        return None
    c = zlib.crc32(hdr[_CRC_START:])
    remaining = n
    while remaining:
        chunk = f.read(min(remaining, _READ_CHUNK))
        if not chunk:
            return None
        c = zlib.crc32(chunk, c)
        remaining -= len(chunk)
    return int(seq) if c == crc else None


def find_next_valid(f: BinaryIO, start: int, end: int) -> tuple[int, int] | None:
    """Return ``(offset, seq)`` of the first valid record starting in [start, end), if any."""
    keep = len(MAGIC) - 1
    pos = start
    while pos < end:
        f.seek(pos)
        data = f.read(min(_READ_CHUNK, end - pos))
        j = data.find(MAGIC)
        while j != -1:
            seq = valid_record_at(f, pos + j, end)
            if seq is not None:
                return pos + j, seq
            j = data.find(MAGIC, j + 1)
        if len(data) <= keep:
            return None
        pos += len(data) - keep  # re-read the last bytes: a magic may straddle the chunk border
    return None


def _read_records(
    path: str, start: int, end: int, first_seq: int, from_seq: int, last_seq: int
) -> Iterator[tuple[int, int, bytes]]:
    expected = first_seq
    bad: list[_Bad] = []
    with open(path, "rb") as f:
        for offset, seq, _, payload in _records(f, start, end, True, bad):
            if seq != expected:
                raise LogCorruptError(path, offset, expected, f"sequence gap: expected {expected}, found {seq}", seq)
            expected += 1
            if seq >= from_seq:
                yield seq, offset, payload
    if bad:
        raise LogCorruptError(path, bad[0].offset, expected, bad[0].reason)
    if expected - 1 != last_seq:
        raise LogCorruptError(path, end, expected, f"log ends early (last seq should be {last_seq})")


def _recover(path: str, write_fd: int, policy: FsyncPolicy, warn: Callable[[str], None]) -> tuple[int, int, list[int]]:
    """Validate the file, cut a torn tail; return ``(last_seq, size, index)``."""
    index: list[int] = []
    bad: list[_Bad] = []
    expected = 1
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for offset, seq, _, _ in _records(f, 0, size, False, bad):
            if seq != expected:
                raise LogCorruptError(path, offset, expected, f"sequence gap: expected {expected}, found {seq}", seq)
            if not (seq - 1) % INDEX_STRIDE:
                index.append(offset)
            expected += 1
        if not bad:
            return expected - 1, size, index
        b = bad[0]
        nxt = find_next_valid(f, b.offset + 1, size)
    if nxt is not None:
        raise LogCorruptError(
            path,
            b.offset,
            expected,
            f"{b.reason}; a valid record (seq {nxt[1]}) follows at byte offset {nxt[0]}, so this is not a torn tail",
        )
    os.ftruncate(write_fd, b.offset)
    if policy is not FsyncPolicy.NEVER:
        os.fsync(write_fd)
    warn(
        f"{path}: torn tail at byte offset {b.offset} ({b.reason}); truncated {size - b.offset} "
        f"bytes, log ends at seq {expected - 1}"
    )
    return expected - 1, b.offset, index


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileLog:
    """An append-only log of byte payloads in one file; see the module docstring.

    Create with :meth:`FileLog.open`. Not thread-safe; one writer per file.
    """

    __slots__ = ("_failed", "_file", "_index", "_last_seq", "_path", "_policy", "_size", "_synced")

    def __init__(
        self,
        path: str,
        file: BinaryIO,
        policy: FsyncPolicy,
        last_seq: int,
        size: int,
        index: list[int],
    ) -> None:
        """Internal; use :meth:`FileLog.open`."""
        self._path = path
        self._file: BinaryIO | None = file
        self._policy = policy
        self._last_seq = last_seq
        self._size = size  # bytes of valid records, written or buffered
        self._synced = size  # value of _size at the last fsync
        self._index = index
        self._failed: BaseException | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        fsync: FsyncPolicy = FsyncPolicy.BATCH,
        warn: Callable[[str], None] | None = None,
    ) -> FileLog:
        """Open (creating if missing) the log at ``path`` and recover it.

        A torn tail is truncated and reported through ``warn`` (default: a ``logging``
        warning). Mid-log damage or a sequence gap raises :class:`LogCorruptError`.
        """
        p = os.fspath(path)
        created = not os.path.exists(p)
        try:
            f = io.BufferedWriter(_open_append(p), _WRITE_BUFFER)
        except OSError as exc:
            full = disk_full(exc, p)
            if full is exc:
                raise
            raise full from exc
        try:
            if created and fsync is not FsyncPolicy.NEVER:
                _fsync_dir(p)
            last_seq, size, index = _recover(p, f.fileno(), fsync, warn or _log.warning)
        except BaseException:
            f.close()
            raise
        return cls(p, f, fsync, last_seq, size, index)

    @property
    def path(self) -> str:
        return self._path

    @property
    def fsync_policy(self) -> FsyncPolicy:
        return self._policy

    @property
    def last_seq(self) -> int:
        """Seq of the last appended record; 0 when the log is empty."""
        return self._last_seq

    @property
    def size(self) -> int:
        """Bytes of valid records, including ones still in the write buffer."""
        return self._size

    @property
    def closed(self) -> bool:
        return self._file is None

    def _unusable(self) -> LogError | ValueError:
        if self._failed is not None:
            err = LogError(
                f"{self._path}: log unusable after an earlier I/O error ({self._failed}); reopen it to recover"
            )
            err.__cause__ = self._failed
            return err
        return ValueError(f"{self._path}: I/O operation on a closed log")

    @property
    def failed(self) -> BaseException | None:
        """The I/O error that made the log unusable, if any."""
        return self._failed

    def _fail(self, exc: BaseException) -> NoReturn:
        """After a failed write/flush/fsync the on-disk state is unknown: refuse further use,
        and raise the error (a full disk as ``DiskFull`` naming the file)."""
        full = disk_full(exc, self._path)
        self._failed = full
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(Exception):  # already failing; the first error matters
                f.close()
        if full is exc:
            raise exc
        raise full from exc

    def append(self, payload: bytes) -> int:
        """Append one record; return its seq."""
        f = self._file
        if f is None:
            raise self._unusable()
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise ValueError(f"payload of {n} bytes exceeds MAX_PAYLOAD ({MAX_PAYLOAD})")
        seq = self._last_seq + 1
        ls = _LEN_SEQ.pack(n, seq)
        record = b"".join((MAGIC, _U32.pack(zlib.crc32(payload, zlib.crc32(ls))), ls, payload))
        size = self._size + len(record)
        try:
            f.write(record)
            if self._policy is FsyncPolicy.ALWAYS:
                f.flush()
                _sync_fd(f.fileno())
                self._synced = size
        except BaseException as exc:
            self._fail(exc)
        if not (seq - 1) % INDEX_STRIDE:
            self._index.append(self._size)
        self._size = size
        self._last_seq = seq
        return seq

    def append_many(self, payloads: Iterable[bytes]) -> int:
        """Append records with one ``write()``; return the last seq (``last_seq`` if empty)."""
        f = self._file
        if f is None:
            raise self._unusable()
        pack_ls = _LEN_SEQ.pack
        pack_u32 = _U32.pack
        crc32 = zlib.crc32
        seq = self._last_seq
        size = self._size
        parts: list[bytes] = []
        new_index: list[int] = []
        for payload in payloads:
            n = len(payload)
            if n > MAX_PAYLOAD:
                raise ValueError(f"payload of {n} bytes exceeds MAX_PAYLOAD ({MAX_PAYLOAD})")
            seq += 1
            ls = pack_ls(n, seq)
            parts += (MAGIC, pack_u32(crc32(payload, crc32(ls))), ls, payload)
            if not (seq - 1) % INDEX_STRIDE:
                new_index.append(size)
            size += HEADER_SIZE + n
        if seq == self._last_seq:
            return seq
        try:
            f.write(b"".join(parts))
            if self._policy is FsyncPolicy.ALWAYS:
                f.flush()
                _sync_fd(f.fileno())
                self._synced = size
        except BaseException as exc:
            self._fail(exc)
        self._index += new_index
        self._size = size
        self._last_seq = seq
        return seq

    def flush(self) -> None:
        """Hand buffered records to the OS and, unless the policy is NEVER, fdatasync."""
        f = self._file
        if f is None:
            raise self._unusable()
        try:
            f.flush()
            if self._policy is not FsyncPolicy.NEVER and self._synced != self._size:
                _sync_fd(f.fileno())
                self._synced = self._size
        except BaseException as exc:
            self._fail(exc)

    def close(self) -> None:
        """Flush (and fsync per policy) and close. Idempotent."""
        if self._file is None:
            return
        try:
            self.flush()
        finally:
            f, self._file = self._file, None
            if f is not None:
                f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def read(self, from_seq: int = 1) -> Iterator[tuple[int, bytes]]:
        """Return an iterator of ``(seq, payload)`` for seqs ``from_seq .. last_seq``.

        Buffered appends are handed to the OS first (no fsync), so every record appended
        before this call is included; records appended later are not. Checksums and seqs are
        verified; damage raises :class:`LogCorruptError` when the iterator reaches it.
        """
        return ((seq, payload) for seq, _, payload in self.records(from_seq))

    def records(self, from_seq: int = 1) -> Iterator[tuple[int, int, bytes]]:
        """Like :meth:`read`, with each record's byte offset: ``(seq, offset, payload)``."""
        f = self._file
        if f is None:
            raise self._unusable()
        if from_seq < 1:
            raise ValueError(f"from_seq must be >= 1, got {from_seq}")
        try:
            f.flush()
        except BaseException as exc:
            self._fail(exc)
        last = self._last_seq
        if from_seq > last:
            return iter(())
        k = (from_seq - 1) // INDEX_STRIDE
        return _read_records(self._path, self._index[k], self._size, k * INDEX_STRIDE + 1, from_seq, last)

    def __repr__(self) -> str:
        state = "closed" if self._file is None else "open"
        return f"<FileLog {self._path!r} {state} last_seq={self._last_seq} fsync={self._policy.name}>"


def scan(path: str | os.PathLike[str]) -> ScanReport:
    """Audit the log at ``path`` without modifying it.

    Every checksum failure (with the offset and the seq expected there), every sequence gap
    and a torn tail are reported in ``errors``; after a damaged record the scan resumes at the
    next valid record.
    """
    p = os.fspath(path)
    report = ScanReport()
    with open(p, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        report.total_bytes = total
        pos = 0
        expected = 1
        while True:
            bad: list[_Bad] = []
            for offset, seq, rec_end, _ in _records(f, pos, total, False, bad):
                if seq != expected:
                    report.errors.append(f"byte offset {offset}: sequence gap: expected seq {expected}, found {seq}")
                report.records += 1
                report.good_bytes += rec_end - offset
                report.last_seq = seq
                expected = seq + 1
            if not bad:
                break
            b = bad[0]
            nxt = find_next_valid(f, b.offset + 1, total)
            if nxt is None:
                report.torn_tail_bytes = total - b.offset
                report.errors.append(
                    f"byte offset {b.offset}: torn tail of {total - b.offset} bytes "
                    f"(expected seq {expected}): {b.reason}"
                )
                break
            nxt_offset, nxt_seq = nxt
            if nxt_seq > expected:
                lost = f"seqs {expected}..{nxt_seq - 1} unreadable"
            elif nxt_seq == expected:
                lost = "no seq missing"
            else:
                lost = f"sequence goes back from expected {expected} to {nxt_seq}"
            report.errors.append(
                f"byte offset {b.offset}: corrupt record (expected seq {expected}): {b.reason}; "
                f"{nxt_offset - b.offset} bytes skipped to the next valid record at byte offset "
                f"{nxt_offset} (seq {nxt_seq}); {lost}"
            )
            pos = nxt_offset
            expected = nxt_seq
    return report


def truncate_after(path: str | os.PathLike[str], last_seq: int, warn: Callable[[str], None] | None = None) -> int:
    """Cut every record after ``last_seq`` from a log that is not open; return bytes cut.

    Used by recovery when a derived log (outcomes) got ahead of the log it derives from
    (commands) in a crash: the orphan records describe commands that were never accepted.
    """
    end = 0
    with FileLog.open(path, fsync=FsyncPolicy.NEVER, warn=warn) as log:
        if log.last_seq <= last_seq:
            return 0
        for seq, payload in log.read():
            if seq > last_seq:
                break
            end += HEADER_SIZE + len(payload)
        total = log.size
    os.truncate(path, end)
    return total - end


def valid_prefix(path: str | os.PathLike[str], up_to_seq: int) -> tuple[int, int]:
    """``(end offset, last seq)`` of the records ``1, 2, …`` (at most ``up_to_seq``) that are
    valid and in order from the start of the file; read-only."""
    end = last = 0
    bad: list[_Bad] = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for _, seq, rec_end, _ in _records(f, 0, size, False, bad):
            if seq != last + 1 or seq > up_to_seq:
                break
            end, last = rec_end, seq
    return end, last
