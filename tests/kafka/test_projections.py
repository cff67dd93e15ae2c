"""The risk projection end to end: ``submit`` → ``engine`` → ``project`` → the risk and alerts topics.

Everything Kafka is real (the broker of ``scripts/kafka.sh``, engines and projections as
subprocesses, SIGKILLed and restarted). The reference is the embedded engine:
``marginbook run FILE --json`` of the same commands. The risk topic read back ``read_committed``
(latest value per key, tombstones removing keys) must equal that view keyed like the topic
(``acct``, ``acct/instId/posSide``); alerts must be the journal's margin-call and liquidation
events; a projection killed mid-stream and restarted must publish exactly the records of an
uninterrupted one; ``--rebuild`` must converge a damaged topic back to the same records.

The first test needs no broker: it checks the projector's invariant (every key's last published
value equals ``build_view`` of the folded state) under arbitrary batch cuts.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from test_crash_embedded import write_flow

from cli.demo import scenario
from engine.core.step import Engine
from engine.io.filelog import FileLog
from events import journal as ev
from events.codec import decode_command_json, decode_outcome_json
from projections.publish import Projector, all_view_records

from .conftest import (
    EngineProcess,
    StartProcess,
    embedded_run,
    parse_metrics,
    submit_file,
    wait_journal,
)

Rec = tuple[str, bytes | None, int]  # key, value (None: tombstone), ``seq`` header

# ------------------------------------------------------------------------------------ scenarios


def risk_scenario(path: Path) -> int:
    """The demo of ``marginbook demo`` (alice: margin call, then full liquidation; bob: a short)
    plus ``carol``, a leveraged long that ends in a standing margin call (ratio ≈ 293 %)."""
    commands: list[dict[str, Any]] = []
    for step, (_, batch) in enumerate(scenario(full=False)):
        commands += batch
        if step == 1:
            ts = batch[-1]["ts"]
            commands.append(
                {"type": "deposit", "ts": ts + 1, "id": "carol-1", "acct": "carol", "ccy": "USDT", "amt": "10000"}
            )
            commands.append(
                {
                    "type": "place_order",
                    "ts": ts + 2,
                    "id": "carol-2",
                    "acct": "carol",
                    "instId": "BTC-USDT",
                    "clOrdId": "carol-long",
                    "side": "buy",
                    "ordType": "market",
                    "sz": "0.4",
                    "tdMode": "cross",
                }
            )
    path.write_text("".join(json.dumps(c, separators=(",", ":")) + "\n" for c in commands))
    return len(commands)


def keyed(view: bytes) -> dict[str, dict[str, Any]]:
    """A ``run --json`` risk view keyed like the risk topic."""
    parsed = json.loads(view)
    out = {a["acct"]: a for a in parsed["accounts"]}
    out.update({f"{p['acct']}/{p['instId']}/{p['posSide']}": p for p in parsed["positions"]})
    return out


def journal_of(log_dir: Path) -> list[bytes]:
    with FileLog.open(log_dir / "events.log") as log:
        return [payload for _, payload in log.read()]


_ALERT_EVENTS = {
    "margin_call_raised": "margin_call",
    "margin_call_cleared": "margin_call_cleared",
    "liquidation_started": "liquidation_started",
    "liquidation_finished": "liquidation_finished",
}


def expected_alerts(journal: list[bytes]) -> list[tuple[str, int, int, str]]:
    """``(type, seq, event index, acct)`` of every alert the journal calls for, in order."""
    found = []
    for line in journal:
        outcome = decode_outcome_json(line)
        for index, event in enumerate(outcome.events):
            tag = str(event.__struct_config__.tag)
            if tag in _ALERT_EVENTS:
                found.append((_ALERT_EVENTS[tag], outcome.seq, index, str(getattr(event, "acct", ""))))
    return found


# ------------------------------------------------------------------------------------ topics


async def _settle(bootstrap: str, tp: TopicPartition, timeout: float = 10.0) -> None:
    """Wait until no transaction is open or completing on ``tp``: the last stable offset has
    reached the high watermark. A commit returns before the coordinator has written its
    markers, so a ``read_committed`` read right after it could miss the last transaction."""
    committed = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    everything = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_uncommitted")
    await committed.start()
    await everything.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lso = (await committed.end_offsets([tp]))[tp]
            if lso == (await everything.end_offsets([tp]))[tp]:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{tp}: a transaction stayed open for {timeout} s")
    finally:
        await committed.stop()
        await everything.stop()


async def _read_records(bootstrap: str, topic: str, partition: int = 0, settle: bool = True) -> list[Rec]:
    tp = TopicPartition(topic, partition)
    if settle:
        await _settle(bootstrap, tp)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    out: list[Rec] = []
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        idle = 0
        while True:
            position = await consumer.position(tp)
            if position >= end or (position == end - 1 and idle >= 2) or idle >= 50:
                break
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=5_000)
            records = batch.get(tp, [])
            idle = 0 if records else idle + 1
            for r in records:
                seq = int(dict(r.headers or ()).get("seq", b"0"))
                out.append(((r.key or b"").decode(), r.value, seq))
    finally:
        await consumer.stop()
    return out


def read_records(bootstrap: str, topic: str, settle: bool = True) -> list[Rec]:
    """Every committed record of partition 0, in order, with its ``seq`` header (by default
    once no transaction is open or completing on it)."""
    return asyncio.run(_read_records(bootstrap, topic, settle=settle))


def latest(records: list[Rec]) -> dict[str, dict[str, Any]]:
    """Latest value per key (what compaction keeps), tombstones removing keys."""
    out: dict[str, dict[str, Any]] = {}
    for key, value, _ in records:
        if value is None:
            out.pop(key, None)
        else:
            out[key] = json.loads(value)
    return out


def per_key(records: list[Rec]) -> dict[str, list[tuple[int, bytes | None]]]:
    out: dict[str, list[tuple[int, bytes | None]]] = {}
    for key, value, seq in records:
        out.setdefault(key, []).append((seq, value))
    return out


def assert_no_repeats(records: list[Rec]) -> None:
    """Per key, ``seq`` headers strictly increase: no record was published twice."""
    for key, history in per_key(records).items():
        seqs = [seq for seq, _ in history]
        assert seqs == sorted(set(seqs)), f"{key}: seq headers {seqs} repeat or go back"


def alerts_of(records: list[Rec]) -> list[tuple[str, int, int, str]]:
    return [(a["type"], a["seq"], a["event"], a["acct"]) for a in (json.loads(v or b"{}") for _, v, _ in records)]


async def _copy_events(bootstrap: str, source: str, target: str) -> int:
    """Copy every committed events record (values and headers, the same record boundaries) in
    one transaction: the target journal is the source's, record for record."""
    records: list[Any] = []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(source, 0)
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        idle = 0
        while await consumer.position(tp) < end - 1 or (idle < 2 and await consumer.position(tp) < end):
            got = (await consumer.getmany(tp, timeout_ms=200)).get(tp, [])
            idle = 0 if got else idle + 1
            records += got
    finally:
        await consumer.stop()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"copy-{uuid.uuid4().hex}")
    await producer.start()
    try:
        async with producer.transaction():
            for r in records:
                await producer.send(target, value=r.value, key=r.key, partition=0, headers=list(r.headers or ()))
    finally:
        await producer.stop()
    return len(records)


async def _produce_plain(bootstrap: str, topic: str, items: list[tuple[str, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value=value, key=key.encode(), partition=0, headers=[("seq", b"0")])
    finally:
        await producer.stop()


# ------------------------------------------------------------------------------------ helpers


def projection_metrics(process: EngineProcess) -> dict[str, float] | None:
    try:
        status, body = process.http_get("/metrics")
    except OSError:
        return None
    return parse_metrics(body.decode()) if status == 200 else None


def wait_projected(process: EngineProcess, seq: int, timeout: float = 60.0, lag_zero: bool = True) -> dict[str, float]:
    """Poll the projection's /metrics until it has folded ``seq`` (and, by default, has no lag)."""
    deadline = time.monotonic() + timeout
    seen: dict[str, float] | None = None
    while time.monotonic() < deadline:
        if not process.alive():
            pytest.fail(f"projection exited with {process.proc.returncode}:\n{process.tail()}")
        seen = projection_metrics(process)
        if (
            seen is not None
            and seen["marginbook_projection_last_seq"] >= seq
            and (not lag_zero or seen["marginbook_projection_lag"] == 0)
        ):
            return seen
        time.sleep(0.02)
    pytest.fail(f"projection not at seq {seq} after {timeout} s (metrics {seen}):\n{process.tail()}")


RECOVERED = re.compile(
    r"recovered projection of shard 0: snapshot at offset (\d+), re-folded (\d+) outcomes, "
    r"committed offset (\d+), last seq (\d+)"
)


def recoveries(process: EngineProcess) -> list[tuple[int, int, int, int]]:
    """``(snapshot offset, outcomes re-folded, committed offset, last seq)`` of each recovery."""
    found = []
    for entry in process.logs():
        match = RECOVERED.fullmatch(str(entry.get("msg", "")))
        if match:
            found.append((int(match[1]), int(match[2]), int(match[3]), int(match[4])))
    return found


def errors(process: EngineProcess) -> list[dict[str, object]]:
    return [e for e in process.logs() if e.get("level") in ("error", "critical") or "raw" in e]


def run_pipeline(
    bootstrap: str, prefix: str, flow: Path, total: int, services: StartProcess, *project_flags: str
) -> EngineProcess:
    """Submit ``flow``, run an engine (one command per transaction, so one outcome per events
    record) and a projection on it; return the projection once it has published everything
    (the engine is stopped)."""
    done = submit_file(bootstrap, prefix, flow)
    assert done.returncode == 0, done.stderr.decode()
    engine = services("engine", prefix, "--batch-max", "1")
    projection = services("project", prefix, *project_flags)
    wait_journal(bootstrap, prefix, total, timeout=60, engine=engine)
    wait_projected(projection, total)
    assert engine.terminate(timeout=10) == 0
    return projection


# ------------------------------------------------------------------------------------ 1. no broker


def test_projector_publishes_every_change_whatever_the_batching(tmp_path: Path) -> None:
    """Fold the embedded journal with random batch cuts: after every flush, every key's last
    published value is its value in ``build_view`` (nothing stale, nothing missing, positions
    gone — liquidated or closed — tombstoned); alerts do not depend on the cuts and are exactly
    the journal's. Cross, isolated spot and perpetual positions (the full demo and two golden
    liquidation scenarios) included."""
    flow = tmp_path / "flow.jsonl"
    write_flow(flow, 1_500, seed=2)
    scenario_file, closing = tmp_path / "risk.jsonl", tmp_path / "close.jsonl"
    risk_scenario(scenario_file)
    close = {"type": "close_position", "ts": 1_800_000_000_000, "id": "c-1", "acct": "carol", "instId": "BTC-USDT"}
    closing.write_text(scenario_file.read_text() + json.dumps({**close, "mgnMode": "cross"}) + "\n")
    # the full margin model: the demo (isolated spot, an isolated perpetual, funding,
    # liquidations) and the golden isolated / perpetual liquidation scenarios
    full_demo = tmp_path / "demo.jsonl"
    full_demo.write_text("".join(json.dumps(c) + "\n" for _, batch in scenario() for c in batch))
    golden = Path(__file__).parent.parent / "golden"
    views: dict[str, bytes] = {}
    runs = [(flow, "flow"), (scenario_file, "risk"), (closing, "close"), (full_demo, "demo")]
    runs += [(golden / f"{name}.commands.jsonl", name) for name in ("isolated_partial", "perp_liquidation")]
    for path, name in runs:
        reference = embedded_run(path, tmp_path / name)
        views[name] = reference.view
        journal = journal_of(tmp_path / name)
        rng = random.Random(len(journal))
        seen_alerts: list[list[tuple[str, int, int, str]]] = []
        for sizes in ([1], [1, 2, 3, 50], [7, 300], [len(journal)]):
            projector = Projector()
            topic: dict[str, bytes] = {}
            alerts: list[tuple[str, int, int, str]] = []
            i = 0
            while i < len(journal):
                size = rng.choice(sizes)
                for line in journal[i : i + size]:
                    projector.fold(decode_outcome_json(line))
                i += size
                records = projector.flush()
                for r in records:
                    if r.topic == "alerts":
                        a = json.loads(r.value or b"")
                        alerts.append((a["type"], a["seq"], a["event"], a["acct"]))
                        assert r.seq == a["seq"] and r.event == a["event"]
                    elif r.value is None:
                        assert r.key in topic, f"tombstone for {r.key}, never published"
                        del topic[r.key]
                    else:
                        assert topic.get(r.key) != r.value, f"{r.key} republished unchanged"
                        topic[r.key] = r.value
                assert topic == projector.published == all_view_records(projector.state)
            assert {k: json.loads(v) for k, v in topic.items()} == keyed(reference.view)
            seen_alerts.append(alerts)
        assert all(a == seen_alerts[0] for a in seen_alerts)
        assert seen_alerts[0] == expected_alerts(journal)
        if name == "close":  # carol closed her position: gone from the topic, tombstoned
            assert "carol/BTC-USDT/net" in keyed(views["risk"])
            assert "carol/BTC-USDT/net" not in keyed(reference.view)
        if name == "risk":
            kinds = {(kind, acct) for kind, _, _, acct in seen_alerts[0]}
            assert {("margin_call", "alice"), ("liquidation_started", "alice"), ("margin_call", "carol")} <= kinds
            assert ("liquidation_finished", "alice") in kinds


def test_a_storm_of_marks_renders_each_exposed_account_once_per_batch(tmp_path: Path) -> None:
    """Coalescing: 500 marks folded in one batch publish each exposed key at most once, with the
    seq of the last mark (the views after it), not 500 times."""
    flow = tmp_path / "flow.jsonl"
    write_flow(flow, 600, seed=4)
    engine = Engine()
    projector = Projector()
    for line in flow.read_bytes().splitlines():
        projector.fold(engine.step(decode_command_json(line)))
    projector.flush()
    ts = engine.state.last_seq + 1_800_000_000_000
    for k in range(500):
        mark = decode_command_json(
            json.dumps({"type": "mark_price", "ts": ts + k, "instId": "BTC-USDT", "markPx": f"{50_000 + k % 7}.5"})
        )
        projector.fold(engine.step(mark))
    records = projector.flush()
    keys = [r.key for r in records if r.topic == "risk"]
    exposed = [a for a in engine.state.accounts.values() if "BTC" in a.balances]
    assert len(keys) == len(set(keys)) <= sum(1 + len(a.positions) for a in exposed)
    assert len(exposed) == 40 and len({k.split("/")[0] for k in keys}) == 40
    assert {r.seq for r in records} == {engine.state.last_seq}
    assert projector.published == all_view_records(engine.state)


# ------------------------------------------------------------------------------------ 2. live


@pytest.mark.kafka
def test_live_projection_equals_run_json(
    kafka_bootstrap: str, make_prefix: Callable[[], str], services: StartProcess, tmp_path: Path
) -> None:
    """The projection runs while commands are submitted and the engine works (live batches):
    the compacted risk topic read back equals ``marginbook run --json``; per key, the ``seq``
    headers never repeat; /metrics reports no lag once caught up."""
    prefix = make_prefix()
    total = 3_000
    flow = tmp_path / "flow.jsonl"
    write_flow(flow, total, seed=5)
    reference = embedded_run(flow, tmp_path / "embedded")
    projection = services("project", prefix, "--snapshot-every", "1000")
    projection.wait_ready(timeout=30)
    engine = services("engine", prefix, "--batch-max", "100")
    done = submit_file(kafka_bootstrap, prefix, flow)
    assert done.returncode == 0, done.stderr.decode()
    metrics = wait_projected(projection, total)

    records = read_records(kafka_bootstrap, f"{prefix}.risk")
    assert latest(records) == keyed(reference.view)
    assert_no_repeats(records)
    assert metrics["marginbook_projection_lag"] == 0
    assert metrics["marginbook_projection_outcomes_total"] == total
    assert metrics["marginbook_projection_risk_records_total"] == len(records)
    assert metrics["marginbook_projection_snapshots_total"] >= 1
    assert metrics["marginbook_projection_restarts_total"] == 0
    status, body = projection.http_get("/healthz")
    assert status == 200 and json.loads(body)["ready"] is True
    assert read_records(kafka_bootstrap, f"{prefix}.alerts") == [] == expected_alerts(reference.events)
    assert projection.terminate(timeout=10) == 0
    assert engine.terminate(timeout=10) == 0
    assert errors(projection) == []


@pytest.mark.kafka
def test_margin_calls_liquidations_and_closed_positions(
    kafka_bootstrap: str, make_prefix: Callable[[], str], services: StartProcess, tmp_path: Path
) -> None:
    """The demo's crash: alerts carry the journal's margin calls and liquidations (seq, event
    index, ratio), a liquidated position is tombstoned, and the topic equals ``run --json``."""
    prefix = make_prefix()
    flow = tmp_path / "risk.jsonl"
    total = risk_scenario(flow)
    reference = embedded_run(flow, tmp_path / "embedded")
    projection = run_pipeline(kafka_bootstrap, prefix, flow, total, services, "--batch-max", "1")

    records = read_records(kafka_bootstrap, f"{prefix}.risk")
    assert latest(records) == keyed(reference.view)
    assert_no_repeats(records)
    assert "alice/BTC-USDT/net" not in latest(records)
    assert any(key == "alice/BTC-USDT/net" and value is None for key, value, _ in records)

    alerts = read_records(kafka_bootstrap, f"{prefix}.alerts")
    assert alerts_of(alerts) == expected_alerts(reference.events)
    parsed = [json.loads(v or b"") for _, v, _ in alerts]
    assert all(seq == a["seq"] for (_, _, seq), a in zip(alerts, parsed, strict=True))
    call = next(a for a in parsed if a["type"] == "margin_call" and a["acct"] == "carol")
    raised = next(
        e
        for line in reference.events
        for e in decode_outcome_json(line).events
        if isinstance(e, ev.MarginCallRaised) and e.acct == "carol"
    )
    assert call["mgnRatio"] == str(raised.mgnRatio).rstrip("0").rstrip(".")
    started = next(a for a in parsed if a["type"] == "liquidation_started")
    assert started["acct"] == "alice" and 0 < float(started["mgnRatio"]) <= 1
    assert {"type", "seq", "ts", "acct", "mgnRatio"} <= set(started)
    assert projection.terminate(timeout=10) == 0


# ------------------------------------------------------------------------------------ 3. SIGKILL


@pytest.mark.kafka
def test_sigkill_mid_stream_publishes_exactly_the_uninterrupted_records_and_rebuild_converges(
    kafka_bootstrap: str, make_prefix: Callable[[], str], services: StartProcess, tmp_path: Path
) -> None:
    """One journal, two projections: one uninterrupted (on a record-for-record copy of the
    events topic), one SIGKILLed twice mid-stream and restarted (snapshot + silent re-fold).
    Their risk and alerts topics hold the same records — every key's full history, with its
    seq headers, not just its latest value. Then the killed one's risk topic is damaged and
    ``--rebuild`` converges it back."""
    flow, mixed = tmp_path / "risk.jsonl", tmp_path / "flow.jsonl"
    risk_scenario(flow)  # the demo's crash first (margin calls, a liquidation), then the flow
    write_flow(mixed, 8_000, seed=11)  # whose marks around 50,000 liquidate carol too
    with open(flow, "a") as out:
        for line in mixed.read_text().splitlines():
            command = json.loads(line)
            command["ts"] += 10**8
            out.write(json.dumps(command, separators=(",", ":")) + "\n")
    total = sum(1 for _ in flow.open())
    reference = embedded_run(flow, tmp_path / "embedded")
    assert len(reference.events) == total

    killed, steady = make_prefix(), make_prefix()
    done = submit_file(kafka_bootstrap, killed, flow)
    assert done.returncode == 0, done.stderr.decode()
    engine = services("engine", killed, "--batch-max", "40")
    wait_journal(kafka_bootstrap, killed, total, timeout=90, engine=engine)
    assert engine.terminate(timeout=10) == 0
    copied = asyncio.run(_copy_events(kafka_bootstrap, f"{killed}.events", f"{steady}.events"))
    assert copied >= total // 40

    flags = ("--batch-max", "60", "--snapshot-every", "1500")
    uninterrupted = services("project", steady, *flags, "--stop-when-caught-up")
    assert uninterrupted.proc.wait(timeout=120) == 0, uninterrupted.tail()

    rng = random.Random(5)
    victims: list[EngineProcess] = []
    # Two kills, and up to two more when neither restart had outcomes to re-fold (a loaded
    # machine can delay a kill until just after a snapshot was committed).
    for round_, (low, high) in enumerate(((0.2, 0.3), (0.4, 0.5), (0.6, 0.7), (0.8, 0.9))):
        if round_ >= 2 and any(recoveries(v)[0][1] > 0 for v in victims[1:]):
            break
        target = int(rng.uniform(low, high) * total)
        victim = services("project", killed, *flags)
        victims.append(victim)
        wait_projected(victim, target, timeout=90, lag_zero=False)
        time.sleep(rng.uniform(0.0, 0.05))
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=30)
        committed = read_records(kafka_bootstrap, f"{killed}.risk", settle=False)  # its transaction may hang open
        assert 0 < max(seq for _, _, seq in committed) < total, "the kill did not land mid-stream"
    final = services("project", killed, *flags, "--stop-when-caught-up")
    assert final.proc.wait(timeout=120) == 0, final.tail()
    # The restarts restored a snapshot and re-folded the events after it, without publishing.
    restarts = [recoveries(p)[0] for p in (*victims[1:], final)]
    assert any(snap > 0 and refolded > 0 for snap, refolded, _, _ in restarts), restarts
    assert all(0 < last_seq <= total for *_, last_seq in restarts), restarts
    assert any(last_seq < total for *_, last_seq in restarts), restarts  # at least one mid-stream

    ours, theirs = (read_records(kafka_bootstrap, f"{p}.risk") for p in (killed, steady))
    assert latest(ours) == keyed(reference.view)
    assert_no_repeats(ours)
    assert per_key(ours) == per_key(theirs)
    assert ours == theirs  # same batches, so even the order across keys is the same
    alerts = read_records(kafka_bootstrap, f"{killed}.alerts")
    assert alerts == read_records(kafka_bootstrap, f"{steady}.alerts")
    assert alerts_of(alerts) == expected_alerts(reference.events)
    assert {"margin_call", "liquidation_started", "liquidation_finished"} <= {a[0] for a in alerts_of(alerts)}

    # Damage the topic (a wrong value, a lost key, a key that should not exist), then rebuild.
    some_account, some_position = "a3", next(k for k in latest(ours) if k.count("/") == 2)
    asyncio.run(
        _produce_plain(
            kafka_bootstrap,
            f"{killed}.risk",
            [(some_account, b'{"acct":"a3","totalEq":"1"}'), (some_position, None), ("ghost", b"{}")],
        )
    )
    assert latest(read_records(kafka_bootstrap, f"{killed}.risk")) != keyed(reference.view)
    rebuild = services("project", killed, *flags, "--rebuild", "--stop-when-caught-up")
    assert rebuild.proc.wait(timeout=120) == 0, rebuild.tail()
    messages = " ".join(str(e.get("msg", "")) for e in rebuild.logs())
    assert "3 records published to converge" in messages, messages
    assert latest(read_records(kafka_bootstrap, f"{killed}.risk")) == keyed(reference.view)
    # A second rebuild finds nothing to do, and the alerts were not published again.
    again = services("project", killed, *flags, "--rebuild", "--stop-when-caught-up")
    assert again.proc.wait(timeout=120) == 0, again.tail()
    assert "0 records published to converge" in " ".join(str(e.get("msg", "")) for e in again.logs())
    assert read_records(kafka_bootstrap, f"{killed}.alerts") == alerts
    for process in (uninterrupted, final, rebuild, again):
        assert errors(process) == []
