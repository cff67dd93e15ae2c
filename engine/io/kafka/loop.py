"""The Kafka loop: the engine as a service, exactly once from command to event.

One engine instance owns one shard: partition ``shard`` of the commands topic, consumed by
``assign()`` (never by group rebalancing, aiokafka #844), and the same partition of the events,
snapshots and dead-letter topics. Each batch of consumed records is handled in **one Kafka
transaction** holding:

* the outcomes of the decoded commands (``events.journal.Outcome``), packed as JSON lines by count
  and by bytes, an outcome too large for one record split across several
  (``engine.io.kafka.framing``); headers ``first-seq``, ``last-seq`` and ``input-offsets``
  (``first-last``) say exactly which inputs a record reflects, ``fragment`` (``i/n``) marks a
  piece of one outcome;
* a dead-letter record for every input that cannot be decoded or breaks the wire contract, with
  the reason (``engine.io.kafka.deadletter``; truncated, with the original's size and SHA-256,
  when it would not fit one record); it gets no sequence number;
* every ``snapshot_every`` sequence numbers, a snapshot (state + the next input offset), unless
  it is larger than ``snapshot_max_bytes`` (then it is skipped, logged and counted: snapshots
  are caches, recovery just re-steps more inputs);
* the consumed offsets (``send_offsets_to_transaction``, once, after all sends — aiokafka #1098).

**Every send is awaited before the commit.** aiokafka reports a failed batch (a record above the
broker's ``max.message.bytes``, a sequence error after it, a timeout) only through the send's
future, and ``commit_transaction`` commits whatever was written, failed batches or not: a
transaction must never commit the input offset past an outcome that was not written. So the loop
waits for every future of the transaction, and any failure raises: the transaction is aborted and
the loop restarts crash-only (a fresh producer — aiokafka #1017 — and recovery from the committed
offset). A failure that would repeat (a topic whose ``max.message.bytes`` is below
``record_max_bytes``) keeps the engine restarting without committing anything, which
``/healthz`` reports as ``stalled``.

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

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from engine.core import snapshot
from engine.core.state import State
from engine.core.step import Engine
from engine.io.health import ServiceHealth
from engine.io.kafka.config import EngineConfig
from engine.io.kafka.crash_only import CrashOnlyLoop
from engine.io.kafka.deadletter import dead_letter
from engine.io.kafka.framing import OUTCOMES_PER_RECORD, EventsRecord, Packer
from engine.io.kafka.records import SnapshotRecord, decode_snapshot_record, encode_snapshot_record
from events.codec import BadCommand, decode_command_json, encode_outcome_json

log = logging.getLogger("marginbook.engine")

__all__ = ["OUTCOMES_PER_RECORD", "DeliveryFailed", "KafkaEngine", "LoopStats"]


class DeliveryFailed(RuntimeError):
    """A record of the transaction was not written; the transaction must not commit."""


async def delivered(futures: list[asyncio.Future[Any]], what: str) -> None:
    """Wait for every send of a transaction; raise :class:`DeliveryFailed` on the first failure
    (every future's outcome is collected, so none is left unretrieved)."""
    if not futures:
        return
    await asyncio.wait(futures)
    failures = [(i, f.exception()) for i, f in enumerate(futures) if f.exception() is not None]
    if failures:
        index, error = failures[0]
        raise DeliveryFailed(
            f"{len(failures)} of {len(futures)} {what} record(s) not written (first: #{index}: {error!r})"
        ) from error


@dataclass
class LoopStats:
    """Figures the metrics endpoint exports."""

    commands: int = 0
    #: Dead letters committed (equals what the dead-letter topic holds from this process).
    dead_letters: int = 0
    dead_letters_truncated: int = 0
    #: Outcomes written as several fragments.
    fragmented: int = 0
    snapshots_skipped: int = 0
    transactions: int = 0
    last_seq: int = 0
    last_batch: int = 0
    last_txn_seconds: float = 0.0
    lag: int = 0
    restarts: int = 0
    ready: bool = False
    #: A broken invariant stopped the engine (it does not retry a deterministic failure).
    halted: bool = False
    health: ServiceHealth = field(default_factory=ServiceHealth.new)


class KafkaEngine(CrashOnlyLoop):
    name = "engine"

    def __init__(self, config: EngineConfig, stats: LoopStats | None = None) -> None:
        self.stats: LoopStats = stats or LoopStats()
        self.tp = TopicPartition(config.topics.commands, config.shard)
        super().__init__(self.stats, config.shard, config.bootstrap, self.tp, config.health)
        self.config = config
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
        self.committed_offset = committed
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
            next_offset = records[-1].offset + 1
            async with producer.transaction():
                futures, dead, truncated, fragmented = await self._produce(records)
                if self.engine.state.last_seq >= self._next_snapshot:
                    futures += await self._send_snapshot(next_offset)
                await delivered(futures, "events, dead-letter or snapshot")
                await producer.send_offsets_to_transaction({self.tp: next_offset}, cfg.group_id)
            self._backoff = 0.2  # a committed transaction: the last failure is behind us
            self.committed_offset = next_offset
            self._progressed()
            stats = self.stats
            stats.transactions += 1
            stats.commands += len(records)
            stats.dead_letters += dead
            stats.dead_letters_truncated += truncated
            stats.fragmented += fragmented
            stats.last_batch = len(records)
            stats.last_seq = self.engine.state.last_seq
            stats.last_txn_seconds = time.perf_counter() - started
            stats.lag = max(0, (highwater or 0) - next_offset)

    async def _produce(
        self, records: list[ConsumerRecord[bytes, bytes]]
    ) -> tuple[list[asyncio.Future[Any]], int, int, int]:
        """Step the batch and send its outcomes and dead letters; return the send futures and
        the counts of dead letters, truncated ones and fragmented outcomes."""
        producer = self.producer
        assert producer is not None
        cfg = self.config
        packer = Packer(cfg.record_max_bytes, OUTCOMES_PER_RECORD)
        futures: list[asyncio.Future[Any]] = []
        dead = truncated = 0
        for record in records:
            try:
                command = decode_command_json(record.value or b"")
            except BadCommand as bad:
                value, headers = dead_letter(record, bad, cfg.record_max_bytes)
                futures.append(
                    await producer.send(
                        cfg.topics.dlq, value=value, key=record.key, partition=cfg.shard, headers=headers
                    )
                )
                dead += 1
                truncated += len(headers) > 2
                continue
            outcome = self.engine.step(command)
            for ready in packer.add(encode_outcome_json(outcome), outcome.seq, record.offset):
                futures.append(await self._send_events(ready))
        futures += [await self._send_events(ready) for ready in packer.flush()]
        return futures, dead, truncated, packer.fragmented

    async def _send_events(self, record: EventsRecord) -> asyncio.Future[Any]:
        assert self.producer is not None
        future: asyncio.Future[Any] = await self.producer.send(
            self.config.topics.events,
            value=record.value,
            key=self.key,
            partition=self.config.shard,
            headers=record.headers,
        )
        return future

    async def _send_snapshot(self, next_offset: int) -> list[asyncio.Future[Any]]:
        assert self.producer is not None
        cfg = self.config
        state = self.engine.state
        record = SnapshotRecord(
            shard=cfg.shard, next_offset=next_offset, seq=state.last_seq, state=snapshot.encode(state)
        )
        value = encode_snapshot_record(record)
        self._next_snapshot = (state.last_seq // cfg.snapshot_every + 1) * cfg.snapshot_every
        if len(value) > cfg.snapshot_max_bytes:
            self.stats.snapshots_skipped += 1
            log.warning(
                "snapshot at seq %d is %d bytes, above --snapshot-max-bytes %d: not written",
                state.last_seq,
                len(value),
                cfg.snapshot_max_bytes,
            )
            return []
        future: asyncio.Future[Any] = await self.producer.send(
            cfg.topics.snapshots, value=value, key=self.key, partition=cfg.shard
        )
        return [future]
