"""``marginbook audit --kafka`` and ``marginbook export`` against the real broker.

A flow is submitted with ``marginbook submit`` (plus one undecodable record in the middle, which
the engine dead-letters: it gets no seq) and journaled by a real ``marginbook engine`` process.
The reference is the embedded run of the same flow (``marginbook run --log``): same commands,
same outcomes, so the same digest chain. A forged topic (commands and events produced by the
test, one outcome tampered and one missing) shows that Kafka problems are pinpointed by topic,
offset and line.

Needs ``KAFKA_BOOTSTRAP`` (skipped otherwise)::

    KAFKA_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python -m pytest tests/test_audit_kafka.py
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from test_crash_embedded import write_flow

from engine.io.embedded import COMMANDS_FILE, EVENTS_FILE
from engine.io.kafka.journal import read_outcomes
from replay.kafka_source import audit_kafka, topics_for
from replay.tolerant import Record, read_log

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parent.parent
_SCRIPT = Path(sys.executable).parent / "marginbook"
MARGINBOOK = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "cli.main"]
TOTAL = 1_200
HALF = 600
BAD = b'{"type":"deposit","acct":"nobody","ts":1}'  # no ccy, amt or id: dead-lettered
CHAIN = re.compile(r"^seq \d+ chain [0-9a-f]{64}$", re.M)


def _env(bootstrap: str) -> dict[str, str]:
    return {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "PYTHONHASHSEED": "0"}


def mb(bootstrap: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MARGINBOOK, *args], cwd=ROOT, env=_env(bootstrap), capture_output=True, text=True, timeout=timeout
    )


def _topics(prefix: str) -> list[str]:
    return [f"{prefix}.{t}" for t in ("commands", "events", "commands.dlq", "snapshots", "risk", "alerts")]


async def _delete(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, values: list[tuple[bytes, list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for value, headers in values:
            await (await producer.send(topic, value=value, partition=0, headers=headers))
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def bootstrap() -> str:
    addr = os.environ.get("KAFKA_BOOTSTRAP")
    if not addr:
        pytest.skip("KAFKA_BOOTSTRAP not set (a broker: bash scripts/kafka.sh start)")
    return addr


def make_prefix(bootstrap: str) -> str:
    name = f"audit-{uuid.uuid4().hex[:8]}"
    done = mb(bootstrap, "topics", "--topic-prefix", name, timeout=60)
    assert done.returncode == 0, done.stderr
    return name


def records(path: Path) -> list[Record]:
    return [item for item in read_log(path) if isinstance(item, Record)]


def chain_lines(text: str) -> list[str]:
    return CHAIN.findall(text)


@dataclass
class Journaled:
    prefix: str
    reference: Path  # the embedded run of the same flow
    reference_chain: list[str]  # its chain lines, every 300 seqs


@pytest.fixture(scope="module")
def journaled(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journaled]:
    base = tmp_path_factory.mktemp("kafka-audit")
    flow = base / "flow.jsonl"
    write_flow(flow, TOTAL, seed=5)
    lines = flow.read_bytes().splitlines(keepends=True)
    (base / "a.jsonl").write_bytes(b"".join(lines[:HALF]))
    (base / "b.jsonl").write_bytes(b"".join(lines[HALF:]))
    reference = base / "reference"
    done = mb(bootstrap, "run", str(flow), "--log", str(reference))
    assert done.returncode == 0, done.stderr
    audited = mb(bootstrap, "audit", str(reference), "--chain-every", "300", "--no-progress")
    assert audited.returncode == 0, audited.stderr

    prefix = make_prefix(bootstrap)
    log_path = base / "engine.log"
    with open(log_path, "wb") as log:
        engine = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "engine",
                "--topic-prefix",
                prefix,
                "--snapshot-every",
                "500",
                "--batch-max",
                "100",
            ],
            cwd=ROOT,
            env=_env(bootstrap),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        assert mb(bootstrap, "submit", "--topic-prefix", prefix, str(base / "a.jsonl")).returncode == 0
        asyncio.run(_produce(bootstrap, f"{prefix}.commands", [(BAD, [])]))
        assert mb(bootstrap, "submit", "--topic-prefix", prefix, str(base / "b.jsonl")).returncode == 0
        deadline = time.monotonic() + 180
        while len(asyncio.run(read_outcomes(bootstrap, f"{prefix}.events"))) < TOTAL:
            assert engine.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"journal incomplete:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.5)
    finally:
        if engine.poll() is None:
            engine.send_signal(signal.SIGTERM)
            try:
                engine.wait(timeout=30)
            except subprocess.TimeoutExpired:
                engine.kill()
                engine.wait(timeout=30)
    yield Journaled(prefix, reference, chain_lines(audited.stdout))
    if not os.environ.get("KEEP_TOPICS"):
        asyncio.run(_delete(bootstrap, _topics(prefix)))


def test_kafka_audit_passes_and_agrees_with_the_file_log_chain(bootstrap: str, journaled: Journaled) -> None:
    done = mb(
        bootstrap, "audit", "--kafka", "--topic-prefix", journaled.prefix, "--chain-every", "300", "--no-progress"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replayed 1,200 command(s), seq 1..1200: 1,200 identical" in done.stdout
    assert f"1 undecodable command(s) skipped (dead-lettered by the engine, no seq): offsets {HALF}" in done.stdout
    assert chain_lines(done.stdout) == journaled.reference_chain
    reference = mb(bootstrap, "audit", str(journaled.reference), "--no-progress").stdout
    digest = re.search(r"digest sha256:[0-9a-f]{64}", reference)
    assert digest is not None and digest.group(0) in done.stdout


def test_kafka_audit_of_an_offset_range(bootstrap: str, journaled: Journaled) -> None:
    report = asyncio.run(audit_kafka(bootstrap, topics_for(journaled.prefix), 0, 700, 1_000, chain_every=300))
    assert report.ok, report.problems
    # offsets 700..999 hold seqs 700..999 (offset 600 was dead-lettered)
    assert (report.start_seq, report.last_seq, report.commands) == (700, 999, 300)
    assert report.chain_seq == 999
    done = mb(
        bootstrap,
        *("audit", "--kafka", "--topic-prefix", journaled.prefix, "--chain-every", "300", "--no-progress"),
        *("--from-offset", "700", "--to-offset", "1000"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replayed 300 command(s), seq 700..999: 300 identical" in done.stdout
    # batches of <= 100 commands: the snapshot crossing seq 500 was taken by offset 600
    assert re.search(r"started from the Kafka snapshot at seq [56]\d\d \(next offset [56]\d\d\)", done.stdout)
    assert chain_lines(done.stdout)[:3] == journaled.reference_chain[:3]  # seqs 300, 600, 900


def test_export_writes_the_same_file_log_as_the_embedded_run(
    bootstrap: str, journaled: Journaled, tmp_path: Path
) -> None:
    out = tmp_path / "exported"
    done = mb(bootstrap, "export", "--topic-prefix", journaled.prefix, "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1,200 command(s), 1,200 outcome(s), seqs 1..1200" in done.stdout
    for name in (COMMANDS_FILE, EVENTS_FILE):  # one outcome per record, the dead letter skipped
        assert (out / name).read_bytes() == (journaled.reference / name).read_bytes()
    meta = json.loads((out / "export.json").read_text())
    assert meta["dead_letter_offsets"] == [HALF] and meta["last_seq"] == TOTAL
    audited = mb(bootstrap, "audit", str(out), "--chain-every", "300", "--no-progress")
    assert audited.returncode == 0, audited.stderr
    assert chain_lines(audited.stdout) == journaled.reference_chain
    again = mb(bootstrap, "export", "--topic-prefix", journaled.prefix, "--out", str(out), "--no-progress")
    assert again.returncode == 2 and "exists" in again.stderr


def test_export_of_a_range_audits_offline_from_its_snapshot(
    bootstrap: str, journaled: Journaled, tmp_path: Path
) -> None:
    out = tmp_path / "range"
    done = mb(
        bootstrap,
        *("export", "--topic-prefix", journaled.prefix, "--out", str(out), "--no-progress"),
        *("--from-offset", "800", "--to-offset", "1100"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "300 command(s), 300 outcome(s), seqs 800..1099" in done.stdout
    assert re.search(
        r"snapshot at seq 799 \(the state before the range, from the Kafka snapshot at seq [56]", done.stdout
    )
    assert (out / "snapshots" / f"{799:012d}.msgpack").exists()
    reference = {r.seq: r.payload for r in records(journaled.reference / EVENTS_FILE)}
    assert [(r.seq, r.payload) for r in records(out / EVENTS_FILE)] == [(s, reference[s]) for s in range(800, 1100)]
    audited = mb(bootstrap, "audit", str(out), "--chain-every", "300", "--no-progress")
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "the log starts at seq 800: starting from its snapshot at seq 799" in audited.stdout
    assert "replayed 300 command(s), seq 800..1099: 300 identical" in audited.stdout
    assert chain_lines(audited.stdout)[0] == journaled.reference_chain[2]  # seq 900, thanks to export.json


@pytest.fixture
def forged(bootstrap: str, journaled: Journaled) -> Iterator[str]:
    """A topic pair written by the test: the reference's commands and outcomes, outcome 700
    tampered and outcome 900 missing; events packed 256 per record like the engine does."""
    prefix = make_prefix(bootstrap)
    commands = [(r.payload, []) for r in records(journaled.reference / COMMANDS_FILE)]
    lines = [(r.seq, r.payload) for r in records(journaled.reference / EVENTS_FILE)]
    lines[699] = (700, lines[699][1].replace(b'"ts":', b'"ts":1', 1))
    del lines[899]
    packed: list[tuple[bytes, list[tuple[str, bytes]]]] = []
    for start in range(1, TOTAL + 1, 256):
        chunk = [(s, data) for s, data in lines if start <= s < start + 256]
        headers = [
            ("first-seq", str(chunk[0][0]).encode()),
            ("last-seq", str(chunk[-1][0]).encode()),
            ("input-offsets", f"{chunk[0][0] - 1}-{chunk[-1][0] - 1}".encode()),
        ]
        packed.append((b"\n".join(data for _, data in chunk), headers))
    asyncio.run(_produce(bootstrap, f"{prefix}.commands", commands))
    asyncio.run(_produce(bootstrap, f"{prefix}.events", packed))
    yield prefix
    asyncio.run(_delete(bootstrap, _topics(prefix)))


def test_kafka_audit_pinpoints_a_tampered_and_a_missing_outcome(bootstrap: str, forged: str) -> None:
    done = mb(bootstrap, "audit", "--kafka", "--topic-prefix", forged, "--no-progress")
    assert done.returncode == 1
    err = done.stderr
    # seq 700 is line 187 of the third events record (offset 2); 900 would be line 131 of offset 3
    assert "FIRST PROBLEM at seq 700: seq 700: recorded outcome differs from the replay" in err
    assert (
        f"FIRST DIVERGENCE at seq 700 (command at {forged}.commands[0]@699; recorded at {forged}.events[0]@2 line 187)"
        in err
    )
    assert "ts: expected 1" in err
    assert f"{forged}.events[0]@3: headers say seqs 769..1024 but the record holds 255 line(s)" in err
    assert f"{forged}.events[0]@3 line 131: sequence gap: expected seq 900, found 901" in err
    assert "seq 900 [missing_outcome]" in err
    assert "replayed 1,200 command(s), seq 1..1200: 1,198 identical" in done.stdout
