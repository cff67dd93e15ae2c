"""``/healthz`` verdicts of the Kafka services (``engine.io.health``) and the delivery check of a
transaction (``engine.io.kafka.loop.delivered``), without a broker (issue 10, hole 4: health was
blind to a broker outage; hole 3: failed sends were never looked at)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from engine.io.health import ServiceHealth, verdict
from engine.io.kafka.config import HealthPolicy
from engine.io.kafka.loop import DeliveryFailed, LoopStats, delivered

POLICY = HealthPolicy(broker_timeout_s=5, stall_s=15)


def stats_at(now: float, **fields: object) -> LoopStats:
    stats = LoopStats(ready=True, last_seq=7)
    stats.health = ServiceHealth(started_at=now - 100, broker_ok_at=now - 0.5, progress_at=now - 1)
    for name, value in fields.items():
        setattr(stats, name, value)
    return stats


def test_healthy_when_recovered_the_broker_answers_and_nothing_is_pending() -> None:
    ok, body = verdict(stats_at(1_000.0), POLICY, now=1_000.0)
    assert ok and body["status"] == "ok" and body["reason"] is None and body["last_seq"] == 7


def test_broker_unreachable_names_the_silence_and_the_last_error() -> None:
    stats = stats_at(1_000.0)
    stats.health.broker_ok_at = 1_000.0 - 9.2
    stats.health.broker_error = "KafkaConnectionError: Unable to bootstrap from [('127.0.0.1', 1)]"
    ok, body = verdict(stats, POLICY, now=1_000.0)
    assert not ok and body["status"] == "broker_unreachable"
    assert body["reason"] == f"no answer from the broker for 9.2 s: {stats.health.broker_error}"
    assert body["ready"] is False and body["since_broker_s"] == 9.2


def test_stalled_counts_from_when_input_became_pending_not_from_an_old_commit() -> None:
    stats = stats_at(1_000.0)
    stats.health.progress_at = 0.0  # idle for a long time ...
    stats.health.observe_pending(40, now=999.9)  # ... then input arrives
    assert verdict(stats, POLICY, now=1_000.0)[0]
    stats.health.broker_ok_at = 1_015.5  # the broker answers probes all along
    ok, body = verdict(stats, POLICY, now=1_016.0)  # but nothing commits for 16 s
    assert not ok and body["status"] == "stalled"
    assert body["reason"] == "no transaction committed for 16.1 s with 40 input record(s) pending"
    stats.health.observe_pending(0, now=1_016.5)
    assert verdict(stats, POLICY, now=1_017.0)[0]


def test_a_crash_loop_that_never_commits_is_stalled_not_just_recovering() -> None:
    stats = stats_at(1_000.0, ready=False, restarts=9)
    stats.health.progress_at = 900.0
    stats.health.observe_pending(3_000, now=950.0)
    ok, body = verdict(stats, POLICY, now=1_000.0)
    assert (ok, body["status"], body["pending"]) == (False, "stalled", 3_000)
    assert body["reason"].endswith("(9 crash-only restart(s) so far)")
    stats.health.observe_pending(0, now=1_000.0)
    assert verdict(stats, POLICY, now=1_000.0)[1]["status"] == "recovering"


def test_halted_wins() -> None:
    stats = stats_at(1_000.0, halted=True, ready=False)
    stats.health.broker_ok_at = 0.0
    assert verdict(stats, POLICY, now=1_000.0)[1]["status"] == "halted"


def test_a_failed_send_of_the_transaction_raises_before_the_commit() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        good: asyncio.Future[object] = loop.create_future()
        bad: asyncio.Future[object] = loop.create_future()
        good.set_result(object())
        loop.call_later(0.01, bad.set_exception, MessageSizeTooLargeError())
        await delivered([good], "events")
        with pytest.raises(DeliveryFailed, match=r"1 of 2 events record\(s\) not written \(first: #1: "):
            await delivered([good, bad], "events")

    asyncio.run(run())
