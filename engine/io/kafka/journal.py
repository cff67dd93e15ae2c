"""Read the engine's journal back from Kafka (``read_committed``): the outcome lines in order.

An events record holds outcomes as JSON lines, or one fragment of an outcome too large for one
record (``engine.io.kafka.framing``); this reassembles fragments and yields the outcomes one by
one with their sequence numbers checked dense (a gap, a repeat or a missing fragment raises).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.io.kafka.framing import FragmentError, Reassembler
from events.codec import decode_outcome_json


class JournalGap(RuntimeError):
    """The journal's sequence numbers are not dense, or an outcome's fragments are incomplete."""


async def read_outcome_lines(
    bootstrap: str, topic: str, partition: int = 0, idle_polls: int = 5, after_seq: int = 0
) -> AsyncIterator[bytes]:
    """Yield every committed outcome (JSON bytes) of one shard, up to the current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    tp = TopicPartition(topic, partition)
    expected = after_seq + 1
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        idle = 0
        fragments = Reassembler()
        while await consumer.position(tp) < end and idle < idle_polls:
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=1000)
            records = batch.get(tp, [])
            idle = 0 if records else idle + 1
            for record in records:
                where = f"{topic}[{partition}]@{record.offset}"
                try:
                    value = fragments.feed(record.value, record.headers, where)
                except FragmentError as err:
                    raise JournalGap(str(err)) from None
                if value is None:
                    continue
                for line in value.split(b"\n"):
                    seq = decode_outcome_json(line).seq
                    if seq < expected:
                        if seq <= after_seq:
                            continue
                        raise JournalGap(f"{topic}[{partition}]@{record.offset}: seq {seq} repeated")
                    if seq > expected:
                        raise JournalGap(f"{topic}[{partition}]@{record.offset}: expected seq {expected}, got {seq}")
                    expected += 1
                    yield line
        if fragments.pending:
            raise JournalGap(f"{topic}[{partition}]: the journal ends inside an {fragments.describe_pending()}")
    finally:
        await consumer.stop()


async def read_outcomes(bootstrap: str, topic: str, partition: int = 0) -> list[bytes]:
    return [line async for line in read_outcome_lines(bootstrap, topic, partition)]
