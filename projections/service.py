"""``marginbook project``: the risk projection of one shard, exactly once from event to view.

One projection instance owns one shard: partition ``shard`` of the events topic, consumed by
``assign()`` (never by group rebalancing, aiokafka #844) with ``read_committed``. It folds every
outcome into its own state (:class:`projections.publish.Projector`) and, per batch, in **one
Kafka transaction** (static transactional id ``marginbook-projection-<events topic>-<shard>``):

* the alerts of the batch's outcomes, in journal order (``<prefix>.alerts``, key ``acct``);
* each changed account's risk records, once, with its latest view (``<prefix>.risk``,
  compacted, keys ``acct`` and ``acct/instId/posSide``, tombstones for positions gone);
* every ``snapshot_every`` sequence numbers, a projection snapshot — the state
  (``engine.core.snapshot.encode``) and the next events offset — on
  ``<prefix>.projection.snapshots`` (compacted, key = shard; created if missing);
* the consumed events offset (``send_offsets_to_transaction``, once, after all sends — #1098).

Every send is awaited before the commit (``engine.io.kafka.loop.delivered``): a record that was
not written aborts the transaction and restarts the loop crash-only, so the committed offset never
passes an unpublished change. Events records are reassembled (``engine.io.kafka.framing``): an
outcome split across records is folded once its last fragment arrived, and a batch only ever
ends after a complete record, so the committed offset never points inside an outcome.

Every record has a ``seq`` header: the outcome position its value reflects (alerts also an
``event`` header, the index of the event in its outcome). Records go to partition ``shard``.

**Batches.** A batch ends after the events record that brings it to ``batch_max`` outcomes, or
when the consumer has caught up with the partition's last stable offset. On a backlog the cut
points therefore depend only on the journal, not on fetch timing: a projection restarted from a
committed batch end publishes exactly the records an uninterrupted one would have. While live,
batches are whatever has arrived; under a storm of marks the backlog grows, batches grow with
it and each account is rendered once per batch (coalescing), so the projection catches up.

Crash points and outcomes (the process may die anywhere; recovery is :meth:`_recover`):

1. before the transaction commits → the broker aborts it (the next producer's ``start()``
   fences the old transactional id and aborts its open transaction); ``read_committed``
   readers never see its records and the committed offset has not moved: the batch is redone,
   with the same cut points, so it publishes the same records once;
2. after the commit → records and offset are both committed; recovery restores the newest
   snapshot at or before the committed offset and re-folds the events from its offset up to
   the committed offset *without publishing*; the "last published" map is then rebuilt from
   that state (it equals the topic's latest values, see ``projections.publish``), so nothing
   is repeated and nothing skipped;
3. during recovery → nothing was produced; recovery starts again.

A snapshot this version cannot decode is skipped (the journal is re-folded from its start): the
snapshots are caches of the journal, never a source of truth.

The producer is started before the committed offset is read (a committed offset read before
the fence could be stale). Any error in the loop closes both clients and recovers the same way
(crash-only), with backoff; a sequence gap in the journal halts (exit 3), a newer instance on
the same shard fences this one (exit 4). SIGTERM stops after the current transaction.

**Rebuild** (``--rebuild``): the first recovery ignores the snapshots and re-folds the journal
from its start up to the committed offset, reads the shard's partition of the risk topic back
(latest value per key) and, in one transaction with a fresh snapshot, publishes what differs:
changed or missing views and tombstones for keys the journal does not justify. A rebuild of a
correct topic publishes nothing; either way the topic converges to the views of the journal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel, Field

from engine.core import snapshot
from engine.core.state import State
from engine.io.kafka.config import HealthPolicy, Topics
from engine.io.kafka.crash_only import CrashOnlyLoop
from engine.io.kafka.framing import Reassembler
from engine.io.kafka.loop import delivered
from engine.io.kafka.records import SnapshotRecord, decode_snapshot_record, encode_snapshot_record
from engine.io.kafka.topics import COMPACTED
from projections.metrics import ProjectionStats
from projections.publish import Projector, Record

log = logging.getLogger("marginbook.projection")

#: Empty polls inside a batch (not caught up, nothing arrives) before the batch is cut anyway.
_MAX_IDLE_POLLS = 25


class ProjectionConfig(BaseModel):
    bootstrap: str = "127.0.0.1:19092"
    topics: Topics = Field(default_factory=Topics)
    #: Compacted topic of projection snapshots; default ``<prefix>.projection.snapshots``.
    snapshots_topic: str = ""
    #: The events partition this projection owns (one instance per shard).
    shard: int = Field(default=0, ge=0)
    #: A batch (one transaction) ends after the events record reaching this many outcomes.
    batch_max: int = Field(default=5_000, ge=1)
    #: A snapshot goes into the transaction that crosses every N-th sequence number.
    snapshot_every: int = Field(default=20_000, ge=1)
    metrics_port: int = Field(default=0, ge=0)
    #: Re-fold from the start of the journal and converge the risk topic (first recovery only).
    rebuild: bool = False
    #: Stop (exit 0) once caught up with the events partition (rebuild jobs, tests).
    stop_when_caught_up: bool = False
    linger_ms: int = 5
    health: HealthPolicy = Field(default_factory=HealthPolicy)

    @property
    def snapshots(self) -> str:
        if self.snapshots_topic:
            return self.snapshots_topic
        return f"{self.topics.events.removesuffix('.events')}.projection.snapshots"

    @property
    def group_id(self) -> str:
        return f"marginbook-projection-{self.shard}"

    @property
    def transactional_id(self) -> str:
        """Static per events partition: a restarted projection fences its predecessor."""
        return f"marginbook-projection-{self.topics.events}-{self.shard}"


class KafkaProjection(CrashOnlyLoop):
    name = "projection"

    def __init__(self, config: ProjectionConfig, stats: ProjectionStats | None = None) -> None:
        self.stats: ProjectionStats = stats or ProjectionStats()
        self.tp = TopicPartition(config.topics.events, config.shard)
        super().__init__(self.stats, config.shard, config.bootstrap, self.tp, config.health)
        self.config = config
        self._fragments = Reassembler()
        self.key = str(config.shard).encode()
        self.projector = Projector()
        self._buffer: deque[ConsumerRecord[bytes, bytes]] = deque()
        self._next_snapshot = config.snapshot_every
        self._rebuild_pending = config.rebuild
        self._topic_checked = False

    def _pending(self, end: int) -> int:
        """Events records past the committed offset; a transactional partition ends with a
        commit marker the committed offset stays in front of (#911), so one is not pending."""
        return 0 if self.committed_offset is None else max(0, end - self.committed_offset - 1)

    def _complete(self, record: ConsumerRecord[bytes, bytes]) -> bytes | None:
        """The value of a complete events record (``None`` while an outcome is incomplete)."""
        where = f"{self.tp.topic}[{self.tp.partition}]@{record.offset}"
        return self._fragments.feed(record.value, record.headers, where)

    # --- recovery -----------------------------------------------------------------------------

    async def _recover(self) -> None:
        cfg = self.config
        self._buffer.clear()
        self._fragments.reset()
        if not self._topic_checked:
            await ensure_snapshot_topic(cfg.bootstrap, cfg.snapshots, cfg.topics.events)
            self._topic_checked = True
        committed = await self._open_clients(cfg.bootstrap, cfg.transactional_id, cfg.group_id, self.tp, cfg.linger_ms)
        restored = None if self._rebuild_pending else await self._latest_snapshot()
        self.projector, start = Projector(State()), 0
        if restored is not None and restored.next_offset <= committed:
            try:
                self.projector = Projector(snapshot.restore(restored.state))
                start = restored.next_offset
            except (ValueError, msgspec.DecodeError) as err:
                # A snapshot is a cache of the journal: one this version cannot read is skipped.
                log.warning("projection snapshot at seq %d unusable (%s); re-folding from the start", restored.seq, err)
        refolded = await self._refold(start, committed)
        state = self.projector.state
        self._next_snapshot = (state.last_seq // cfg.snapshot_every + 1) * cfg.snapshot_every
        if self._rebuild_pending:
            await self._converge(committed)
            self._rebuild_pending = False
        else:
            self.projector.prime()
        assert self.consumer is not None
        self.consumer.seek(self.tp, committed)
        self.committed_offset = committed
        self.stats.last_seq = state.last_seq
        self.stats.ready = True
        log.info(
            "recovered projection of shard %d: snapshot at offset %d, re-folded %d outcomes, "
            "committed offset %d, last seq %d",
            cfg.shard,
            start,
            refolded,
            committed,
            state.last_seq,
        )

    async def _latest_snapshot(self) -> SnapshotRecord | None:
        cfg = self.config
        latest: SnapshotRecord | None = None
        async for _, value in read_partition(cfg.bootstrap, cfg.snapshots, cfg.shard, max_bytes=64 << 20):
            if value is not None:
                latest = decode_snapshot_record(value)
        return latest

    async def _refold(self, start: int, committed: int) -> int:
        """Fold the events in ``[start, committed)`` without publishing anything."""
        consumer = self.consumer
        assert consumer is not None
        if start >= committed:
            return 0
        consumer.seek(self.tp, start)
        folded = idle = 0
        while await consumer.position(self.tp) < committed and idle < 50:
            batch = await consumer.getmany(self.tp, timeout_ms=200, max_records=500)
            records = batch.get(self.tp, [])
            idle = 0 if records else idle + 1
            for record in records:
                if record.offset >= committed:
                    return folded
                value = self._complete(record)
                if value is not None:
                    folded += self.projector.fold_record(value, publish=False)
        if await consumer.position(self.tp) < committed:
            raise RuntimeError(f"re-fold stopped at {await consumer.position(self.tp)}, committed is {committed}")
        return folded

    async def _converge(self, committed: int) -> None:
        """Rebuild: make the risk topic equal the views of the state re-folded from scratch."""
        cfg = self.config
        producer = self.producer
        assert producer is not None
        current: dict[str, bytes] = {}
        async for key, value in read_partition(cfg.bootstrap, cfg.topics.risk, cfg.shard):
            if key is None:
                continue
            if value is None:
                current.pop(key.decode(), None)
            else:
                current[key.decode()] = value
        self.projector.prime(current)
        records = self.projector.converge()
        async with producer.transaction():
            futures = await self._send(records)
            futures += await self._send_snapshot(committed)
            await delivered(futures, "risk or snapshot")
            await producer.send_offsets_to_transaction({self.tp: committed}, cfg.group_id)
        self._committed(records, 1)
        log.info(
            "rebuild of shard %d: %d keys on the risk topic, %d records published to converge, last seq %d",
            cfg.shard,
            len(current),
            len(records),
            self.projector.last_seq,
        )

    # --- the loop -----------------------------------------------------------------------------

    async def _loop(self) -> None:
        consumer, producer = self.consumer, self.producer
        assert consumer is not None and producer is not None
        cfg = self.config
        buffer = self._buffer
        if cfg.stop_when_caught_up and await self._caught_up(fetch=True):
            self._stopping.set()
        while not self._stopping.is_set():
            if not buffer:
                fetched = await consumer.getmany(self.tp, timeout_ms=200, max_records=1_000)
                buffer.extend(fetched.get(self.tp, []))
                if not buffer:
                    self.stats.lag = await self._lag()
                    if cfg.stop_when_caught_up and await self._caught_up(fetch=True):
                        self._stopping.set()
                    continue
            started = time.perf_counter()
            outcomes = idle = 0
            last_offset = -1
            while True:
                while buffer and outcomes < cfg.batch_max:
                    record = buffer.popleft()
                    value = self._complete(record)
                    if value is not None:  # a batch ends only after a complete record
                        outcomes += self.projector.fold_record(value)
                        last_offset = record.offset
                if outcomes >= cfg.batch_max or await self._caught_up():
                    break
                fetched = await consumer.getmany(self.tp, timeout_ms=100, max_records=1_000)
                more = fetched.get(self.tp, [])
                idle = 0 if more else idle + 1
                if idle >= _MAX_IDLE_POLLS:
                    break
                buffer.extend(more)
            if last_offset < 0:
                continue  # only fragments of an outcome so far: nothing to commit yet
            records = self.projector.flush()
            next_offset = last_offset + 1
            async with producer.transaction():
                futures = await self._send(records)
                snapshots = 0
                if self.projector.last_seq >= self._next_snapshot:
                    futures += await self._send_snapshot(next_offset)
                    snapshots = 1
                await delivered(futures, "risk, alert or snapshot")
                await producer.send_offsets_to_transaction({self.tp: next_offset}, cfg.group_id)
            self._backoff = 0.2  # a committed transaction: the last failure is behind us
            self.committed_offset = next_offset
            self._progressed()
            self._committed(records, snapshots)
            stats = self.stats
            stats.transactions += 1
            stats.outcomes += outcomes
            stats.last_batch = outcomes
            stats.last_seq = self.projector.last_seq
            stats.last_txn_seconds = time.perf_counter() - started
            stats.lag = await self._lag() if not buffer else stats.lag
            if cfg.stop_when_caught_up and not buffer and await self._caught_up():
                self._stopping.set()

    async def _caught_up(self, fetch: bool = False) -> bool:
        """Has the consumer reached the partition's last stable offset? A transactional
        partition ends with a commit marker the position may stay in front of (aiokafka #911),
        so one below the end counts as the end."""
        consumer = self.consumer
        assert consumer is not None
        if fetch:
            end = (await consumer.end_offsets([self.tp]))[self.tp]
        else:
            lso = consumer.last_stable_offset(self.tp)
            end = lso if lso is not None and lso >= 0 else consumer.highwater(self.tp)
            if end is None:
                return False
        position: int = await consumer.position(self.tp)
        return position >= int(end) - 1

    async def _lag(self) -> int:
        consumer = self.consumer
        assert consumer is not None
        if await self._caught_up():
            return 0
        lso = consumer.last_stable_offset(self.tp)
        end = lso if lso is not None and lso >= 0 else consumer.highwater(self.tp) or 0
        position: int = await consumer.position(self.tp)
        return max(0, int(end) - position)

    async def _send(self, records: list[Record]) -> list[asyncio.Future[Any]]:
        producer = self.producer
        assert producer is not None
        topics = self.config.topics
        futures: list[asyncio.Future[Any]] = []
        for record in records:
            headers = [("seq", str(record.seq).encode())]
            if record.topic == "alerts":
                headers.append(("event", str(record.event).encode()))
                topic = topics.alerts
            else:
                topic = topics.risk
            future = await producer.send(
                topic, value=record.value, key=record.key.encode(), partition=self.config.shard, headers=headers
            )
            futures.append(future)
        return futures

    def _committed(self, records: list[Record], snapshots: int) -> None:
        """Count what a committed transaction published (never what an aborted one sent)."""
        alerts = sum(1 for record in records if record.topic == "alerts")
        self.stats.alerts += alerts
        self.stats.risk_records += len(records) - alerts
        self.stats.snapshots += snapshots

    async def _send_snapshot(self, next_offset: int) -> list[asyncio.Future[Any]]:
        assert self.producer is not None
        state = self.projector.state
        record = SnapshotRecord(
            shard=self.config.shard, next_offset=next_offset, seq=state.last_seq, state=snapshot.encode(state)
        )
        future = await self.producer.send(
            self.config.snapshots,
            value=encode_snapshot_record(record),
            key=self.key,
            partition=self.config.shard,
            headers=[("seq", str(state.last_seq).encode())],
        )
        every = self.config.snapshot_every
        self._next_snapshot = (state.last_seq // every + 1) * every
        return [future]


async def read_partition(
    bootstrap: str, topic: str, partition: int, max_bytes: int = 16 << 20
) -> AsyncIterator[tuple[bytes | None, bytes | None]]:
    """``(key, value)`` of every committed record of one partition, from its start up to its
    end when the read began. A transactional partition ends with a marker the position may stay
    in front of (#911): one below the end counts as the end once two polls bring nothing."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=max_bytes,
        fetch_max_bytes=max(max_bytes, 64 << 20),
    )
    await reader.start()
    tp = TopicPartition(topic, partition)
    try:
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        end = (await reader.end_offsets([tp]))[tp]
        idle = 0
        while True:
            position = await reader.position(tp)
            if position >= end or (position == end - 1 and idle >= 2) or idle >= 50:
                break
            batch = await reader.getmany(tp, timeout_ms=200, max_records=2_000)
            records = batch.get(tp, [])
            idle = 0 if records else idle + 1
            for record in records:
                if record.offset < end:
                    yield record.key, record.value
        if await reader.position(tp) < end - 1:
            raise RuntimeError(f"{topic}[{partition}]: read stopped at {await reader.position(tp)}, end is {end}")
    finally:
        await reader.stop()


async def ensure_snapshot_topic(bootstrap: str, name: str, events_topic: str) -> bool:
    """Create the compacted projection-snapshots topic if missing, with as many partitions as
    the events topic (partition ``s`` belongs to shard ``s``). True if it was created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        described = await admin.describe_topics([events_topic])
        partitions = max((len(t.get("partitions", [])) for t in described if t.get("error_code", 0) == 0), default=1)
        response = await admin.create_topics(
            [NewTopic(name, max(partitions, 1), 1, topic_configs={**COMPACTED, "max.message.bytes": "67108864"})]
        )
        for topic, code, *_ in response.topic_errors:
            if code == 0:
                log.info("created topic %s (%d partitions, compacted)", topic, partitions)
                return True
            if for_code(code) is not TopicAlreadyExistsError:
                raise for_code(code)(f"creating topic {topic}")
        return False
    finally:
        await admin.close()
