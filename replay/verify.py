"""Replay a log directory through the same engine and prove it reproduces what was recorded.

For every command in ``commands.log`` the engine is stepped afresh and the outcome's bytes are
compared with the record of the same sequence number in ``events.log``; the first difference is
reported (sequence number, command, expected and actual outcome). Every snapshot in the
directory is checked too: restoring it must give the digest the replay had at its sequence
number. The final state digest (SHA-256 of the deterministic state encoding) is reported, so two
parties can compare a whole history by one line.

``full_sweep=True`` (``marginbook replay --full-sweep``) replays with the slow reference engine
(``Engine(full_sweep=True)``, ``engine.core.sweep``): every exposed account is evaluated after
every command, no risk watch or cached evaluation is used. A log that replays identically both
ways shows that the incremental engine's shortcuts changed no event of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.core import snapshot
from engine.core.step import Engine
from engine.io.embedded import COMMANDS_FILE, EVENTS_FILE, rules_version_of, snapshot_paths
from events.codec import decode_command_json, encode_outcome_json
from replay.tolerant import Damage, read_log


class LogDamaged(ValueError):
    """A record of the log is damaged (``marginbook audit`` pinpoints every such problem)."""


def _records(path: Path, start: int) -> Iterator[tuple[int, bytes]]:
    """``(seq, payload)`` from ``start`` on, read without ever modifying the file (a damaged
    or torn record raises :class:`LogDamaged`; a torn tail is *not* cut)."""
    for item in read_log(path):
        if isinstance(item, Damage):
            raise LogDamaged(item.describe())
        if item.seq >= start:
            yield item.seq, item.payload


@dataclass(frozen=True)
class Mismatch:
    seq: int
    command: bytes
    expected: bytes | None
    actual: bytes


@dataclass
class ReplayReport:
    commands: int = 0
    matched: int = 0
    start_seq: int = 1
    digest: str = ""
    mismatch: Mismatch | None = None
    missing_outcomes: int = 0
    snapshots_checked: list[tuple[int, bool]] = field(default_factory=list)
    #: Engine rules version recorded in the log directory (``None``: not recorded).
    rules_version: int | None = None

    @property
    def ok(self) -> bool:
        return self.mismatch is None and self.missing_outcomes == 0 and all(ok for _, ok in self.snapshots_checked)


def replay_dir(
    directory: str | os.PathLike[str],
    from_snapshot: int | None = None,
    progress: Callable[[int], None] | None = None,
    full_sweep: bool = False,
) -> ReplayReport:
    """Replay ``directory`` (see module doc). ``from_snapshot``: start from the snapshot taken
    at that sequence number instead of from the empty state; ``full_sweep``: with the
    full-sweep reference engine."""
    folder = Path(directory)
    snapshots = dict(snapshot_paths(folder))
    report = ReplayReport()
    if from_snapshot is not None:
        if from_snapshot not in snapshots:
            raise FileNotFoundError(f"no snapshot at seq {from_snapshot} in {folder / 'snapshots'}")
        engine = Engine(snapshot.restore(snapshots[from_snapshot].read_bytes()), full_sweep=full_sweep)
    else:
        engine = Engine(full_sweep=full_sweep)
    report.start_seq = engine.state.last_seq + 1
    recorded = _records(folder / EVENTS_FILE, report.start_seq)
    for seq, payload in _records(folder / COMMANDS_FILE, report.start_seq):
        outcome = engine.step(decode_command_json(payload))
        actual = encode_outcome_json(outcome)
        expected = next(recorded, None)
        report.commands += 1
        if expected is None:
            report.missing_outcomes += 1
        elif expected[1] == actual:
            report.matched += 1
        elif report.mismatch is None:
            report.mismatch = Mismatch(seq, payload, expected[1], actual)
        snap = snapshots.get(seq)
        if snap is not None and seq != from_snapshot:
            restored = snapshot.digest(snapshot.restore(snap.read_bytes()))
            report.snapshots_checked.append((seq, restored == snapshot.digest(engine.state)))
        if progress is not None:
            progress(seq)
    report.digest = snapshot.digest(engine.state)
    report.rules_version = rules_version_of(folder)
    return report
