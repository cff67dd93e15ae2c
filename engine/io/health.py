"""``/healthz`` of the Kafka services (engine, projection): is the service doing its job?

A service is healthy (200) when all of these hold, else 503 with the first that fails as
``status`` and a sentence as ``reason``:

1. ``halted`` — it has not stopped for good (a broken invariant, or fenced by a newer instance);
2. ``broker_unreachable`` — the broker answered a probe (a ListOffsets of the service's input
   partition, every ``probe_interval_s``) within the last ``broker_timeout_s`` seconds;
3. ``stalled`` — input is pending (the input partition's end is past the committed offset) and
   no transaction has committed for ``stall_s`` seconds since the later of the last commit and
   the moment input became pending (so an idle service that gets new input is not "stalled" for
   the milliseconds its first transaction takes; a service restarting crash-only without ever
   committing is);
4. ``recovering`` — it has recovered its state (at start and after every crash-only restart).

Without 3 and 4 a broker outage was invisible: aiokafka retries inside the loop, so the service
stayed "ready" with its ``last_seq`` frozen. The thresholds are flags of ``marginbook engine`` and
``marginbook project`` (``--health-broker-timeout``, ``--health-stall``) and environment variables
(``MARGINBOOK_HEALTH_BROKER_TIMEOUT_S``, ``MARGINBOOK_HEALTH_STALL_S``). Times are monotonic
seconds (``time.monotonic``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from engine.io.kafka.config import HealthPolicy


class HealthStats(Protocol):
    ready: bool
    halted: bool
    restarts: int
    last_seq: int
    lag: int
    health: ServiceHealth


@dataclass
class ServiceHealth:
    """What the probe and the loop observed (monotonic seconds)."""

    started_at: float
    #: Last successful broker round trip of the probe (``started_at`` until the first one).
    broker_ok_at: float
    #: Last committed transaction (``started_at`` until the first one).
    progress_at: float
    #: Input records past the committed offset (from the probe); 0 when unknown.
    pending: int = 0
    #: When the probe first saw input pending since it last saw none (None: nothing pending).
    pending_since: float | None = None
    broker_error: str = ""

    def observe_pending(self, pending: int, now: float) -> None:
        self.pending = pending
        if pending <= 0:
            self.pending_since = None
        elif self.pending_since is None:
            self.pending_since = now

    @classmethod
    def new(cls) -> ServiceHealth:
        now = time.monotonic()
        return cls(started_at=now, broker_ok_at=now, progress_at=now)


def verdict(stats: HealthStats, policy: HealthPolicy, now: float | None = None) -> tuple[bool, dict[str, Any]]:
    """``(healthy, JSON body)`` of ``/healthz`` (module doc)."""
    now = time.monotonic() if now is None else now
    health = stats.health
    since_broker = now - health.broker_ok_at
    since_progress = now - health.progress_at
    stalled_for = now - max(health.progress_at, health.pending_since or now)
    restarts = f" ({stats.restarts} crash-only restart(s) so far)" if stats.restarts else ""
    status, reason = "ok", None
    if stats.halted:
        status, reason = "halted", "stopped for good (a broken invariant, or fenced by a newer instance)"
    elif since_broker > policy.broker_timeout_s:
        cause = f": {health.broker_error}" if health.broker_error else ""
        status, reason = "broker_unreachable", f"no answer from the broker for {since_broker:.1f} s{cause}"
    elif health.pending > 0 and stalled_for > policy.stall_s:
        status = "stalled"
        reason = (
            f"no transaction committed for {stalled_for:.1f} s with {health.pending} input record(s) pending" + restarts
        )
    elif not stats.ready:
        status, reason = "recovering", "recovering its state" + restarts
    body = {
        "ready": status == "ok",
        "status": status,
        "reason": reason,
        "last_seq": stats.last_seq,
        "lag": stats.lag,
        "pending": health.pending,
        "since_commit_s": round(since_progress, 1),
        "since_broker_s": round(since_broker, 1),
        "uptime_s": round(now - health.started_at),
    }
    return status == "ok", body
