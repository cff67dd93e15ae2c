"""How outcomes travel in events records: packed by count and by bytes, split when too large.

The engine writes its journal to the events topic as records of JSON lines (one outcome per
line, ``events.codec.encode_outcome_json``), each record with the headers

* ``first-seq``, ``last-seq`` — the sequence numbers of its first and last outcome;
* ``input-offsets`` — ``first-last``, the command offsets those outcomes come from;
* ``fragment`` — only on a record holding a *piece* of one outcome: ``i/n`` (1-based).

**Packing** (:class:`Packer`): consecutive outcomes share a record up to ``max_count`` lines and
``max_bytes`` bytes of value (lines joined by ``\\n``), so no record exceeds the broker's
``max.message.bytes`` (the engine's ``--record-max-bytes``, default 1,000,000, below Kafka's
default 1,048,588 with room for headers and batch framing).

**Fragments**: an outcome longer than ``max_bytes`` (a mark that liquidates thousands of
accounts) is cut into ``n = ceil(len / max_bytes)`` consecutive records, each with the outcome's
seq as ``first-seq`` and ``last-seq`` and ``fragment: i/n``; nothing else shares those records.
All fragments go into the same transaction, so a ``read_committed`` reader sees all or none.

**Reading** (:class:`Reassembler`): every reader of the events topic (the journal reader, the
projection, the audit and export source, the benchmarks and test helpers) feeds records in
offset order and gets back the value of each complete record — a fragmented outcome once its
last fragment arrived. A fragment out of order, a missing one, one that does not belong to the
open outcome, or a plain record while an outcome is incomplete raises :class:`FragmentError`
naming the record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

#: Outcomes in one events record at most.
OUTCOMES_PER_RECORD: Final = 256
#: Default value bytes of one events record at most (``--record-max-bytes``).
RECORD_MAX_BYTES: Final = 1_000_000

Headers = list[tuple[str, bytes]]


class FragmentError(ValueError):
    """The fragments of an outcome are missing, repeated or out of order.

    ``value`` is the complete value of the record that revealed the problem, when it has one
    (a whole record after an incomplete outcome): a tolerant reader reports the error and still
    reads that record."""

    def __init__(self, message: str, value: bytes | None = None) -> None:
        super().__init__(message)
        self.value = value


@dataclass(frozen=True, slots=True)
class EventsRecord:
    """One record to send: its value and headers, and the seqs and offsets it covers."""

    value: bytes
    headers: Headers
    first_seq: int
    last_seq: int


def _headers(first_seq: int, last_seq: int, first_offset: int, last_offset: int) -> Headers:
    return [
        ("first-seq", str(first_seq).encode()),
        ("last-seq", str(last_seq).encode()),
        ("input-offsets", f"{first_offset}-{last_offset}".encode()),
    ]


@dataclass
class Packer:
    """Collects outcome lines in seq order and cuts them into :class:`EventsRecord` s."""

    max_bytes: int = RECORD_MAX_BYTES
    max_count: int = OUTCOMES_PER_RECORD
    #: Outcomes split into fragments so far.
    fragmented: int = 0
    _lines: list[bytes] = field(default_factory=list)
    _size: int = 0
    _first_seq: int = 0
    _first_offset: int = 0
    _last_offset: int = 0

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_count < 1:
            raise ValueError("max_bytes and max_count must be positive")

    def add(self, line: bytes, seq: int, offset: int) -> list[EventsRecord]:
        """Add the outcome ``line`` of ``seq`` (from command ``offset``); return the records
        completed by it (possibly none)."""
        done: list[EventsRecord] = []
        if len(line) > self.max_bytes:
            done += self.flush()
            done += self._fragments(line, seq, offset)
            return done
        if self._lines and (len(self._lines) >= self.max_count or self._size + 1 + len(line) > self.max_bytes):
            done += self.flush()
        if not self._lines:
            self._first_seq, self._first_offset, self._size = seq, offset, len(line)
        else:
            self._size += 1 + len(line)
        self._lines.append(line)
        self._last_offset = offset
        return done

    def flush(self) -> list[EventsRecord]:
        """The pending lines as one record (none if nothing is pending)."""
        if not self._lines:
            return []
        last_seq = self._first_seq + len(self._lines) - 1
        record = EventsRecord(
            b"\n".join(self._lines),
            _headers(self._first_seq, last_seq, self._first_offset, self._last_offset),
            self._first_seq,
            last_seq,
        )
        self._lines, self._size = [], 0
        return [record]

    def _fragments(self, line: bytes, seq: int, offset: int) -> list[EventsRecord]:
        self.fragmented += 1
        size = self.max_bytes
        count = -(-len(line) // size)
        return [
            EventsRecord(
                line[i * size : (i + 1) * size],
                [*_headers(seq, seq, offset, offset), ("fragment", f"{i + 1}/{count}".encode())],
                seq,
                seq,
            )
            for i in range(count)
        ]


def header(headers: Iterable[tuple[str, bytes]] | None, name: str) -> str | None:
    """The value of header ``name`` as text (``None`` if absent)."""
    for key, value in headers or ():
        if key == name:
            return value.decode("ascii", "replace")
    return None


def _fragment_of(text: str, where: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise FragmentError(f"{where}: malformed fragment header {text!r}")
    return int(index), int(count)


@dataclass
class Reassembler:
    """Turns events records, fed in offset order, into complete record values."""

    _parts: list[bytes] = field(default_factory=list)
    _seq: str | None = None
    _count: int = 0
    _where: str = ""

    @property
    def pending(self) -> bool:
        """An outcome is incomplete: some of its fragments have arrived, not all."""
        return self._seq is not None

    def describe_pending(self) -> str:
        return f"outcome of seq {self._seq} from {self._where}: {len(self._parts)} of {self._count} fragments"

    def reset(self) -> None:
        self._parts, self._seq, self._count, self._where = [], None, 0, ""

    def feed(self, value: bytes | None, headers: Iterable[tuple[str, bytes]] | None, where: str) -> bytes | None:
        """The value of a complete record, or ``None`` while a fragmented outcome is incomplete.

        Raises :class:`FragmentError` when the record cannot follow the ones fed before it; the
        incomplete outcome is dropped and the record is taken as the start of what follows, so
        a tolerant reader can report the error and carry on."""
        headers = list(headers or ())
        fragment = header(headers, "fragment")
        if fragment is None:
            if self._seq is not None:
                missing = self.describe_pending()
                self.reset()
                raise FragmentError(f"{where}: a whole record where fragments were expected ({missing})", value)
            return value
        index, count = _fragment_of(fragment, where)
        seq = header(headers, "first-seq")
        if self._seq is None:
            if index != 1:
                raise FragmentError(f"{where}: fragment {index}/{count} of seq {seq} without fragments 1..{index - 1}")
            self._seq, self._count, self._where = seq, count, where
        elif (seq, count, index) != (self._seq, self._count, len(self._parts) + 1):
            expected = f"fragment {len(self._parts) + 1}/{self._count} of seq {self._seq}"
            self.reset()
            if index == 1:  # the start of the next outcome: keep it
                self._seq, self._count, self._where, self._parts = seq, count, where, [value or b""]
            raise FragmentError(f"{where}: fragment {index}/{count} of seq {seq} where {expected} was expected")
        self._parts.append(value or b"")
        if index < count:
            return None
        joined = b"".join(self._parts)
        self.reset()
        return joined
