"""Kafka settings of the services (pydantic: validated at the edge, from flags or env)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Topics(BaseModel):
    """Topic names (``spec/contract.md``); every name is configurable."""

    commands: str = "marginbook.commands"
    events: str = "marginbook.events"
    snapshots: str = "marginbook.snapshots"
    risk: str = "marginbook.risk"
    alerts: str = "marginbook.alerts"
    dlq: str = "marginbook.commands.dlq"


#: Shards a deployment may run. Each shard keeps its own order books, so two shards would split
#: every market in two (an account on shard 1 never trades with one on shard 0, seq and orderId
#: restart per shard): until shards share books, there is exactly one.
MAX_SHARDS = 1
SHARDS_REFUSED = (
    "marginbook runs a single shard: each shard would keep its own order books, splitting every "
    "market (orders on different shards never trade; seq and orderId restart per shard) until "
    "shards share books"
)


class HealthPolicy(BaseModel):
    """When ``/healthz`` says 503 besides "not recovered yet" (``engine.io.health``)."""

    #: No successful round trip to the broker for this long → ``broker_unreachable``.
    broker_timeout_s: float = Field(default=5.0, gt=0)
    #: No transaction committed for this long while input is pending → ``stalled``.
    stall_s: float = Field(default=15.0, gt=0)
    #: How often the broker is probed (a ListOffsets of the input partition).
    probe_interval_s: float = Field(default=1.0, gt=0)


class EngineConfig(BaseModel):
    bootstrap: str = "127.0.0.1:19092"
    topics: Topics = Field(default_factory=Topics)
    #: The input partition this engine owns; only shard 0 until shards share books (MAX_SHARDS).
    shard: int = Field(default=0, ge=0, lt=MAX_SHARDS)
    #: Commands per Kafka transaction at most.
    batch_max: int = Field(default=2_000, ge=1)
    #: A snapshot is published in the transaction that crosses every N-th sequence number.
    snapshot_every: int = Field(default=50_000, ge=1)
    #: Port of the /metrics and /healthz endpoint; 0 disables it.
    metrics_port: int = Field(default=0, ge=0)
    linger_ms: int = 5
    #: Value bytes of one events or dead-letter record at most (``engine.io.kafka.framing``):
    #: below the topics' ``max.message.bytes`` (Kafka's default 1,048,588) with room for headers.
    record_max_bytes: int = Field(default=1_000_000, ge=1_024)
    #: A snapshot larger than this is not written (logged; the previous one stays the newest):
    #: below the snapshots topic's ``max.message.bytes`` (64 MiB).
    snapshot_max_bytes: int = Field(default=(64 << 20) - (64 << 10), ge=1_024)
    health: HealthPolicy = Field(default_factory=HealthPolicy)

    @property
    def group_id(self) -> str:
        return f"marginbook-engine-{self.shard}"

    @property
    def transactional_id(self) -> str:
        """Static per input partition: a restarted engine fences its predecessor (aiokafka #844)."""
        return f"marginbook-engine-{self.topics.commands}-{self.shard}"
