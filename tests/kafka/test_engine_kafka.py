"""The Kafka engine end to end: ``marginbook submit`` → ``marginbook engine`` → committed journal.

Everything is real: the Kafka 4 broker of ``scripts/kafka.sh``, the engine as a subprocess
(SIGKILLed, SIGTERMed, its broker restarted under it), the CLI for topics and submission. The
reference for every run is the embedded engine (``marginbook run FILE --log DIR``): the Kafka
journal, read back ``read_committed`` with dense sequence numbers checked, must equal its
``events.log`` byte for byte — exactly once, whatever happened in between.

Needs ``KAFKA_BOOTSTRAP`` (every test is skipped without it)::

    bash scripts/kafka.sh start
    KAFKA_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python -m pytest tests/kafka -m kafka
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from test_crash_embedded import write_flow

from engine.core.state import State
from engine.core.step import fold
from engine.io.kafka.submit import content_id
from events.codec import BadCommand, decode_command_json, decode_outcome_json, encode_json
from projections.risk_view import build_view

from .conftest import (
    EngineProcess,
    StartEngine,
    broker_running,
    embedded_run,
    free_port,
    kafka_sh,
    read_journal,
    settled_journal,
    submit_file,
    wait_journal,
)

pytestmark = pytest.mark.kafka

RECOVERED = re.compile(
    r"recovered shard 0: snapshot at offset (\d+), replayed (\d+) inputs, committed offset (\d+), last seq (\d+)"
)


def recoveries(engine: EngineProcess) -> list[tuple[int, int, int, int]]:
    """``(snapshot offset, replayed, committed offset, last seq)`` of each recovery it logged."""
    found = []
    for entry in engine.logs():
        match = RECOVERED.fullmatch(str(entry.get("msg", "")))
        if match:
            found.append((int(match[1]), int(match[2]), int(match[3]), int(match[4])))
    return found


def errors(engine: EngineProcess) -> list[dict[str, object]]:
    return [e for e in engine.logs() if e.get("level") in ("error", "critical") or "raw" in e]


def first_divergence(ours: list[bytes], theirs: list[bytes]) -> str:
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            return f"first difference at seq {i + 1}:\n kafka:    {a[:300]!r}\n embedded: {b[:300]!r}"
    return f"lengths differ: kafka {len(ours)}, embedded {len(theirs)}"


def assert_same_journal(ours: list[bytes], theirs: list[bytes]) -> None:
    assert ours == theirs, first_divergence(ours, theirs)


def submitted(kafka_bootstrap: str, prefix: str, flow: Path, count: int) -> None:
    done = submit_file(kafka_bootstrap, prefix, flow)
    assert done.returncode == 0, done.stderr.decode()
    assert f"submitted {count} command(s) as {count} record(s)".encode() in done.stderr, done.stderr.decode()


# ----------------------------------------------------------------------------------- 1. equivalence


def test_kafka_journal_and_view_equal_embedded_run(
    kafka_bootstrap: str, prefix: str, engines: StartEngine, tmp_path: Path
) -> None:
    """Same file, two engines: the Kafka journal is byte-identical to the embedded events.log,
    and folding it (as a projection does) gives the same risk view as ``run --json``."""
    total = 5_000
    flow = tmp_path / "flow.jsonl"
    write_flow(flow, total, seed=1)
    reference = embedded_run(flow, tmp_path / "embedded")
    assert len(reference.events) == total

    submitted(kafka_bootstrap, prefix, flow, total)
    engine = engines(prefix, "--snapshot-every", "1000")
    lines = wait_journal(kafka_bootstrap, prefix, total, timeout=60, engine=engine)
    assert_same_journal(lines, reference.events)

    state = State()
    for line in lines:
        fold(state, decode_outcome_json(line))
    assert state.last_seq == total
    assert encode_json(build_view(state)) + b"\n" == reference.view

    assert engine.terminate(timeout=10) == 0
    assert errors(engine) == []


# ----------------------------------------------------------------------------------- 2. SIGKILL


def test_sigkill_mid_stream_then_restart_gives_exactly_once(
    kafka_bootstrap: str, prefix: str, engines: StartEngine, tmp_path: Path
) -> None:
    """SIGKILL the engine at four seeded points while it works through 30,000 commands (small
    transactions, frequent snapshots), restart it each time: the committed journal has no gap,
    no repeat and equals the uninterrupted embedded run."""
    total = 30_000
    flags = ("--snapshot-every", "3000", "--batch-max", "500")
    flow = tmp_path / "flow.jsonl"
    write_flow(flow, total, seed=7)
    reference = embedded_run(flow, tmp_path / "embedded")
    submitted(kafka_bootstrap, prefix, flow, total)

    rng = random.Random(20240611)
    # One kill point in each of four windows, so every restart has work left to do.
    targets = [int(rng.uniform(0.2 * (i + 1), 0.2 * (i + 1) + 0.12) * total) for i in range(4)]
    committed_at_kill: list[int] = []
    restarted: list[EngineProcess] = []
    for target in targets:
        engine = engines(prefix, *flags)
        engine.wait_seq(target, timeout=60)
        time.sleep(rng.uniform(0.0, 0.08))  # anywhere: mid-transaction, mid-commit, between batches
        engine.kill()
        committed = read_journal(kafka_bootstrap, prefix)  # dense seqs checked by read_outcomes
        assert 0 < len(committed) < total, f"kill at target {target} did not land mid-stream ({len(committed)})"
        assert_same_journal(committed, reference.events[: len(committed)])
        committed_at_kill.append(len(committed))
        restarted.append(engine)

    final = engines(prefix, *flags)
    lines = wait_journal(kafka_bootstrap, prefix, total, timeout=90, engine=final)
    assert_same_journal(lines, reference.events)
    assert committed_at_kill == sorted(committed_at_kill)

    # Each restart recovered from a snapshot plus a replay of the inputs after it, up to exactly
    # the last committed outcome (no dead letters here, so committed offset == last seq).
    first_recoveries = [recoveries(e)[0] for e in [*restarted[1:], final]]
    assert any(snap > 0 and replayed > 0 for snap, replayed, _, _ in first_recoveries), first_recoveries
    for (snap, replayed, committed_offset, last_seq), before in zip(first_recoveries, committed_at_kill, strict=True):
        assert last_seq >= before  # a commit acknowledged just before the kill may show up late
        assert committed_offset == last_seq == snap + replayed
    assert final.terminate(timeout=10) == 0


# ----------------------------------------------------------------------------------- 3. broker restart
# A broker restart mid-stream, with /healthz observed: tests/kafka/test_kafka_faults.py.


# ----------------------------------------------------------------------------------- 4. bad input


def cmd(**fields: object) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


async def produce(bootstrap: str, topic: str, values: list[bytes | None]) -> list[int]:
    """Produce to partition 0, bypassing ``submit``'s validation; return the offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        offsets = []
        for value in values:
            meta = await producer.send_and_wait(topic, value=value, key=b"test", partition=0)
            offsets.append(meta.offset)
        return offsets
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[bytes]:
    """The first ``count`` committed values of partition 0 (waits for them)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    values: list[bytes] = []
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        async with asyncio.timeout(timeout):
            while len(values) < count:
                batch = await consumer.getmany(tp, timeout_ms=200)
                values += [r.value or b"" for r in batch.get(tp, [])]
        values += [r.value or b"" for r in (await consumer.getmany(tp, timeout_ms=300)).get(tp, [])]
    finally:
        await consumer.stop()
    return values


def bad_reason(value: bytes | None) -> tuple[str, str]:
    try:
        decode_command_json(value or b"")
    except BadCommand as bad:
        return bad.field, bad.message
    raise AssertionError(f"{value!r} decodes")


def test_bad_inputs_are_dead_lettered_duplicates_rejected_and_the_engine_carries_on(
    kafka_bootstrap: str, prefix: str, engines: StartEngine
) -> None:
    """Inputs produced straight to the commands topic, past ``submit``'s validation: what cannot
    be decoded goes to the dead-letter topic with its field, reason, offset and exact bytes, and
    takes no sequence number; a repeated id is a ``duplicate_id`` rejection; the rest is applied,
    before and after, across transactions."""
    commands = f"{prefix}.commands"
    ts = iter(range(1_700_000_000_000, 1_700_000_100_000, 10))
    first: list[bytes | None] = [
        cmd(type="list_asset", ccy="USDT", decimals=8, ts=next(ts), id="v1"),
        cmd(type="deposit", acct="a1", ccy="USDT", amt="100", ts=next(ts), id="v2"),
        b"\xff\xfe{not json at all",  # garbage bytes
        cmd(type="deposit", acct="a1", ccy="USDT", amt=100.5, ts=next(ts), id="v3"),  # a JSON number
        cmd(type="deposit", ccy="USDT", amt="1", ts=next(ts), id="v4"),  # no acct
        cmd(type="deposit", acct="a1", ccy="USDT", amt="5", ts=next(ts), id="dup"),
        cmd(type="deposit", acct="a1", ccy="USDT", amt="7", ts=next(ts), id="dup"),  # same id
        None,  # a tombstone: no value at all
        cmd(type="withdraw", acct="a1", ccy="USDT", amt="1", ts=next(ts), id="v5"),
    ]
    offsets = asyncio.run(produce(kafka_bootstrap, commands, first))
    assert offsets == list(range(len(first)))
    bad_at = [2, 3, 4, 7]
    good = [v for i, v in enumerate(first) if i not in bad_at]

    engine = engines(prefix, "--batch-max", "4")  # the bad inputs span several transactions
    lines = wait_journal(kafka_bootstrap, prefix, len(good), timeout=30, engine=engine)
    outcomes = [decode_outcome_json(line) for line in lines]
    assert [o.id for o in outcomes] == ["v1", "v2", "dup", "dup", "v5"]
    assert [o.seq for o in outcomes] == [1, 2, 3, 4, 5]  # dead letters take no sequence number
    assert [type(e).__name__ for e in outcomes[2].events] == ["Deposited"]
    (rejected,) = outcomes[3].events
    assert (rejected.command, rejected.reason) == ("deposit", "duplicate_id")  # type: ignore[union-attr]
    assert [type(e).__name__ for e in outcomes[4].events] == ["Withdrawn"]

    # The engine carries on: a second wave, with one more bad input, after the first was committed.
    second: list[bytes | None] = [
        cmd(type="deposit", acct="a2", ccy="USDT", amt="3", ts=next(ts), id="v6"),
        cmd(type="deposit", acct="a2", ccy="USDT", amt="3", ts=next(ts)),  # no id
        cmd(type="deposit", acct="a2", ccy="USDT", amt="4", ts=next(ts), id="v7"),
    ]
    more = asyncio.run(produce(kafka_bootstrap, commands, second))
    lines = wait_journal(kafka_bootstrap, prefix, len(good) + 2, timeout=30, engine=engine)
    assert [decode_outcome_json(line).id for line in lines[-2:]] == ["v6", "v7"]

    dead = [json.loads(v) for v in asyncio.run(read_topic(kafka_bootstrap, f"{prefix}.commands.dlq", 5))]
    sent = first + second
    expected_offsets = [*bad_at, more[1]]
    assert [d["offset"] for d in dead] == expected_offsets
    for letter, offset in zip(dead, expected_offsets, strict=True):
        original = sent[offset]
        assert (letter["field"], letter["reason"]) == bad_reason(original)
        assert (letter["topic"], letter["partition"], letter["key"]) == (commands, 0, "test")
        assert base64.b64decode(letter["valueBase64"]) == (original or b"")
    by_offset = {d["offset"]: d for d in dead}
    assert by_offset[2]["field"] == "$" and "malformed" in by_offset[2]["reason"]
    assert (by_offset[3]["field"], by_offset[3]["reason"]) == (
        "$.amt",
        'decimals are JSON strings ("0.5"), not JSON numbers',
    )
    assert by_offset[4]["field"] == "$" and "`acct`" in by_offset[4]["reason"]
    assert by_offset[more[1]]["field"] == "$.id"

    metrics = engine.metrics()
    assert metrics["marginbook_dead_letters_total"] == 5
    assert metrics["marginbook_last_seq"] == len(good) + 2
    assert metrics["marginbook_restarts_total"] == 0
    assert engine.terminate(timeout=10) == 0
    assert errors(engine) == []


def test_submit_reports_bad_lines_sends_the_rest_and_resubmission_is_idempotent(
    kafka_bootstrap: str, prefix: str, engines: StartEngine, tmp_path: Path
) -> None:
    """``marginbook submit`` names each bad line (file:line: field: message), exits 1 and sends the
    good ones, with content ids where an id is missing; a resubmission is refused as duplicates."""
    ts = 1_700_000_000_000
    lines: list[dict[str, Any] | str] = [
        {"type": "list_asset", "ccy": "USDT", "decimals": 8, "ts": ts + 1},  # no id: content id assigned
        {"type": "deposit", "acct": "a1", "ccy": "USDT", "amt": "10", "ts": ts + 2, "id": "d1"},
        "this is not JSON",
        {"type": "deposit", "acct": "a1", "ccy": "USDT", "amt": 10, "ts": ts + 3, "id": "d2"},
        "",  # blank lines are skipped, and still counted for line numbers
        {"type": "deposit", "ccy": "USDT", "amt": "1", "ts": ts + 4, "id": "d3"},
        {"type": "deposit", "acct": "a1", "ccy": "USDT", "amt": "2", "ts": ts + 5},  # no id: content id
        {"type": "mark_price", "instId": "BTC-USDT", "markPx": "1", "ts": ts + 6},  # optional id: none
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))

    done = submit_file(kafka_bootstrap, prefix, path)
    assert done.returncode == 1
    stderr = done.stderr.decode()
    assert f"{path}:3: $: JSON is malformed" in stderr
    assert f'{path}:4: $.amt: decimals are JSON strings ("0.5"), not JSON numbers' in stderr
    assert f"{path}:6: $: Object missing required field `acct`" in stderr
    assert "submitted 4 command(s) as 4 record(s); 2 id(s) assigned; 3 refused" in stderr

    good = [line for i, line in enumerate(lines) if i in (0, 1, 6, 7) and isinstance(line, dict)]
    expected = [
        json.dumps({**line, "id": content_id(line)}, separators=(",", ":")).encode()
        if "id" not in line and line["type"] != "mark_price"
        else json.dumps(line).encode()
        for line in good
    ]
    assert asyncio.run(read_topic(kafka_bootstrap, f"{prefix}.commands", 4)) == expected

    # The same file again (a retry after a failure): same content ids, so the engine refuses the
    # repeats — all but the id-less mark, which has no idempotency key by contract.
    assert submit_file(kafka_bootstrap, prefix, path).returncode == 1
    engine = engines(prefix)
    outcomes = [decode_outcome_json(x) for x in wait_journal(kafka_bootstrap, prefix, 8, timeout=30, engine=engine)]
    repeats = outcomes[4:]
    assert [o.id for o in repeats] == [o.id for o in outcomes[:4]]
    reasons = [getattr(o.events[0], "reason", None) if o.events else None for o in repeats]
    assert reasons[:3] == ["duplicate_id"] * 3
    assert repeats[3].id is None and reasons[3] != "duplicate_id"
    assert engine.terminate(timeout=10) == 0


# ----------------------------------------------------------------------------------- 5. metrics


def test_metrics_and_healthz_over_a_real_socket(
    kafka_bootstrap: str, prefix: str, engines: StartEngine, tmp_path: Path
) -> None:
    """``--metrics-port``: /healthz is 200 ``ready`` once recovered; /metrics agrees with the journal."""
    engine = engines(prefix, "--batch-max", "300")
    engine.wait_ready(timeout=30)
    status, body = engine.http_get("/healthz")
    assert status == 200
    health = json.loads(body)
    assert health["ready"] is True and health["uptime_s"] >= 0
    assert engine.http_get("/nope")[0] == 404

    total = 3_000
    flow = tmp_path / "flow.jsonl"
    write_flow(flow, total, seed=5)
    submitted(kafka_bootstrap, prefix, flow, total)
    lines = wait_journal(kafka_bootstrap, prefix, total, timeout=60, engine=engine)
    engine.wait_seq(total, timeout=5)  # the gauges move just after the commit returns
    metrics = engine.metrics()
    assert metrics["marginbook_last_seq"] == len(lines) == total
    assert metrics["marginbook_commands_total"] == total
    assert metrics["marginbook_dead_letters_total"] == 0
    assert metrics["marginbook_restarts_total"] == 0
    assert metrics["marginbook_lag"] == 0
    assert total / 300 <= metrics["marginbook_transactions_total"] <= total
    assert 1 <= metrics["marginbook_batch_size"] <= 300
    assert metrics["marginbook_transaction_seconds"] > 0
    assert engine.terminate(timeout=10) == 0


def test_healthz_is_503_while_the_broker_is_unreachable(engines: StartEngine, prefix: str) -> None:
    """No broker: recovery keeps failing, /healthz says 503 not ready, restarts are counted."""
    engine = engines(prefix, "--bootstrap", f"127.0.0.1:{free_port()}")  # nothing listens there
    deadline = time.monotonic() + 20
    metrics: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            metrics = engine.metrics()
        except OSError:
            time.sleep(0.1)
            continue
        if metrics["marginbook_restarts_total"] >= 2:
            break
        time.sleep(0.2)
    assert metrics.get("marginbook_restarts_total", 0) >= 2, engine.tail()
    status, body = engine.http_get("/healthz")
    assert status == 503 and json.loads(body)["ready"] is False
    assert engine.terminate(timeout=10) == 0


# ----------------------------------------------------------------------------------- 6. SIGTERM


def test_sigterm_exits_cleanly_and_a_restart_continues_without_gap_or_repeat(
    kafka_bootstrap: str, prefix: str, engines: StartEngine, tmp_path: Path
) -> None:
    """SIGTERM mid-stream: exit 0 within a few seconds after the current transaction; a new
    engine resumes exactly at the last committed outcome — no gap, no repeat."""
    total = 20_000
    flow = tmp_path / "flow.jsonl"
    write_flow(flow, total, seed=9)
    reference = embedded_run(flow, tmp_path / "embedded")
    submitted(kafka_bootstrap, prefix, flow, total)

    flags = ("--batch-max", "200", "--snapshot-every", "2500")
    engine = engines(prefix, *flags)
    engine.wait_seq(total // 3, timeout=60)
    stopping = time.monotonic()
    assert engine.terminate(timeout=10) == 0
    assert time.monotonic() - stopping < 3.0
    assert errors(engine) == []
    first = settled_journal(kafka_bootstrap, prefix)
    assert 0 < len(first) < total
    assert_same_journal(first, reference.events[: len(first)])

    again = engines(prefix, *flags)
    lines = wait_journal(kafka_bootstrap, prefix, total, timeout=60, engine=again)
    assert_same_journal(lines, reference.events)
    (recovered,) = recoveries(again)[:1]
    # It resumed exactly where the stopped engine's last transaction ended.
    assert recovered[3] == len(first) == recovered[2]

    # An idle engine stops as promptly.
    stopping = time.monotonic()
    assert again.terminate(timeout=10) == 0
    assert time.monotonic() - stopping < 3.0
    assert broker_running()


def test_sigterm_during_a_broker_outage_exits_cleanly(
    kafka_bootstrap: str, prefix: str, engines: StartEngine, broker_restored: None
) -> None:
    """An orchestrator stopping the engine while the broker is down must still get exit 0."""
    engine = engines(prefix)
    engine.wait_ready(timeout=30)
    assert kafka_sh("stop", timeout=60).returncode == 0
    try:
        time.sleep(1.0)  # the consumer notices the broker is gone and backs off between fetches
        stopping = time.monotonic()
        code = engine.terminate(timeout=20)
        elapsed = time.monotonic() - stopping
    finally:
        assert kafka_sh("start").returncode == 0
    assert elapsed < 5.0
    assert code == 0, engine.tail()


# ----------------------------------------------------------------------------------- 7. zombie


def test_two_engines_on_one_shard_still_commit_exactly_once(
    kafka_bootstrap: str, prefix: str, engines: StartEngine, tmp_path: Path
) -> None:
    """A zombie: a second engine started on the same shard while the first still runs. The static
    transactional id fences one of them, which steps aside (exit 4) instead of fighting back —
    usually the older; the newer one can lose if the older was mid-restart and re-fenced it. One
    engine survives and the committed journal has no gap, no repeat and equals the embedded run."""
    total = 12_000
    flow = tmp_path / "flow.jsonl"
    write_flow(flow, total, seed=4)
    reference = embedded_run(flow, tmp_path / "embedded")
    submitted(kafka_bootstrap, prefix, flow, total)

    flags = ("--batch-max", "200", "--snapshot-every", "3000")
    first = engines(prefix, *flags)
    first.wait_seq(total // 6, timeout=60)
    second = engines(prefix, *flags)
    lines = wait_journal(kafka_bootstrap, prefix, total, timeout=60)
    assert_same_journal(lines, reference.events)
    deadline = time.monotonic() + 30
    while first.alive() and second.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = [e for e in (first, second) if e.alive()]
    stepped_aside = [e for e in (first, second) if not e.alive()]
    assert len(survivors) == 1 and len(stepped_aside) == 1, "exactly one engine must step aside"
    assert stepped_aside[0].proc.returncode == 4
    assert survivors[0].terminate(timeout=10) == 0
