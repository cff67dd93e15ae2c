"""Create the contract's topics with the settings each needs.

* commands, events: kept forever (``retention.ms=-1``), never compacted — the input log and the
  journal are the sources of truth;
* snapshots, risk: compacted and keyed (latest per key); a short ``segment.ms`` lets the cleaner
  reach recent segments, ``delete.retention.ms`` outlasts any reader's downtime;
* alerts: kept 30 days; dlq: kept forever.

Partitions: one per engine shard for commands, events, snapshots and dlq (all the same count, so
partition ``s`` of each belongs to shard ``s``); risk and alerts are keyed by account.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from engine.io.kafka.config import Topics

FOREVER = {"retention.ms": "-1", "cleanup.policy": "delete"}
COMPACTED = {
    "cleanup.policy": "compact",
    "segment.ms": "600000",
    "delete.retention.ms": "604800000",
    "min.cleanable.dirty.ratio": "0.1",
}


def topic_specs(topics: Topics, shards: int) -> list[NewTopic]:
    return [
        NewTopic(topics.commands, shards, 1, topic_configs=FOREVER),
        NewTopic(topics.events, shards, 1, topic_configs=FOREVER),
        NewTopic(topics.dlq, shards, 1, topic_configs=FOREVER),
        NewTopic(topics.snapshots, shards, 1, topic_configs={**COMPACTED, "max.message.bytes": "67108864"}),
        NewTopic(topics.risk, shards, 1, topic_configs=COMPACTED),
        NewTopic(topics.alerts, shards, 1, topic_configs={"retention.ms": str(30 * 86_400_000)}),
    ]


async def create_topics(bootstrap: str, topics: Topics, shards: int = 1) -> list[str]:
    """Create missing topics; return the names created (existing ones are left as they are)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    created: list[str] = []
    try:
        response = await admin.create_topics(topic_specs(topics, shards))
        for name, code, *_ in response.topic_errors:
            if code == 0:
                created.append(name)
            elif for_code(code) is not TopicAlreadyExistsError:
                raise for_code(code)(f"creating topic {name}")
    finally:
        await admin.close()
    return created
