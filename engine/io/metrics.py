"""A tiny HTTP endpoint for the services: ``/metrics`` (Prometheus text) and ``/healthz``.

Served with asyncio streams on the service's own event loop (no thread, no web framework), on
loopback unless ``MARGINBOOK_METRICS_HOST`` says otherwise. Each service passes its stats object
and the gauges to export (``field → (metric name, help)``); ``/healthz`` answers 200 when the
service is healthy, else 503, with a JSON body saying why (``engine.io.health.verdict``).
``marginbook_healthy`` (1/0) exports the same verdict.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from engine.io.health import verdict
from engine.io.kafka.config import HealthPolicy
from engine.io.kafka.loop import LoopStats

GaugeSpecs = dict[str, tuple[str, str]]

ENGINE_GAUGES: GaugeSpecs = {
    "commands": ("marginbook_commands_total", "inputs consumed"),
    "dead_letters": ("marginbook_dead_letters_total", "inputs dead-lettered (committed dead letters)"),
    "dead_letters_truncated": ("marginbook_dead_letters_truncated_total", "dead letters holding a truncated value"),
    "fragmented": ("marginbook_fragmented_outcomes_total", "outcomes split across several events records"),
    "snapshots_skipped": ("marginbook_snapshots_skipped_total", "snapshots too large for one record, not written"),
    "transactions": ("marginbook_transactions_total", "Kafka transactions committed"),
    "last_seq": ("marginbook_last_seq", "last sequence number applied"),
    "last_batch": ("marginbook_batch_size", "inputs in the last transaction"),
    "last_txn_seconds": ("marginbook_transaction_seconds", "duration of the last transaction"),
    "lag": ("marginbook_lag", "inputs behind the partition's end"),
    "restarts": ("marginbook_restarts_total", "crash-only restarts of the loop"),
    "halted": ("marginbook_halted", "1 when a broken invariant stopped the engine"),
}


async def serve_stats(
    stats: Any,
    gauges: GaugeSpecs,
    port: int,
    host: str | None = None,
    policy: HealthPolicy | None = None,
    healthy_metric: str = "marginbook_healthy",
) -> asyncio.Server:
    """Serve ``/metrics`` and ``/healthz`` for ``stats`` on ``host:port``."""
    host = host or os.environ.get("MARGINBOOK_METRICS_HOST", "127.0.0.1")
    policy = policy or HealthPolicy()
    registry = CollectorRegistry()
    exported = {field: Gauge(name, text, registry=registry) for field, (name, text) in gauges.items()}
    healthy_gauge = Gauge(healthy_metric, "1 when /healthz answers 200", registry=registry)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.split()
            path = parts[1].decode() if len(parts) > 1 else "/"
            if path == "/metrics":
                for field, gauge in exported.items():
                    gauge.set(float(getattr(stats, field)))  # det-ok: metrics, not money
                healthy_gauge.set(1.0 if verdict(stats, policy)[0] else 0.0)  # det-ok: metrics
                body, status, kind = generate_latest(registry), "200 OK", "text/plain; version=0.0.4"
            elif path == "/healthz":
                ok, report = verdict(stats, policy)
                body = json.dumps(report).encode()
                status = "200 OK" if ok else "503 Service Unavailable"
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


async def serve_metrics(
    stats: LoopStats, port: int, host: str | None = None, policy: HealthPolicy | None = None
) -> asyncio.Server:
    """The engine's endpoint."""
    return await serve_stats(stats, ENGINE_GAUGES, port, host, policy)
