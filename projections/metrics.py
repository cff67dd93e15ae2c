"""``/metrics`` (Prometheus text) and ``/healthz`` of ``marginbook project``.

The same shape as the engine's endpoint (``engine.io.metrics``): asyncio streams on the
service's own event loop, no thread, no web framework; loopback unless
``MARGINBOOK_METRICS_HOST`` says otherwise.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, generate_latest


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


_GAUGES = {
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


async def serve_projection_metrics(stats: ProjectionStats, port: int, host: str | None = None) -> asyncio.Server:
    """Serve ``/metrics`` and ``/healthz`` (200 once recovered, else 503) on ``host:port``."""
    host = host or os.environ.get("MARGINBOOK_METRICS_HOST", "127.0.0.1")
    registry = CollectorRegistry()
    gauges = {field: Gauge(name, text, registry=registry) for field, (name, text) in _GAUGES.items()}
    started = asyncio.get_running_loop().time()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.split()
            path = parts[1].decode() if len(parts) > 1 else "/"
            if path == "/metrics":
                for field, gauge in gauges.items():
                    gauge.set(float(getattr(stats, field)))  # det-ok: metrics, not money
                body, status, kind = generate_latest(registry), "200 OK", "text/plain; version=0.0.4"
            elif path == "/healthz":
                uptime = asyncio.get_running_loop().time() - started
                body = (
                    f'{{"ready": {str(stats.ready).lower()}, "last_seq": {stats.last_seq}, '
                    f'"lag": {stats.lag}, "uptime_s": {uptime:.0f}}}'
                ).encode()
                status = "200 OK" if stats.ready else "503 Service Unavailable"
                kind = "application/json"
            else:
                body, status, kind = b"not found", "404 Not Found", "text/plain"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
