"""The Kafka loop: the engine as a service, exactly once from command to event.

One engine instance owns one shard: partition ``shard`` of the commands topic, consumed by
``assign()`` (never by group rebalancing, aiokafka #844), and the same partition of the events,
snapshots and dead-letter topics. Each batch of consumed records is handled in **one Kafka
transaction** holding:

* the outcomes of the decoded commands (``events.journal.Outcome``), packed as JSON lines, up to
  :data:`OUTCOMES_PER_RECORD` per events record; headers ``first-seq``, ``last-seq`` and
  ``input-offsets`` (``first-last``) say exactly which inputs the record reflects;
* a dead-letter record for every input that cannot be decoded or breaks the wire contract, with
  the reason (``engine.io.kafka.deadletter``); it gets no sequence number;
* every ``snapshot_every`` sequence numbers, a snapshot (state + the next input offset);
* the consumed offsets (``send_offsets_to_transaction``, once, after all sends — aiokafka #1098).

The engine keeps its own dense sequence number (``State.last_seq``): transaction markers leave
gaps in Kafka offsets (#911), so offsets are never used for ordering or hashing.

Crash points and outcomes (the process may die anywhere; a restarted or internally restarted
engine runs :meth:`KafkaEngine._recover`):

1. before the transaction commits → the broker aborts it (the new producer's ``start()`` fences
   the old id and aborts its open transaction); none of its outputs are visible to
   ``read_committed`` readers and the committed offset has not moved, so the batch is done again;
2. after the commit → outputs and offsets are both committed; recovery restores the newest
   snapshot and re-steps the inputs from the snapshot's offset up to the committed offset
   *without producing*, rebuilding exactly the state that produced the committed outputs;
3. during recovery → nothing was produced; recovery starts again.

Recovery order matters: the producer is started first (fencing and waiting for the previous
transaction to finish), and only then are the committed offsets read (a committed offset read
before the fence could be stale).

Any error in the loop (a failed transaction, a broker restart mid-transaction) is handled
crash-only: both clients are closed, the in-memory state is dropped, and recovery runs again.
SIGTERM stops the loop after the current transaction.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.core import snapshot
from engine.core.state import State
from engine.core.step import Engine
from engine.io.kafka.config import EngineConfig
from engine.io.kafka.crash_only import CrashOnlyLoop
from engine.io.kafka.deadletter import dead_letter
from engine.io.kafka.records import SnapshotRecord, decode_snapshot_record, encode_snapshot_record
from events.codec import BadCommand, decode_command_json, encode_outcome_json

log = logging.getLogger("marginbook.engine")

#: Outcomes packed into one events record (JSON lines).
OUTCOMES_PER_RECORD = 256


@dataclass
class LoopStats:
    """Figures the metrics endpoint exports."""

    commands: int = 0
    dead_letters: int = 0
    transactions: int = 0
    last_seq: int = 0
    last_batch: int = 0
    last_txn_seconds: float = 0.0
    lag: int = 0
    restarts: int = 0
    ready: bool = False
    #: A broken invariant stopped the engine (it does not retry a deterministic failure).
    halted: bool = False


class KafkaEngine(CrashOnlyLoop):
    name = "engine"

    def __init__(self, config: EngineConfig, stats: LoopStats | None = None) -> None:
        self.stats: LoopStats = stats or LoopStats()
        super().__init__(self.stats, config.shard)
        self.config = config
        self.tp = TopicPartition(config.topics.commands, config.shard)
        self.key = str(config.shard).encode()
        self.engine = Engine()
        self._next_snapshot = config.snapshot_every

    # --- recovery -----------------------------------------------------------------------------

    async def _recover(self) -> None:
        cfg = self.config
        committed = await self._open_clients(cfg.bootstrap, cfg.transactional_id, cfg.group_id, self.tp, cfg.linger_ms)
        restored = await self._latest_snapshot()
        if restored is not None and restored.next_offset <= committed:
            self.engine = Engine(snapshot.restore(restored.state))
            start = restored.next_offset
        else:
            self.engine = Engine(State())
            start = 0
        replayed = await self._replay(start, committed)
        self._next_snapshot = (self.engine.state.last_seq // cfg.snapshot_every + 1) * cfg.snapshot_every
        assert self.consumer is not None
        self.consumer.seek(self.tp, committed)
        self.stats.last_seq = self.engine.state.last_seq
        self.stats.ready = True
        log.info(
            "recovered shard %d: snapshot at offset %d, replayed %d inputs, committed offset %d, last seq %d",
            cfg.shard,
            start,
            replayed,
            committed,
            self.engine.state.last_seq,
        )

    async def _latest_snapshot(self) -> SnapshotRecord | None:
        cfg = self.config
        tp = TopicPartition(cfg.topics.snapshots, cfg.shard)
        reader = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=64 << 20,
            fetch_max_bytes=64 << 20,
        )
        await reader.start()
        latest: SnapshotRecord | None = None
        try:
            reader.assign([tp])
            await reader.seek_to_beginning(tp)
            end = (await reader.end_offsets([tp]))[tp]
            idle = 0
            while await reader.position(tp) < end and idle < 5:
                batch = await reader.getmany(tp, timeout_ms=200)
                records = batch.get(tp, [])
                idle = 0 if records else idle + 1
                for record in records:
                    if record.value is not None:
                        latest = decode_snapshot_record(record.value)
        finally:
            await reader.stop()
        return latest

    async def _replay(self, start: int, committed: int) -> int:
        """Re-step inputs in ``[start, committed)`` without producing anything."""
        consumer = self.consumer
        assert consumer is not None
        if start >= committed:
            return 0
        consumer.seek(self.tp, start)
        replayed = 0
        idle = 0
        while await consumer.position(self.tp) < committed and idle < 50:
            batch = await consumer.getmany(self.tp, timeout_ms=200, max_records=self.config.batch_max)
            records = batch.get(self.tp, [])
            idle = 0 if records else idle + 1
            for record in records:
                if record.offset >= committed:
                    return replayed
                try:
                    command = decode_command_json(record.value or b"")
                except BadCommand:
                    continue
                self.engine.step(command)
                replayed += 1
        if await consumer.position(self.tp) < committed:
            raise RuntimeError(f"replay stopped at {await consumer.position(self.tp)}, committed is {committed}")
        return replayed

    # --- the loop -----------------------------------------------------------------------------

    async def _loop(self) -> None:
        consumer, producer = self.consumer, self.producer
        assert consumer is not None and producer is not None
        cfg = self.config
        while not self._stopping.is_set():
            batch = await consumer.getmany(self.tp, timeout_ms=100, max_records=cfg.batch_max)
            records = batch.get(self.tp, [])
            highwater = consumer.highwater(self.tp)
            if not records:
                self.stats.lag = max(0, (highwater or 0) - (await consumer.position(self.tp)))
                continue
            started = time.perf_counter()
            async with producer.transaction():
                outcomes: list[bytes] = []
                first_offset = first_seq = -1
                for record in records:
                    try:
                        command = decode_command_json(record.value or b"")
                    except BadCommand as bad:
                        await producer.send(
                            cfg.topics.dlq, value=dead_letter(record, bad), key=record.key, partition=cfg.shard
                        )
                        self.stats.dead_letters += 1
                        continue
                    outcome = self.engine.step(command)
                    if first_seq < 0:
                        first_seq, first_offset = outcome.seq, record.offset
                    outcomes.append(encode_outcome_json(outcome))
                    if len(outcomes) == OUTCOMES_PER_RECORD:
                        await self._send_outcomes(outcomes, first_seq, first_offset, record.offset)
                        outcomes, first_seq = [], -1
                if outcomes:
                    await self._send_outcomes(outcomes, first_seq, first_offset, records[-1].offset)
                next_offset = records[-1].offset + 1
                if self.engine.state.last_seq >= self._next_snapshot:
                    await self._send_snapshot(next_offset)
                await producer.send_offsets_to_transaction({self.tp: next_offset}, cfg.group_id)
            self._backoff = 0.2  # a committed transaction: the last failure is behind us
            self.stats.transactions += 1
            self.stats.commands += len(records)
            self.stats.last_batch = len(records)
            self.stats.last_seq = self.engine.state.last_seq
            self.stats.last_txn_seconds = time.perf_counter() - started
            self.stats.lag = max(0, (highwater or 0) - next_offset)

    async def _send_outcomes(self, outcomes: list[bytes], first_seq: int, first_offset: int, last_offset: int) -> None:
        assert self.producer is not None
        last_seq = first_seq + len(outcomes) - 1
        headers = [
            ("first-seq", str(first_seq).encode()),
            ("last-seq", str(last_seq).encode()),
            ("input-offsets", f"{first_offset}-{last_offset}".encode()),
        ]
        await self.producer.send(
            self.config.topics.events,
            value=b"\n".join(outcomes),
            key=self.key,
            partition=self.config.shard,
            headers=headers,
        )

    async def _send_snapshot(self, next_offset: int) -> None:
        assert self.producer is not None
        state = self.engine.state
        record = SnapshotRecord(
            shard=self.config.shard, next_offset=next_offset, seq=state.last_seq, state=snapshot.encode(state)
        )
        await self.producer.send(
            self.config.topics.snapshots,
            value=encode_snapshot_record(record),
            key=self.key,
            partition=self.config.shard,
        )
        self._next_snapshot = (state.last_seq // self.config.snapshot_every + 1) * self.config.snapshot_every
