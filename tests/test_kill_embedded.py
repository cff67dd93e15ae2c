"""kill -9 of a real ``marginbook run`` at exact and at random points: while writing a snapshot
(before and after its rename), while writing ``meta.json``, and while a second writer waits on
the directory's lock (the waiter must take over and finish the same log). Every time, the final
directory equals an uninterrupted run's, byte for byte, and nothing partial is left.

The default run is short (a few kills); ``MARGINBOOK_FAULT_LONG=1`` runs 25 random kills of the
lock holder, each with a waiter ready to take over (``docs/filelog.md``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_crash_embedded import write_flow

from cli.main import main
from engine.io.embedded import COMMANDS_FILE, EVENTS_FILE, META_FILE
from engine.io.lock import LOCK_FILE, WriterLock

ROOT = Path(__file__).resolve().parent.parent
SMALL, EVERY = 650, 200
LONG = bool(os.environ.get("MARGINBOOK_FAULT_LONG"))
BIG = 30_000 if LONG else 8_000


def own_files(log: Path) -> dict[str, bytes]:
    names = (COMMANDS_FILE, EVENTS_FILE, META_FILE)
    return {
        p.relative_to(log).as_posix(): p.read_bytes()
        for p in log.rglob("*")
        if p.is_file() and (p.name in names or p.suffix == ".msgpack")
    }


def leftovers(log: Path) -> list[Path]:
    return [p for p in log.rglob("*") if p.name.endswith(".tmp")]


def start(*argv: str, kill_at: str | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    if kill_at is None:
        command = [sys.executable, "-m", "cli.main", *argv]
    else:
        env["KILL_AT"] = kill_at
        command = [sys.executable, "-c", "import killpoint; killpoint.main()", *argv]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def finish(proc: subprocess.Popen[bytes], timeout: float = 300) -> int:
    code = proc.wait(timeout=timeout)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert "Traceback" not in err, err
    return code


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("small")
    write_flow(base / "flow.jsonl", SMALL, seed=3)
    assert main(["run", str(base / "flow.jsonl"), "--log", str(base / "ref"), "--snapshot-every", str(EVERY)]) == 0
    return base / "flow.jsonl", base / "ref"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("big")
    write_flow(base / "flow.jsonl", BIG, seed=8)
    assert main(["run", str(base / "flow.jsonl"), "--log", str(base / "ref"), "--snapshot-every", "500"]) == 0
    return base / "flow.jsonl", base / "ref"


@pytest.mark.parametrize("kill_at", ["snapshot:1", "snapshot:3", "renamed:2", "meta"])
def test_kill_while_writing_a_snapshot_or_meta(small: tuple[Path, Path], tmp_path: Path, kill_at: str) -> None:
    flow, reference = small
    log = tmp_path / "log"
    argv = ("run", str(flow), "--log", str(log), "--snapshot-every", str(EVERY))
    assert finish(start(*argv, kill_at=kill_at)) == -signal.SIGKILL
    if kill_at.startswith("snapshot") or kill_at == "meta":
        assert leftovers(log), "the kill did not land inside the write"
    if kill_at == "meta":
        assert not (log / META_FILE).exists()
    assert finish(start(*argv)) == 0
    assert leftovers(log) == []
    assert own_files(log) == own_files(reference)
    assert main(["audit", str(log), "--no-progress"]) == 0


def _wait_for_lock(log: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not ((log / LOCK_FILE).exists() and f'"pid": {proc.pid}' in (log / LOCK_FILE).read_text()):
        if proc.poll() is not None:  # done already (nothing was left to do)
            return
        assert time.monotonic() < deadline, "the writer never took the lock"
        time.sleep(0.005)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # the writer holds the lock but has not created the log yet
        return 0


def test_kill_the_waiting_writer_leaves_the_holder_alone(small: tuple[Path, Path], tmp_path: Path) -> None:
    """A writer killed while it waits for the lock changes nothing: the holder keeps the lock
    (a third writer is still refused), and once it lets go the next writer finishes the log."""
    flow, reference = small
    log = tmp_path / "log"
    log.mkdir()
    holder = WriterLock.acquire(log)
    try:
        waiter = start("run", str(flow), "--log", str(log), "--snapshot-every", str(EVERY), "--wait-lock", "120")
        time.sleep(1.0)
        assert waiter.poll() is None, "the waiter is not waiting"
        waiter.send_signal(signal.SIGKILL)
        assert finish(waiter) == -signal.SIGKILL
        assert finish(start("run", str(flow), "--log", str(log))) == 4
        assert not (log / COMMANDS_FILE).exists()
    finally:
        holder.release()
    assert finish(start("run", str(flow), "--log", str(log), "--snapshot-every", str(EVERY))) == 0
    assert own_files(log) == own_files(reference)


def test_kill_the_holder_while_another_writer_waits_on_the_lock(big: tuple[Path, Path], tmp_path: Path) -> None:
    """The waiter takes the lock the kernel drops with the dead holder, recovers and finishes."""
    flow, reference = big
    log = tmp_path / "log"
    rng = random.Random(17)
    argv = ("run", str(flow), "--log", str(log), "--snapshot-every", "500")
    kills = 25 if LONG else 3
    final_size = (reference / COMMANDS_FILE).stat().st_size
    mid_stream = 0
    holder = start(*argv)
    for _ in range(kills):
        _wait_for_lock(log, holder)
        waiter = start(*argv, "--wait-lock", "300")
        # Kill when commands.log reaches a random share of its final size (the holder is at
        # work then, whatever the machine's load); events.log and snapshots trail it.
        target = rng.uniform(0.05, 0.9) * final_size
        while holder.poll() is None and _size(log / COMMANDS_FILE) < target:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        if holder.poll() is None:
            holder.send_signal(signal.SIGKILL)
            assert finish(holder) == -signal.SIGKILL
            mid_stream += 1
        else:
            assert finish(holder) == 0
        holder = waiter
    assert finish(holder) == 0
    assert mid_stream >= (15 if LONG else 2), "no kill landed while the holder was running; the test proved nothing"
    assert leftovers(log) == []
    assert own_files(log) == own_files(reference)
    assert main(["audit", str(log), "--no-progress"]) == 0
