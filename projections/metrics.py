"""``/metrics`` (Prometheus text) and ``/healthz`` of ``marginbook project``.

Served by the services' shared endpoint (``engine.io.metrics.serve_stats``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from engine.io.health import ServiceHealth
from engine.io.kafka.config import HealthPolicy
from engine.io.metrics import GaugeSpecs, serve_stats


@dataclass
class ProjectionStats:
    """Figures the metrics endpoint exports."""

    #: Outcomes folded and published (recovery re-folds are not counted).
    outcomes: int = 0
    #: Risk records (views and tombstones) and alerts published.
    risk_records: int = 0
    alerts: int = 0
    snapshots: int = 0
    transactions: int = 0
    last_seq: int = 0
    #: Outcomes in the last transaction.
    last_batch: int = 0
    last_txn_seconds: float = 0.0
    #: Events records behind the partition's committed end (``end offset − position``).
    lag: int = 0
    restarts: int = 0
    ready: bool = False
    halted: bool = False
    health: ServiceHealth = field(default_factory=ServiceHealth.new)


_GAUGES: GaugeSpecs = {
    "outcomes": ("marginbook_projection_outcomes_total", "outcomes folded and published"),
    "risk_records": ("marginbook_projection_risk_records_total", "risk records published (views and tombstones)"),
    "alerts": ("marginbook_projection_alerts_total", "alerts published"),
    "snapshots": ("marginbook_projection_snapshots_total", "projection snapshots written"),
    "transactions": ("marginbook_projection_transactions_total", "Kafka transactions committed"),
    "last_seq": ("marginbook_projection_last_seq", "last sequence number folded"),
    "last_batch": ("marginbook_projection_batch_outcomes", "outcomes in the last transaction"),
    "last_txn_seconds": ("marginbook_projection_transaction_seconds", "duration of the last batch"),
    "lag": ("marginbook_projection_lag", "events records behind the partition's end"),
    "restarts": ("marginbook_projection_restarts_total", "crash-only restarts of the loop"),
    "halted": ("marginbook_projection_halted", "1 when the projection stopped for good"),
}


async def serve_projection_metrics(
    stats: ProjectionStats, port: int, host: str | None = None, policy: HealthPolicy | None = None
) -> asyncio.Server:
    """Serve ``/metrics`` and ``/healthz`` (``engine.io.health``: 200 when healthy, else 503
    with the reason) on ``host:port``."""
    return await serve_stats(stats, _GAUGES, port, host, policy, healthy_metric="marginbook_projection_healthy")
