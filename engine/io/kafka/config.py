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


class EngineConfig(BaseModel):
    bootstrap: str = "127.0.0.1:19092"
    topics: Topics = Field(default_factory=Topics)
    #: The input partition this engine owns (one engine instance per shard).
    shard: int = Field(default=0, ge=0)
    #: Commands per Kafka transaction at most.
    batch_max: int = Field(default=2_000, ge=1)
    #: A snapshot is published in the transaction that crosses every N-th sequence number.
    snapshot_every: int = Field(default=50_000, ge=1)
    #: Port of the /metrics and /healthz endpoint; 0 disables it.
    metrics_port: int = Field(default=0, ge=0)
    linger_ms: int = 5

    @property
    def group_id(self) -> str:
        return f"marginbook-engine-{self.shard}"

    @property
    def transactional_id(self) -> str:
        """Static per input partition: a restarted engine fences its predecessor (aiokafka #844)."""
        return f"marginbook-engine-{self.topics.commands}-{self.shard}"
