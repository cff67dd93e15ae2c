"""``marginbook audit``: a log that replays exactly passes; one tampered, dropped, reordered or
damaged record is caught and pinpointed (seq, byte offset, the first differing event), the audit
reads past the damage without modifying the log, and the digest chain lets two parties compare a
history by a few lines."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from test_crash_embedded import write_flow

from cli.main import main
from engine.io.embedded import COMMANDS_FILE, EVENTS_FILE, snapshot_paths
from engine.io.filelog import HEADER_SIZE, FileLog
from replay.audit import describe_difference
from replay.chain import GENESIS, chain_of
from replay.directory import audit_dir
from replay.export import RecordWriter
from replay.tolerant import Damage, Record, read_log
from replay.verify import replay_dir

TOTAL = 1_500


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("audit")
    flow = base / "flow.jsonl"
    write_flow(flow, TOTAL, seed=3)
    log = base / "log"
    assert main(["run", str(flow), "--log", str(log), "--snapshot-every", "400"]) == 0
    return log


@pytest.fixture
def logged(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the journaled log, free to damage."""
    copy = tmp_path / "log"
    (copy / "snapshots").mkdir(parents=True)
    for path in pristine.rglob("*"):
        if path.is_file():
            (copy / path.relative_to(pristine)).write_bytes(path.read_bytes())
    return copy


def records(path: Path) -> list[Record]:
    found = [item for item in read_log(path) if isinstance(item, Record)]
    return found


def rewrite(path: Path, entries: list[tuple[int, bytes]]) -> None:
    """Replace the log at ``path`` by ``(seq, payload)`` records, all with valid checksums."""
    os.remove(path)
    writer = RecordWriter(path)
    for seq, payload in entries:
        writer.write(seq, payload)
    writer.close()


def outcome(log: Path, seq: int) -> dict[str, object]:
    value: dict[str, object] = json.loads(records(log / EVENTS_FILE)[seq - 1].payload)
    return value


def first_with(log: Path, start: int, predicate: object) -> int:
    """First seq >= start whose outcome satisfies ``predicate(outcome)``."""
    assert callable(predicate)
    for record in records(log / EVENTS_FILE)[start - 1 :]:
        if predicate(json.loads(record.payload)):
            return record.seq
    raise AssertionError("no such outcome")


def audit(log: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str, str]:
    code = main(["audit", str(log), "--no-progress", *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_faithful_log_passes_with_a_summary(logged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p.name: p.read_bytes() for p in logged.iterdir() if p.is_file()}
    code, out, err = audit(logged, capsys)
    assert code == 0, err
    assert "replayed 1,500 command(s), seq 1..1500: 1,500 identical" in out
    assert "snapshots: 400 ok, 800 ok, 1200 ok" in out
    assert f"digest sha256:{replay_dir(logged).digest}" in out
    assert "OK: every recorded outcome is reproduced exactly" in out
    assert err == ""  # no progress bar when stderr is not a terminal
    assert {p.name: p.read_bytes() for p in logged.iterdir() if p.is_file()} == before


def _traded_at_index_one_or_more(o: dict[str, object]) -> bool:
    events = o["events"]
    assert isinstance(events, list)
    return any(e["type"] == "traded" for e in events[1:])


def test_a_tampered_event_is_pinpointed_to_its_seq_event_and_field(
    logged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seq = first_with(logged, 700, _traded_at_index_one_or_more)
    original = outcome(logged, seq)
    events = original["events"]
    assert isinstance(events, list)
    index = next(i for i, e in enumerate(events) if e["type"] == "traded")
    true_fee = events[index]["takerFee"]
    events[index]["takerFee"] = "0.00000001"
    tampered = json.dumps(original, separators=(",", ":")).encode()
    path = logged / EVENTS_FILE
    rewrite(path, [(r.seq, tampered if r.seq == seq else r.payload) for r in records(path)])

    report = audit_dir(logged)
    assert not report.ok
    assert report.divergences == 1 and report.matched == TOTAL - 1
    d = report.first_divergence
    assert d is not None and d.seq == seq and d.diff.index == index
    assert d.diff.fields == [f'takerFee: expected "0.00000001", actual "{true_fee}"']

    code, out, err = audit(logged, capsys)
    assert code == 1
    offset = records(path)[seq - 1].offset
    assert f"FIRST PROBLEM at seq {seq}: seq {seq}: recorded outcome differs" in err
    assert f"FIRST DIVERGENCE at seq {seq} (command at commands.log byte offset" in err
    assert f"recorded at events.log byte offset {offset})" in err
    assert f"first differing event: events[{index}]" in err
    assert '"takerFee":"0.00000001"' in err and f'"takerFee":"{true_fee}"' in err
    assert "FAILED: 1 divergence(s)" in out


def test_a_dropped_outcome_record_is_a_gap_at_its_seq_and_offset(
    logged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = logged / EVENTS_FILE
    kept = records(path)
    seq = 777
    offset = kept[seq - 1].offset
    data = path.read_bytes()
    end = kept[seq].offset  # the next record starts where the dropped one did
    path.write_bytes(data[:offset] + data[end:])

    report = audit_dir(logged)
    assert report.matched == TOTAL - 1  # every other seq still verified
    first = report.first_problem
    assert first is not None and first.seq == seq and first.kind == "gap"
    code, _, err = audit(logged, capsys)
    assert code == 1
    gap = f"events.log byte offset {offset}: sequence gap: expected seq {seq}, found {seq + 1}"
    assert f"FIRST PROBLEM at seq {seq}: {gap}" in err
    assert f"seq {seq} [missing_outcome] seq {seq}: no readable recorded outcome" in err


def test_an_event_dropped_inside_an_outcome_is_pinpointed(logged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seq = first_with(logged, 600, lambda o: len(o["events"]) >= 3)
    original = outcome(logged, seq)
    events = original["events"]
    assert isinstance(events, list)
    dropped = events.pop(1)
    path = logged / EVENTS_FILE
    payload = json.dumps(original, separators=(",", ":")).encode()
    rewrite(path, [(r.seq, payload if r.seq == seq else r.payload) for r in records(path)])
    code, _, err = audit(logged, capsys)
    assert code == 1
    assert f"FIRST DIVERGENCE at seq {seq}" in err
    assert "first differing event: events[1]" in err
    assert f"actual:   {json.dumps(dropped, separators=(',', ':'))}" in err


def test_two_reordered_records_are_caught_at_the_first(logged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Records N and N+1 swapped in the file (each keeps its own seq and checksum)."""
    path = logged / EVENTS_FILE
    kept = records(path)
    n = 900
    a, b = kept[n - 1], kept[n]
    data = path.read_bytes()
    end = b.offset + HEADER_SIZE + len(b.payload)
    path.write_bytes(data[: a.offset] + data[b.offset : end] + data[a.offset : b.offset] + data[end:])
    moved_to = a.offset + (end - b.offset)  # where record N now lies

    code, _, err = audit(logged, capsys)
    assert code == 1
    assert (
        f"FIRST PROBLEM at seq {n}: events.log byte offset {a.offset}: sequence gap: expected seq {n}, found {n + 1}"
        in err
    )
    assert f"events.log byte offset {moved_to}: record of seq {n} out of order" in err


def test_two_outcomes_swapped_under_renumbered_records_diverge_at_the_first(
    logged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The payloads of N and N+1 exchanged, records renumbered: the file is well formed."""
    path = logged / EVENTS_FILE
    kept = records(path)
    n = 1_000
    payloads = [r.payload for r in kept]
    payloads[n - 1], payloads[n] = payloads[n], payloads[n - 1]
    rewrite(path, list(enumerate(payloads, start=1)))
    report = audit_dir(logged)
    assert report.divergences == 2
    assert report.first_divergence is not None and report.first_divergence.seq == n
    code, _, err = audit(logged, capsys)
    assert code == 1
    assert f"FIRST DIVERGENCE at seq {n}" in err
    assert f"seq: expected {n + 1}, actual {n}" in err


def test_two_events_reordered_inside_an_outcome_are_pinpointed(
    logged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seq = first_with(logged, 300, lambda o: len(o["events"]) >= 2 and o["events"][0] != o["events"][1])
    original = outcome(logged, seq)
    events = original["events"]
    assert isinstance(events, list)
    events[0], events[1] = events[1], events[0]
    path = logged / EVENTS_FILE
    payload = json.dumps(original, separators=(",", ":")).encode()
    rewrite(path, [(r.seq, payload if r.seq == seq else r.payload) for r in records(path)])
    code, _, err = audit(logged, capsys)
    assert code == 1
    assert f"FIRST DIVERGENCE at seq {seq}" in err
    assert "first differing event: events[0]" in err


def test_a_flipped_byte_is_a_checksum_failure_read_past_without_touching_the_file(
    logged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = logged / EVENTS_FILE
    seq = 555
    record = records(path)[seq - 1]
    data = bytearray(path.read_bytes())
    data[record.offset + HEADER_SIZE + len(record.payload) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    replayed = replay_dir(logged)  # the replay reads like the audit (it used to raise here)
    assert not replayed.ok and replayed.matched == TOTAL - 1
    report = audit_dir(logged)
    assert report.matched == TOTAL - 1 and report.commands == TOTAL
    assert any(f"byte offset {record.offset}: corrupt record (expected seq {seq})" in e for e in report.scan_errors)
    code, _, err = audit(logged, capsys)
    assert code == 1
    assert (
        f"FIRST PROBLEM at seq {seq}: events.log byte offset {record.offset}: checksum mismatch "
        f"(record claims seq {seq})" in err
    )
    assert f"valid record (seq {seq + 1})" in err
    assert "log integrity (engine.io.filelog.scan):" in err
    assert path.read_bytes() == bytes(data)


def test_a_damaged_command_is_pinpointed_and_its_outcome_folded_to_go_on(
    logged: Path, pristine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = logged / COMMANDS_FILE
    seq = 321
    record = records(path)[seq - 1]
    data = bytearray(path.read_bytes())
    data[record.offset + HEADER_SIZE + 3] ^= 0x40
    path.write_bytes(bytes(data))
    report = audit_dir(logged)
    assert report.commands == TOTAL - 1 and report.matched == TOTAL - 1
    assert report.digest == audit_dir(pristine).digest  # folding the outcome gave the engine's state
    kinds = {p.kind for p in report.problems if p.seq == seq}
    assert kinds == {"damage", "missing_command"}
    code, _, err = audit(logged, capsys)
    assert code == 1
    assert f"FIRST PROBLEM at seq {seq}: commands.log byte offset {record.offset}: checksum mismatch" in err
    assert f"seq {seq}: its command is missing or unreadable; its recorded outcome was folded unverified" in err


def test_when_both_records_of_a_seq_are_lost_the_replay_stops_there(
    logged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seq = 1_200
    for name in (COMMANDS_FILE, EVENTS_FILE):
        path = logged / name
        record = records(path)[seq - 1]
        data = bytearray(path.read_bytes())
        data[record.offset + HEADER_SIZE] ^= 0xFF
        path.write_bytes(bytes(data))
    report = audit_dir(logged)
    assert report.last_seq == seq - 1 and report.matched == seq - 1
    code, _, err = audit(logged, capsys)
    assert code == 1
    assert f"STOPPED: seq {seq}: its command is missing or unreadable and no outcome is recorded for it" in err


def test_a_torn_tail_is_reported_and_left_in_place(logged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = logged / EVENTS_FILE
    last = records(path)[-1]
    os.truncate(path, last.offset + HEADER_SIZE + 5)
    size = path.stat().st_size
    code, _, err = audit(logged, capsys)
    assert code == 1
    assert (
        f"FIRST PROBLEM at seq {TOTAL}: events.log byte offset {last.offset}: torn tail of {HEADER_SIZE + 5} byte(s)"
        in err
    )
    assert f"seq {TOTAL} [missing_outcome]" in err
    assert path.stat().st_size == size


def test_an_extra_outcome_and_a_wrong_snapshot_are_reported(logged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FileLog.open(logged / EVENTS_FILE) as events:
        events.append(b'{"seq":1501,"ts":0,"id":null,"events":[]}')
    (seq, path), (_, other) = snapshot_paths(logged)[1], snapshot_paths(logged)[0]
    path.write_bytes(other.read_bytes())
    report = audit_dir(logged)
    assert (seq, False) in report.snapshots_checked
    assert [p.seq for p in report.problems] == [seq, TOTAL + 1]
    code, _, err = audit(logged, capsys)
    assert code == 1
    assert f"snapshot {seq} does not restore the replayed state" in err
    assert "outcome of seq 1501 has no command" in err


def test_audit_from_a_snapshot_matches_the_full_audit(logged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = audit_dir(logged)
    part = audit_dir(logged, from_snapshot=800)
    assert part.ok and part.start_seq == 801 and part.commands == TOTAL - 800
    assert (part.digest, part.chain_seq, part.chain_hex) == (full.digest, full.chain_seq, full.chain_hex)
    code, out, _ = audit(logged, capsys, "--from-snapshot", "800")
    assert code == 0 and "replayed 700 command(s), seq 801..1500: 700 identical" in out
    assert main(["audit", str(logged), "--from-snapshot", "801"]) == 2


def test_the_chain_lines_are_the_running_sha256_of_the_outcomes(
    logged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes = [r.payload for r in records(logged / EVENTS_FILE)]
    expected, digest = [], GENESIS
    for seq, data in enumerate(outcomes, start=1):
        digest = hashlib.sha256(digest + data).digest()
        if seq % 500 == 0:
            expected.append(f"seq {seq} chain {digest.hex()}")
    assert chain_of(outcomes, 500)[1] == expected
    code, out, _ = audit(logged, capsys, "--chain-every", "500")
    assert code == 0
    assert re.findall(r"^seq \d+ chain [0-9a-f]{64}$", out, re.M) == expected

    # Another party whose history differs at seq 1,234 agrees on the lines before it only.
    path = logged / EVENTS_FILE
    kept = records(path)
    tampered = kept[1_233].payload.replace(b'"ts":', b'"ts":1', 1)
    rewrite(path, [(r.seq, tampered if r.seq == 1_234 else r.payload) for r in kept])
    code, out, _ = audit(logged, capsys, "--chain-every", "500")
    theirs = re.findall(r"^seq \d+ chain [0-9a-f]{64}$", out, re.M)
    assert code == 1
    assert theirs[:2] == expected[:2] and theirs[2] != expected[2]


def test_describe_difference_handles_non_outcomes_and_extra_events() -> None:
    actual = b'{"seq":3,"ts":1,"id":null,"events":[{"type":"a","x":"1"}]}'
    garbage = describe_difference(b"not json", actual)
    assert garbage.index is None and "not an outcome" in garbage.note
    extra = describe_difference(b'{"seq":3,"ts":1,"id":null,"events":[]}', actual)
    assert extra.index == 0 and extra.expected_event is None and "replay emits more" in extra.note
    header = describe_difference(b'{"seq":3,"ts":2,"id":null,"events":[{"type":"a","x":"1"}]}', actual)
    assert header.index is None and header.fields == ["ts: expected 2, actual 1"]


def test_the_tolerant_reader_resumes_after_damage_and_reports_it(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    with FileLog.open(path) as log:
        for i in range(5):
            log.append(b"payload %d" % i)
    data = bytearray(path.read_bytes())
    size = HEADER_SIZE + len(b"payload 0")
    data[size * 2 + 10] ^= 0x10  # inside record 3
    path.write_bytes(bytes(data) + b"\x89MB")  # and a torn tail
    items = list(read_log(path))
    assert [i.seq if isinstance(i, Record) else "X" for i in items] == [1, 2, "X", 4, 5, "X"]
    middle, tail = items[2], items[5]
    assert isinstance(middle, Damage) and isinstance(tail, Damage)
    assert (middle.offset, middle.resume_offset, middle.resume_seq) == (size * 2, size * 3, 4)
    assert tail.torn_tail and tail.offset == size * 5 and tail.length == 3


def test_progress_bar_draws_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.audit import _Bar

    with _Bar("audit", "cmd", True) as bar:
        bar.total(0, 100)
        bar.update(100)
    err = capsys.readouterr().err
    assert "audit" in err and "100/100" in err and "cmd/s" in err
    with _Bar("audit", "cmd", False) as bar:
        bar.update(5)
    assert capsys.readouterr().err == ""


def test_audit_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit"]) == 2
    assert main(["audit", str(tmp_path / "nope")]) == 2
    assert main(["audit", str(tmp_path), "--from-offset", "3"]) == 2
    capsys.readouterr()


def test_an_engine_that_halts_stops_the_audit_at_that_seq(
    logged: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.core.context import InvariantBroken
    from engine.core.step import Engine

    step = Engine.step

    def halting(self: Engine, command: object) -> object:
        if self.state.last_seq == 99:
            raise InvariantBroken("seq 100: simulated broken invariant")
        return step(self, command)  # type: ignore[arg-type]

    monkeypatch.setattr(Engine, "step", halting)
    code, _, err = audit(logged, capsys)
    assert code == 1
    assert "FIRST PROBLEM at seq 100: seq 100: the engine halts on this command: seq 100: simulated" in err
    assert "STOPPED: the engine halted at seq 100 (commands.log byte offset" in err
