"""Benchmark of the Kafka path, exactly-once on: submit → engine → committed events.

Usage::

    KAFKA_BOOTSTRAP=127.0.0.1:19092 python bench/kafka_bench.py [--smoke] [--commands N]
        [--rate R] [--duration S] [--batch-max B] [--snapshot-every N] [--json-out PATH]

The broker is the one of ``scripts/kafka.sh`` (``KAFKA_BOOTSTRAP`` or ``--bootstrap``). Commands
come from ``tests/test_crash_embedded.py``'s ``write_flow`` (imported by path): a deterministic
mix of deposits, resting and crossing orders, cancels, marks, borrows and interest accruals.
Each phase gets fresh topics (a unique prefix) and a fresh engine process
(``python -m cli.main engine``, one shard, its default transaction and snapshot settings unless
overridden), started and recovered before the clock starts:

a. **saturation** — all ``--commands`` are submitted as fast as the gateway client
   (``engine.io.kafka.submit.submit``: validation, routing, idempotent producer, ``acks=all``)
   can; throughput is commands / (last outcome committed − first submit);
b. **sustained** — ``--rate`` commands/s for ``--duration`` s through an idempotent producer
   (``acks=all``, ``linger_ms`` 5 as in ``submit``), paced against a schedule; the latency of a
   command runs from its *scheduled* send time (no coordinated omission) to the moment a
   ``read_committed`` consumer tailing the events topic receives its outcome (the outcome's
   ``seq`` identifies it: one partition, no dead letters, so command *k* gets seq *k*).

Both phases check the committed journal against the same commands stepped in-process by
:class:`engine.core.step.Engine`: same count, dense sequence numbers, byte-identical outcomes
(exit code 1 otherwise). Everything runs on one machine: broker JVM, engine process and this
process (submitter and tail consumer) share its CPUs — the figures are for the whole pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from engine.core.step import Engine
from engine.io.kafka.config import Topics
from engine.io.kafka.framing import Reassembler
from engine.io.kafka.submit import Prepared, SubmitReport, prepare, submit
from engine.io.kafka.topics import create_topics
from events.codec import decode_command_json, encode_outcome_json

REPO = Path(__file__).resolve().parent.parent


def _load_write_flow() -> Any:
    path = REPO / "tests" / "test_crash_embedded.py"
    spec = importlib.util.spec_from_file_location("_marginbook_test_crash_embedded", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_flow


write_flow = _load_write_flow()


# --- machine -------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """The machine, as the engine benchmark describes it (one description for every bench)."""
    from engine_bench import machine_info as describe

    return describe()


def kafka_version() -> str:
    pom = REPO / "scripts" / "kafka" / "pom.xml"
    try:
        text = pom.read_text()
        return text.split("<kafka.version>", 1)[1].split("<", 1)[0]
    except (OSError, IndexError):
        return "unknown"


# --- helpers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def topics_for(prefix: str) -> Topics:
    return Topics(
        commands=f"{prefix}.commands",
        events=f"{prefix}.events",
        snapshots=f"{prefix}.snapshots",
        risk=f"{prefix}.risk",
        alerts=f"{prefix}.alerts",
        dlq=f"{prefix}.commands.dlq",
    )


async def delete_topics(bootstrap: str, topics: Topics) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.delete_topics(list(topics.model_dump().values()))
    finally:
        await admin.close()


def reference_outcomes(lines: list[bytes]) -> list[bytes]:
    """The journal the engine must commit: the same commands stepped in-process."""
    engine = Engine()
    return [encode_outcome_json(engine.step(decode_command_json(line))) for line in lines]


class EngineProcess:
    """``marginbook engine`` as a subprocess, with its /metrics and /healthz endpoint."""

    def __init__(self, bootstrap: str, prefix: str, flags: list[str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cli.main",
                    "engine",
                    "--topic-prefix",
                    prefix,
                    "--metrics-port",
                    str(self.port),
                    *flags,
                ],
                cwd=REPO,
                env={**os.environ, "KAFKA_BOOTSTRAP": bootstrap},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                status, body = self.get("/healthz")
                if status == 200 and json.loads(body).get("ready"):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"engine not ready after {timeout} s:\n{self.tail()}")

    def metrics(self) -> dict[str, float]:
        _, body = self.get("/metrics")
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        return int(self.proc.returncode)

    def log_count(self, needle: str) -> int:
        """Lines of the engine's log holding ``needle`` (e.g. aiokafka's produce retries)."""
        try:
            return sum(needle in line for line in self.log_path.read_text(errors="replace").splitlines())
        except OSError:
            return 0

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class _Head(msgspec.Struct):
    seq: int
    id: str | None = None


_head = msgspec.json.Decoder(_Head)


@dataclass
class Tail:
    """What the ``read_committed`` tail of the events topic saw."""

    expected: int
    arrivals: list[float] = field(default_factory=list)  # perf_counter when seq i+1 arrived
    lines: list[bytes] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)
    error: str | None = None


async def tail_events(bootstrap: str, topic: str, tail: Tail, ready: asyncio.Event, timeout: float) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        await consumer.position(tp)
        ready.set()
        deadline = time.perf_counter() + timeout
        fragments = Reassembler()
        while len(tail.lines) < tail.expected:
            if time.perf_counter() > deadline:
                tail.error = f"timed out: {len(tail.lines)}/{tail.expected} outcomes committed"
                return
            batch = await consumer.getmany(tp, timeout_ms=200)
            now = time.perf_counter()
            for record in batch.get(tp, []):
                value = fragments.feed(record.value, record.headers, f"{topic}@{record.offset}")
                if value is None:
                    continue
                for line in value.split(b"\n"):
                    head = _head.decode(line)
                    if head.seq != len(tail.lines) + 1:
                        tail.error = f"expected seq {len(tail.lines) + 1}, got {head.seq} (offset {record.offset})"
                        return
                    tail.lines.append(line)
                    tail.ids.append(head.id)
                    tail.arrivals.append(now)
    finally:
        await consumer.stop()


# --- phases --------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    commands: int
    seconds: float = 0.0
    throughput: float = 0.0
    submit_seconds: float = 0.0
    target_rate: float | None = None
    achieved_submit_rate: float | None = None
    max_schedule_lag_ms: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    engine: dict[str, float] = field(default_factory=dict)
    produce_retries: int = 0
    verified: bool = False
    error: str | None = None


async def saturation(bootstrap: str, lines: list[bytes], topics: Topics, timeout: float) -> tuple[Phase, Tail]:
    phase = Phase("saturation", len(lines))
    tail = Tail(len(lines))
    ready = asyncio.Event()
    tail_task = asyncio.create_task(tail_events(bootstrap, topics.events, tail, ready, timeout))
    await ready.wait()
    started = time.perf_counter()
    report: SubmitReport = await submit(bootstrap, topics.commands, enumerate(lines, start=1))
    phase.submit_seconds = time.perf_counter() - started
    await tail_task
    if report.refused or report.sent != len(lines):
        phase.error = f"submit refused {len(report.refused)} line(s): {report.refused[:3]}"
    if tail.arrivals:
        phase.seconds = tail.arrivals[-1] - started
        phase.throughput = len(tail.arrivals) / phase.seconds
    return phase, tail


async def sustained(
    bootstrap: str, lines: list[bytes], topics: Topics, rate: float, timeout: float
) -> tuple[Phase, Tail]:
    phase = Phase("sustained", len(lines), target_rate=rate)
    report = SubmitReport()
    prepared: list[Prepared] = []
    for number, line in enumerate(lines, start=1):
        item = prepare(line, 1, report, number)
        if item is None:
            raise SystemExit(f"line {number} refused: {report.refused[-1]}")
        prepared.append(item)
    tail = Tail(len(lines))
    ready = asyncio.Event()
    tail_task = asyncio.create_task(tail_events(bootstrap, topics.events, tail, ready, timeout))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    try:
        await ready.wait()
        start = time.perf_counter() + 0.05
        scheduled = [start + i / rate for i in range(len(prepared))]
        futures = []
        sent = 0
        max_lag = 0.0
        while sent < len(prepared):
            now = time.perf_counter()
            due = min(len(prepared), int((now - start) * rate) + 1) if now >= start else 0
            while sent < due:
                item = prepared[sent]
                futures.append(await producer.send(topics.commands, value=item.value, key=item.key, partition=0))
                max_lag = max(max_lag, time.perf_counter() - scheduled[sent])
                sent += 1
            await asyncio.sleep(0.001)
        submit_done = time.perf_counter()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    await tail_task
    phase.submit_seconds = submit_done - start
    phase.achieved_submit_rate = len(prepared) / phase.submit_seconds
    phase.max_schedule_lag_ms = max_lag * 1000
    if tail.arrivals:
        phase.seconds = tail.arrivals[-1] - start
        phase.throughput = len(tail.arrivals) / phase.seconds
        latencies = sorted((arrived - scheduled[i]) * 1000 for i, arrived in enumerate(tail.arrivals))
        phase.latency_ms = {
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "p99.9": percentile(latencies, 99.9),
            "max": latencies[-1],
            "mean": statistics.fmean(latencies),
        }
    return phase, tail


def run_phase(name: str, bootstrap: str, lines: list[bytes], args: argparse.Namespace, workdir: Path) -> Phase:
    prefix = f"bench-{name[:3]}-{uuid.uuid4().hex[:8]}"
    topics = topics_for(prefix)
    asyncio.run(create_topics(bootstrap, topics, 1))
    flags = ["--batch-max", str(args.batch_max), "--snapshot-every", str(args.snapshot_every)]
    engine = EngineProcess(bootstrap, prefix, flags, workdir / f"engine-{name}.log")
    try:
        engine.wait_ready()
        timeout = args.timeout
        if name == "saturation":
            phase, tail = asyncio.run(saturation(bootstrap, lines, topics, timeout))
        else:
            phase, tail = asyncio.run(sustained(bootstrap, lines, topics, args.rate, timeout))
        time.sleep(0.1)  # the gauges move just after the last commit returns
        phase.engine = engine.metrics()
    finally:
        code = engine.stop()
        if not args.keep_topics:
            try:
                asyncio.run(delete_topics(bootstrap, topics))
            except Exception as err:  # best effort
                print(f"warning: could not delete topics of {prefix}: {err!r}", file=sys.stderr)
    phase.produce_retries = engine.log_count("retrying")
    if code != 0:
        phase.error = (phase.error or "") + f" engine exited with {code}: {engine.tail()}"
    if tail.error:
        phase.error = (phase.error or "") + f" tail: {tail.error}"
    expected = reference_outcomes(lines)
    phase.verified = tail.lines == expected
    if not phase.verified and phase.error is None:
        mismatch = next((i for i, (a, b) in enumerate(zip(tail.lines, expected, strict=False)) if a != b), None)
        phase.error = (
            f"journal differs from the in-process reference (first at seq {mismatch}; {len(tail.lines)} lines)"
        )
    return phase


# --- report --------------------------------------------------------------------------------------


def print_phase(phase: Phase) -> None:
    print(f"\n{phase.name}: {phase.commands:,} commands")
    if phase.target_rate is not None:
        print(
            f"  submit        target {phase.target_rate:,.0f}/s, achieved {phase.achieved_submit_rate or 0:,.0f}/s "
            f"over {phase.submit_seconds:.2f} s (max {phase.max_schedule_lag_ms or 0:.1f} ms behind schedule)"
        )
    else:
        print(f"  submit        {phase.submit_seconds:.2f} s ({phase.commands / phase.submit_seconds:,.0f} commands/s)")
    print(f"  committed     {phase.seconds:.2f} s after the first submit → {phase.throughput:,.0f} commands/s")
    if phase.latency_ms:
        lat = phase.latency_ms
        print(
            "  latency (ms)  "
            + "  ".join(f"{k} {lat[k]:.1f}" for k in ("p50", "p90", "p99", "p99.9", "max", "mean"))
            + "   (scheduled submit → outcome seen by a read_committed consumer)"
        )
    e = phase.engine
    if e:
        txns = e.get("marginbook_transactions_total", 0)
        avg = e.get("marginbook_commands_total", 0) / txns if txns else 0
        print(
            f"  engine        {txns:,.0f} transactions (avg {avg:,.0f} commands), "
            f"restarts {e.get('marginbook_restarts_total', 0):.0f}, last seq {e.get('marginbook_last_seq', 0):,.0f}, "
            f"{phase.produce_retries} produce retries (broker NOT_ENOUGH_REPLICAS = txn verification)"
        )
    print(f"  exactly once  {'journal identical to the in-process reference' if phase.verified else 'FAILED'}")
    if phase.error:
        print(f"  error         {phase.error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI (< 20 s)")
    parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP)")
    parser.add_argument("--commands", type=int, default=None, help="saturation commands (default 50,000)")
    parser.add_argument("--rate", type=float, default=None, help="sustained commands/s (default 5,000)")
    parser.add_argument("--duration", type=float, default=None, help="sustained seconds (default 10)")
    parser.add_argument("--batch-max", type=int, default=2_000, help="engine: commands per transaction at most")
    parser.add_argument("--snapshot-every", type=int, default=50_000, help="engine: snapshot period (seqs)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=None, help="per phase, seconds")
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.commands = args.commands or (2_000 if args.smoke else 50_000)
    args.rate = args.rate or (500.0 if args.smoke else 5_000.0)
    args.duration = args.duration or (3.0 if args.smoke else 10.0)
    args.timeout = args.timeout or (30.0 if args.smoke else 180.0)
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP")
    if not bootstrap:
        print("kafka_bench: no broker: pass --bootstrap or set KAFKA_BOOTSTRAP", file=sys.stderr)
        return 2

    machine = machine_info()
    print(
        f"machine: {machine['cpu_model']} ({machine['logical_cpus']} logical CPUs), {machine['uname']}, "
        f"Python {machine['python']}; Kafka {kafka_version()} at {bootstrap} (single KRaft node, loopback)"
    )
    print(
        f"engine: one shard, --batch-max {args.batch_max}, --snapshot-every {args.snapshot_every}; "
        f"flow: write_flow(seed={args.seed})"
    )

    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="kafka-bench-") as scratch:
        workdir = Path(scratch)
        sustained_count = int(args.rate * args.duration)
        for name, count in (("saturation", args.commands), ("sustained", sustained_count)):
            flow_path = workdir / f"{name}.jsonl"
            write_flow(flow_path, count, seed=args.seed)
            lines = [line.strip() for line in flow_path.read_bytes().splitlines() if line.strip()]
            phase = run_phase(name, bootstrap, lines, args, workdir)
            print_phase(phase)
            phases.append(phase)

    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {"machine": machine, "args": vars(args), "phases": [asdict(p) for p in phases]}, indent=2, default=str
            )
        )
    ok = all(p.verified and p.error is None for p in phases)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
