"""Smoke tests against the real single-node KRaft broker started by ``scripts/kafka.sh``.

Run with::

    bash scripts/kafka.sh start            # prints KAFKA_BOOTSTRAP=127.0.0.1:19092
    KAFKA_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python -m pytest tests/kafka -m kafka
    bash scripts/kafka.sh stop

They prove that aiokafka's transactional producer and read_committed consumer work against the
pinned Kafka 4.x broker (aiokafka's own CI does not test transactions on KRaft / Kafka 4.x).
Without ``KAFKA_BOOTSTRAP`` every test is skipped.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

pytestmark = pytest.mark.kafka

# Budget for any single wait on the broker; keeps every test well under ~20 s.
WAIT_S = 10.0


@pytest.fixture
def bootstrap() -> str:
    addr = os.environ.get("KAFKA_BOOTSTRAP")
    if not addr:
        pytest.skip("KAFKA_BOOTSTRAP not set (start a broker with: bash scripts/kafka.sh start)")
    return addr


def unique(prefix: str) -> str:
    return f"mb-smoke-{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


def _raise_topic_errors(response: object) -> None:
    for topic, code, *rest in response.topic_errors:  # type: ignore[attr-defined]
        if code:
            message = rest[0] if rest else ""
            raise for_code(code)(f"create topic {topic}: {message}")


async def create_topic(admin: AIOKafkaAdminClient, name: str, partitions: int = 1) -> None:
    response = await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    _raise_topic_errors(response)


@pytest.fixture
async def make_topic(admin: AIOKafkaAdminClient) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    created: list[str] = []

    async def _make(prefix: str) -> str:
        name = unique(prefix)
        await create_topic(admin, name)
        created.append(name)
        return name

    yield _make
    if created:
        await admin.delete_topics(created)


async def transactional_producer(bootstrap: str, txn_id: str | None = None) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=txn_id or unique("txn"),
        request_timeout_ms=10_000,
    )
    await producer.start()
    return producer


async def assigned_consumer(
    bootstrap: str, tp: TopicPartition, *, isolation_level: str, group_id: str | None = None
) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    return consumer


async def read_until(
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    done: Callable[[list[ConsumerRecord]], bool],
    timeout: float = WAIT_S,
) -> list[ConsumerRecord]:
    """Collect records from ``tp`` until ``done(records)`` holds (or fail after ``timeout``).

    Offsets on transactional topics are not contiguous (commit/abort markers take offsets), so
    callers must never wait for a particular offset, only for content.
    """
    records: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(timeout):
            while not done(records):
                batch = await consumer.getmany(tp, timeout_ms=200)
                records.extend(batch.get(tp, []))
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s; got {[r.value for r in records]!r}")
    return records


async def committed_offset(admin: AIOKafkaAdminClient, group_id: str, tp: TopicPartition) -> int:
    offsets = await admin.list_consumer_group_offsets(group_id, partitions=[tp])
    return offsets[tp].offset if tp in offsets else -1


async def wait_committed_offset(admin: AIOKafkaAdminClient, group_id: str, tp: TopicPartition, expected: int) -> None:
    """Poll until the group's committed offset for ``tp`` is ``expected``.

    ``commit_transaction()`` returns once the coordinator has *prepared* the commit; the markers
    that make transactional offsets visible are written just after. Java clients send OffsetFetch
    with require_stable (KIP-447) and wait; aiokafka does not, so it can briefly read the old
    offset (-1 here). Polling is only needed right after a commit: a producer.start() with the
    same transactional_id also waits for the previous transaction to complete.
    """
    last = None
    try:
        async with asyncio.timeout(WAIT_S):
            while (last := await committed_offset(admin, group_id, tp)) != expected:
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"committed offset for {group_id}/{tp} is {last}, expected {expected}")


def values(records: list[ConsumerRecord]) -> list[bytes]:
    return [r.value for r in records]


async def test_create_topic_with_admin_client(admin: AIOKafkaAdminClient) -> None:
    name = unique("admin")
    await create_topic(admin, name, partitions=3)
    try:
        assert name in await admin.list_topics()
        (desc,) = await admin.describe_topics([name])
        assert desc["error_code"] == 0
        assert len(desc["partitions"]) == 3
        assert all(p["replicas"] == [1] and p["error_code"] == 0 for p in desc["partitions"])

        # Creating it again is reported per topic, not raised by aiokafka: check the code.
        again = await admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
        [(_, code, *_)] = again.topic_errors
        assert for_code(code).__name__ == "TopicAlreadyExistsError"
    finally:
        await admin.delete_topics([name])


MakeTopic = Callable[[str], Awaitable[str]]


async def test_committed_transaction_visible_to_read_committed(bootstrap: str, make_topic: MakeTopic) -> None:
    tp = TopicPartition(await make_topic("commit"), 0)
    sent = [f"committed-{i}".encode() for i in range(5)]

    producer = await transactional_producer(bootstrap)
    try:
        async with producer.transaction():
            for v in sent:
                await producer.send(tp.topic, v, partition=tp.partition)
    finally:
        await producer.stop()

    consumer = await assigned_consumer(bootstrap, tp, isolation_level="read_committed")
    try:
        records = await read_until(consumer, tp, lambda rs: len(rs) >= len(sent))
    finally:
        await consumer.stop()
    assert values(records) == sent
    # The commit marker takes an offset: the end offset is one past the last data record.
    assert records[-1].offset == len(sent) - 1


async def test_aborted_transaction_hidden_from_read_committed(bootstrap: str, make_topic: MakeTopic) -> None:
    tp = TopicPartition(await make_topic("abort"), 0)
    aborted = [f"aborted-{i}".encode() for i in range(3)]
    committed = [b"after-abort"]

    class Rollback(Exception):
        pass

    producer = await transactional_producer(bootstrap)
    try:
        with pytest.raises(Rollback):
            async with producer.transaction():
                for v in aborted:
                    await producer.send_and_wait(tp.topic, v, partition=tp.partition)
                raise Rollback  # the context manager aborts the transaction
        # A committed transaction after the aborted one: read_committed must reach it, proving
        # the aborted records were skipped rather than merely not fetched yet.
        async with producer.transaction():
            await producer.send(tp.topic, committed[0], partition=tp.partition)
    finally:
        await producer.stop()

    rc = await assigned_consumer(bootstrap, tp, isolation_level="read_committed")
    try:
        seen_committed = await read_until(rc, tp, lambda rs: committed[0] in values(rs))
    finally:
        await rc.stop()
    assert values(seen_committed) == committed

    ru = await assigned_consumer(bootstrap, tp, isolation_level="read_uncommitted")
    try:
        seen_uncommitted = await read_until(ru, tp, lambda rs: committed[0] in values(rs))
    finally:
        await ru.stop()
    assert values(seen_uncommitted) == aborted + committed


async def test_send_offsets_to_transaction_commits_group_offset(
    bootstrap: str, admin: AIOKafkaAdminClient, make_topic: MakeTopic
) -> None:
    src = TopicPartition(await make_topic("in"), 0)
    dst = TopicPartition(await make_topic("out"), 0)
    group_id = unique("group")
    inputs = [f"cmd-{i}".encode() for i in range(4)]

    # Seed the input topic (plain, non-transactional producer).
    seeder = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await seeder.start()
    try:
        for v in inputs:
            await seeder.send_and_wait(src.topic, v, partition=src.partition)
    finally:
        await seeder.stop()

    # Consume -> transform -> produce, committing the input offset inside the transaction.
    # One static transactional id per input partition and assign(), not subscribe() (aiokafka #844).
    consumer = await assigned_consumer(bootstrap, src, isolation_level="read_committed", group_id=group_id)
    producer = await transactional_producer(bootstrap, txn_id=f"{group_id}-{src.topic}-{src.partition}")
    try:
        batch = await read_until(consumer, src, lambda rs: len(rs) >= len(inputs))
        next_offset = batch[-1].offset + 1
        async with producer.transaction():
            for r in batch:
                await producer.send(dst.topic, r.value.upper(), partition=dst.partition)
            # Exactly one send_offsets_to_transaction per transaction, after all sends (#1098).
            await producer.send_offsets_to_transaction({src: next_offset}, group_id)

        await wait_committed_offset(admin, group_id, src, next_offset)
        # The same group offset as seen by a consumer of that group.
        assert await consumer.committed(src) == next_offset

        # An aborted transaction must not move the group offset.
        class Rollback(Exception):
            pass

        with pytest.raises(Rollback):
            async with producer.transaction():
                await producer.send(dst.topic, b"never", partition=dst.partition)
                await producer.send_offsets_to_transaction({src: 0}, group_id)
                raise Rollback
    finally:
        await producer.stop()
        await consumer.stop()

    # Restarting with the same transactional_id waits until the abort has completed (the
    # coordinator answers CONCURRENT_TRANSACTIONS meanwhile), so the check below is not racy:
    # this is also how a restarted engine should recover (start producer, then fetch offsets).
    producer = await transactional_producer(bootstrap, txn_id=f"{group_id}-{src.topic}-{src.partition}")
    await producer.stop()
    assert await committed_offset(admin, group_id, src) == next_offset

    out = await assigned_consumer(bootstrap, dst, isolation_level="read_committed")
    try:
        records = await read_until(out, dst, lambda rs: len(rs) >= len(inputs))
        # Nothing else shows up: drain a little longer and check the aborted b"never" stays hidden.
        records += (await out.getmany(dst, timeout_ms=500)).get(dst, [])
    finally:
        await out.stop()
    assert values(records) == [v.upper() for v in inputs]
