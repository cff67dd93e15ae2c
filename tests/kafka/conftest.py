"""Fixtures and helpers for the end-to-end Kafka tests: real broker, real engine processes.

Every test gets its own topic prefix (``prefix``), so tests never see each other's records,
offsets or transactional ids. Engines run as real subprocesses (``python -m cli.main engine``)
started through the ``engines`` factory; whatever happens in the test, its finalizer stops every
engine it started (SIGTERM, then SIGKILL), so no engine outlives its test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:  # ``from test_crash_embedded import write_flow`` from tests/kafka
    sys.path.insert(0, str(TESTS))

from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

from engine.io.filelog import FileLog  # noqa: E402
from engine.io.kafka.journal import read_outcomes  # noqa: E402

_SCRIPT = Path(sys.executable).parent / "marginbook"
#: The ``marginbook`` console script of this venv (or the module, if the script is missing).
MARGINBOOK: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "cli.main"]


# --------------------------------------------------------------------------------------- broker


@pytest.fixture
def kafka_bootstrap() -> str:
    addr = os.environ.get("KAFKA_BOOTSTRAP")
    if not addr:
        pytest.skip("KAFKA_BOOTSTRAP not set (start a broker with: bash scripts/kafka.sh start)")
    return addr


def env_with(bootstrap: str) -> dict[str, str]:
    return {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "PYTHONHASHSEED": "0"}


def topic_names(prefix: str) -> list[str]:
    return [f"{prefix}.{t}" for t in ("commands", "events", "commands.dlq", "snapshots", "risk", "alerts")]


async def _delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


@pytest.fixture
def prefix(kafka_bootstrap: str) -> Iterator[str]:
    """A fresh topic prefix with its topics created by ``marginbook topics``; deleted afterwards
    (kept when ``KEEP_TOPICS`` is set, to inspect a failure)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [*MARGINBOOK, "topics", "--topic-prefix", name],
        cwd=ROOT,
        env=env_with(kafka_bootstrap),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"topics ready (6 created)" in done.stdout, done.stdout.decode()
    yield name
    if not os.environ.get("KEEP_TOPICS"):
        try:
            asyncio.run(_delete_topics(kafka_bootstrap, topic_names(name)))
        except Exception as err:  # best effort: the broker may be down after a failed test
            print(f"could not delete topics of {name}: {err!r}", file=sys.stderr)


# --------------------------------------------------------------------------------------- engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EngineProcess:
    """One ``marginbook engine`` subprocess; stderr (JSON logs) goes to ``log_path``."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; return the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logs(self) -> list[dict[str, object]]:
        """The engine's JSON log lines (non-JSON lines are kept as ``{"raw": ...}``)."""
        entries: list[dict[str, object]] = []
        for line in self.stderr().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                entries.append({"raw": line})
        return entries

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.stderr().splitlines()[-lines:])

    # -- the /metrics and /healthz endpoint ---------------------------------------------------

    def http_get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read()

    def metrics(self) -> dict[str, float]:
        status, body = self.http_get("/metrics")
        assert status == 200, body
        return parse_metrics(body.decode())

    def last_seq(self) -> int | None:
        """``marginbook_last_seq`` from /metrics, or None while the endpoint is not up."""
        try:
            return int(self.metrics()["marginbook_last_seq"])
        except (OSError, KeyError, AssertionError):
            return None

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                pytest.fail(f"engine exited with {self.proc.returncode} before it was ready:\n{self.tail()}")
            try:
                status, body = self.http_get("/healthz")
                if status == 200 and json.loads(body)["ready"] is True:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        pytest.fail(f"engine not ready after {timeout} s:\n{self.tail()}")

    def wait_seq(self, at_least: int, timeout: float = 60.0) -> int:
        """Poll /metrics until ``marginbook_last_seq >= at_least``; return it."""
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            if not self.alive():
                pytest.fail(f"engine exited with {self.proc.returncode} (last seq {seen}):\n{self.tail()}")
            seen = self.last_seq()
            if seen is not None and seen >= at_least:
                return seen
            time.sleep(0.01)
        pytest.fail(f"engine last seq {seen} < {at_least} after {timeout} s:\n{self.tail()}")


def parse_metrics(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


StartEngine = Callable[..., EngineProcess]


@pytest.fixture
def engines(kafka_bootstrap: str, tmp_path: Path) -> Iterator[StartEngine]:
    """Factory: ``start(prefix, *flags, metrics=True)`` starts an engine subprocess. Every engine
    started is stopped at teardown, whatever the outcome of the test."""
    started: list[EngineProcess] = []

    def start(prefix: str, *flags: str, metrics: bool = True) -> EngineProcess:
        port = free_port() if metrics else 0
        log_path = tmp_path / f"engine-{len(started)}.log"
        args = [sys.executable, "-m", "cli.main", "engine", "--topic-prefix", prefix, *flags]
        if metrics:
            args += ["--metrics-port", str(port)]
        with open(log_path, "wb") as stderr:
            proc = subprocess.Popen(
                args, cwd=ROOT, env=env_with(kafka_bootstrap), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
            )
        engine = EngineProcess(proc, log_path, port)
        started.append(engine)
        return engine

    yield start
    for engine in started:
        if engine.alive():
            try:
                engine.terminate(timeout=10)
            except subprocess.TimeoutExpired:
                engine.kill()


# --------------------------------------------------------------------------------------- services


@pytest.fixture
def make_prefix(kafka_bootstrap: str) -> Iterator[Callable[[], str]]:
    """Factory of fresh topic prefixes (topics created by ``marginbook topics``); every topic of
    each, the projection's snapshots included, is deleted afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        done = subprocess.run(
            [*MARGINBOOK, "topics", "--topic-prefix", name],
            cwd=ROOT,
            env=env_with(kafka_bootstrap),
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr.decode()
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            asyncio.run(_delete_topics(kafka_bootstrap, [*topic_names(name), f"{name}.projection.snapshots"]))
        except Exception as err:  # best effort
            print(f"could not delete topics of {name}: {err!r}", file=sys.stderr)


StartProcess = Callable[..., EngineProcess]


@pytest.fixture
def services(kafka_bootstrap: str, tmp_path: Path) -> Iterator[StartProcess]:
    """Factory: ``start("project" | "engine" | "api", prefix, *flags)`` starts a ``marginbook``
    subprocess with a metrics (or HTTP) port; every one is stopped at teardown."""
    started: list[EngineProcess] = []

    def start(command: str, prefix: str, *flags: str, port: int | None = None) -> EngineProcess:
        port = port or free_port()
        log_path = tmp_path / f"{command}-{len(started)}.log"
        args = [sys.executable, "-m", "cli.main", command, "--topic-prefix", prefix, *flags]
        args += ["--port", str(port)] if command == "api" else ["--metrics-port", str(port)]
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                args, cwd=ROOT, env=env_with(kafka_bootstrap), stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        process = EngineProcess(proc, log_path, port)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.alive():
            try:
                process.terminate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


# --------------------------------------------------------------------------------------- journal


def read_journal(bootstrap: str, prefix: str) -> list[bytes]:
    """Every committed outcome line of shard 0 (dense seqs checked by ``read_outcomes``)."""
    return asyncio.run(read_outcomes(bootstrap, f"{prefix}.events", 0))


def settled_journal(bootstrap: str, prefix: str, timeout: float = 10.0) -> list[bytes]:
    """The committed journal once it stops growing (no engine running): the markers of a
    transaction committed just before the engine stopped become visible a moment later."""
    deadline = time.monotonic() + timeout
    lines = read_journal(bootstrap, prefix)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        again = read_journal(bootstrap, prefix)
        if len(again) == len(lines):
            return again
        lines = again
    return lines


def wait_journal(
    bootstrap: str, prefix: str, expected: int, timeout: float = 60.0, engine: EngineProcess | None = None
) -> list[bytes]:
    """Poll ``read_outcomes`` until it holds ``expected`` outcomes; fail on more, or on timeout."""
    deadline = time.monotonic() + timeout
    lines: list[bytes] = []
    while True:
        lines = read_journal(bootstrap, prefix)
        if len(lines) >= expected:
            assert len(lines) == expected, f"{len(lines)} outcomes committed, expected {expected}"
            return lines
        if engine is not None and not engine.alive():
            pytest.fail(f"engine exited with {engine.proc.returncode} at {len(lines)} outcomes:\n{engine.tail()}")
        if time.monotonic() > deadline:
            tail = engine.tail() if engine is not None else ""
            pytest.fail(f"{len(lines)}/{expected} outcomes committed after {timeout} s\n{tail}")
        time.sleep(0.25)


# --------------------------------------------------------------------------------------- CLI


def submit_file(bootstrap: str, prefix: str, path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*MARGINBOOK, "submit", "--topic-prefix", prefix, str(path)],
        cwd=ROOT,
        env=env_with(bootstrap),
        capture_output=True,
        timeout=120,
    )


@dataclass
class Reference:
    """An uninterrupted embedded run: its journal and its final risk view (``--json``)."""

    events: list[bytes]
    view: bytes


def embedded_run(flow: Path, log_dir: Path) -> Reference:
    done = subprocess.run(
        [*MARGINBOOK, "run", str(flow), "--log", str(log_dir), "--json"],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    with FileLog.open(log_dir / "events.log") as log:
        events = [payload for _, payload in log.read()]
    return Reference(events, done.stdout)


# --------------------------------------------------------------------------------------- broker ops


def _own_ports() -> tuple[str, str] | None:
    """``(port, controller port)`` of the broker this worktree's ``scripts/kafka.sh`` runs (from
    the ``server.properties`` it wrote on its last start), or None if it never started one."""
    props = ROOT / ".kafka" / "server.properties"
    if not props.exists():
        return None
    for line in props.read_text().splitlines():
        if line.startswith("listeners="):
            ports = dict(item.split("://", 1) for item in line.removeprefix("listeners=").split(","))
            plain, controller = ports.get("PLAINTEXT", ""), ports.get("CONTROLLER", "")
            return plain.rsplit(":", 1)[-1], controller.rsplit(":", 1)[-1]
    return None


def kafka_sh(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    """``scripts/kafka.sh ARGS`` on this worktree's broker, with the ports it was started on
    (never the script's defaults, which may be another engineer's broker)."""
    ports = _own_ports()
    assert ports is not None, "scripts/kafka.sh has not started a broker in this worktree"
    env = {**os.environ, "KAFKA_PORT": ports[0], "KAFKA_CONTROLLER_PORT": ports[1]}
    return subprocess.run(["bash", "scripts/kafka.sh", *args], cwd=ROOT, env=env, capture_output=True, timeout=timeout)


def broker_running() -> bool:
    return _own_ports() is not None and kafka_sh("status").returncode == 0


@pytest.fixture
def own_broker(kafka_bootstrap: str) -> str:
    """For tests that stop or restart the broker: skip unless ``KAFKA_BOOTSTRAP`` is the broker of
    this worktree's ``scripts/kafka.sh`` (a test must never stop someone else's broker)."""
    ports = _own_ports()
    if ports is None or kafka_bootstrap != f"127.0.0.1:{ports[0]}":
        pytest.skip(f"KAFKA_BOOTSTRAP={kafka_bootstrap} is not this worktree's scripts/kafka.sh broker")
    return kafka_bootstrap


@pytest.fixture
def broker_restored(own_broker: str) -> Iterator[None]:
    """For tests that stop the broker: make sure it is running again afterwards."""
    yield
    if not broker_running():
        kafka_sh("start")
