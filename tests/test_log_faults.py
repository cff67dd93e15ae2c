"""Faults of the embedded log against the real file system: two writers, outcomes lost behind a
snapshot, a full disk (a real size-limited tmpfs, and an in-process fault injection that always
runs), ``meta.json`` and snapshot files torn at every byte offset.

Each hole of issue 10 (5) has its regression test here (named after it) or in
``tests/test_damage.py``; every one of them fails on the code before the fix.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_crash_embedded import write_flow

from cli.main import main
from engine.core import snapshot
from engine.io import atomic, filelog
from engine.io.embedded import COMMANDS_FILE, EVENTS_FILE, META_FILE, EmbeddedEngine
from engine.io.filelog import FsyncPolicy
from engine.io.lock import LOCK_FILE, LogLocked, WriterLock
from engine.io.logdir import SnapshotDamaged, read_snapshot, snapshot_path
from replay.tolerant import Record, read_log

ROOT = Path(__file__).resolve().parent.parent
TOTAL = 650
EVERY = 200


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flow") / "flow.jsonl"
    write_flow(path, TOTAL, seed=3)
    return path


@pytest.fixture(scope="module")
def reference(flow: Path) -> Path:
    log = flow.parent / "reference"
    assert main(["run", str(flow), "--log", str(log), "--snapshot-every", str(EVERY)]) == 0
    return log


def own_files(log: Path) -> dict[str, bytes]:
    """The log's own files (not the lock, nor what a repair set aside)."""
    names = (COMMANDS_FILE, EVENTS_FILE, META_FILE)
    return {
        p.relative_to(log).as_posix(): p.read_bytes()
        for p in log.rglob("*")
        if p.is_file() and (p.name in names or p.suffix == ".msgpack")
    }


def leftovers(log: Path) -> list[Path]:
    return [p for p in log.rglob("*") if p.name.endswith(".tmp")]


def run(flow: Path, log: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    code = main(["run", str(flow), "--log", str(log), "--snapshot-every", str(EVERY), *flags])
    return code, capsys.readouterr().err


def errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line and not line.startswith("marginbook: warning:")]


def _cli(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *argv],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


# ------------------------------------------------------------------------ one writer at a time


def test_a_second_writer_is_refused_naming_the_holder(flow: Path, tmp_path: Path) -> None:
    """Hole: two `run --log DIR` at once both exited 0 and interleaved their records."""
    log = tmp_path / "log"
    log.mkdir()
    holder = WriterLock.acquire(log)
    try:
        proc = _cli("run", str(flow), "--log", str(log))
        assert proc.wait(timeout=60) == 4
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        assert len(err.strip().splitlines()) == 1, err
        assert f"is locked by another writer: pid {os.getpid()} on host " in err
        assert "started 20" in err and str(log / LOCK_FILE) in err
        assert not (log / COMMANDS_FILE).exists(), "the refused writer touched the log"
    finally:
        holder.release()
    with pytest.raises(LogLocked), EmbeddedEngine(log), EmbeddedEngine(log):
        pass


def test_two_runs_at_once_never_interleave(tmp_path: Path) -> None:
    big = tmp_path / "flow.jsonl"
    write_flow(big, 12_000, seed=5)
    log = tmp_path / "log"
    first = _cli("run", str(big), "--log", str(log))
    deadline = time.monotonic() + 60
    while not (log / LOCK_FILE).exists() or not (log / LOCK_FILE).read_bytes():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.01)
    second = _cli("run", str(big), "--log", str(log))
    codes = (first.wait(timeout=120), second.wait(timeout=120))
    assert second.stderr is not None
    err = second.stderr.read().decode()
    assert codes == (0, 4) or (codes == (0, 0) and "0 command(s) applied" in err), (codes, err)
    if codes[1] == 4:
        assert f"pid {first.pid} on host" in err
    assert main(["audit", str(log), "--no-progress"]) == 0
    assert [r.seq for r in read_log(log / COMMANDS_FILE) if isinstance(r, Record)] == list(range(1, 12_001))


def test_readers_are_not_fooled_by_a_live_writers_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """replay and audit while a real `run` appends: every one passes (exit 0), judging only what
    both logs held, complete, when it started, and says a writer is at work."""
    big = tmp_path / "flow.jsonl"
    write_flow(big, 15_000, seed=6)
    log = tmp_path / "log"
    writer = _cli("run", str(big), "--log", str(log), "--snapshot-every", "1000", "--fsync", "never")
    live = 0
    while writer.poll() is None:
        if (log / COMMANDS_FILE).exists():
            for argv in (["audit", str(log), "--no-progress"], ["replay", str(log)]):
                code = main(argv)
                captured = capsys.readouterr()
                assert code == 0, captured.err
                live += "a writer is at work on this log" in captured.out + captured.err
    assert writer.wait() == 0
    assert live >= 2, "no reader ran while the writer was at work; the test proved nothing"
    # The instant between the two logs' creation: commands.log there, events.log not yet.
    early = tmp_path / "early"
    early.mkdir()
    (early / COMMANDS_FILE).write_bytes(b"")
    holder = WriterLock.acquire(early)
    try:
        assert main(["audit", str(early), "--no-progress"]) == 0
        assert main(["replay", str(early)]) == 0
    finally:
        holder.release()
    assert main(["audit", str(early), "--no-progress"]) == 1
    assert main(["audit", str(log), "--no-progress"]) == 0


def test_a_lock_left_by_a_dead_process_does_not_block(
    flow: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log"
    log.mkdir()
    (log / LOCK_FILE).write_text(json.dumps({"pid": 999_999_999, "host": "gone", "started": "2001-01-01T00:00:00Z"}))
    code, err = run(flow, log, capsys)
    assert code == 0, err
    assert json.loads((log / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert own_files(log) == own_files(reference)


def test_a_waiting_writer_takes_over_when_the_holder_releases(flow: Path, reference: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    holder = WriterLock.acquire(log)
    waiter = _cli("run", str(flow), "--log", str(log), "--snapshot-every", str(EVERY), "--wait-lock", "60")
    time.sleep(0.8)
    assert waiter.poll() is None, "the waiter gave up"
    holder.release()
    assert waiter.wait(timeout=60) == 0
    assert own_files(log) == own_files(reference)


# ------------------------------------------------------------------------ commands are the truth


def _record_end(path: Path, seq: int) -> int:
    end = 0
    for item in read_log(path):
        if isinstance(item, Record) and item.seq <= seq:
            end = item.offset + filelog.HEADER_SIZE + len(item.payload)
    return end


@pytest.mark.parametrize("kept", [0, 1, 199, 200, 201, 399, 400, 401, 599, 600, 649])
@pytest.mark.parametrize("torn", [0, 13])
def test_outcomes_lost_behind_the_newest_snapshot_are_rederived_byte_identically(
    reference: Path, tmp_path: Path, kept: int, torn: int
) -> None:
    """Hole: with events.log cut behind the newest snapshot, `run` appended outcomes under the
    wrong record numbers and exited 0; replay and audit failed from then on."""
    log = tmp_path / "log"
    shutil.copytree(reference, log)
    os.truncate(log / EVENTS_FILE, _record_end(log / EVENTS_FILE, kept) + (torn if kept < TOTAL else 0))
    warnings: list[str] = []
    with EmbeddedEngine(log, snapshot_every=EVERY, warn=warnings.append) as engine:
        assert engine.recovered == TOTAL - kept
        assert engine.recovered_from == max((s for s in (200, 400, 600) if s <= kept), default=0)
        assert engine.state.last_seq == TOTAL
    assert own_files(log) == own_files(reference)
    assert main(["replay", str(log)]) == 0
    assert main(["audit", str(log), "--no-progress"]) == 0


# ------------------------------------------------------------------------ a full disk


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a size-limited tmpfs (needs root, and a kernel that lets us): {done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    disk = tmp_path / "disk"
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    _mount_tmpfs(disk, request.param)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize(
    ("small_disk", "every"),
    [("32k", EVERY), ("128k", EVERY), ("192k", EVERY), ("256k", 50), ("288k", 25)],
    indirect=["small_disk"],
)
def test_a_full_disk_is_one_line_naming_the_file_and_loses_nothing(
    flow: Path, reference: Path, small_disk: Path, capsys: pytest.CaptureFixture[str], every: int
) -> None:
    """Hole: ENOSPC ended in a raw OSError traceback or "log unusable after an I/O error" and left
    .tmp snapshots. Here on a real tmpfs of 128 to 288 KiB: the run stops with exit 5 and one line naming the
    file, nothing partial is left, and once there is room the same run finishes the same log."""
    log = small_disk / "log"
    code = main(["run", str(flow), "--log", str(log), "--snapshot-every", str(every)])
    err = capsys.readouterr().err
    assert code == 5, err
    (line,) = errors(err)
    assert line.startswith(f"marginbook: disk full: cannot write {log}/") and "No space left on device" in line
    assert "Traceback" not in err
    assert leftovers(log) == []
    # Room again: the run recovers what the full disk tore and finishes, identical to the reference.
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    code = main(["run", str(flow), "--log", str(log), "--snapshot-every", str(every)])
    assert code == 0, capsys.readouterr().err
    if every == EVERY:
        assert own_files(log) == own_files(reference)
    else:
        assert [r for r in read_log(log / EVENTS_FILE)] == [r for r in read_log(reference / EVENTS_FILE)]
    assert main(["audit", str(log), "--no-progress"]) == 0


class _Disk:
    """A byte budget shared by every write of a run; the write that exceeds it writes what fits
    and fails with ENOSPC, like a file system filling up."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.failed: str | None = None

    def take(self, path: str, data: Any) -> int:
        n = len(data)
        if n <= self.budget:
            self.budget -= n
            return n
        fits, self.budget = self.budget, 0
        if self.failed is None:
            self.failed = path
        if fits:
            return fits
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _install(monkeypatch: pytest.MonkeyPatch, disk: _Disk) -> None:
    class FillingFile(io.FileIO):
        def write(self, data: Any) -> int:
            n = disk.take(str(self.name), data)
            return super().write(bytes(memoryview(data)[:n]))

    def write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else "?"
        while view:
            n = disk.take(name, view)
            view = view[os.write(fd, view[:n]) :]

    monkeypatch.setattr(filelog, "_open_append", lambda path: FillingFile(path, "ab"))
    monkeypatch.setattr(atomic, "_write_all", write_all)


def _budgets(reference: Path) -> list[int]:
    total = sum(len(v) for v in own_files(reference).values())
    return [0, 5, 40, 1_000, 20_000] + [total * k // 23 for k in range(1, 23)]


@pytest.fixture(scope="module")
def budgets(reference: Path) -> list[int]:
    return _budgets(reference)


@pytest.mark.parametrize("index", range(27))
def test_disk_full_at_every_write_site_by_fault_injection(
    flow: Path,
    reference: Path,
    budgets: list[int],
    index: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same as on tmpfs, with the disk filling at 27 points spread over the run: in
    meta.json, commands.log, events.log and the snapshots (fsync is BATCH: the failure may come
    from a buffer flush long after the append)."""
    log = tmp_path / "log"
    disk = _Disk(budgets[index])
    _install(monkeypatch, disk)
    code, err = run(flow, log, capsys)
    assert disk.failed is not None, "the budget was not exhausted"
    assert code == 5, err
    (line,) = errors(err)
    named = Path(line.removeprefix("marginbook: disk full: cannot write ").split(" (")[0])
    failed = Path(disk.failed)
    if failed.name.startswith(".") and failed.name.endswith(".tmp"):  # an atomic write names its final file
        failed = failed.with_name(failed.name[1:-4])
    assert named.resolve() == failed.resolve(), (line, disk.failed)
    assert leftovers(log) == []
    monkeypatch.undo()
    code, err = run(flow, log, capsys)
    assert code == 0, err
    assert own_files(log) == own_files(reference)


def test_a_failed_fsync_for_lack_of_space_is_disk_full_too(
    flow: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[int] = []

    def sync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(filelog, "_sync_fd", sync)
    code, err = run(flow, tmp_path / "log", capsys)
    assert code == 5 and "disk full: cannot write" in err and "Traceback" not in err
    monkeypatch.undo()
    assert run(flow, tmp_path / "log", capsys)[0] == 0
    assert own_files(tmp_path / "log") == own_files(reference)


# ------------------------------------------------------------------------ meta.json and snapshots torn


def test_meta_json_torn_at_every_byte_offset_is_refused_with_the_repair(
    reference: Path, flow: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hole: an empty meta.json crashed run, replay and audit with a traceback; its format was
    never checked. A torn one is refused by all three, one line giving the repair command."""
    log = tmp_path / "log"
    shutil.copytree(reference, log)
    whole = (log / META_FILE).read_bytes()
    cuts = [*range(len(whole) - 1), len(whole) + 1]  # +1: zero-filled past the end, as a power loss leaves
    for cut in cuts:
        data = whole[:cut] if cut <= len(whole) else whole + b"\0"
        (log / META_FILE).write_bytes(data)
        for argv in (["replay", str(log)], ["audit", str(log), "--no-progress"], ["run", str(flow), "--log", str(log)]):
            code = main(argv)
            err = capsys.readouterr().err
            assert code == 2, (cut, argv, err)
            (line,) = errors(err)
            assert f"{log / META_FILE}: " in line and "Traceback" not in err
            assert line.endswith(f"repair: marginbook recover {log} --rewrite-meta"), line
    (log / META_FILE).write_bytes(whole[:-1])  # without its newline it is still whole
    assert main(["audit", str(log), "--no-progress"]) == 0


def test_meta_json_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """temp file + fsync + rename + directory fsync; a write that fails leaves no file at all."""
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    with EmbeddedEngine(tmp_path / "a"):
        pass
    assert str(tmp_path / "a" / f".{META_FILE}.tmp") in synced and str(tmp_path / "a") in synced
    assert synced.index(str(tmp_path / "a" / f".{META_FILE}.tmp")) < synced.index(str(tmp_path / "a"))

    def broken(fd: int, data: bytes) -> None:
        os.write(fd, data[:5])
        raise OSError(errno.EIO, "injected")

    monkeypatch.setattr(atomic, "_write_all", broken)
    with pytest.raises(OSError, match="injected"):
        EmbeddedEngine(tmp_path / "b")
    assert not (tmp_path / "b" / META_FILE).exists() and leftovers(tmp_path / "b") == []


def test_a_snapshot_torn_at_every_byte_offset_is_never_restored(reference: Path) -> None:
    """Every prefix of a snapshot file, a zero-filled one and one with a flipped byte are refused
    (``SnapshotDamaged``), never restored to a wrong state."""
    path = snapshot_path(reference, 200)
    whole = path.read_bytes()
    expected = snapshot.digest(read_snapshot(path))
    for cut in range(len(whole)):
        with pytest.raises(SnapshotDamaged):
            read_snapshot(path, data=whole[:cut])
    for damaged in (b"\0" * len(whole), whole[:100] + bytes([whole[100] ^ 1]) + whole[101:]):
        with pytest.raises(SnapshotDamaged):
            read_snapshot(path, data=damaged)
    assert snapshot.digest(read_snapshot(path, data=whole)) == expected


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.3, 0.999])
def test_recovery_over_a_torn_snapshot_rebuilds_it(reference: Path, tmp_path: Path, fraction: float) -> None:
    log = tmp_path / "log"
    shutil.copytree(reference, log)
    path = snapshot_path(log, 600)
    os.truncate(log / EVENTS_FILE, _record_end(log / EVENTS_FILE, 610))
    os.truncate(path, int(path.stat().st_size * fraction))
    with EmbeddedEngine(log, snapshot_every=EVERY, fsync=FsyncPolicy.NEVER) as engine:
        assert engine.recovered_from == 400 and engine.recovered == TOTAL - 610
    assert own_files(log) == own_files(reference)


def test_every_cli_on_a_foreign_commands_record_prints_one_line(
    reference: Path, flow: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hole: a valid non-command record in commands.log (the files swapped) gave a traceback."""
    log = tmp_path / "log"
    shutil.copytree(reference, log)
    os.replace(log / COMMANDS_FILE, log / "x")
    os.replace(log / EVENTS_FILE, log / COMMANDS_FILE)
    os.replace(log / "x", log / EVENTS_FILE)
    for argv, want in (
        (["run", str(flow), "--log", str(log)], 2),
        (["recover", str(log)], 2),
        (["replay", str(log)], 1),
        (["audit", str(log), "--no-progress"], 1),
        (["statement", str(log), "--acct", "a1"], 1),
        (["conservation", str(log)], 1),
    ):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == want, (argv, err)
        assert "Traceback" not in err
        if want == 2:
            (line,) = errors(err)
            assert "commands.log" in line and "swapped" in line
    with pytest.raises(Exception, match="not a command but an outcome"):
        EmbeddedEngine(log)
