"""Read the engine's journal back from Kafka (``read_committed``): the outcome lines in order.

An events record holds up to ``OUTCOMES_PER_RECORD`` outcomes as JSON lines; this yields them
one by one with their sequence numbers checked dense (a gap or a repeat raises).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from events.codec import decode_outcome_json


class JournalGap(RuntimeError):
    """The journal's sequence numbers are not dense."""


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
        while await consumer.position(tp) < end and idle < idle_polls:
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=1000)
            records = batch.get(tp, [])
            idle = 0 if records else idle + 1
            for record in records:
                for line in (record.value or b"").split(b"\n"):
                    seq = decode_outcome_json(line).seq
                    if seq < expected:
                        if seq <= after_seq:
                            continue
                        raise JournalGap(f"{topic}[{partition}]@{record.offset}: seq {seq} repeated")
                    if seq > expected:
                        raise JournalGap(f"{topic}[{partition}]@{record.offset}: expected seq {expected}, got {seq}")
                    expected += 1
                    yield line
    finally:
        await consumer.stop()


async def read_outcomes(bootstrap: str, topic: str, partition: int = 0) -> list[bytes]:
    return [line async for line in read_outcome_lines(bootstrap, topic, partition)]
