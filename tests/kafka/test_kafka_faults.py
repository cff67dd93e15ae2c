"""Fault tests of the Kafka services against the real broker (issue 10, holes 3, 4 and 6).

Each test is a reproduction of a hole found from outside, and fails on the code before the fix:

* oversize outcomes and dead letters (hole 3): a ~1 MB listing, an outcome of 1.4 MB (a mark that
  liquidates 1,400 accounts), a 600 KB garbage record and the dead letters after it — nothing
  lost, the journal dense and equal to the embedded run, the dead-letter count on /metrics equal
  to what the topic holds, and every reader (journal reader, projection, audit, export) reading
  the split outcome back; a send the broker refuses aborts the transaction instead of committing
  the input offset past it;
* health (hole 4): ``/healthz`` of the engine and of the projection goes 503 with the reason
  during a broker outage, and back to 200 after it;
* kill -9 at random points, with oversize outcomes and dead letters in the stream: the journal
  after recovery equals the uninterrupted run byte for byte. ``MARGINBOOK_KILLS`` sets the number
  of kills (default 3; the long run: ``MARGINBOOK_KILLS=20``);
* shards (hole 6): more than one shard is refused, with the reason.

Tests that stop the broker run only against this worktree's own ``scripts/kafka.sh`` broker
(``own_broker``), with the ports it was started on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from test_crash_embedded import write_flow

from engine.io.kafka.framing import header
from events.codec import decode_outcome_json

from .conftest import (
    MARGINBOOK,
    ROOT,
    EngineProcess,
    StartEngine,
    StartProcess,
    embedded_run,
    env_with,
    kafka_sh,
    read_journal,
    submit_file,
    wait_journal,
)

pytestmark = pytest.mark.kafka

T0 = 1_700_000_000_000
TIERS = [
    {"tier": 1, "maxBorrowBase": "35000", "maxBorrowQuote": "1000000000", "mmr": "0.03", "imr": "0.1", "maxLever": "10"}
]


# ------------------------------------------------------------------------------------ flows


def listing(inst_id: str, tiers: list[dict[str, Any]]) -> dict[str, Any]:
    base, quote = inst_id.split("-")
    return {
        "type": "list_instrument",
        "instId": inst_id,
        "instType": "SPOT",
        "baseCcy": base,
        "quoteCcy": quote,
        "tickSz": "0.1",
        "lotSz": "0.0001",
        "minSz": "0.0001",
        "makerFee": "0",
        "takerFee": "0.001",
        "maxLever": "10",
        "tiers": tiers,
    }


def many_tiers(rows: int) -> list[dict[str, Any]]:
    """``rows`` valid tier rows (limits increase row by row): ~100 bytes each."""
    return [
        {
            "tier": i,
            "maxBorrowBase": str(i),
            "maxBorrowQuote": str(100 * i),
            "mmr": "0.03",
            "imr": "0.1",
            "maxLever": "10",
        }
        for i in range(1, rows + 1)
    ]


def stamp(lines: list[dict[str, Any]], tag: str) -> list[bytes]:
    """JSON lines with increasing ``ts`` and an ``id`` on each."""
    return [
        json.dumps({**line, "ts": T0 + i, "id": f"{tag}-{i}"}, separators=(",", ":")).encode()
        for i, line in enumerate(lines)
    ]


def sweep(accounts: int, tag: str = "sw") -> list[dict[str, Any]]:
    """``accounts`` cross longs of 1 BTC at 100,000 (15,000 USDT own funds each) against one
    market maker, whose bid at 80,000 then absorbs them all: the mark of 86,000 liquidates every
    account in one command, an outcome of about 1 KB per account."""
    mm = f"{tag}-mm"
    lines: list[dict[str, Any]] = [
        {"type": "deposit", "acct": mm, "ccy": "BTC", "amt": str(accounts)},
        {"type": "deposit", "acct": mm, "ccy": "USDT", "amt": str(100_000 * accounts)},
        {"type": "mark_price", "instId": "BTC-USDT", "markPx": "100000"},
        {"type": "place_order", "acct": mm, "instId": "BTC-USDT", "clOrdId": "ask", "side": "sell",
         "ordType": "limit", "px": "100000", "sz": str(accounts), "tdMode": "cash"},
    ]  # fmt: skip
    for i in range(accounts):
        acct = f"{tag}-{i:05d}"
        lines.append({"type": "deposit", "acct": acct, "ccy": "USDT", "amt": "15000"})
        lines.append({"type": "place_order", "acct": acct, "instId": "BTC-USDT", "clOrdId": "long", "side": "buy",
                      "ordType": "limit", "px": "100000", "sz": "1", "tdMode": "cross"})  # fmt: skip
    lines.append({"type": "place_order", "acct": mm, "instId": "BTC-USDT", "clOrdId": "bid", "side": "buy",
                  "ordType": "limit", "px": "80000", "sz": str(accounts), "tdMode": "cash"})  # fmt: skip
    lines.append({"type": "mark_price", "instId": "BTC-USDT", "markPx": "86000"})
    return lines


def base_listings() -> list[dict[str, Any]]:
    return [
        {"type": "list_asset", "ccy": "USDT", "decimals": 8},
        {"type": "list_asset", "ccy": "BTC", "decimals": 8},
        listing("BTC-USDT", TIERS),
    ]


def deposits(count: int, tag: str) -> list[dict[str, Any]]:
    return [{"type": "deposit", "acct": f"{tag}{i % 7}", "ccy": "USDT", "amt": str(i + 1)} for i in range(count)]


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


# ------------------------------------------------------------------------------------ Kafka I/O


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Produce to partition 0 in order, past ``submit`` (its validation and its size limit)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", max_request_size=8 << 20, linger_ms=5
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=b"test", partition=0) for value in values]
        for future in futures:
            await future
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    asyncio.run(_produce(bootstrap, topic, values))


async def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    """Every committed record of partition 0 (value, headers), up to the end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    out: list[tuple[bytes, list[tuple[str, bytes]]]] = []
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        idle = 0
        while await consumer.position(tp) < end - 1 or (await consumer.position(tp) < end and idle < 3):
            batch = (await consumer.getmany(tp, timeout_ms=200)).get(tp, [])
            idle = 0 if batch else idle + 1
            if idle > 25:
                break
            out += [(r.value or b"", list(r.headers or ())) for r in batch]
    finally:
        await consumer.stop()
    return out


def read_all(bootstrap: str, topic: str) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    return asyncio.run(_read_all(bootstrap, topic))


async def _set_topic_config(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    finally:
        await admin.close()


def first_divergence(ours: list[bytes], theirs: list[bytes]) -> str:
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            return f"first difference at seq {i + 1}:\n kafka:    {a[:200]!r}\n embedded: {b[:200]!r}"
    return f"lengths differ: kafka {len(ours)}, embedded {len(theirs)}"


def metric(process: EngineProcess, name: str) -> float:
    return process.metrics()[name]


def wait_health(process: EngineProcess, status: int, timeout: float) -> dict[str, Any]:
    """Poll /healthz until it answers ``status``; return its JSON body."""
    deadline = time.monotonic() + timeout
    last: tuple[int, bytes] | None = None
    while time.monotonic() < deadline:
        if not process.alive():
            pytest.fail(f"process exited with {process.proc.returncode}:\n{process.tail()}")
        try:
            last = process.http_get("/healthz", timeout=1.0)
        except OSError:
            time.sleep(0.1)
            continue
        if last[0] == status:
            body: dict[str, Any] = json.loads(last[1])
            return body
        time.sleep(0.1)
    pytest.fail(f"/healthz never answered {status} in {timeout} s (last: {last!r}):\n{process.tail()}")


def wait_status(process: EngineProcess, status: str, timeout: float) -> dict[str, Any]:
    """Poll /healthz until its ``status`` is ``status``; return its JSON body."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            body = json.loads(process.http_get("/healthz", timeout=1.0)[1])
        except (OSError, ValueError):
            body = {}
        if body.get("status") == status:
            return body
        time.sleep(0.1)
    metrics = process.metrics() if process.alive() else {}
    pytest.fail(f"/healthz never said {status} in {timeout} s (last: {body}; metrics: {metrics}):\n{process.tail()}")


def projected_seq(process: EngineProcess) -> int:
    try:
        status, body = process.http_get("/metrics")
    except OSError:
        return -1
    if status != 200:
        return -1
    for line in body.decode().splitlines():
        if line.startswith("marginbook_projection_last_seq "):
            return int(float(line.split()[1]))
    return -1


def wait_projected(process: EngineProcess, seq: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            pytest.fail(f"projection exited with {process.proc.returncode}:\n{process.tail()}")
        if projected_seq(process) >= seq:
            return
        time.sleep(0.05)
    pytest.fail(f"projection at seq {projected_seq(process)}, not {seq}, after {timeout} s:\n{process.tail()}")


# ------------------------------------------------------------------------------------ 1. oversize listing


def test_a_1_mb_listing_is_refused_too_large_on_both_logs_and_nothing_after_it_is_lost(
    kafka_bootstrap: str, make_prefix: Any, services: StartProcess, tmp_path: Path
) -> None:
    """Hole 3: a valid ``list_instrument`` of 9,500 tier rows (~1 MB) produced past the gateway.
    Before: its outcome (above the broker's 1 MB) and every outcome after it on the partition were
    lost while the offsets committed; the journal had a gap, the projection halted. Now it is a
    ``too_large`` rejection with a seq, exactly as on the embedded log; the deposits after it are
    journaled; a restarted engine recovers; the projection keeps going; ``submit`` refuses the
    line at the door with FILE:LINE."""
    prefix = make_prefix()
    lines = stamp(
        [*base_listings(), *deposits(60, "a"), listing("ETH-USDT", many_tiers(9_500)), *deposits(60, "b")], "l"
    )
    huge = lines[63]
    assert 950_000 < len(huge) < 1_000_000
    flow = write(tmp_path / "flow.jsonl", lines)
    reference = embedded_run(flow, tmp_path / "embedded")
    refused = decode_outcome_json(reference.events[63])
    assert [(type(e).__name__, getattr(e, "reason", "")) for e in refused.events] == [("CommandRejected", "too_large")]

    # The gateway refuses the line (and sends the others: to a prefix of their own here).
    done = submit_file(kafka_bootstrap, make_prefix(), flow)
    assert done.returncode == 1
    assert f"{flow}:64: $: the line is {len(huge):,} bytes; a command is at most 65,536 bytes" in done.stderr.decode()

    # Past the gateway, the engine refuses it as the embedded engine does.
    produce(kafka_bootstrap, f"{prefix}.commands", lines)
    engine = services("engine", prefix, "--batch-max", "25")
    projection = services("project", prefix)
    journal = wait_journal(kafka_bootstrap, prefix, len(lines), timeout=60, engine=engine)
    assert journal == reference.events, first_divergence(journal, reference.events)
    wait_projected(projection, len(lines))
    assert engine.terminate() == 0
    again = services("engine", prefix)
    again.wait_ready(timeout=30)
    assert again.last_seq() == len(lines)
    assert read_journal(kafka_bootstrap, prefix) == reference.events
    assert projection.http_get("/healthz")[0] == 200


# ------------------------------------------------------------------------------------ 2. split outcome


def test_an_outcome_above_the_broker_limit_is_split_and_every_reader_reassembles_it(
    kafka_bootstrap: str, make_prefix: Any, services: StartProcess, tmp_path: Path
) -> None:
    """Hole 3: a mark that liquidates 1,400 accounts has an outcome of ~1.4 MB, above the broker's
    record limit; before, it was lost with the offset committed. Now it is split into fragments of
    at most ``--record-max-bytes``; the journal reader, the projection, ``audit --kafka`` and
    ``export`` (then ``replay``) reassemble it: all equal the embedded run."""
    prefix = make_prefix()
    lines = stamp([*base_listings(), *sweep(1_400), *deposits(20, "after")], "s")
    flow = write(tmp_path / "flow.jsonl", lines)
    reference = embedded_run(flow, tmp_path / "embedded")
    big = max(reference.events, key=len)
    assert len(big) > 1_300_000

    done = submit_file(kafka_bootstrap, prefix, flow)
    assert done.returncode == 0, done.stderr.decode()
    engine = services("engine", prefix, "--snapshot-every", "1000")
    projection = services("project", prefix, "--batch-max", "500")
    journal = wait_journal(kafka_bootstrap, prefix, len(lines), timeout=90, engine=engine)
    assert journal == reference.events, first_divergence(journal, reference.events)
    engine.wait_seq(len(lines), timeout=10)
    assert metric(engine, "marginbook_fragmented_outcomes_total") == 1
    records = read_all(kafka_bootstrap, f"{prefix}.events")
    fragments = [h for _, h in records if header(h, "fragment")]
    assert [header(h, "fragment") for h in fragments] == ["1/2", "2/2"]
    assert all(len(value) <= 1_000_000 for value, _ in records)

    wait_projected(projection, len(lines), timeout=90)
    alerts = [json.loads(v) for v, _ in read_all(kafka_bootstrap, f"{prefix}.alerts")]
    assert sum(1 for a in alerts if a["type"] == "liquidation_finished") == 1_400

    env = env_with(kafka_bootstrap)
    audit = subprocess.run(
        [*MARGINBOOK, "audit", "--kafka", "--topic-prefix", prefix, "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    assert audit.returncode == 0, (audit.stdout + audit.stderr).decode()
    out = tmp_path / "export"
    export = subprocess.run(
        [*MARGINBOOK, "export", "--topic-prefix", prefix, "--out", str(out), "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    assert export.returncode == 0, (export.stdout + export.stderr).decode()
    replay = subprocess.run([*MARGINBOOK, "replay", str(out)], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert replay.returncode == 0, (replay.stdout + replay.stderr).decode()
    assert f"replayed {len(lines)} command(s) from seq 1: {len(lines)} identical".encode() in replay.stdout


# ------------------------------------------------------------------------------------ 3. dead letters


def test_oversize_dead_letters_are_truncated_and_the_metric_equals_the_topic(
    kafka_bootstrap: str, prefix: str, engines: StartEngine, tmp_path: Path
) -> None:
    """Hole 3: a 600 KB garbage record's dead letter (~1.4 MB as text + base64) was lost, and every
    later dead letter of the partition with it: ``dead_letters_total`` said 4, the topic held 2.
    Now the oversize one carries a prefix of the value with the original's size and SHA-256, all
    four are on the topic, and the metric says 4."""
    garbage = bytes(range(256)) * 2_400  # 614,400 bytes, control characters and invalid UTF-8
    good = stamp([*base_listings(), *deposits(10, "d")], "g")
    values = [*good[:5], b"not json", garbage, *good[5:9], b"\xff{", b'{"type":"deposit"}', *good[9:]]
    produce(kafka_bootstrap, f"{prefix}.commands", values)
    engine = engines(prefix, "--batch-max", "4")
    journal = wait_journal(kafka_bootstrap, prefix, len(good), timeout=60, engine=engine)
    assert [decode_outcome_json(line).id for line in journal] == [f"g-{i}" for i in range(len(good))]
    deadline = time.monotonic() + 10
    while metric(engine, "marginbook_last_seq") < len(good) and time.monotonic() < deadline:
        time.sleep(0.05)
    letters = read_all(kafka_bootstrap, f"{prefix}.commands.dlq")
    assert len(letters) == 4 == metric(engine, "marginbook_dead_letters_total")
    assert metric(engine, "marginbook_dead_letters_truncated_total") == 1
    offsets = [json.loads(value)["offset"] for value, _ in letters]
    assert offsets == [5, 6, 11, 12]
    value, headers = letters[1]
    letter = json.loads(value)
    sha = hashlib.sha256(garbage).hexdigest()
    assert (letter["truncated"], letter["size"], letter["sha256"]) == (True, len(garbage), sha)
    assert (header(headers, "original-size"), header(headers, "original-sha256")) == (str(len(garbage)), sha)
    assert garbage.startswith(base64.b64decode(letter["valueBase64"]))
    assert len(value) <= 1_000_000
    for (value, headers), original in zip(letters[::2], [b"not json", b"\xff{"], strict=True):
        assert base64.b64decode(json.loads(value)["valueBase64"]) == original
        assert header(headers, "original-sha256") == hashlib.sha256(original).hexdigest()
    assert engine.terminate() == 0


# ------------------------------------------------------------------------------------ 4. a refused send


def test_a_send_the_broker_refuses_aborts_the_transaction_and_nothing_is_committed_past_it(
    kafka_bootstrap: str, prefix: str, engines: StartEngine, tmp_path: Path
) -> None:
    """Hole 3, the general case: the events topic accepts only records of 20 KB, the engine packs
    up to 1 MB. Before, the failed sends were never awaited: the offsets committed and the
    journal was empty with every command consumed. Now every transaction aborts and the engine
    restarts crash-only without committing, /healthz says ``stalled``; once the topic takes the
    records again, the journal is complete and equal to the embedded run."""
    total = 3_000
    flow = tmp_path / "flow.jsonl"
    write_flow(flow, total, seed=11)
    reference = embedded_run(flow, tmp_path / "embedded")
    asyncio.run(_set_topic_config(kafka_bootstrap, f"{prefix}.events", {"max.message.bytes": "20000"}))
    done = submit_file(kafka_bootstrap, prefix, flow)
    assert done.returncode == 0, done.stderr.decode()
    engine = engines(prefix, "--health-stall", "2")
    stalled = wait_status(engine, "stalled", timeout=40)
    assert stalled["pending"] == total, stalled
    assert "no transaction committed for" in stalled["reason"]
    assert metric(engine, "marginbook_restarts_total") >= 1
    assert metric(engine, "marginbook_transactions_total") == 0
    assert read_journal(kafka_bootstrap, prefix) == []

    asyncio.run(_set_topic_config(kafka_bootstrap, f"{prefix}.events", {"max.message.bytes": "1048588"}))
    journal = wait_journal(kafka_bootstrap, prefix, total, timeout=60, engine=engine)
    assert journal == reference.events, first_divergence(journal, reference.events)
    assert wait_health(engine, 200, timeout=30).get("status") == "ok"
    assert engine.terminate() == 0


# ------------------------------------------------------------------------------------ 5. broker outage


def test_healthz_of_engine_and_projection_is_503_during_a_broker_outage_and_200_after(
    own_broker: str, make_prefix: Any, services: StartProcess, tmp_path: Path, broker_restored: None
) -> None:
    """Hole 4: during a broker outage /healthz of the engine and of the projection answered 200
    ``ready`` with ``last_seq`` frozen. Now both answer 503 ``broker_unreachable`` with the reason
    while the broker is down, 200 once it is back; the journal equals an uninterrupted embedded
    run, the projection catches up, and both processes recovered by themselves (aiokafka's retries
    carry them through the outage; any error restarts their loop crash-only)."""
    bootstrap = own_broker
    prefix = make_prefix()
    total = 5_000
    flow = tmp_path / "flow.jsonl"
    write_flow(flow, total, seed=13)
    reference = embedded_run(flow, tmp_path / "embedded")
    done = submit_file(bootstrap, prefix, flow)
    assert done.returncode == 0, done.stderr.decode()
    health = ("--health-broker-timeout", "2", "--health-stall", "3")
    # Small transactions, so that the stream lasts well beyond the broker's shutdown.
    engine = services("engine", prefix, "--batch-max", "20", "--snapshot-every", "1000", *health)
    projection = services("project", prefix, *health)
    engine.wait_seq(total // 10, timeout=60)
    assert wait_health(engine, 200, timeout=10).get("status") == "ok"
    assert wait_health(projection, 200, timeout=30).get("status") == "ok"

    assert kafka_sh("stop", timeout=60).returncode == 0
    try:
        down = time.monotonic()
        for process in (engine, projection):
            body = wait_health(process, 503, timeout=15)
            assert body.get("status") in ("broker_unreachable", "recovering"), body
            if body.get("status") == "broker_unreachable":
                assert "no answer from the broker for" in body["reason"]
        frozen = wait_health(engine, 503, timeout=1)["last_seq"]
        assert frozen < total, "the outage did not happen mid-stream"
        time.sleep(max(1.0, 6.5 - (time.monotonic() - down)))  # + the broker's start: a 9-15 s outage
        assert wait_health(engine, 503, timeout=1)["last_seq"] == frozen
    finally:
        assert kafka_sh("start").returncode == 0
    assert time.monotonic() - down > 8.0
    assert wait_health(engine, 200, timeout=60).get("status") == "ok"
    journal = wait_journal(bootstrap, prefix, total, timeout=120, engine=engine)
    assert journal == reference.events, first_divergence(journal, reference.events)
    wait_projected(projection, total, timeout=120)
    assert wait_health(projection, 200, timeout=30).get("status") == "ok"
    assert engine.alive() and projection.alive()


# ------------------------------------------------------------------------------------ 6. kill -9


def test_kill_9_at_random_points_gives_the_journal_of_the_uninterrupted_run(
    kafka_bootstrap: str, prefix: str, engines: StartEngine, tmp_path: Path
) -> None:
    """SIGKILL the engine ``MARGINBOOK_KILLS`` times (default 3) at seeded random points — during
    recovery, mid-transaction, between batches — while it works through a stream holding split
    outcomes (two mass liquidations) and dead letters (one oversize); restart it each time. The
    journal after the last recovery equals the uninterrupted embedded run byte for byte, and the
    dead-letter topic holds each dead letter once."""
    kills = int(os.environ.get("MARGINBOOK_KILLS", "3"))
    seed = int(os.environ.get("MARGINBOOK_KILL_SEED", "20240611"))
    rng = random.Random(seed)
    flow = tmp_path / "flow.jsonl"
    write_flow(flow, 6_000 + 1_200 * kills, seed=17)
    lines = flow.read_bytes().splitlines()
    middle = len(lines) // 2
    lines[middle:middle] = stamp(sweep(1_100, "k1"), "k1")
    lines[len(lines) // 4 : len(lines) // 4] = stamp(sweep(1_200, "k2"), "k2")
    write(flow, lines)
    reference = embedded_run(flow, tmp_path / "embedded")
    total = len(reference.events)
    assert sum(1 for event in reference.events if len(event) > 1_000_000) == 2
    garbage = [b"{" * 900_000, b"\x00garbage", b"[1,2,3]"]
    positions = sorted(rng.sample(range(1, len(lines)), len(garbage)))
    values = list(lines)
    for position, bad in zip(reversed(positions), reversed(garbage), strict=True):
        values.insert(position, bad)
    produce(kafka_bootstrap, f"{prefix}.commands", values)

    flags = ("--batch-max", "400", "--snapshot-every", "2500")
    killed_at: list[int] = []
    early = 0
    for k in range(kills):
        engine = engines(prefix, *flags, metrics=True)
        if rng.random() < 0.2:  # during start-up or recovery
            early += 1
            time.sleep(rng.uniform(0.2, 2.0))
        else:  # one point in each of ``kills`` windows of the stream, so every restart has work left
            engine.wait_seq(int((k + rng.uniform(0.2, 0.9)) * 0.95 * total / kills), timeout=90)
            time.sleep(rng.uniform(0.0, 0.08))  # anywhere: mid-transaction, mid-commit, between batches
        engine.kill()
        committed = read_journal(kafka_bootstrap, prefix)  # dense seqs and whole fragments checked
        assert committed == reference.events[: len(committed)], first_divergence(committed, reference.events)
        killed_at.append(len(committed))
    final = engines(prefix, *flags)
    journal = wait_journal(kafka_bootstrap, prefix, total, timeout=180, engine=final)
    assert journal == reference.events, first_divergence(journal, reference.events)
    assert killed_at == sorted(killed_at)
    letters = read_all(kafka_bootstrap, f"{prefix}.commands.dlq")
    assert [json.loads(v)["offset"] for v, _ in letters] == [p + i for i, p in enumerate(positions)]
    print(
        f"{kills} kills (seed {seed}; {early} during start-up or recovery) at committed seqs {killed_at}; "
        f"journal of {total} outcomes identical"
    )
    final.wait_ready(timeout=30)
    assert final.terminate() == 0


# ------------------------------------------------------------------------------------ 7. shards


async def _topics(bootstrap: str) -> set[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


async def _create(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


def test_more_than_one_shard_is_refused_with_the_reason(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Hole 6: with ``topics --shards 2`` each engine kept its own BTC-USDT book (a bid on shard 1
    at 65,100 and an ask on shard 0 at 65,000 never traded; seq and orderId restarted per shard).
    Until shards share books, every way to run two is refused, saying why."""
    env = env_with(kafka_bootstrap)
    name = f"t-shards-{os.getpid()}-{time.monotonic_ns() % 10**6}"

    def mb(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*MARGINBOOK, *args], cwd=ROOT, env=env, capture_output=True, timeout=60)

    for args in (
        ("topics", "--topic-prefix", name, "--shards", "2"),
        ("engine", "--topic-prefix", name, "--shard", "1"),
        ("project", "--topic-prefix", name, "--shard", "1"),
    ):
        done = mb(*args)
        assert done.returncode == 2, (args, done.stderr.decode())
        assert b"refused: marginbook runs a single shard: each shard would keep its own order books" in done.stderr
    assert not {t for t in asyncio.run(_topics(kafka_bootstrap)) if t.startswith(name)}

    # A commands topic made with two partitions by other means: submit sends nothing to it.
    commands = f"{name}.commands"
    asyncio.run(_create(kafka_bootstrap, commands, 2))
    try:
        flow = write(tmp_path / "flow.jsonl", stamp(base_listings(), "sh"))
        done = mb("submit", "--topic-prefix", name, str(flow))
        assert done.returncode == 2
        assert f"{commands} has 2 partitions: refused: marginbook runs a single shard".encode() in done.stderr
        assert read_all(kafka_bootstrap, commands) == []
    finally:
        from .conftest import _delete_topics

        asyncio.run(_delete_topics(kafka_bootstrap, [commands]))
