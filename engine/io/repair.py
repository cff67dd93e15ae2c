"""``marginbook recover DIR``: bring a log directory back into a state a writer can continue.

Without options, :func:`recover` is what every writer does on open (``engine/io/embedded.py``):
cut torn tails and orphan outcomes, remove temporary files and snapshots after the last command,
re-derive missing outcomes; it also removes snapshot files that cannot be restored. The options
repair what a writer refuses to repair by itself, each named by the refusal's message:

* ``--rewrite-meta`` — ``meta.json`` is empty or garbage: write a new one (format 1, this
  engine's rules version). Refused when the file is valid (nothing to repair) or of an unknown
  format (another marginbook wrote the directory).
* ``--rebuild-events`` — ``events.log`` is damaged, foreign or diverges from the commands: it is
  renamed ``events.log.bad`` (``.bad.1``, … if taken) and every outcome is re-derived from
  ``commands.log`` by stepping from the start.
* ``--cut-after SEQ`` — ``commands.log`` is damaged (or missing): keep seqs ``1..SEQ`` of both
  logs and drop the rest, whose bytes are kept in ``<log>.cut-after-SEQ``; snapshots after
  ``SEQ`` are removed. This is the only repair that drops accepted commands: the writer must
  resubmit them (``marginbook run FILE --log DIR`` does, from its input file).

Every step runs under the directory's writer lock (``engine/io/lock.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.core import RULES_VERSION
from engine.io.atomic import fsync_dir, write_atomic
from engine.io.embedded import EmbeddedEngine
from engine.io.filelog import FsyncPolicy, valid_prefix
from engine.io.lock import WriterLock
from engine.io.logdir import (
    COMMANDS_FILE,
    EVENTS_FILE,
    FORMAT,
    META_FILE,
    LogDirError,
    Meta,
    SnapshotDamaged,
    read_meta,
    read_snapshot,
    snapshot_paths,
    write_meta,
)

__all__ = ["RecoverReport", "recover"]


@dataclass
class RecoverReport:
    last_seq: int = 0
    #: Outcomes re-derived, and the snapshot seq they were stepped from (0: the start).
    rederived: int = 0
    rederived_from: int = 0
    actions: list[str] = field(default_factory=list)


def _rewrite_meta(folder: Path, report: RecoverReport) -> None:
    try:
        meta = read_meta(folder)
    except LogDirError as err:
        if err.repair is None:  # an unknown format: rewriting it would lie
            raise
    else:
        if meta is not None:
            raise LogDirError(
                f"{folder / META_FILE}: valid (format {meta.format}, rules version {meta.rules_version}): "
                f"nothing to rewrite"
            )
    write_meta(folder, Meta(FORMAT, RULES_VERSION))
    report.actions.append(f"{folder / META_FILE}: rewritten (format {FORMAT}, rules version {RULES_VERSION})")


def _aside(path: Path, suffix: str) -> Path:
    target = path.with_name(path.name + suffix)
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{suffix}.{n}")
    return target


def _rebuild_events(folder: Path, report: RecoverReport) -> None:
    events = folder / EVENTS_FILE
    if not events.exists():
        report.actions.append(f"{events}: missing; every outcome is re-derived")
        return
    target = _aside(events, ".bad")
    os.replace(events, target)
    fsync_dir(folder)
    report.actions.append(f"{events}: set aside as {target.name}; every outcome is re-derived from {COMMANDS_FILE}")


def _cut(path: Path, seq: int, report: RecoverReport, must_reach: bool) -> None:
    if not path.exists():
        return
    end, last = valid_prefix(path, seq)
    if must_reach and last < seq and path.stat().st_size > end:
        raise LogDirError(
            f"{path}: the records before seq {seq} are not intact (the valid prefix ends at seq {last}, byte "
            f"offset {end})",
            f"marginbook recover {path.parent} --cut-after {last}",
        )
    size = path.stat().st_size
    if size <= end:
        return
    with open(path, "rb") as handle:
        handle.seek(end)
        tail = handle.read()
    aside = _aside(path, f".cut-after-{seq}")
    write_atomic(aside, tail)
    with open(path, "r+b") as handle:
        handle.truncate(end)
        os.fsync(handle.fileno())
    report.actions.append(f"{path}: cut {size - end} byte(s) after seq {last} (kept in {aside.name})")


def _cut_after(folder: Path, seq: int, report: RecoverReport) -> None:
    if seq < 0:
        raise LogDirError(f"--cut-after must be >= 0, got {seq}")
    _cut(folder / COMMANDS_FILE, seq, report, must_reach=True)
    _cut(folder / EVENTS_FILE, seq, report, must_reach=False)
    for snap_seq, path in snapshot_paths(folder):
        if snap_seq > seq:
            path.unlink()
            report.actions.append(f"{path}: removed (after seq {seq})")


def recover(
    directory: str | os.PathLike[str],
    rewrite_meta: bool = False,
    rebuild_events: bool = False,
    cut_after: int | None = None,
    wait_lock: float = 0.0,
    fsync: FsyncPolicy = FsyncPolicy.BATCH,
    warn: Callable[[str], None] | None = None,
) -> RecoverReport:
    """Repair and recover ``directory`` (module doc); raise what a writer would refuse."""
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such directory")
    report = RecoverReport()
    lock = WriterLock.acquire(folder, wait_lock)
    try:
        if rewrite_meta:
            _rewrite_meta(folder, report)
        if cut_after is not None:
            _cut_after(folder, cut_after, report)
        if rebuild_events:
            _rebuild_events(folder, report)
        for seq, path in snapshot_paths(folder):
            try:
                read_snapshot(path, seq)
            except SnapshotDamaged as err:
                path.unlink()
                report.actions.append(f"{err}: removed")
    except BaseException:
        lock.release()
        raise
    with EmbeddedEngine(folder, fsync=fsync, warn=warn, lock=lock) as engine:
        report.last_seq = engine.state.last_seq
        report.rederived = engine.recovered
        report.rederived_from = engine.recovered_from
    return report
