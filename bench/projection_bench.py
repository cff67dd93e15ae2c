"""Benchmark of the risk projection: view updates per second and mark → margin-ratio latency.

Usage::

    KAFKA_BOOTSTRAP=127.0.0.1:19092 python bench/projection_bench.py [--smoke] [--commands N]
        [--accounts A] [--rate R] [--duration S] [--batch-max B] [--json-out PATH]

Everything is real and on one machine (broker JVM, engine, projection and this process share
its CPUs). Fresh topics (a unique prefix); the flow is ``bench/flow.py`` (``--accounts`` retail
accounts and 4 market makers on BTC/ETH/SOL-USDT, seeded).

a. **in-process** — the journal folded by :class:`projections.publish.Projector` alone, one
   batch per events record: outcomes/s and risk records rendered/s (the CPU cost of the views);
b. **catch-up** — ``--commands`` commands submitted and journaled by ``marginbook engine``
   first; then ``marginbook project`` starts on the backlog and the clock runs from the moment
   it logs that it recovered (its JSON log's ``ts``) to the moment its ``/metrics`` show the last
   seq (polled every 10 ms): outcomes/s and risk records (views + tombstones)/s published,
   exactly once, with transactions;
c. **mark storm** — engine and projection running, ``--rate`` BTC-USDT mark prices per second
   for ``--duration`` s through an idempotent producer, paced against a schedule. The latency
   of a mark runs from its *scheduled* send time (no coordinated omission) to the moment a
   ``read_committed`` consumer tailing the risk topic receives a record whose ``seq`` header is
   at or past the mark's seq (one partition, no dead letters: command *k* gets seq *k*) — the
   first published margin ratio that reflects it. Coalescing shows as records published vs
   ``marks × exposed accounts`` (what publishing every view on every mark would cost).

At the end, the risk topic (latest value per key) must equal the views of the committed
journal folded in-process; the exit code is 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
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

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flow import generate
from kafka_bench import delete_topics, free_port, kafka_version, machine_info, percentile, topics_for

from engine.io.kafka.journal import read_outcomes
from engine.io.kafka.submit import submit
from engine.io.kafka.topics import create_topics
from events.codec import decode_outcome_json
from projections.publish import Projector, all_view_records

REPO = Path(__file__).resolve().parent.parent


class Service:
    """A ``marginbook`` service subprocess with its /metrics and /healthz endpoint."""

    def __init__(self, command: str, bootstrap: str, prefix: str, flags: list[str], log_path: Path) -> None:
        self.name = command
        self.port = free_port()
        self.log_path = log_path
        args = [sys.executable, "-m", "cli.main", command, "--topic-prefix", prefix, "--metrics-port", str(self.port)]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*args, *flags],
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

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, body = self.get("/healthz")
                if status == 200 and json.loads(body).get("ready"):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.tail()}")

    def metrics(self) -> dict[str, float]:
        _, body = self.get("/metrics")
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def wait_metric(self, name: str, at_least: float, timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                seen = self.metrics()
            except OSError:
                seen = {}
            if seen.get(name, -1) >= at_least:
                return seen
            time.sleep(0.01)
        raise RuntimeError(f"{self.name}: {name} {seen.get(name)} < {at_least} after {timeout} s:\n{self.tail()}")

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

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

    def logged_at(self, needle: str) -> float:
        """Wall-clock ms (the JSON log's ``ts``) of the first log line holding ``needle``."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            if needle in line:
                return float(json.loads(line)["ts"])
        raise RuntimeError(f"{self.name} never logged {needle!r}:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Report:
    commands: int
    accounts: int
    in_process: dict[str, float] = field(default_factory=dict)
    catch_up: dict[str, float] = field(default_factory=dict)
    storm: dict[str, Any] = field(default_factory=dict)
    verified: bool = False
    error: str | None = None


# --- a. in-process --------------------------------------------------------------------------------


def in_process(lines: list[bytes], per_record: int = 256) -> dict[str, float]:
    """Fold and render with the Projector alone, one batch per ``per_record`` outcomes."""
    outcomes = [decode_outcome_json(line) for line in lines]
    projector = Projector()
    records = 0
    started = time.perf_counter()
    for i in range(0, len(outcomes), per_record):
        for outcome in outcomes[i : i + per_record]:
            projector.fold(outcome)
        records += len(projector.flush())
    seconds = time.perf_counter() - started
    return {
        "outcomes": len(outcomes),
        "seconds": seconds,
        "outcomes_per_s": len(outcomes) / seconds,
        "records": records,
        "records_per_s": records / seconds,
    }


# --- c. the storm ---------------------------------------------------------------------------------


@dataclass
class StormTail:
    """Arrival times of risk records by ``seq`` header, as a ``read_committed`` tail sees them."""

    first_seq: int
    last_seq: int
    #: (perf_counter, highest seq header seen so far) after each fetch that raised it.
    progress: list[tuple[float, int]] = field(default_factory=list)
    records: int = 0
    error: str | None = None


async def tail_risk(bootstrap: str, topic: str, tail: StormTail, ready: asyncio.Event, timeout: float) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=16 << 20,
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    highest = 0
    try:
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        ready.set()
        deadline = time.perf_counter() + timeout
        while highest < tail.last_seq:
            if time.perf_counter() > deadline:
                tail.error = f"timed out: risk records reflect seq {highest}, the last mark is {tail.last_seq}"
                return
            batch = await consumer.getmany(tp, timeout_ms=100)
            now = time.perf_counter()
            top = highest
            for record in batch.get(tp, []):
                tail.records += 1
                seq = int(dict(record.headers or ()).get("seq", b"0"))
                top = max(top, seq)
            if top > highest:
                highest = top
                tail.progress.append((now, highest))
    finally:
        await consumer.stop()


async def storm(
    bootstrap: str, topics: Any, first_seq: int, marks: list[bytes], rate: float, projection: Service, timeout: float
) -> dict[str, Any]:
    tail = StormTail(first_seq, first_seq + len(marks) - 1)
    ready = asyncio.Event()
    tail_task = asyncio.create_task(tail_risk(bootstrap, topics.risk, tail, ready, timeout))
    await asyncio.wait_for(ready.wait(), timeout=30)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    lag_max = 0.0
    scheduled: list[float] = []
    behind_ms = 0.0
    try:
        start = time.perf_counter() + 0.05
        last_poll = 0.0
        for k, value in enumerate(marks):
            at = start + k / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            behind_ms = max(behind_ms, (time.perf_counter() - at) * 1000)
            scheduled.append(at)
            await producer.send(topics.commands, value=value, key=b"BTC-USDT", partition=0)
            if time.perf_counter() - last_poll > 0.25:
                last_poll = time.perf_counter()
                lag_max = max(
                    lag_max, (await asyncio.to_thread(projection.metrics)).get("marginbook_projection_lag", 0)
                )
        await producer.flush()
        sent_seconds = time.perf_counter() - start
        await tail_task
    finally:
        await producer.stop()
        if not tail_task.done():
            tail_task.cancel()
    latencies: list[float] = []
    progress = tail.progress
    j = 0
    for k, at in enumerate(scheduled):
        seq = first_seq + k
        while j < len(progress) and progress[j][1] < seq:
            j += 1
        if j == len(progress):
            break
        latencies.append((progress[j][0] - at) * 1000)
    latencies.sort()
    return {
        "marks": len(marks),
        "target_rate": rate,
        "achieved_rate": len(marks) / sent_seconds if sent_seconds else 0.0,
        "max_schedule_lag_ms": behind_ms,
        "risk_records": tail.records,
        "records_per_s": tail.records / sent_seconds if sent_seconds else 0.0,
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": latencies[-1] if latencies else float("nan"),
            "mean": statistics.fmean(latencies) if latencies else float("nan"),
        },
        "resolved": len(latencies),
        "projection_lag_max": lag_max,
        "error": tail.error,
    }


def storm_marks(lines: list[bytes], count: int, seed: int) -> list[bytes]:
    """``count`` BTC-USDT marks walking from the flow's last one, one tick (0.1) steps."""
    last_px, last_ts = "", 0
    for line in lines:
        obj = json.loads(line)
        last_ts = max(last_ts, int(obj["ts"]))
        if obj["type"] == "mark_price" and obj["instId"] == "BTC-USDT":
            last_px = obj["markPx"]
    ticks = round(float(last_px) * 10) if last_px else 600_000  # det-ok: bench input only
    rng = random.Random(seed)
    out = []
    for k in range(count):
        ticks = max(10, ticks + rng.randint(-20, 20))
        px = f"{ticks // 10}.{ticks % 10}"
        out.append(
            json.dumps(
                {"type": "mark_price", "ts": last_ts + 1 + k, "instId": "BTC-USDT", "markPx": px}, separators=(",", ":")
            ).encode()
        )
    return out


# --- reading the risk topic -----------------------------------------------------------------------


async def risk_latest(bootstrap: str, topic: str) -> dict[str, bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    out: dict[str, bytes] = {}
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        idle = 0
        while await consumer.position(tp) < end - 1 or (idle < 2 and await consumer.position(tp) < end):
            records = (await consumer.getmany(tp, timeout_ms=200, max_records=10_000)).get(tp, [])
            idle = 0 if records else idle + 1
            for r in records:
                key = (r.key or b"").decode()
                if r.value is None:
                    out.pop(key, None)
                else:
                    out[key] = r.value
    finally:
        await consumer.stop()
    return out


# --- the run --------------------------------------------------------------------------------------


def run(args: argparse.Namespace, bootstrap: str, workdir: Path) -> Report:
    lines, _ = generate(args.commands, seed=args.seed, accounts=args.accounts)
    marks = storm_marks(lines, int(args.rate * args.duration), args.seed)
    report = Report(commands=len(lines), accounts=args.accounts)
    prefix = f"pbench-{uuid.uuid4().hex[:8]}"
    topics = topics_for(prefix)
    asyncio.run(create_topics(bootstrap, topics))
    services: list[Service] = []
    try:
        submitted = asyncio.run(submit(bootstrap, topics.commands, enumerate(lines, start=1)))
        if submitted.refused:
            raise RuntimeError(f"flow refused: {submitted.refused[:3]}")
        engine = Service("engine", bootstrap, prefix, [], workdir / "engine.log")
        services.append(engine)
        engine.wait_metric("marginbook_last_seq", len(lines), args.timeout)

        journal = asyncio.run(read_outcomes(bootstrap, topics.events))
        report.in_process = in_process(journal)

        projection = Service(
            "project", bootstrap, prefix, ["--batch-max", str(args.batch_max)], workdir / "projection.log"
        )
        services.append(projection)
        projection.wait_ready(args.timeout)
        done = projection.wait_metric("marginbook_projection_last_seq", len(lines), args.timeout)
        finished = time.time()  # det-ok: wall clock, compared with the log's wall-clock ts
        seconds = finished - projection.logged_at("recovered projection") / 1000
        report.catch_up = {
            "outcomes": len(lines),
            "seconds": seconds,
            "outcomes_per_s": len(lines) / seconds,
            "risk_records": done["marginbook_projection_risk_records_total"],
            "records_per_s": done["marginbook_projection_risk_records_total"] / seconds,
            "transactions": done["marginbook_projection_transactions_total"],
        }

        report.storm = asyncio.run(
            storm(bootstrap, topics, len(lines) + 1, marks, args.rate, projection, args.timeout + args.duration)
        )
        total = len(lines) + len(marks)
        projection.wait_metric("marginbook_projection_last_seq", total, args.timeout)
        journal = asyncio.run(read_outcomes(bootstrap, topics.events))
        projector = Projector()
        for line in journal:
            projector.fold_silently(decode_outcome_json(line))
        exposed = [a for a in projector.state.accounts.values() if "BTC" in a.balances]
        report.storm["exposed_accounts"] = len(exposed)
        # Without coalescing, every mark would re-publish each exposed account's records.
        per_mark = sum(1 + len(a.positions) for a in exposed)
        report.storm["exposed_records"] = per_mark
        demand = per_mark * len(marks)
        report.storm["uncoalesced_views"] = demand
        report.storm["coalescing"] = demand / max(1, report.storm["risk_records"])
        expected = all_view_records(projector.state)
        actual = asyncio.run(risk_latest(bootstrap, topics.risk))
        report.verified = len(journal) == total and actual == expected
        if not report.verified:
            report.error = f"risk topic differs from the journal's views ({len(actual)} vs {len(expected)} keys)"
        elif report.storm.get("error"):
            report.error = str(report.storm["error"])
    except Exception as err:  # report, clean up, exit 1
        report.error = f"{type(err).__name__}: {err}"
    finally:
        for service in reversed(services):
            service.stop()
        if not args.keep_topics:
            try:
                asyncio.run(delete_topics(bootstrap, topics))
                asyncio.run(_delete(bootstrap, [f"{prefix}.projection.snapshots"]))
            except Exception as err:
                print(f"could not delete topics of {prefix}: {err!r}", file=sys.stderr)
    return report


async def _delete(bootstrap: str, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


def print_report(report: Report, args: argparse.Namespace) -> None:
    a, c, s = report.in_process, report.catch_up, report.storm
    if a:
        print(
            f"\nin-process   {a['outcomes']:,} outcomes folded + rendered in {a['seconds']:.2f} s: "
            f"{a['outcomes_per_s']:,.0f} outcomes/s, {a['records_per_s']:,.0f} risk records/s "
            f"({a['records']:,} records, one batch per 256 outcomes)"
        )
    if c:
        print(
            f"catch-up     {c['outcomes']:,} journaled outcomes projected in {c['seconds']:.2f} s: "
            f"{c['outcomes_per_s']:,.0f} outcomes/s, {c['records_per_s']:,.0f} risk records/s published "
            f"({c['risk_records']:,.0f} records in {c['transactions']:,.0f} transactions, --batch-max {args.batch_max})"
        )
    if s:
        lat = s["latency_ms"]
        print(
            f"mark storm   {s['marks']:,} BTC-USDT marks at {s['achieved_rate']:,.0f}/s "
            f"(target {s['target_rate']:,.0f}/s, max {s['max_schedule_lag_ms']:.1f} ms behind schedule); "
            f"{s.get('exposed_accounts', 0):,} accounts exposed"
        )
        print(
            f"             {s['risk_records']:,} risk records published ({s['records_per_s']:,.0f}/s) instead of "
            f"{s.get('uncoalesced_views', 0):,} without coalescing ({s.get('exposed_records', 0):,} records per mark): "
            f"×{s.get('coalescing', 0):,.1f}; "
            f"projection lag ≤ {s['projection_lag_max']:.0f} events records"
        )
        print(
            "             latency (ms) "
            + "  ".join(f"{k} {lat[k]:.1f}" for k in ("p50", "p90", "p99", "max", "mean"))
            + f"   ({s['resolved']:,} marks; scheduled submit → first risk record reflecting it, read_committed)"
        )
    print(f"exactly once {'risk topic = views of the committed journal' if report.verified else 'FAILED'}")
    if report.error:
        print(f"error        {report.error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI (< 20 s)")
    parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP)")
    parser.add_argument("--commands", type=int, default=None, help="backlog commands (default 50,000)")
    parser.add_argument("--accounts", type=int, default=None, help="retail accounts (default 1,000)")
    parser.add_argument("--rate", type=float, default=None, help="storm marks/s (default 500)")
    parser.add_argument("--duration", type=float, default=None, help="storm seconds (default 20)")
    parser.add_argument("--batch-max", type=int, default=5_000, help="projection: outcomes per transaction at most")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=None, help="per wait, seconds")
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.commands = args.commands or (3_000 if args.smoke else 50_000)
    args.accounts = args.accounts or (50 if args.smoke else 1_000)
    args.rate = args.rate or (100.0 if args.smoke else 500.0)
    args.duration = args.duration or (3.0 if args.smoke else 20.0)
    args.timeout = args.timeout or (30.0 if args.smoke else 300.0)
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP")
    if not bootstrap:
        print("projection_bench: no broker: pass --bootstrap or set KAFKA_BOOTSTRAP", file=sys.stderr)
        return 2
    machine = machine_info()
    print(
        f"machine: {machine['cpu_model']} ({machine['logical_cpus']} logical CPUs), {machine['uname']}, "
        f"Python {machine['python']}; Kafka {kafka_version()} at {bootstrap} (single KRaft node, loopback)"
    )
    print(
        f"flow: bench/flow.py seed {args.seed}, {args.commands:,} commands, {args.accounts:,} retail accounts; "
        f"storm: {args.rate:,.0f} marks/s for {args.duration:.0f} s; engine defaults, projection --batch-max "
        f"{args.batch_max}"
    )
    with tempfile.TemporaryDirectory(prefix="projection-bench-") as scratch:
        report = run(args, bootstrap, Path(scratch))
    print_report(report, args)
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"machine": machine, "args": vars(args), **asdict(report)}, indent=2, default=str)
        )
    return 0 if report.verified and report.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
