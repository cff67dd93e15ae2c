"""Replay a log directory through the same engine and prove it reproduces what was recorded.

For every command in ``commands.log`` the engine is stepped afresh and the outcome's bytes are
compared with the record of the same sequence number in ``events.log``; the first difference is
reported (sequence number, command, expected and actual outcome). Every snapshot in the
directory is checked too: restoring it must give the digest the replay had at its sequence
number. The final state digest (SHA-256 of the deterministic state encoding) is reported, so two
parties can compare a whole history by one line.

``replay`` is the audit (:func:`replay.directory.audit_dir`) with a shorter report: the two
read the directory the same way and judge every kind of damage alike (``docs/audit.md`` has the
table), so ``marginbook replay`` and ``marginbook audit`` agree on every directory.

``full_sweep=True`` (``marginbook replay --full-sweep``) replays with the slow reference engine
(``Engine(full_sweep=True)``, ``engine.core.sweep``): every exposed account is evaluated after
every command, no risk watch or cached evaluation is used. A log that replays identically both
ways shows that the incremental engine's shortcuts changed no event of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.io.logdir import read_meta
from replay.audit import AuditReport
from replay.directory import audit_dir


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
    #: The full audit the replay is (problems, notes, integrity errors).
    audit: AuditReport = field(default_factory=lambda: AuditReport(source=""))

    @property
    def ok(self) -> bool:
        return self.audit.ok


def replay_dir(
    directory: str | os.PathLike[str],
    from_snapshot: int | None = None,
    progress: Callable[[int], None] | None = None,
    full_sweep: bool = False,
) -> ReplayReport:
    """Replay ``directory`` (see module doc). ``from_snapshot``: start from the snapshot taken
    at that sequence number instead of from the empty state; ``full_sweep``: with the
    full-sweep reference engine."""
    audit = audit_dir(Path(directory), from_snapshot, progress=progress, full_sweep=full_sweep)
    d = audit.first_divergence
    meta = read_meta(directory)
    return ReplayReport(
        commands=audit.commands,
        matched=audit.matched,
        start_seq=audit.start_seq,
        digest=audit.digest,
        mismatch=None if d is None else Mismatch(d.seq, d.command, d.expected, d.actual),
        missing_outcomes=sum(1 for p in audit.problems if p.kind == "missing_outcome"),
        snapshots_checked=audit.snapshots_checked,
        rules_version=None if meta is None else meta.rules_version,
        audit=audit,
    )
