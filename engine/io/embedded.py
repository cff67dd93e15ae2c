"""The engine on the embedded file log: the default when no Kafka is configured.

A log directory holds:

* ``commands.log`` — every accepted command, as the JSON bytes received, one record per
  command; record ``seq`` is the command's sequence number. The source of truth.
* ``events.log`` — the :class:`~events.journal.Outcome` of each command (JSON), same ``seq``.
* ``meta.json`` — the format and the engine rules version (``engine.core.RULES_VERSION``) that
  wrote the log; reopening under other rules warns, and audits report it.
* ``snapshots/<seq>.msgpack`` — engine state after command ``seq`` (``engine.core.snapshot``),
  written every ``snapshot_every`` commands via a temporary file and an atomic rename.

Write order per command: append the command, step, append the outcome; both logs are flushed
(commands first) every ``batch`` commands and on close. Crash points and their outcome:

1. crash before the command record is flushed → the command was never accepted; the writer
   (gateway) resubmits it with the same ``id``;
2. crash after the command is flushed but before its outcome is → on reopen, recovery replays
   the command and appends the missing outcome (the fold is deterministic, so it is the outcome
   the lost process would have written);
3. crash mid-record → the file log cuts the torn tail (with a warning) and case 1 or 2 applies;
   the two files are buffered separately, so the OS may hold more of ``events.log`` than of
   ``commands.log``: outcomes beyond the last command are orphans of commands that were never
   accepted and are cut (with a warning) before recovery;
4. crash while writing a snapshot → the temporary file is ignored; an older snapshot, or the
   start of the log, is used.

Recovery: restore the newest snapshot, then step every later command; for those whose outcome is
already recorded the recomputed outcome must be byte-identical (else :class:`Divergence`), the
rest are appended.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from engine.core import RULES_VERSION, snapshot
from engine.core.state import State
from engine.core.step import Engine
from engine.io.filelog import FileLog, FsyncPolicy, LogError, truncate_after
from events.codec import decode_command_json, encode_outcome_json
from events.commands import Command
from events.journal import Outcome

META_FILE = "meta.json"
COMMANDS_FILE = "commands.log"
EVENTS_FILE = "events.log"
SNAPSHOT_DIR = "snapshots"


class Divergence(RuntimeError):
    """Recomputing a recorded command gave a different outcome than the one recorded."""

    def __init__(self, seq: int, expected: bytes, actual: bytes) -> None:
        super().__init__(f"seq {seq}: recorded outcome differs from the recomputed one")
        self.seq = seq
        self.expected = expected
        self.actual = actual


def rules_version_of(directory: str | os.PathLike[str]) -> int | None:
    """The engine rules version recorded in a log directory (``None``: not recorded)."""
    path = Path(directory) / META_FILE
    if not path.exists():
        return None
    value = json.loads(path.read_text()).get("rulesVersion")
    return int(value) if value is not None else None


def _record_meta(directory: Path, warn: Callable[[str], None] | None) -> None:
    path = directory / META_FILE
    if not path.exists():
        path.write_text(json.dumps({"format": 1, "rulesVersion": RULES_VERSION}) + "\n")
        return
    recorded = rules_version_of(directory)
    if recorded != RULES_VERSION and warn is not None:
        warn(f"{directory} was written under engine rules version {recorded}; this engine applies {RULES_VERSION}")


def snapshot_paths(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Snapshots in a log directory as ``(seq, path)``, oldest first."""
    folder = Path(directory) / SNAPSHOT_DIR
    if not folder.is_dir():
        return []
    found = [(int(p.stem), p) for p in folder.glob("*.msgpack") if p.stem.isdigit()]
    return sorted(found)


def write_snapshot(directory: str | os.PathLike[str], state: State) -> Path:
    folder = Path(directory) / SNAPSHOT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{state.last_seq:012d}.msgpack"
    temp = folder / f".{state.last_seq:012d}.tmp"
    with open(temp, "wb") as handle:
        handle.write(snapshot.encode(state))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, final)
    return final


class EmbeddedEngine:
    """Engine + embedded log directory. Use as a context manager; ``submit`` per command."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        snapshot_every: int = 100_000,
        batch: int = 1_000,
        fsync: FsyncPolicy = FsyncPolicy.BATCH,
        warn: Callable[[str], None] | None = None,
        use_snapshots: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        _record_meta(self.directory, warn)
        self.snapshot_every = snapshot_every
        self.batch = batch
        self.commands = FileLog.open(self.directory / COMMANDS_FILE, fsync=fsync, warn=warn)
        events_path = self.directory / EVENTS_FILE
        if events_path.exists():
            cut = truncate_after(events_path, self.commands.last_seq)
            if cut and warn is not None:
                warn(f"{events_path}: cut {cut} bytes of outcomes whose commands were lost in a crash")
        self.events = FileLog.open(events_path, fsync=fsync, warn=warn)
        self.engine = Engine(self._restore() if use_snapshots else None)
        self.recovered = self._recover()
        self._pending = 0

    def _restore(self) -> State | None:
        for seq, path in reversed(snapshot_paths(self.directory)):
            if seq <= self.commands.last_seq:
                return snapshot.restore(path.read_bytes())
        return None

    def _recover(self) -> int:
        """Bring the engine and the outcome log up to the command log; return how many
        outcomes had to be appended."""
        if self.events.last_seq > self.commands.last_seq:
            raise LogError(f"{self.events.path}: {self.events.last_seq} outcomes for {self.commands.last_seq} commands")
        start = self.engine.state.last_seq + 1
        recorded = self.events.read(start)
        appended = 0
        for seq, payload in self.commands.read(start):
            outcome = self.engine.step(decode_command_json(payload))
            data = encode_outcome_json(outcome)
            if seq <= self.events.last_seq:
                expected = next(recorded)[1]
                if expected != data:
                    raise Divergence(seq, expected, data)
            else:
                self.events.append(data)
                appended += 1
        self.flush()
        return appended

    @property
    def state(self) -> State:
        return self.engine.state

    def submit(self, command: Command, raw: bytes) -> Outcome:
        """Journal ``raw`` (the command's accepted JSON bytes), step it, journal the outcome."""
        seq = self.commands.append(raw)
        outcome = self.engine.step(command)
        if self.events.append(encode_outcome_json(outcome)) != seq or outcome.seq != seq:
            raise LogError(f"sequence mismatch at command {seq}")
        self._pending += 1
        if self._pending >= self.batch:
            self.flush()
        if self.snapshot_every and seq % self.snapshot_every == 0:
            self.flush()
            write_snapshot(self.directory, self.engine.state)
        return outcome

    def flush(self) -> None:
        self.commands.flush()
        self.events.flush()
        self._pending = 0

    def close(self) -> None:
        self.flush()
        self.commands.close()
        self.events.close()

    def __enter__(self) -> EmbeddedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
