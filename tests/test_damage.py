"""Every kind of damage to a log directory, driven through the real CLIs on the same directory.

One row per kind of damage (the table in ``docs/audit.md``, which :func:`test_the_doc_table_is_this_table`
keeps in step with :data:`ROWS`): ``marginbook replay`` and ``marginbook audit`` must exit alike
and name the same first problem; ``marginbook run`` must continue (recovering what commands.log
determines) or refuse with one line giving the repair command; running that command and the run
again must give back the undamaged directory byte for byte. Never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_crash_embedded import write_flow

from cli.main import main
from engine.core.step import Engine
from engine.io.embedded import COMMANDS_FILE, EVENTS_FILE, META_FILE
from engine.io.filelog import HEADER_SIZE
from engine.io.lock import WriterLock
from engine.io.logdir import snapshot_path, write_snapshot
from events.codec import decode_command_json
from replay.export import RecordWriter
from replay.tolerant import Record, read_log

ROOT = Path(__file__).resolve().parent.parent
TOTAL = 650  # snapshots at 200, 400, 600
EVERY = 200


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("damage")
    write_flow(base / "flow.jsonl", TOTAL, seed=3)
    log = base / "log"
    assert main(["run", str(base / "flow.jsonl"), "--log", str(log), "--snapshot-every", str(EVERY)]) == 0
    return log


@pytest.fixture(scope="module")
def other_state_at_600(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The state after 600 commands of another flow: a valid snapshot of the wrong log."""
    base = tmp_path_factory.mktemp("other")
    write_flow(base / "other.jsonl", 600, seed=4)
    engine = Engine()
    for line in (base / "other.jsonl").read_bytes().splitlines():
        engine.step(decode_command_json(line))
    return engine.state


def records(path: Path) -> list[Record]:
    return [item for item in read_log(path) if isinstance(item, Record)]


def rewrite(path: Path, entries: list[tuple[int, bytes]]) -> None:
    os.remove(path)
    writer = RecordWriter(path)
    for seq, payload in entries:
        writer.write(seq, payload)
    writer.close()


def record_end(path: Path, seq: int) -> int:
    record = records(path)[seq - 1]
    return record.offset + HEADER_SIZE + len(record.payload)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- the damages


def torn_tail(name: str) -> Callable[[Path], None]:
    def damage(log: Path) -> None:
        path = log / name
        os.truncate(path, path.stat().st_size - 7)

    return damage


def zero_tail(name: str) -> Callable[[Path], None]:
    def damage(log: Path) -> None:
        with open(log / name, "ab") as handle:
            handle.write(b"\0" * 4096)

    return damage


def events_truncated_behind_snapshot(log: Path) -> None:
    os.truncate(log / EVENTS_FILE, record_end(log / EVENTS_FILE, 500) - 11)  # newest snapshot: 600


def events_deleted(log: Path) -> None:
    os.remove(log / EVENTS_FILE)


def commands_deleted(log: Path) -> None:
    os.remove(log / COMMANDS_FILE)


def commands_foreign_file(log: Path) -> None:
    (log / COMMANDS_FILE).write_bytes(b'{"type":"deposit","acct":"a1","ccy":"USDT","amt":"1"}\n' * 50)


def orphan_outcome(log: Path) -> None:
    path = log / EVENTS_FILE
    rewrite(path, [(r.seq, r.payload) for r in records(path)] + [(TOTAL + 1, records(path)[-1].payload)])


def duplicated_last(name: str) -> Callable[[Path], None]:
    def damage(log: Path) -> None:
        path = log / name
        found = records(path)
        rewrite(path, [(r.seq, r.payload) for r in found] + [(found[-1].seq, found[-1].payload)])

    return damage


def flipped_byte(name: str, seq: int) -> Callable[[Path], None]:
    def damage(log: Path) -> None:
        record = records(log / name)[seq - 1]
        flip(log / name, record.offset + HEADER_SIZE + len(record.payload) // 2)

    return damage


def tampered_outcome(seq: int) -> Callable[[Path], None]:
    def damage(log: Path) -> None:
        path = log / EVENTS_FILE
        rewrite(
            path,
            [(r.seq, r.payload.replace(b'"ts":', b'"ts":9', 1) if r.seq == seq else r.payload) for r in records(path)],
        )

    return damage


def logs_swapped(log: Path) -> None:
    os.replace(log / COMMANDS_FILE, log / "x")
    os.replace(log / EVENTS_FILE, log / COMMANDS_FILE)
    os.replace(log / "x", log / EVENTS_FILE)


def foreign_command_record(seq: int) -> Callable[[Path], None]:
    def damage(log: Path) -> None:
        path = log / COMMANDS_FILE
        found = records(path)
        rewrite(path, [(r.seq, b'{"hello":"world"}' if r.seq == seq else r.payload) for r in found])

    return damage


def meta(text: str) -> Callable[[Path], None]:
    def damage(log: Path) -> None:
        (log / META_FILE).write_text(text)

    return damage


def snapshot_torn(log: Path) -> None:
    path = snapshot_path(log, 600)
    os.truncate(path, path.stat().st_size // 2)


def snapshot_flipped(log: Path) -> None:
    path = snapshot_path(log, 400)
    flip(path, path.stat().st_size - 100)


def snapshot_future(log: Path) -> None:
    shutil.copy(snapshot_path(log, 600), snapshot_path(log, 1000))


def snapshot_temp_leftover(log: Path) -> None:
    (log / "snapshots" / ".000000000800.msgpack.tmp").write_bytes(b"MBSNAP1\nhalf a snap")


@dataclass(frozen=True)
class Row:
    damage: Callable[[Path], None] | None
    replay_audit: int
    run: int
    run_says: str
    #: After the run (and the repair it names), the directory equals the undamaged one…
    healed: bool = True
    #: … and ``audit`` exits with this.
    after: int = 0


ROWS: dict[str, Row] = {
    "clean": Row(None, 0, 0, "0 command(s) applied"),
    "commands torn tail": Row(torn_tail(COMMANDS_FILE), 1, 0, "torn tail"),
    "events torn tail": Row(torn_tail(EVENTS_FILE), 1, 0, "re-derived 1 outcome(s)"),
    "commands zero-filled tail": Row(zero_tail(COMMANDS_FILE), 1, 0, "torn tail"),
    "events zero-filled tail": Row(zero_tail(EVENTS_FILE), 1, 0, "torn tail"),
    "events truncated behind the newest snapshot": Row(
        events_truncated_behind_snapshot,
        1,
        0,
        "re-derived 151 outcome(s) missing from events.log (stepping from snapshot 400)",
    ),
    "events.log deleted": Row(
        events_deleted, 1, 0, "re-derived 650 outcome(s) missing from events.log (stepping from the start)"
    ),
    "commands.log deleted": Row(commands_deleted, 2, 2, "--cut-after 0"),
    "commands.log a foreign file": Row(commands_foreign_file, 1, 2, "not a marginbook log"),
    "orphan outcome": Row(orphan_outcome, 1, 0, "outcomes whose commands were lost"),
    "events duplicated last record": Row(duplicated_last(EVENTS_FILE), 1, 2, "--rebuild-events"),
    "commands duplicated last record": Row(duplicated_last(COMMANDS_FILE), 1, 2, f"--cut-after {TOTAL}"),
    "events flipped byte": Row(flipped_byte(EVENTS_FILE, 300), 1, 2, "--rebuild-events"),
    "commands flipped byte": Row(flipped_byte(COMMANDS_FILE, 300), 1, 2, "--cut-after 299"),
    "outcome tampered after the newest snapshot": Row(tampered_outcome(620), 1, 2, "--rebuild-events"),
    "outcome tampered before the newest snapshot": Row(tampered_outcome(300), 1, 0, "applied", False, 1),
    "logs swapped": Row(logs_swapped, 1, 2, "swapped"),
    "foreign record in commands after the newest snapshot": Row(foreign_command_record(620), 1, 2, "--cut-after 619"),
    "foreign record in commands before the newest snapshot": Row(foreign_command_record(300), 1, 2, "--cut-after 299"),
    "meta.json empty": Row(meta(""), 2, 2, "--rewrite-meta"),
    "meta.json garbage": Row(meta('{"format": 1, "rules'), 2, 2, "--rewrite-meta"),
    "meta.json rulesVersion not an integer": Row(meta('{"format": 1, "rulesVersion": "1"}'), 2, 2, "--rewrite-meta"),
    "meta.json unknown format": Row(meta('{"format": 2, "rulesVersion": 1}'), 2, 2, "format 2 is not known", False, 2),
    "snapshot torn": Row(snapshot_torn, 1, 0, "rewritten"),
    "snapshot flipped byte": Row(snapshot_flipped, 1, 0, "checksum mismatch", healed=False),
    "snapshot from the future": Row(snapshot_future, 1, 0, "a snapshot after the last command"),
    "snapshot of another log": Row(None, 1, 0, "does not reproduce the recorded outcome"),
    "snapshot temp file left over": Row(snapshot_temp_leftover, 0, 0, "removed a partial file"),
    "live writer's partial tail": Row(None, 0, 4, "locked by another writer", False, 1),
}


@contextlib.contextmanager
def damaged(name: str, log: Path, other_state: Any) -> Iterator[None]:
    row = ROWS[name]
    if row.damage is not None:
        row.damage(log)
    if name == "snapshot of another log":
        write_snapshot(log, other_state)
    if name != "live writer's partial tail":
        yield
        return
    lock = WriterLock.acquire(log)  # a writer at work: its last records are still being written
    try:
        os.truncate(log / COMMANDS_FILE, log.joinpath(COMMANDS_FILE).stat().st_size - 5)
        os.truncate(log / EVENTS_FILE, record_end(log / EVENTS_FILE, TOTAL - 20) + 9)
        yield
    finally:
        lock.release()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def first_problem(err: str) -> str:
    for line in err.splitlines():
        if line.startswith("FIRST PROBLEM") or line.startswith("marginbook: "):
            return line
    return ""


def files(log: Path, everything: bool = True) -> dict[str, bytes]:
    """The directory's files (``everything=False``: only the log's own, not what a repair set aside)."""
    found = {p.relative_to(log).as_posix(): p.read_bytes() for p in log.rglob("*") if p.is_file()}
    found.pop("writer.lock", None)
    if not everything:
        own = (COMMANDS_FILE, EVENTS_FILE, META_FILE)
        found = {k: v for k, v in found.items() if k in own or k.endswith(".msgpack")}
    return found


def repair(err: str) -> list[str]:
    match = re.search(r"repair: (.*?)(?: \(|$)", err, re.MULTILINE)
    assert match, f"no repair command in: {err}"
    return [match.group(1)]


@pytest.mark.parametrize("name", list(ROWS))
def test_damage(
    name: str, pristine: Path, other_state_at_600: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = ROWS[name]
    log = tmp_path / "log"
    shutil.copytree(pristine, log)
    flow = pristine.parent / "flow.jsonl"
    with damaged(name, log, other_state_at_600):
        before = files(log)
        replay_code, _, replay_err = cli(capsys, "replay", str(log))
        audit_code, _, audit_err = cli(capsys, "audit", str(log), "--no-progress")
        assert files(log) == before, "a reader modified the directory"
        assert (replay_code, audit_code) == (row.replay_audit, row.replay_audit), (replay_err, audit_err)
        assert first_problem(replay_err) == first_problem(audit_err), (replay_err, audit_err)
        if row.replay_audit == 2:
            assert len(audit_err.strip().splitlines()) == 1
        run_code, _, run_err = cli(capsys, "run", str(flow), "--log", str(log), "--snapshot-every", str(EVERY))
    for err in (replay_err, audit_err, run_err):
        assert "Traceback" not in err
    assert run_code == row.run, run_err
    assert row.run_says in run_err
    if run_code == 2:
        lines = [line for line in run_err.splitlines() if not line.startswith("marginbook: warning:")]
        assert len(lines) == 1, run_err
        if "repair:" in run_err:
            (command,) = repair(run_err)
            if command.startswith("marginbook "):
                code, _, err = cli(capsys, *shlex.split(command)[1:])
                assert code == 0, err
            else:
                subprocess.run(command, shell=True, check=True, cwd=ROOT)
            run_code, _, run_err = cli(capsys, "run", str(flow), "--log", str(log), "--snapshot-every", str(EVERY))
            assert run_code == 0, run_err
    if row.healed:
        assert files(log, everything=False) == files(pristine)
    assert cli(capsys, "audit", str(log), "--no-progress")[0] == row.after


def test_the_doc_table_is_this_table() -> None:
    """docs/audit.md lists every row with the same exit codes."""
    text = (ROOT / "docs" / "audit.md").read_text()
    documented: dict[str, tuple[int, int]] = {}
    for match in re.finditer(r"^\| ([^|]+?) \| (\d) [^|]*\| (\d) [^|]*\|", text, re.MULTILINE):
        documented[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    assert documented == {name: (row.replay_audit, row.run) for name, row in ROWS.items()}


@pytest.mark.parametrize("name", list(ROWS))
def test_no_cli_prints_a_traceback_on_any_damage(
    name: str, pristine: Path, other_state_at_600: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``statement``, ``conservation`` and ``recover`` on every damaged directory: a documented exit
    code (never 70, an internal error) and, when they refuse, one line naming the file."""
    log = tmp_path / "log"
    shutil.copytree(pristine, log)
    with damaged(name, log, other_state_at_600):
        for argv in (
            ["statement", str(log), "--acct", "a1", "--out", str(tmp_path / "a1.csv")],
            ["conservation", str(log), "--json"],
            ["recover", str(log)],
        ):
            code, _, err = cli(capsys, *argv)
            assert "Traceback" not in err
            assert code in (0, 1, 2, 4), (argv, code, err)
            if code in (2, 4):
                lines = [line for line in err.splitlines() if not line.startswith("marginbook: warning:")]
                assert len(lines) == 1 and str(log) in lines[0], (argv, err)
