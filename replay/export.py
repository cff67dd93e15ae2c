"""Export a Kafka topic range into a file log directory, for offline audits.

``export_kafka`` reads ``[from_offset, to_offset)`` of a shard's commands topic with the recorded
outcomes (:class:`replay.kafka_source.KafkaRange`) and writes the embedded log layout
(``engine.io.embedded``):

* ``commands.log`` — each decodable command's bytes exactly as on the topic, as the record of
  its sequence number (undecodable commands were dead-lettered by the engine and have no seq:
  they are skipped, and listed in ``export.json``);
* ``events.log`` — the packed events records split again: one outcome (one JSON line, bytes
  unchanged) per record, same seq as its command;
* when the range starts after seq 0, ``snapshots/<S>.msgpack`` — the state after seq ``S``, the
  last seq before the range (the newest Kafka snapshot at or before the range, then the commands
  in between stepped through the engine), so the log can be replayed from there; its records
  start at seq ``S + 1``. ``marginbook audit DIR`` starts from that snapshot by itself;
* ``export.json`` — what was exported: topics, offsets, seqs, the dead-lettered offsets, and the
  digest chain at seq ``S`` (``chain_seq``/``chain``), so an audit of the exported range prints
  the same chain lines as an audit of the whole topic.

Commands at the end of the range whose outcomes are not committed yet are not exported, so both
files end at the same seq. Records are written in the file log format (``engine.io.filelog``)
with their true sequence numbers, then fsynced.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import msgspec

from engine.core.step import Engine
from engine.io.embedded import COMMANDS_FILE, EVENTS_FILE, write_snapshot
from engine.io.filelog import HEADER, MAGIC, MAX_PAYLOAD
from engine.io.kafka.config import Topics
from replay.chain import Chain
from replay.directory import EXPORT_META
from replay.kafka_source import KafkaRange

__all__ = ["ExportReport", "RecordWriter", "export_kafka"]

_LEN_SEQ = struct.Struct("<IQ")


class RecordWriter:
    """Appends records with given sequence numbers in the ``engine.io.filelog`` format."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO = open(path, "xb")  # noqa: SIM115 - closed by close()
        self.records = 0

    def write(self, seq: int, payload: bytes) -> None:
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD")
        ls = _LEN_SEQ.pack(len(payload), seq)
        crc = zlib.crc32(payload, zlib.crc32(ls))
        self._file.write(HEADER.pack(MAGIC, crc, len(payload), seq) + payload)
        self.records += 1

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


@dataclass
class ExportReport:
    out: str
    first_seq: int = 0
    last_seq: int = 0
    commands: int = 0
    outcomes: int = 0
    start_offset: int = 0
    end_offset: int = 0
    snapshot_seq: int = 0
    #: Seq of the Kafka snapshot the state before the range was rebuilt from (0: from the start).
    kafka_snapshot_seq: int = 0
    dead_letters: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    pending: int = 0
    chain_seq: int = 0
    chain: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


async def export_kafka(
    bootstrap: str,
    topics: Topics,
    out: str | os.PathLike[str],
    shard: int = 0,
    from_offset: int = 0,
    to_offset: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int, int], None] | None = None,
) -> ExportReport:
    folder = Path(out)
    for name in (COMMANDS_FILE, EVENTS_FILE):
        if (folder / name).exists():
            raise FileExistsError(f"{folder / name} exists: export writes a new log directory")
    source = KafkaRange(bootstrap, topics, shard, from_offset, to_offset)
    await source.open()
    if on_total is not None:
        on_total(source.start_offset, source.end_offset)
    report = ExportReport(out=str(folder), start_offset=from_offset, end_offset=source.end_offset)
    engine = Engine(source.state)
    chain: Chain | None = Chain()

    def chained(seq: int, data: bytes) -> None:
        nonlocal chain
        if chain is not None and seq == chain.seq + 1:
            chain.update(seq, data)
        else:
            chain = None

    def problem(seq: int, where: str, message: str) -> None:
        report.problems.append(message)

    folder.mkdir(parents=True, exist_ok=True)
    commands = RecordWriter(folder / COMMANDS_FILE)
    events = RecordWriter(folder / EVENTS_FILE)
    try:
        async for item in source.items(problem, chained):
            if not item.warm and not report.first_seq:
                report.first_seq = item.seq
                if item.seq > 1:
                    if engine.state.last_seq != item.seq - 1:
                        raise RuntimeError(f"state at seq {engine.state.last_seq}, expected {item.seq - 1}")
                    write_snapshot(folder, engine.state)
                    report.snapshot_seq = item.seq - 1
                if chain is not None and chain.seq == item.seq - 1:
                    report.chain_seq, report.chain = chain.seq, chain.hex
            if item.line is not None:
                chained(item.seq, item.line.data)
            elif chain is not None and chain.seq < item.seq:
                chain = None
            if item.warm:
                engine.step(item.command)
                continue
            commands.write(item.seq, item.raw)
            report.commands += 1
            if item.line is None:
                problem(item.seq, item.where, f"seq {item.seq} ({item.where}): no recorded outcome; not exported")
            else:
                events.write(item.seq, item.line.data)
                report.outcomes += 1
            report.last_seq = item.seq
            if progress is not None and not item.seq & 1023:
                progress(item.offset)
    finally:
        commands.close()
        events.close()
    report.kafka_snapshot_seq = source.snapshot_seq
    report.dead_letters = [o for o in source.dead_letters if o >= from_offset]
    report.pending = source.pending
    meta = {
        "source": {"bootstrap": bootstrap, "commands": topics.commands, "events": topics.events, "shard": shard},
        "from_offset": from_offset,
        "to_offset": source.end_offset,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "snapshot_seq": report.snapshot_seq,
        "chain_seq": report.chain_seq,
        "chain": report.chain,
        "dead_letter_offsets": report.dead_letters,
        "not_yet_journaled": source.pending,
    }
    (folder / EXPORT_META).write_bytes(msgspec.json.format(msgspec.json.encode(meta), indent=2) + b"\n")
    if progress is not None:
        progress(source.end_offset)
    return report
