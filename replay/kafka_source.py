"""Read a range of a Kafka shard as (command, recorded outcome) pairs, for the audit and export.

Topics (``engine.io.kafka.loop``): partition ``shard`` of the commands topic holds one command
JSON per record; the engine gives each *decodable* command the next sequence number (an
undecodable one is dead-lettered and gets none), and writes the outcomes to the events topic as
records of JSON lines joined by ``\\n``, with headers ``first-seq``, ``last-seq`` and
``input-offsets`` (``first-last`` command offsets the record reflects); an outcome too large for
one record is split across consecutive records marked ``fragment: i/n``
(``engine.io.kafka.framing``), reassembled here. Everything is read ``read_committed``.

A range is ``[from_offset, to_offset)`` of the commands topic (``to_offset`` exclusive; default:
the end). To know the state and the seq at ``from_offset``, the reader starts at the newest
snapshot (snapshots topic) taken at or before it — or at offset 0 — and steps the commands in
between (``warm`` items, not checked). The events topic is read from its start: the lines before
the range are handed to ``on_prefix`` (for the digest chain) without being decoded.

Every anomaly is reported to ``problem(seq, where, message)`` with its topic, partition and offset
(``P.events[0]@17 line 3``): a gap or a repeat in the sequence numbers, header counts that do not
match the lines, a command offset outside the record's ``input-offsets``, fragments of an outcome
that are missing or out of order (the incomplete outcome counts as missing).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from engine.core import snapshot
from engine.core.state import State
from engine.io.kafka.config import Topics
from engine.io.kafka.framing import FragmentError, Reassembler
from engine.io.kafka.records import SnapshotRecord, decode_snapshot_record
from events.codec import BadCommand, decode_command_json
from events.commands import Command
from replay.audit import Auditor, AuditReport
from replay.chain import Chain

__all__ = ["Item", "KafkaRange", "KafkaSourceError", "Line", "Problem", "audit_kafka", "topics_for"]

Problem = Callable[[int, str, str], None]


class KafkaSourceError(RuntimeError):
    """The topics to read are missing or unreadable."""


class _Seq(msgspec.Struct):
    seq: int = -1


_seq_decoder = msgspec.json.Decoder(_Seq)


@dataclass(frozen=True, slots=True)
class Line:
    """One recorded outcome: its seq, bytes, and where it is."""

    seq: int
    data: bytes
    where: str
    #: The record's ``input-offsets`` header, or None when it has none.
    inputs: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class Item:
    """One decodable command of the range and its recorded outcome (None if none was read)."""

    seq: int
    offset: int
    raw: bytes
    command: Command
    where: str
    line: Line | None
    #: True for commands before ``from_offset``: stepped to rebuild the state, not checked.
    warm: bool


def _consumer(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=32 << 20,
        fetch_max_bytes=64 << 20,
    )


class _Stream:
    """Records of one partition in ``[start, end)``, fetched in batches."""

    def __init__(self, consumer: AIOKafkaConsumer, tp: TopicPartition, end: int, idle_polls: int = 100) -> None:
        self.consumer = consumer
        self.tp = tp
        self.end = end
        self.idle_polls = idle_polls
        self._buffer: list[ConsumerRecord[bytes, bytes]] = []
        self._i = 0

    async def next(self) -> ConsumerRecord[bytes, bytes] | None:
        idle = 0
        while self._i >= len(self._buffer):
            if await self.consumer.position(self.tp) >= self.end:
                return None
            batch = await self.consumer.getmany(self.tp, timeout_ms=200, max_records=10_000)
            records = [r for r in batch.get(self.tp, []) if r.offset < self.end]
            if not records:
                idle += 1
                if idle > self.idle_polls:
                    raise TimeoutError(f"{self.tp.topic}[{self.tp.partition}]: no record before offset {self.end}")
                continue
            self._buffer, self._i = records, 0
        record = self._buffer[self._i]
        self._i += 1
        return record


def _line_seq(line: bytes) -> int:
    try:
        return _seq_decoder.decode(line).seq
    except msgspec.DecodeError:
        return -1


def _header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return str(value.decode("ascii", "replace"))
    return None


def _value(record: ConsumerRecord[bytes, bytes], fragments: Reassembler, where: str, problem: Problem) -> bytes | None:
    """The complete value of an events record (``None`` while fragments are pending); broken
    fragments are reported and dropped."""
    try:
        return fragments.feed(record.value, record.headers, where)
    except FragmentError as err:
        problem(0, where, str(err))
        return err.value


class _Lines:
    """The events topic as outcome lines, handed out by seq (like ``replay.tolerant.SeqCursor``)."""

    def __init__(
        self, stream: _Stream, problem: Problem, on_prefix: Callable[[int, bytes], None] | None, start_seq: int
    ) -> None:
        self.stream = stream
        self.problem = problem
        self.on_prefix = on_prefix
        self.start_seq = start_seq
        self.topic = f"{stream.tp.topic}[{stream.tp.partition}]"
        self._pending: deque[Line] = deque()
        self._held: Line | None = None
        self._last = 0  # last seq handed out or skipped
        self._done = False
        self._fragments = Reassembler()

    async def _refill(self) -> bool:
        record = await self.stream.next()
        if record is None:
            if self._fragments.pending:
                where = f"{self.topic}: end"
                self.problem(0, where, f"{where}: the topic ends inside an {self._fragments.describe_pending()}")
            self._done = True
            return False
        where = f"{self.topic}@{record.offset}"
        complete = _value(record, self._fragments, where, self.problem)
        if complete is None:
            return True
        value = complete
        lines = value.split(b"\n") if value else []
        first, last, inputs = (
            _header(record, "first-seq"),
            _header(record, "last-seq"),
            _header(record, "input-offsets"),
        )
        span: tuple[int, int] | None = None
        if inputs is not None and "-" in inputs:
            a, _, b = inputs.partition("-")
            span = (int(a), int(b)) if a.isdigit() and b.isdigit() else None
        seqs: list[int] | None = None
        if first is not None and first.isdigit() and last is not None and last.isdigit():
            first_seq, last_seq = int(first), int(last)
            if last_seq - first_seq + 1 == len(lines):
                if last_seq < self.start_seq and self.on_prefix is None:
                    self._last = max(self._last, last_seq)
                    return True  # before the range and nothing to chain: skip without decoding
                seqs = list(range(first_seq, last_seq + 1))
            else:
                self.problem(
                    first_seq,
                    where,
                    f"{where}: headers say seqs {first_seq}..{last_seq} but the record holds {len(lines)} line(s)",
                )
        else:
            self.problem(0, where, f"{where}: events record without first-seq/last-seq headers")
        if seqs is None:  # the headers cannot be trusted: read each line's own seq
            seqs = [_line_seq(line) for line in lines]
        for index, (seq, data) in enumerate(zip(seqs, lines, strict=True)):
            self._pending.append(Line(seq, data, f"{where} line {index}", span))
        return True

    async def _pull(self) -> Line | None:
        while not self._pending:
            if self._done or not await self._refill():
                return None
        return self._pending.popleft()

    @property
    def at_end(self) -> bool:
        return self._done and not self._pending and self._held is None

    async def take(self, seq: int) -> Line | None:
        """The recorded outcome of ``seq`` (None if missing); lines before it are skipped —
        handed to ``on_prefix`` when below the range — and anomalies reported."""
        while True:
            line = self._held if self._held is not None else await self._pull()
            self._held = None
            if line is None:
                return None
            if line.seq <= self._last:
                self.problem(line.seq, line.where, f"{line.where}: seq {line.seq} repeated (after seq {self._last})")
                continue
            if line.seq > self._last + 1 and self._last + 1 >= self.start_seq:
                self.problem(
                    self._last + 1,
                    line.where,
                    f"{line.where}: sequence gap: expected seq {self._last + 1}, found {line.seq}",
                )
            if line.seq < seq:
                if line.seq < self.start_seq and self.on_prefix is not None:
                    self.on_prefix(line.seq, line.data)
                self._last = line.seq
                continue
            if line.seq == seq:
                self._last = seq
                return line
            self._held = line
            self._last = seq  # seq is missing; do not report the same gap again
            return None


async def _snapshots(bootstrap: str, topic: str, shard: int) -> list[SnapshotRecord]:
    reader = _consumer(bootstrap)
    await reader.start()
    found: list[SnapshotRecord] = []
    try:
        tp = TopicPartition(topic, shard)
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        end = (await reader.end_offsets([tp]))[tp]
        stream = _Stream(reader, tp, end)
        while (record := await stream.next()) is not None:
            if record.value is not None:
                found.append(decode_snapshot_record(record.value))
    finally:
        await reader.stop()
    return found


class KafkaRange:
    """A commands-topic range of one shard, paired with its recorded outcomes (module doc)."""

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        shard: int = 0,
        from_offset: int = 0,
        to_offset: int | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.shard = shard
        self.from_offset = from_offset
        self.to_offset = to_offset
        #: Filled by :meth:`open`.
        self.state: State | None = None
        #: Seq of the snapshot the range starts from (0: from the empty state at offset 0).
        self.snapshot_seq = 0
        self.start_offset = 0
        self.end_offset = 0
        self.snapshots: dict[int, bytes] = {}
        self.dead_letters: list[int] = []
        #: Commands after the last journaled outcome (the engine has not committed them yet).
        self.pending = 0
        self.pending_from: int | None = None

    def where(self, offset: int) -> str:
        return f"{self.topics.commands}[{self.shard}]@{offset}"

    async def open(self) -> None:
        """Check the topics, pick the starting snapshot and the end offset."""
        probe = _consumer(self.bootstrap)
        await probe.start()
        try:
            existing = await probe.topics()
            for name in (self.topics.commands, self.topics.events):
                if name not in existing:
                    raise KafkaSourceError(f"topic {name} does not exist on {self.bootstrap}")
            tp = TopicPartition(self.topics.commands, self.shard)
            end = (await probe.end_offsets([tp]))[tp]
            with_snapshots = self.topics.snapshots in existing
        finally:
            await probe.stop()
        self.end_offset = end if self.to_offset is None else min(end, self.to_offset)
        records = await _snapshots(self.bootstrap, self.topics.snapshots, self.shard) if with_snapshots else []
        usable = [r for r in records if r.next_offset <= self.from_offset and r.shard == self.shard]
        if usable:
            best = max(usable, key=lambda r: r.next_offset)
            self.state = snapshot.restore(best.state)
            self.start_offset = best.next_offset
            self.snapshot_seq = best.seq
        self.snapshots = {r.seq: r.state for r in records}

    async def items(
        self, problem: Problem, on_prefix: Callable[[int, bytes], None] | None = None
    ) -> AsyncIterator[Item]:
        """Every decodable command of ``[start_offset, end_offset)`` with its recorded outcome.

        Stops early (after the last item with an outcome) when the events topic ends: the
        remaining commands are not journaled yet (``pending``).
        """
        seq = self.state.last_seq if self.state is not None else 0
        commands_tp = TopicPartition(self.topics.commands, self.shard)
        events_tp = TopicPartition(self.topics.events, self.shard)
        commands, events = _consumer(self.bootstrap), _consumer(self.bootstrap)
        await commands.start()
        await events.start()
        try:
            commands.assign([commands_tp])
            commands.seek(commands_tp, self.start_offset)
            events.assign([events_tp])
            await events.seek_to_beginning(events_tp)
            events_end = (await events.end_offsets([events_tp]))[events_tp]
            command_stream = _Stream(commands, commands_tp, self.end_offset)
            lines = _Lines(_Stream(events, events_tp, events_end), problem, on_prefix, seq + 1)
            while (record := await command_stream.next()) is not None:
                raw = record.value or b""
                try:
                    command = decode_command_json(raw)
                except BadCommand:
                    self.dead_letters.append(record.offset)
                    continue
                seq += 1
                where = self.where(record.offset)
                line = None if lines.at_end else await lines.take(seq)
                if line is None and lines.at_end:
                    if self.pending_from is None:
                        self.pending_from = record.offset
                    self.pending += 1
                    continue
                if (
                    line is not None
                    and line.inputs is not None
                    and not line.inputs[0] <= record.offset <= line.inputs[1]
                ):
                    problem(
                        seq,
                        line.where,
                        f"{line.where}: outcome of seq {seq} comes from {where}, outside the record's input-offsets "
                        f"{line.inputs[0]}-{line.inputs[1]}",
                    )
                yield Item(seq, record.offset, raw, command, where, line, record.offset < self.from_offset)
        finally:
            await commands.stop()
            await events.stop()


def topics_for(prefix: str) -> Topics:
    """The topic names ``marginbook topics --topic-prefix P`` creates."""
    return Topics(
        commands=f"{prefix}.commands",
        events=f"{prefix}.events",
        snapshots=f"{prefix}.snapshots",
        risk=f"{prefix}.risk",
        alerts=f"{prefix}.alerts",
        dlq=f"{prefix}.commands.dlq",
    )


def bootstrap_or_env(value: str | None) -> str | None:
    return value or os.environ.get("KAFKA_BOOTSTRAP")


def _const(data: bytes) -> Callable[[], bytes]:
    return lambda: data


async def audit_kafka(
    bootstrap: str,
    topics: Topics,
    shard: int = 0,
    from_offset: int = 0,
    to_offset: int | None = None,
    chain_every: int = 0,
    on_chain: Callable[[int, bytes], None] | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int, int], None] | None = None,
) -> AuditReport:
    """Audit ``[from_offset, to_offset)`` of a shard's commands topic against its events topic.

    The digest chain runs over the recorded outcome lines from seq 1 (the events topic is read
    from its start), so it equals the chain of the same history in a file log.
    """
    started = time.perf_counter()
    source = KafkaRange(bootstrap, topics, shard, from_offset, to_offset)
    await source.open()
    if on_total is not None:
        on_total(source.start_offset, source.end_offset)
    report = AuditReport(source=f"{topics.commands}[{shard}] offsets {from_offset}..{source.end_offset}")
    chain: Chain | None = Chain(chain_every, on_chain)
    start_seq = (source.state.last_seq if source.state is not None else 0) + 1
    snapshots: dict[int, Callable[[], bytes]] = {
        seq: _const(data) for seq, data in source.snapshots.items() if seq >= start_seq
    }
    auditor = Auditor(report, source.state, None, snapshots, None)

    def prefix(seq: int, data: bytes) -> None:
        nonlocal chain
        if chain is None:
            return
        if seq != chain.seq + 1:
            report.chain_note = f"no chain: the events topic has no outcome for seq {chain.seq + 1}"
            chain = None
            return
        chain.update(seq, data)

    def problem(seq: int, where: str, message: str) -> None:
        kind = "gap" if "gap" in message else "order" if "repeated" in message else "kafka"
        report.add(seq, kind, where, message)

    first_checked: int | None = None
    async for item in source.items(problem, prefix):
        line = item.line
        if line is not None:
            prefix(item.seq, line.data)
        elif chain is not None:
            report.chain_note = f"no chain past seq {chain.seq}: the outcome of seq {item.seq} is missing"
            chain = None
        if item.warm:
            auditor.engine.step(item.command)
            continue
        if first_checked is None:
            first_checked = item.seq
            report.start_seq = item.seq
        recorded_where = line.where if line is not None else f"{topics.events}[{shard}]"
        if not auditor.step(item.seq, item.raw, item.where, None if line is None else line.data, recorded_where):
            break
        if progress is not None and not item.seq & 1023:
            progress(item.offset)
    if source.snapshot_seq:
        report.notes.append(
            f"started from the Kafka snapshot at seq {source.snapshot_seq} (next offset {source.start_offset}); "
            f"the commands before offset {from_offset} were stepped unchecked"
        )
    dead = [offset for offset in source.dead_letters if offset >= from_offset]
    report.dead_letters = len(dead)
    if dead:
        shown = ", ".join(str(o) for o in dead[:10])
        more = f" and {len(dead) - 10} more" if len(dead) > 10 else ""
        report.notes.append(
            f"{len(dead)} undecodable command(s) skipped (dead-lettered by the engine, no seq): offsets {shown}{more}"
        )
    if source.pending:
        report.notes.append(
            f"{source.pending} command(s) from {source.where(source.pending_from or 0)} on have no committed outcome "
            f"yet (the engine is behind): not audited"
        )
    if first_checked is None:
        report.start_seq = start_seq
    auditor.finish(started)
    if chain is not None:
        report.chain_seq, report.chain_hex = chain.seq, chain.hex
    else:
        report.chain_seq, report.chain_hex = 0, ""
    if progress is not None:
        progress(source.end_offset)
    return report
