"""A tiny HTTP endpoint: ``/metrics`` (Prometheus text format) and ``/healthz``.

Served with asyncio streams on the engine's event loop (no extra thread or web framework).
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from engine.io.kafka.loop import LoopStats


def _registry(stats: LoopStats) -> tuple[CollectorRegistry, dict[str, Gauge]]:
    registry = CollectorRegistry()
    gauges = {
        "commands": Gauge("marginbook_commands_total", "inputs consumed", registry=registry),
        "dead_letters": Gauge("marginbook_dead_letters_total", "inputs dead-lettered", registry=registry),
        "transactions": Gauge("marginbook_transactions_total", "Kafka transactions committed", registry=registry),
        "last_seq": Gauge("marginbook_last_seq", "last sequence number applied", registry=registry),
        "last_batch": Gauge("marginbook_batch_size", "inputs in the last transaction", registry=registry),
        "last_txn_seconds": Gauge(
            "marginbook_transaction_seconds", "duration of the last transaction", registry=registry
        ),
        "lag": Gauge("marginbook_lag", "inputs behind the partition's end", registry=registry),
        "restarts": Gauge("marginbook_restarts_total", "crash-only restarts of the loop", registry=registry),
        "halted": Gauge("marginbook_halted", "1 when a broken invariant stopped the engine", registry=registry),
    }
    return registry, gauges


async def serve_metrics(stats: LoopStats, port: int, host: str | None = None) -> asyncio.Server:
    """Serve on ``host`` (default: env ``MARGINBOOK_METRICS_HOST``, else loopback)."""
    import os

    host = host or os.environ.get("MARGINBOOK_METRICS_HOST", "127.0.0.1")
    registry, gauges = _registry(stats)
    started = asyncio.get_running_loop().time()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            path = request.split()[1].decode() if len(request.split()) > 1 else "/"
            if path == "/metrics":
                for name, gauge in gauges.items():
                    gauge.set(float(getattr(stats, name)))  # det-ok: metrics, not money
                body, status, kind = generate_latest(registry), "200 OK", "text/plain; version=0.0.4"
            elif path == "/healthz":
                ok = stats.ready
                uptime = asyncio.get_running_loop().time() - started
                body = f'{{"ready": {str(ok).lower()}, "uptime_s": {uptime:.0f}}}'.encode()
                status, kind = ("200 OK" if ok else "503 Service Unavailable"), "application/json"
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
