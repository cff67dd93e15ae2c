"""``marginbook replay``: identical events are confirmed, any difference is pinpointed, and
snapshots restore to the digest of the full replay."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_crash_embedded import write_flow

from cli.main import main
from engine.io.embedded import EVENTS_FILE, snapshot_paths
from engine.io.filelog import HEADER_SIZE, FileLog
from replay.verify import replay_dir


@pytest.fixture
def logged(tmp_path: Path) -> Path:
    flow = tmp_path / "flow.jsonl"
    write_flow(flow, 1_500, seed=3)
    log = tmp_path / "log"
    assert main(["run", str(flow), "--log", str(log), "--snapshot-every", "400"]) == 0
    return log


def test_replay_confirms_every_event_and_snapshot(logged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = replay_dir(logged)
    assert report.ok
    assert report.commands == report.matched == 1_500
    assert [seq for seq, ok in report.snapshots_checked if ok] == [400, 800, 1200]
    assert main(["replay", str(logged)]) == 0
    out = capsys.readouterr().out
    assert f"digest sha256:{report.digest}" in out


def test_replay_from_a_snapshot_reaches_the_same_digest(logged: Path) -> None:
    full = replay_dir(logged)
    for seq, _ in snapshot_paths(logged):
        partial = replay_dir(logged, from_snapshot=seq)
        assert partial.start_seq == seq + 1
        assert partial.ok
        assert partial.digest == full.digest


def _flip_byte_in_outcome(log: Path, seq: int) -> None:
    """Rewrite events.log with one byte of outcome ``seq`` changed (valid CRC, so it is the
    content, not the checksum, that replay must catch)."""
    path = log / EVENTS_FILE
    with FileLog.open(path) as events:
        records = list(events.read())
    os.remove(path)
    with FileLog.open(path) as events:
        for number, payload in records:
            if number == seq:
                payload = payload.replace(b'"ts":', b'"ts":9', 1)
            events.append(payload)


def test_replay_pinpoints_a_tampered_event(logged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _flip_byte_in_outcome(logged, 777)
    report = replay_dir(logged)
    assert not report.ok
    assert report.mismatch is not None
    assert report.mismatch.seq == 777
    assert report.matched == 1_499
    assert main(["replay", str(logged)]) == 1
    assert "DIVERGED at seq 777" in capsys.readouterr().err


def test_replay_detects_a_snapshot_that_does_not_restore_the_state(logged: Path) -> None:
    seq, path = snapshot_paths(logged)[1]
    other_seq, other = snapshot_paths(logged)[0]
    path.write_bytes(other.read_bytes())  # the state at 400 filed as the state at 800
    report = replay_dir(logged)
    assert (seq, False) in report.snapshots_checked
    assert (other_seq, True) not in [(s, ok) for s, ok in report.snapshots_checked if s == seq]
    assert not report.ok


def test_a_torn_last_outcome_is_recovered_on_reopen(logged: Path, tmp_path: Path) -> None:
    path = logged / EVENTS_FILE
    size = path.stat().st_size
    os.truncate(path, size - HEADER_SIZE // 2)
    flow = tmp_path / "flow.jsonl"
    assert main(["run", str(flow), "--log", str(logged)]) == 0
    assert replay_dir(logged).ok


def test_replay_never_modifies_the_log_it_checks(logged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A verifier is read-only: a torn tail is reported, not cut (the writer's recovery cuts it).
    Like ``audit``, it is a problem found (exit 1), no longer a refusal (exit 2)."""
    path = logged / EVENTS_FILE
    os.truncate(path, path.stat().st_size - 3)
    size = path.stat().st_size
    assert main(["replay", str(logged)]) == 1
    assert "torn tail" in capsys.readouterr().err
    assert path.stat().st_size == size


def test_a_log_records_the_rules_version_and_audits_name_a_mismatch(
    logged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.core import RULES_VERSION
    from engine.io.embedded import META_FILE, rules_version_of

    assert rules_version_of(logged) == RULES_VERSION
    (logged / META_FILE).write_text('{"format": 1, "rulesVersion": 0}\n')
    assert main(["replay", str(logged)]) == 0
    assert "rules version 0" in capsys.readouterr().err
    assert main(["audit", str(logged), "--no-progress"]) == 0
    assert "rules version 0" in capsys.readouterr().out
