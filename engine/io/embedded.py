"""The engine on the embedded file log: the default when no Kafka is configured.

A log directory (layout and file formats: ``engine/io/logdir.py``) holds:

* ``commands.log`` — every accepted command, as the JSON bytes received, one record per
  command; record ``seq`` is the command's sequence number. **The source of truth**: every other
  file can be re-derived from it.
* ``events.log`` — the :class:`~events.journal.Outcome` of each command (JSON), same ``seq``.
* ``meta.json`` — the format and the engine rules version (``engine.core.RULES_VERSION``) that
  wrote the log, written atomically and validated on open; reopening under other rules warns.
* ``snapshots/<seq>.msgpack`` — engine state after command ``seq``, with a checksum, written
  every ``snapshot_every`` commands atomically (temp file, fsync, rename, directory fsync).
* ``writer.lock`` — the single-writer lock (``engine/io/lock.py``), held from the constructor
  to :meth:`EmbeddedEngine.close`: a second writer is refused (:class:`~engine.io.lock.LogLocked`).

Write order per command: append the command, step, append the outcome; both logs are flushed
(commands first) every ``batch`` commands, before each snapshot and on close. Crash points
(kill -9 anywhere) and their outcome:

1. crash before the command record is flushed → the command was never accepted; the writer
   (gateway) resubmits it with the same ``id``;
2. crash after the command is flushed but before its outcome is → on reopen, recovery replays
   the command and appends the missing outcome (the fold is deterministic, so it is the outcome
   the lost process would have written);
3. crash mid-record → the file log cuts the torn tail (with a warning) and case 1 or 2 applies;
   the two files are buffered separately, so the OS may hold more of ``events.log`` than of
   ``commands.log``: outcomes beyond the last command are orphans of commands that were never
   accepted and are cut (with a warning) before recovery;
4. crash while writing a snapshot or ``meta.json`` → the temporary file is removed on reopen;
   the previous file (or none) is used.

A full disk (``ENOSPC``) anywhere raises :class:`~engine.io.atomic.DiskFull` naming the file;
what was flushed before stays, temporary files are removed, and the next open recovers as after
a crash.

Recovery (the constructor). Commands are the truth:

* outcomes after the last command are cut (case 3); snapshots after it describe commands that
  are not in ``commands.log`` and are removed (with a warning);
* the state is restored from the newest snapshot at or before the last recorded outcome — an
  unreadable snapshot is skipped (with a warning) for the next older one, or the empty state;
* every command after it is stepped: an outcome already recorded must come out byte-identical,
  the missing ones are appended. So outcomes lost behind a snapshot (``events.log`` truncated or
  deleted) are re-derived from an earlier snapshot or from the start. When a recorded outcome
  differs, the snapshot is suspected first (the next older one is tried); from the empty state a
  difference is a :class:`Divergence` and the open is refused;
* anything that cannot be recovered automatically — mid-log damage, a record that is not what
  its file holds, ``commands.log`` missing under an ``events.log`` — is refused with
  :class:`~engine.io.logdir.LogDirError`, whose message gives the ``marginbook recover`` command
  that repairs it (``engine/io/repair.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from engine.core.state import State
from engine.core.step import Engine
from engine.io.atomic import disk_full, remove_temp_files, write_atomic
from engine.io.filelog import MAGIC, FileLog, FsyncPolicy, LogCorruptError, LogError, truncate_after
from engine.io.lock import WriterLock
from engine.io.logdir import (
    COMMANDS_FILE,
    EVENTS_FILE,
    META_FILE,
    SNAPSHOT_DIR,
    LogDirError,
    SnapshotDamaged,
    ensure_meta,
    read_snapshot,
    rules_version_of,
    snapshot_body,
    snapshot_file_bytes,
    snapshot_path,
    snapshot_paths,
    write_snapshot,
)
from events.codec import BadCommand, decode_command_json, decode_outcome_json, encode_outcome_json
from events.commands import Command
from events.journal import Outcome

__all__ = [
    "COMMANDS_FILE",
    "EVENTS_FILE",
    "META_FILE",
    "SNAPSHOT_DIR",
    "Divergence",
    "EmbeddedEngine",
    "cut_after_command",
    "rebuild_events_command",
    "rules_version_of",
    "snapshot_paths",
    "write_snapshot",
]

_log = logging.getLogger(__name__)


def rebuild_events_command(directory: Path) -> str:
    return f"marginbook recover {directory} --rebuild-events"


def cut_after_command(directory: Path, seq: int) -> str:
    return f"marginbook recover {directory} --cut-after {seq}"


class Divergence(RuntimeError):
    """Recomputing a recorded command gave a different outcome than the one recorded."""

    def __init__(self, seq: int, expected: bytes, actual: bytes, directory: Path | None = None) -> None:
        if directory is None:
            message = f"seq {seq}: recorded outcome differs from the recomputed one"
        else:
            message = (
                f"{directory / EVENTS_FILE} seq {seq}: the recorded outcome differs from the one recomputed from "
                f"{COMMANDS_FILE} (tampered, or written under other engine rules: `marginbook audit {directory}` "
                f"shows the difference); repair: {rebuild_events_command(directory)}"
            )
        super().__init__(message)
        self.seq = seq
        self.expected = expected
        self.actual = actual


def _is_outcome(payload: bytes) -> bool:
    try:
        decode_outcome_json(payload)
    except Exception:  # any decode failure: it is not an outcome
        return False
    return True


class EmbeddedEngine:
    """Engine + embedded log directory. Use as a context manager; ``submit`` per command.

    ``wait_lock``: seconds to wait for another writer to release the directory (default: refuse
    at once). ``lock``: a lock of ``directory`` the caller already holds, handed over (released
    by :meth:`close`).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        snapshot_every: int = 100_000,
        batch: int = 1_000,
        fsync: FsyncPolicy = FsyncPolicy.BATCH,
        warn: Callable[[str], None] | None = None,
        use_snapshots: bool = True,
        wait_lock: float = 0.0,
        lock: WriterLock | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.snapshot_every = snapshot_every
        self.batch = batch
        self._warn = warn if warn is not None else _log.warning
        self._sync = fsync is not FsyncPolicy.NEVER
        self._failed: BaseException | None = None
        self._pending = 0
        self.commands: FileLog
        self.events: FileLog
        #: Outcomes appended by recovery, and the snapshot seq recovery stepped from (0: start).
        self.recovered = 0
        self.recovered_from = 0
        if lock is None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                full = disk_full(exc, self.directory)
                if full is exc:
                    raise
                raise full from exc
            lock = WriterLock.acquire(self.directory, wait_lock)
        self._lock: WriterLock | None = lock
        try:
            self._open(fsync, warn, use_snapshots)
        except BaseException:
            self._abandon()
            raise

    # ----------------------------------------------------------------------------- opening

    def _open(self, fsync: FsyncPolicy, warn: Callable[[str], None] | None, use_snapshots: bool) -> None:
        folder = self.directory
        ensure_meta(folder, self._warn, self._sync)
        for temp in remove_temp_files(folder) + remove_temp_files(folder / SNAPSHOT_DIR):
            self._warn(f"{temp}: removed a partial file left by an interrupted write")
        commands_path, events_path = folder / COMMANDS_FILE, folder / EVENTS_FILE
        if not commands_path.exists() and events_path.exists() and events_path.stat().st_size:
            raise LogDirError(
                f"{commands_path}: missing, but {events_path} holds outcomes: {COMMANDS_FILE} is the source of "
                f"truth and cannot be re-derived (restore it from a backup, or start the log over)",
                f"{cut_after_command(folder, 0)} (sets the outcomes aside as {EVENTS_FILE}.cut-after-0)",
            )
        self._refuse_foreign(commands_path, f"{cut_after_command(folder, 0)} (sets it aside and starts the log over)")
        self._refuse_foreign(events_path, f"{rebuild_events_command(folder)} (sets it aside, re-derives the outcomes)")
        try:
            self.commands = FileLog.open(commands_path, fsync=fsync, warn=warn)
        except LogCorruptError as err:
            raise LogDirError(
                f"{err}; {COMMANDS_FILE} is the source of truth: the commands from seq {err.expected_seq} on "
                f"cannot be read (`marginbook audit {folder}` lists the damage)",
                f"{cut_after_command(folder, err.expected_seq - 1)} (drops them; the cut bytes are kept aside)",
            ) from None
        try:
            if events_path.exists():
                cut = truncate_after(events_path, self.commands.last_seq, warn)
                if cut:
                    self._warn(f"{events_path}: cut {cut} bytes of outcomes whose commands were lost in a crash")
            self.events = FileLog.open(events_path, fsync=fsync, warn=warn)
        except LogCorruptError as err:
            raise LogDirError(
                f"{err}; the outcomes are derived from {COMMANDS_FILE}, which is intact",
                f"{rebuild_events_command(folder)} (re-derives them; the damaged file is kept as {EVENTS_FILE}.bad)",
            ) from None
        self._check_last_records()
        self._check_snapshots()
        self._restore_and_recover(use_snapshots)

    @staticmethod
    def _refuse_foreign(path: Path, repair: str) -> None:
        """A file that does not even start like a log (a record's magic, or the zeros a power loss
        leaves) is foreign: the file log would cut it whole as a torn tail, so refuse it."""
        try:
            with open(path, "rb") as handle:
                head = handle.read(len(MAGIC))
        except FileNotFoundError:
            return
        if head and not MAGIC.startswith(head) and head.strip(b"\0"):
            raise LogDirError(f"{path} byte offset 0: not a marginbook log (it starts with {head!r})", repair)

    def _command_error(self, seq: int, offset: int, payload: bytes, bad: BadCommand) -> LogDirError:
        path = self.commands.path
        if _is_outcome(payload):
            events = self.directory / EVENTS_FILE
            return LogDirError(
                f"{path} seq {seq} (byte offset {offset}): not a command but an outcome: are {COMMANDS_FILE} and "
                f"{EVENTS_FILE} swapped?",
                f"mv {path} {path}.swap && mv {events} {path} && mv {path}.swap {events}",
            )
        return LogDirError(
            f"{path} seq {seq} (byte offset {offset}): not a command ({bad}); {COMMANDS_FILE} holds only accepted "
            f"commands, so the file is damaged or foreign",
            f"{cut_after_command(self.directory, seq - 1)} (drops seq {seq} and after; the cut bytes are kept aside)",
        )

    def _decode(self, seq: int, offset: int, payload: bytes) -> Command:
        try:
            return decode_command_json(payload)
        except BadCommand as bad:
            raise self._command_error(seq, offset, payload, bad) from None

    def _check_last_records(self) -> None:
        """A cheap check that each log holds what it should: its last record decodes."""
        last = self.commands.last_seq
        if last:
            for seq, offset, payload in self.commands.records(last):
                self._decode(seq, offset, payload)
        last = self.events.last_seq
        if last:
            for seq, offset, payload in self.events.records(last):
                try:
                    held = decode_outcome_json(payload).seq
                    reason = "" if held == seq else f"the record of seq {seq} holds the outcome of seq {held}"
                except Exception as err:  # a decode boundary
                    reason = f"not an outcome ({err})"
                if reason:
                    raise LogDirError(
                        f"{self.events.path} seq {seq} (byte offset {offset}): {reason}",
                        f"{rebuild_events_command(self.directory)} (re-derives the outcomes from {COMMANDS_FILE})",
                    )

    def _check_snapshots(self) -> None:
        """Remove the snapshots a restore must never use: after the last command (they describe
        commands that are not in commands.log), or failing their checksum (caches, rebuilt when
        recovery steps past their seq)."""
        #: Snapshots found unusable: rewritten from the state when recovery steps past them, as
        #: are those due (every ``snapshot_every``) after the newest one (a write that failed).
        self._heal: set[int] = set()
        self._newest_snapshot = 0
        last = self.commands.last_seq
        for seq, path in snapshot_paths(self.directory):
            if seq > last:
                path.unlink()
                self._warn(f"{path}: removed: a snapshot after the last command (seq {last}) in {COMMANDS_FILE}")
                continue
            try:
                snapshot_body(path)
            except SnapshotDamaged as err:
                path.unlink()
                self._heal.add(seq)
                self._warn(f"{err}: removed")
            else:
                self._newest_snapshot = seq

    def _due(self, seq: int) -> bool:
        """Must recovery (re)write the snapshot of ``seq`` when it steps past it?"""
        every = self.snapshot_every
        return seq in self._heal or (every > 0 and seq % every == 0 and seq > self._newest_snapshot)

    def _restore_and_recover(self, use_snapshots: bool) -> None:
        """Restore the newest usable snapshot at or before the last recorded outcome, verify the
        recorded outcomes after it, append the missing ones (module doc)."""
        recorded_last = min(self.events.last_seq, self.commands.last_seq)
        candidates = [(s, p) for s, p in snapshot_paths(self.directory) if s <= recorded_last] if use_snapshots else []
        starts: list[tuple[int, Path | None]] = [*reversed(candidates), (0, None)]
        for seq, path in starts:
            state: State | None = None
            if path is not None:
                try:
                    state = read_snapshot(path, seq)
                except SnapshotDamaged as err:
                    self._warn(f"{err}; recovering from an older snapshot or the start")
                    self._heal.add(seq)
                    continue
            engine = Engine(state)
            healed: dict[int, bytes] = {}
            try:
                self._verify(engine, recorded_last, healed)
            except Divergence as div:
                if path is None:
                    raise Divergence(div.seq, div.expected, div.actual, self.directory) from None
                self._warn(
                    f"{path}: ignored: stepping from it does not reproduce the recorded outcome of seq {div.seq}; "
                    f"recovering from an older snapshot or the start"
                )
                self._heal.add(seq)
                continue
            self.engine = engine
            self.recovered_from = seq
            for snap_seq, data in healed.items():
                self._heal_snapshot(snap_seq, data)
            break
        self.recovered = self._append_missing()
        self.flush()

    def _heal_snapshot(self, seq: int, data: bytes) -> None:
        path = snapshot_path(self.directory, seq)
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, data, self._sync)
        self._newest_snapshot = max(self._newest_snapshot, seq)
        if seq in self._heal:
            self._heal.discard(seq)
            self._warn(f"{path}: rewritten from the state recovery stepped to")

    def _verify(self, engine: Engine, recorded_last: int, healed: dict[int, bytes]) -> None:
        """Step from ``engine``'s state to ``recorded_last``, comparing every recorded outcome;
        the snapshots to heal on the way go to ``healed`` (written only if all of it matches)."""
        start = engine.state.last_seq + 1
        if start > recorded_last:
            return
        recorded = self.events.read(start)
        for seq, offset, payload in self.commands.records(start):
            if seq > recorded_last:
                break
            data = encode_outcome_json(engine.step(self._decode(seq, offset, payload)))
            expected = next(recorded)[1]
            if expected != data:
                raise Divergence(seq, expected, data)
            if self._due(seq):
                healed[seq] = snapshot_file_bytes(engine.state)

    def _append_missing(self) -> int:
        start = self.engine.state.last_seq + 1
        if start > self.commands.last_seq:
            return 0
        if self.events.last_seq != start - 1:
            raise LogError(f"{self.events.path}: ends at seq {self.events.last_seq}, recovery is at {start - 1}")
        appended = 0
        for seq, offset, payload in self.commands.records(start):
            self.events.append(encode_outcome_json(self.engine.step(self._decode(seq, offset, payload))))
            appended += 1
            if self._due(seq):
                self.flush()  # a snapshot is never ahead of the logs
                self._heal_snapshot(seq, snapshot_file_bytes(self.engine.state))
            if appended % self.batch == 0:
                self.events.flush()
        return appended

    def _abandon(self) -> None:
        """After a failed open: close what was opened, release the lock, never mask the error."""
        for name in ("events", "commands"):
            log = getattr(self, name, None)
            if isinstance(log, FileLog):
                with contextlib.suppress(Exception):
                    log.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ----------------------------------------------------------------------------- writing

    @property
    def state(self) -> State:
        return self.engine.state

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise LogError(
                f"{self.directory}: the engine stopped after an earlier error ({self._failed}); reopen it to recover"
            )
        if self._lock is None:
            raise ValueError(f"{self.directory}: the engine is closed")

    def submit(self, command: Command, raw: bytes) -> Outcome:
        """Journal ``raw`` (the command's accepted JSON bytes), step it, journal the outcome."""
        self._check_usable()
        try:
            seq = self.commands.append(raw)
            outcome = self.engine.step(command)
            if self.events.append(encode_outcome_json(outcome)) != seq or outcome.seq != seq:
                raise LogError(f"sequence mismatch at command {seq}")
            self._pending += 1
            if self._pending >= self.batch:
                self.flush()
            if self.snapshot_every and seq % self.snapshot_every == 0:
                self.flush()
                write_snapshot(self.directory, self.engine.state, self._sync)
        except BaseException as exc:
            self._failed = exc
            raise
        return outcome

    def flush(self) -> None:
        """Make every submitted command and outcome durable (per the fsync policy), commands first."""
        self._check_usable()
        try:
            self.commands.flush()
            self.events.flush()
        except BaseException as exc:
            self._failed = exc
            raise
        self._pending = 0

    def close(self) -> None:
        """Flush and close both logs and release the lock. Idempotent. After an earlier failure
        it saves what it can and raises nothing more (the first error is the one that matters)."""
        lock, self._lock = self._lock, None
        if lock is None:
            return
        first: BaseException | None = None
        try:
            for log in (self.commands, self.events):  # commands first: an outcome never outlives its command
                try:
                    log.close()
                except BaseException as exc:
                    first = first or exc
        finally:
            lock.release()
        if first is not None and self._failed is None:
            self._failed = first
            raise first

    def __enter__(self) -> EmbeddedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
