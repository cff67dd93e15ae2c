"""Read a log directory's recorded outcomes in order, with the command of each, for folds that
need every event (statements, conservation).

Unlike the audit, a fold cannot skip a seq: any damage, gap or reordering in ``events.log`` ends
the read with :class:`IncompleteLog`, naming the seq and the byte offset (``marginbook audit``
says more). ``commands.log`` is only read for each command's type: a damaged command record
makes its type ``?`` and is passed to ``warn``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from engine.core.evolve import apply
from engine.core.state import State
from engine.core.step import record
from engine.io.lock import live_writer
from engine.io.logdir import COMMANDS_FILE, EVENTS_FILE, read_meta
from events.codec import decode_outcome_json
from events.journal import Event, Outcome
from replay.directory import start_state
from replay.tolerant import SeqCursor, first_seq


class IncompleteLog(RuntimeError):
    """``events.log`` cannot be folded through (damage, gap, reordering)."""


class _Tagged(msgspec.Struct):
    type: str = "?"


_tag_decoder = msgspec.json.Decoder(_Tagged)


def command_type(raw: bytes | None) -> str:
    if raw is None:
        return "?"
    try:
        return _tag_decoder.decode(raw).type
    except msgspec.DecodeError:
        return "?"


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    outcome: Outcome
    command: bytes | None
    #: Byte offset of the outcome's record in ``events.log``.
    offset: int = 0

    def fold_error(self, err: Exception) -> IncompleteLog:
        """The error to raise when this entry's events cannot be folded (a foreign journal)."""
        return IncompleteLog(
            f"{EVENTS_FILE} byte offset {self.offset}: the outcome of seq {self.seq} cannot be folded ({err!r}): "
            f"not a journal this engine wrote; run `marginbook audit`"
        )


def apply_checked(state: State, event: Event, entry: Entry) -> None:
    """Fold one recorded event (``engine.core.evolve.apply``); a journal no engine could have
    written raises :class:`IncompleteLog` naming the record instead of whatever the fold hits."""
    try:
        apply(state, event)
    except Exception as err:  # a decode boundary: recorded events are input here
        raise entry.fold_error(err) from None


def record_checked(state: State, entry: Entry) -> None:
    """``engine.core.step.record`` of the entry's outcome, checked like :func:`apply_checked`."""
    try:
        record(state, entry.outcome)
    except Exception as err:  # a decode boundary, as above
        raise entry.fold_error(err) from None


def read_journal(
    directory: str | os.PathLike[str],
    from_snapshot: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[State, int, Iterator[Entry]]:
    """``(starting state, start seq, entries)``: the state is the snapshot's (or empty); the
    caller folds each entry's events into it."""
    folder = Path(directory)
    events_path = folder / EVENTS_FILE
    if not events_path.exists():
        raise FileNotFoundError(f"{events_path}: no such file")
    read_meta(folder)  # an empty, garbage or unknown-format meta.json is refused
    state, start, note = start_state(folder, from_snapshot)
    if note and warn is not None:
        warn(note)
    writer = live_writer(folder)
    if writer is not None and warn is not None:
        warn(f"a writer is at work on this log ({writer.describe()}): the record it is writing is left out")
    return state if state is not None else State(), start, _entries(folder, start, warn, writer is not None)


def _entries(folder: Path, start: int, warn: Callable[[str], None] | None, live: bool) -> Iterator[Entry]:
    def fail(seq: int, where: str, message: str) -> None:
        if seq >= start or seq == 0:  # damage before a snapshot start does not matter here
            raise IncompleteLog(
                f"{message} (at seq {seq}); the journal cannot be folded past it: run `marginbook audit`"
            )

    def note(seq: int, where: str, message: str) -> None:
        if warn is not None and (seq >= start or seq == 0):
            warn(f"{message} (seq {seq}); its command type is shown as ?")

    events = SeqCursor(folder / EVENTS_FILE, fail, forgive_torn_tail=live)
    commands = SeqCursor(folder / COMMANDS_FILE, note, forgive_torn_tail=live)
    skip_events = _first(folder / EVENTS_FILE) != start
    skip_commands = _first(folder / COMMANDS_FILE) != start
    for seq in range(1, start):
        if skip_events:
            events.take(seq)
        if skip_commands:
            commands.take(seq)
    seq = start
    while True:
        record = events.take(seq)
        if record is None:
            if events.at_end:
                if warn is not None and commands.take(seq) is not None:
                    warn(f"{COMMANDS_FILE} holds commands from seq {seq} on without a recorded outcome; not included")
                return
            raise IncompleteLog(f"{EVENTS_FILE}: no outcome for seq {seq}")
        command = commands.take(seq)
        try:
            outcome = decode_outcome_json(record.payload)
        except msgspec.DecodeError as err:
            raise IncompleteLog(
                f"{EVENTS_FILE} byte offset {record.offset}: seq {seq} is not an outcome: {err}"
            ) from None
        if outcome.seq != seq:
            raise IncompleteLog(
                f"{EVENTS_FILE} byte offset {record.offset}: record of seq {seq} holds seq {outcome.seq}"
            )
        yield Entry(seq, outcome, None if command is None else command.payload, record.offset)
        seq += 1


def _first(path: Path) -> int | None:
    return first_seq(path) if path.exists() else None
