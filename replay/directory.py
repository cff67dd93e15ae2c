"""``marginbook audit DIR`` (and ``replay DIR``): audit a log directory, read-only.

Joins the commands of ``commands.log`` with the recorded outcomes of ``events.log`` by seq and
hands them to :class:`replay.audit.Auditor`. Both logs are read with the tolerant reader
(:mod:`replay.tolerant`), so every damaged stretch is named and read past, and the directory is
never modified. ``meta.json`` is validated first (``engine.io.logdir.read_meta``: an empty,
garbage or unknown-format one is refused with :class:`~engine.io.logdir.LogDirError`); snapshot
files are verified by their checksum, and one after the last command is a ``snapshot`` problem.

**A live writer.** Readers never take the directory's lock; they probe it
(``engine.io.lock.live_writer``). When a writer is at work, what it is writing at the end of the
logs is not damage: the audit covers the seqs that both logs held, complete, when it started
(each file is read only up to the size it had then), and a torn last record, commands without an
outcome yet and outcomes whose command is not flushed yet are left out, with a note naming the
writer. Damage anywhere else is reported as always.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

from engine.core import RULES_VERSION
from engine.core.state import State
from engine.io.filelog import ScanReport, scan
from engine.io.lock import live_writer
from engine.io.logdir import (
    COMMANDS_FILE,
    EVENTS_FILE,
    LogDirError,
    SnapshotDamaged,
    read_meta,
    read_snapshot,
    snapshot_body,
    snapshot_paths,
)
from replay.audit import Auditor, AuditReport, Progress
from replay.chain import Chain
from replay.tolerant import SeqCursor, first_seq

__all__ = ["EXPORT_META", "audit_dir", "start_state"]

#: Metadata written by ``marginbook export`` next to an exported log.
EXPORT_META: Final = "export.json"


def _scan(path: Path) -> ScanReport | None:
    return scan(path) if path.exists() else None


def _scan_errors(path: Path, found: ScanReport | None, start_seq: int, live: bool) -> list[str]:
    if found is None:
        return []
    errors = found.errors
    if live and found.torn_tail_bytes:
        errors = errors[:-1]  # the record a live writer is writing (the torn tail is always the last error)
    if start_seq > 1 and errors and errors[0] == f"byte offset 0: sequence gap: expected seq 1, found {start_seq}":
        errors = errors[1:]  # a log that starts after a snapshot (``export`` of a topic range)
    return [f"{path.name}: {e}" for e in errors]


def _export_chain(folder: Path, seq: int) -> bytes | None:
    """The chain value at ``seq`` recorded by ``marginbook export`` (for a log starting after it)."""
    meta = folder / EXPORT_META
    if not meta.exists():
        return None
    try:
        data = msgspec.json.decode(meta.read_bytes())
    except msgspec.DecodeError:
        return None
    if isinstance(data, dict) and data.get("chain_seq") == seq and isinstance(data.get("chain"), str):
        try:
            return bytes.fromhex(data["chain"])
        except ValueError:
            return None
    return None


def start_state(folder: Path, from_snapshot: int | None) -> tuple[State | None, int, str]:
    """``(state, start seq, note)``: the snapshot to start from, or the empty state.

    Without ``from_snapshot``, a log whose first command is seq ``S + 1 > 1`` (an exported
    topic range) starts from its snapshot at ``S`` when there is one.
    """
    snapshots = dict(snapshot_paths(folder))
    note = ""
    if from_snapshot is None:
        first = first_seq(folder / COMMANDS_FILE) if (folder / COMMANDS_FILE).exists() else None
        if first is not None and first > 1 and first - 1 in snapshots:
            from_snapshot = first - 1
            note = f"the log starts at seq {first}: starting from its snapshot at seq {first - 1}"
    if from_snapshot is None:
        return None, 1, note
    if from_snapshot not in snapshots:
        raise FileNotFoundError(f"no snapshot at seq {from_snapshot} in {folder / 'snapshots'}")
    try:
        state = read_snapshot(snapshots[from_snapshot], from_snapshot)
    except SnapshotDamaged as err:
        raise LogDirError(f"{err}: cannot start from it") from None
    return state, from_snapshot + 1, note


def _loader(path: Path) -> Callable[[], bytes]:
    return lambda: snapshot_body(path)


def audit_dir(
    directory: str | os.PathLike[str],
    from_snapshot: int | None = None,
    chain_every: int = 0,
    on_chain: Callable[[int, bytes], None] | None = None,
    progress: Progress | None = None,
    on_total: Callable[[int, int], None] | None = None,
    full_sweep: bool = False,
) -> AuditReport:
    """Audit a log directory (``commands.log``, ``events.log``, ``snapshots/``); read-only.

    ``on_chain(seq, digest)`` receives the chain every ``chain_every`` seqs; ``on_total(start
    seq, last seq)`` is called once the logs are scanned, then ``progress(seq)`` as it goes;
    ``full_sweep``: step with the full-sweep reference engine (``engine.core.sweep``)."""
    started = time.perf_counter()
    folder = Path(directory)
    commands_path, events_path = folder / COMMANDS_FILE, folder / EVENTS_FILE
    if not commands_path.exists():
        raise FileNotFoundError(f"{commands_path}: no such file")
    meta = read_meta(folder)
    writer = live_writer(folder)
    live = writer is not None
    listed = snapshot_paths(folder)  # before the scan: a snapshot listed now has its commands flushed
    state, start, note = start_state(folder, from_snapshot)
    report = AuditReport(source=str(folder), start_seq=start)
    if meta is not None and meta.rules_version != RULES_VERSION:
        report.notes.append(
            f"the log was written under engine rules version {meta.rules_version}, this engine applies "
            f"{RULES_VERSION}: a divergence may come from the rules, not tampering"
        )
    if note:
        report.notes.append(note)
    commands_scan, events_scan = _scan(commands_path), _scan(events_path)
    assert commands_scan is not None
    report.scan_errors = _scan_errors(commands_path, commands_scan, start, live) + _scan_errors(
        events_path, events_scan, start, live
    )
    commands_last = commands_scan.last_seq
    events_last = events_scan.last_seq if events_scan is not None else 0
    #: With a live writer: the last seq both logs held when the audit started.
    stable = min(commands_last, events_last) if live else None
    if writer is not None:
        report.notes.append(
            f"a writer is at work on this log ({writer.describe()}): audited up to seq {stable}; what it is still "
            f"writing after that (commands up to seq {commands_last}, outcomes up to seq {events_last}) is not judged"
        )
    if on_total is not None:
        on_total(start, commands_last)
    if events_scan is None and not live:  # a live writer creates it right after commands.log
        report.add(0, "missing_outcome", EVENTS_FILE, f"{events_path}: no such file")
    for seq, path in listed:
        if seq > commands_last:
            report.add(
                seq,
                "snapshot",
                f"snapshot {seq}",
                f"{path}: a snapshot after the last command (seq {commands_last}) of {COMMANDS_FILE}: the commands "
                f"it describes are missing",
            )
    snapshots = {seq: _loader(path) for seq, path in listed if seq >= start}
    chain = Chain(chain_every, on_chain)
    auditor = Auditor(report, state, chain, snapshots, progress, full_sweep=full_sweep)

    def problem(seq: int, where: str, message: str) -> None:
        report.add(seq, _kind(message), where, message)

    commands = SeqCursor(commands_path, problem, commands_scan.total_bytes, live)
    events = SeqCursor(events_path, problem, events_scan.total_bytes if events_scan else None, live)

    # Before the start (a snapshot): the commands are not replayed, but records the logs hold
    # there are still read (damage is reported) and the recorded outcomes are chained. A log
    # that starts right after its snapshot (an exported topic range) has no such records.
    if start > 1:
        exported = _export_chain(folder, start - 1)
        if exported is not None:
            chain.digest, chain.seq = exported, start - 1
        command_prefix = first_seq(commands_path) != start
        event_prefix = events_path.exists() and first_seq(events_path) != start
        if exported is None and not event_prefix:
            auditor.chain = None
            report.chain_note = f"no chain: the log holds no outcome before seq {start} (and no {EXPORT_META} gives it)"
        for seq in range(1, start if command_prefix or event_prefix else 1):
            if command_prefix:
                commands.take(seq)
            if event_prefix:
                record = events.take(seq)
                if exported is None:
                    auditor.chain_prefix(seq, None if record is None else record.payload)

    seq = start
    while stable is None or seq <= stable:
        command = commands.take(seq)
        if command is None and commands.at_end:
            break
        recorded = events.take(seq)
        recorded_where = f"{EVENTS_FILE} byte offset {recorded.offset}" if recorded is not None else EVENTS_FILE
        if command is None:
            going = auditor.fold_recorded(
                seq,
                None if recorded is None else recorded.payload,
                recorded_where,
                "its command is missing or unreadable",
            )
        else:
            going = auditor.step(
                seq,
                command.payload,
                f"{COMMANDS_FILE} byte offset {command.offset}",
                None if recorded is None else recorded.payload,
                recorded_where,
            )
        if not going:
            break
        seq += 1
    for _ in commands.rest():  # after a stop: still report damage further on
        pass
    for record in events.rest():
        if record.seq >= seq and (stable is None or record.seq <= stable):
            report.add(
                record.seq,
                "extra_outcome",
                f"{EVENTS_FILE} byte offset {record.offset}",
                f"{EVENTS_FILE} byte offset {record.offset}: outcome of seq {record.seq} has no command",
            )
    return auditor.finish(started)


def _kind(message: str) -> str:
    if "sequence gap" in message:
        return "gap"
    if "out of order" in message:
        return "order"
    return "damage"
