"""Read a file log (``engine.io.filelog`` record format) *past* damage, without modifying it.

:meth:`engine.io.filelog.FileLog.open` refuses a log with mid-log damage and cuts a torn tail,
so an audit cannot use it: it must read every record it can, say exactly where each damaged
stretch is, and never change a byte. :func:`read_log` yields, in file order, every record whose
checksum is valid (:class:`Record`) and, in between, one :class:`Damage` per stretch of bytes
that is not a valid record (bad magic, implausible length, checksum mismatch, truncation). After
a damaged stretch it resumes at the next valid record, found by searching for the magic and
checking the whole record; like :func:`engine.io.filelog.scan`, which it complements (``scan``
reports, this also yields the payloads).

Sequence numbers are *not* checked here: the caller knows which seq it expects
(:class:`SeqCursor` does it for the audit).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from engine.io.filelog import HEADER, HEADER_SIZE, MAGIC, MAX_PAYLOAD, find_next_valid

__all__ = ["Damage", "Record", "SeqCursor", "first_seq", "read_log"]

_CHUNK: Final = 1 << 20
_CRC_START: Final = 8


@dataclass(frozen=True, slots=True)
class Record:
    """A checksum-valid record: its ``seq``, byte ``offset`` in the file and ``payload``."""

    seq: int
    offset: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes ``[offset, resume_offset)`` of ``path`` hold no valid record.

    ``resume_offset``/``resume_seq``: the next valid record, or ``None`` when the damage runs to
    the end of the file (a torn tail, as an interrupted write leaves).
    """

    path: str
    offset: int
    reason: str
    resume_offset: int | None
    resume_seq: int | None
    file_size: int
    #: The first bytes at ``offset`` (up to 4): an interrupted write leaves a record's magic, or zeros.
    head: bytes = b""

    @property
    def torn_tail(self) -> bool:
        return self.resume_offset is None

    @property
    def length(self) -> int:
        end = self.file_size if self.resume_offset is None else self.resume_offset
        return end - self.offset

    def describe(self) -> str:
        name = os.path.basename(self.path)
        if self.resume_offset is None:
            if self.offset == 0 and not MAGIC.startswith(self.head) and self.head.strip(b"\0"):
                return f"{name} byte offset 0: not a marginbook log: no valid record in its {self.length} byte(s)"
            return (
                f"{name} byte offset {self.offset}: torn tail of {self.length} byte(s): {self.reason} (an interrupted "
                f"write leaves one: `marginbook recover {os.path.dirname(self.path) or '.'}` cuts it)"
            )
        return (
            f"{name} byte offset {self.offset}: {self.reason}; {self.length} byte(s) unreadable up to the next "
            f"valid record (seq {self.resume_seq}) at byte offset {self.resume_offset}"
        )


def read_log(path: str | os.PathLike[str], limit: int | None = None) -> Iterator[Record | Damage]:
    """Every valid record of the log at ``path`` in file order, and a :class:`Damage` for each
    stretch in between that is not one. Read-only. ``limit``: read only the first ``limit``
    bytes (the file's size when a reader started, while a writer may still be appending)."""
    p = os.fspath(path)
    hs = HEADER_SIZE
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None:
            size = min(size, limit)
        base = 0  # file offset of buf[0]
        buf = b""
        view = memoryview(buf)  # checksums without copying
        i = 0
        while True:
            bad: str | None = None
            avail = len(buf) - i
            need = hs
            if avail >= hs:
                magic, crc, n, seq = unpack(buf, i)
                if magic != MAGIC:
                    bad = f"bad magic {bytes(magic)!r}"
                elif n > MAX_PAYLOAD:
                    bad = f"implausible payload length {n}"
                else:
                    need = hs + n
                    end = i + need
                    if end <= len(buf):
                        if crc32(view[i + _CRC_START : end]) != crc:
                            bad = f"checksum mismatch (record claims seq {seq})"
                        else:
                            yield Record(seq, base + i, buf[i + hs : end])
                            i = end
                            continue
                    elif base + i + hs + n > size:
                        bad = f"truncated payload ({size - base - i - hs} of {n} bytes)"
            elif base + len(buf) >= size:
                if avail == 0:
                    return
                bad = f"truncated header ({avail} of {hs} bytes)"
            if bad is None:  # need more bytes
                f.seek(base + len(buf))
                data = f.read(max(0, min(max(_CHUNK, need), size - base - len(buf))))
                if not data:  # the file shrank under us: what is left is a torn tail
                    size = base + len(buf)
                    continue
                view.release()
                buf = buf[i:] + data
                view = memoryview(buf)
                base += i
                i = 0
                continue
            at = base + i
            head = bytes(buf[i : i + len(MAGIC)])
            found = find_next_valid(f, at + 1, size)
            if found is None:
                yield Damage(p, at, bad, None, None, size, head)
                return
            yield Damage(p, at, bad, found[0], found[1], size, head)
            f.seek(found[0])
            view.release()
            base, buf, i = found[0], b"", 0
            view = memoryview(buf)


def first_seq(path: str | os.PathLike[str]) -> int | None:
    """Seq of the first valid record of the log (None if it has none)."""
    for item in read_log(path):
        if isinstance(item, Record):
            return item.seq
    return None


class SeqCursor:
    """Hands out the records of one log by sequence number, in increasing order.

    :meth:`take` ``(seq)`` returns the record of ``seq``, or ``None`` when the log has no readable
    record for it. Each physical anomaly met on the way is passed once to
    ``problem(seq, where, message)``: a damaged stretch (at the first seq it hides), a sequence
    gap, a record out of order or repeated. ``where`` names the file and byte offset.

    ``limit``: bytes of the file to read (see :func:`read_log`). ``forgive_torn_tail``: a torn
    tail is not a problem but the record a live writer is still writing; it is kept in
    ``forgiven`` instead.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        problem: Callable[[int, str, str], None],
        limit: int | None = None,
        forgive_torn_tail: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.name = os.path.basename(self.path)
        exists = os.path.exists(self.path)
        self._items: Iterator[Record | Damage] = read_log(self.path, limit) if exists else iter(())
        self._forgive = forgive_torn_tail
        self.forgiven: list[Damage] = []
        self._done = False
        self._held: Record | None = None
        self._last_seen = 0
        self._pending: list[Damage] = []
        self._problem = problem
        #: Why the held record's predecessors are missing (set once the anomaly is reported).
        self._cause: str | None = None
        self.damage: list[Damage] = []
        self.records = 0

    def _pull(self) -> Record | None:
        for item in self._items:
            if isinstance(item, Damage):
                if item.torn_tail and self._forgive:
                    self.forgiven.append(item)
                    continue
                self._pending.append(item)
                self.damage.append(item)
                continue
            self.records += 1
            self._last_seen = max(self._last_seen, item.seq)
            return item
        self._done = True
        return None

    @property
    def at_end(self) -> bool:
        """True once every record has been handed out (or reported out of order)."""
        return self._done and self._held is None

    def _report_damage(self, seq: int) -> bool:
        for damage in self._pending:
            self._problem(seq, f"{self.name} byte offset {damage.offset}", damage.describe())
        reported = bool(self._pending)
        self._pending.clear()
        return reported

    def take(self, seq: int) -> Record | None:
        while True:
            record = self._held if self._held is not None else self._pull()
            self._held = None
            if record is None:
                self._report_damage(seq)
                return None
            if record.seq < seq:
                self._report_damage(record.seq)
                self._cause = None
                self._problem(
                    record.seq,
                    f"{self.name} byte offset {record.offset}",
                    f"{self.name} byte offset {record.offset}: record of seq {record.seq} out of order "
                    f"(repeated, or after seq {seq - 1})",
                )
                continue
            if record.seq == seq:
                self._report_damage(seq)
                self._cause = None
                return record
            self._held = record
            if self._report_damage(seq):
                self._cause = "damaged"
            elif self._cause is None:
                self._cause = "gap"
                self._problem(
                    seq,
                    f"{self.name} byte offset {record.offset}",
                    f"{self.name} byte offset {record.offset}: sequence gap: expected seq {seq}, found {record.seq}",
                )
            return None

    def rest(self) -> Iterator[Record]:
        """The records not taken yet (damage is still reported, at the seq that follows it)."""
        while True:
            record = self._held if self._held is not None else self._pull()
            self._held = None
            if record is None:
                self._report_damage(self._last_seen + 1)
                return
            self._report_damage(record.seq)
            yield record
