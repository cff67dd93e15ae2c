"""Audit replay: prove what the engine did, and find exactly where a history diverged.

The audit re-runs every recorded command through the same engine (:class:`engine.core.step.Engine`)
and compares each recomputed outcome, byte for byte, with the recorded one. Unlike
:func:`replay.verify.replay_dir` it never relies on :meth:`engine.io.filelog.FileLog.open` (which
cuts a torn tail and refuses mid-log damage): both logs are read with the tolerant reader
(:mod:`replay.tolerant`), so it reads *past* damage and names every problem with its sequence
number and byte offset, and it never modifies the directory. It also checks every snapshot (as
``replay_dir`` does), reports the final state digest and keeps the digest chain
(:mod:`replay.chain`).

What is reported (:class:`AuditReport`):

* ``divergence`` — the recomputed outcome differs from the recorded one; the first is described
  in full (:class:`Divergence`: the command, the first differing event of the outcome and its
  differing fields);
* ``damage`` / ``gap`` / ``order`` — a stretch of a log that is not a valid record (checksum,
  magic, length, truncation), a missing sequence number, a record out of order or repeated;
* ``missing_outcome`` — a command without a readable recorded outcome (the command is still
  replayed, so the audit goes on); ``missing_command`` — an outcome without a readable command:
  the recorded outcome is folded (:func:`engine.core.step.fold`, which gives the state the
  engine had) so the audit can go on, but that seq is not verified; when both are missing the
  replay stops, since the state after it is unknown;
* ``extra_outcome`` — an outcome after the last command; ``snapshot`` — a snapshot that does not
  restore the replayed state; ``halt`` — the engine refused to commit (an invariant broke).

The drivers — :func:`replay.directory.audit_dir` for a log directory and
:func:`replay.kafka_source.audit_kafka` for a topic range —
only join commands with recorded outcomes; :class:`Auditor` does the checking.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from engine.core import snapshot
from engine.core.context import InvariantBroken
from engine.core.state import State
from engine.core.step import Engine, fold
from engine.io.logdir import COMMANDS_FILE, EVENTS_FILE
from events.codec import BadCommand, decode_command_json, decode_outcome_json, encode_outcome_json
from replay.chain import Chain

__all__ = [
    "AuditReport",
    "Auditor",
    "Divergence",
    "EventDiff",
    "Problem",
    "describe_difference",
]

#: Problems kept in the report (all are counted).
MAX_PROBLEMS: Final = 1_000

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int
    kind: str
    where: str
    message: str


@dataclass(frozen=True, slots=True)
class EventDiff:
    """Where two outcomes first differ.

    ``index``: position (0-based, the event's identity within the outcome) of the first event
    that differs, or ``None`` when only the outcome header (seq, ts, id) differs or the recorded
    bytes are not an outcome. ``expected_event``/``actual_event``: that event as JSON (``None``
    when one outcome has fewer events). ``fields``: ``name: expected …, actual …`` lines.
    """

    index: int | None
    expected_count: int | None
    actual_count: int
    expected_event: str | None
    actual_event: str | None
    fields: list[str]
    note: str = ""


@dataclass(frozen=True, slots=True)
class Divergence:
    seq: int
    command: bytes
    command_where: str
    expected: bytes
    expected_where: str
    actual: bytes
    diff: EventDiff


@dataclass
class AuditReport:
    source: str
    start_seq: int = 1
    last_seq: int = 0
    #: Commands stepped through the engine (and compared, when an outcome was recorded).
    commands: int = 0
    matched: int = 0
    divergences: int = 0
    first_divergence: Divergence | None = None
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    snapshots_checked: list[tuple[int, bool]] = field(default_factory=list)
    digest: str = ""
    chain_seq: int = 0
    chain_hex: str = ""
    chain_note: str = ""
    #: ``engine.io.filelog.scan`` findings, per log file.
    scan_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stopped: str = ""
    #: Kafka: inputs without a sequence number (undecodable: dead-lettered by the engine).
    dead_letters: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0 and not self.scan_errors and not self.stopped

    @property
    def first_problem(self) -> Problem | None:
        """The problem at the lowest sequence number (seq 0 = not tied to one, sorts last)."""
        if not self.problems:
            return None
        return min(self.problems, key=lambda p: (p.seq == 0, p.seq))

    def add(self, seq: int, kind: str, where: str, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(seq, kind, where, message))


# --------------------------------------------------------------------------- differences


def _as_dict(data: bytes) -> dict[str, Any] | None:
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


def _field_diffs(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """``name: expected …, actual …`` for every field that differs (``absent`` if missing)."""
    out = []
    for name in list(expected) + [k for k in actual if k not in expected]:
        e = _json(expected[name]) if name in expected else "absent"
        a = _json(actual[name]) if name in actual else "absent"
        if e != a:
            out.append(f"{name}: expected {e}, actual {a}")
    return out


def _first_byte(expected: bytes, actual: bytes) -> int:
    for i, (x, y) in enumerate(zip(expected, actual, strict=False)):
        if x != y:
            return i
    return min(len(expected), len(actual))


def describe_difference(expected: bytes, actual: bytes) -> EventDiff:
    """Find the first differing event of two outcome JSON texts (see :class:`EventDiff`)."""
    act = _as_dict(actual)
    assert act is not None, "the engine's own outcome is JSON"
    actual_events: list[Any] = act.get("events") or []
    exp = _as_dict(expected)
    if exp is None or not isinstance(exp.get("events"), list):
        return EventDiff(
            None,
            None,
            len(actual_events),
            None,
            None,
            [],
            f"the recorded bytes are not an outcome (not a JSON object with events); first differing byte at "
            f"index {_first_byte(expected, actual)}",
        )
    expected_events: list[Any] = exp["events"]
    header = _field_diffs(
        {k: v for k, v in exp.items() if k != "events"}, {k: v for k, v in act.items() if k != "events"}
    )
    for index in range(max(len(expected_events), len(actual_events))):
        e = expected_events[index] if index < len(expected_events) else None
        a = actual_events[index] if index < len(actual_events) else None
        if e == a:
            continue
        fields = _field_diffs(e, a) if isinstance(e, dict) and isinstance(a, dict) else []
        if e is None:
            note = f"the recorded outcome has {len(expected_events)} event(s); the replay emits more"
        elif a is None:
            note = f"the replay emits {len(actual_events)} event(s); the recorded outcome has more"
        else:
            note = ""
        if header:
            note = (note + "; " if note else "") + "outcome header differs too: " + "; ".join(header)
        return EventDiff(
            index,
            len(expected_events),
            len(actual_events),
            None if e is None else _json(e),
            None if a is None else _json(a),
            fields,
            note,
        )
    if header:
        return EventDiff(None, len(expected_events), len(actual_events), None, None, header, "the events are equal")
    return EventDiff(
        None,
        len(expected_events),
        len(actual_events),
        None,
        None,
        [],
        f"same JSON content, different bytes (first differing byte at index {_first_byte(expected, actual)})",
    )


# --------------------------------------------------------------------------- the checker


class Auditor:
    """Steps commands and checks their outcomes into an :class:`AuditReport`.

    The driver calls :meth:`step` (command present) or :meth:`fold_recorded` (command missing)
    for every seq in order, and :meth:`finish` at the end. ``snapshots`` maps a seq to a
    callable returning the snapshot bytes to check there.
    """

    def __init__(
        self,
        report: AuditReport,
        state: State | None = None,
        chain: Chain | None = None,
        snapshots: dict[int, Callable[[], bytes]] | None = None,
        progress: Progress | None = None,
        full_sweep: bool = False,
    ) -> None:
        self.report = report
        self.engine = Engine(state, full_sweep=full_sweep)
        self.chain = chain
        self.snapshots = snapshots or {}
        self.progress = progress
        self._chain_fallback = 0

    @property
    def next_seq(self) -> int:
        return self.engine.state.last_seq + 1

    def _chain(self, seq: int, recorded: bytes | None, actual: bytes | None) -> None:
        chain = self.chain
        if chain is None or chain.seq != seq - 1:
            return
        data = recorded if recorded is not None else actual
        if data is None:
            return
        if recorded is None:
            self._chain_fallback += 1
        chain.update(seq, data)

    def _after(self, seq: int) -> None:
        self.report.last_seq = seq
        load = self.snapshots.get(seq)
        if load is not None:
            try:
                restored = snapshot.digest(snapshot.restore(load()))
            except Exception as err:  # a damaged snapshot file is a finding, not a crash
                self.report.snapshots_checked.append((seq, False))
                self.report.add(seq, "snapshot", f"snapshot {seq}", f"snapshot {seq} does not restore: {err}")
            else:
                ok = restored == snapshot.digest(self.engine.state)
                self.report.snapshots_checked.append((seq, ok))
                if not ok:
                    self.report.add(
                        seq, "snapshot", f"snapshot {seq}", f"snapshot {seq} does not restore the replayed state"
                    )
        if self.progress is not None and not seq & 1023:
            self.progress(seq)

    def step(self, seq: int, raw: bytes, where: str, recorded: bytes | None, recorded_where: str) -> bool:
        """Replay the command of ``seq`` and compare; return False when the replay must stop."""
        report = self.report
        try:
            command = decode_command_json(raw)
        except BadCommand as bad:
            hint = ""
            try:
                decode_outcome_json(raw)
                hint = f" (it is an outcome: are {COMMANDS_FILE} and {EVENTS_FILE} swapped?)"
            except Exception:  # not an outcome either: the plain message says it all
                pass
            report.add(seq, "bad_command", where, f"{where}: command of seq {seq} does not decode: {bad}{hint}")
            return self.fold_recorded(seq, recorded, recorded_where, "its command does not decode")
        try:
            outcome = self.engine.step(command)
        except InvariantBroken as err:
            report.add(seq, "halt", where, f"seq {seq}: the engine halts on this command: {err}")
            report.stopped = f"the engine halted at seq {seq} ({where})"
            return False
        except Exception as err:  # an engine bug: report it where it happens, do not crash the audit
            report.add(seq, "halt", where, f"seq {seq}: the engine raised {err!r} on this command")
            report.stopped = f"the engine raised an exception at seq {seq} ({where})"
            return False
        actual = encode_outcome_json(outcome)
        report.commands += 1
        if recorded is None:
            report.add(seq, "missing_outcome", recorded_where, f"seq {seq}: no readable recorded outcome")
        elif recorded == actual:
            report.matched += 1
        else:
            report.divergences += 1
            diff = describe_difference(recorded, actual)
            if report.first_divergence is None:
                report.first_divergence = Divergence(seq, raw, where, recorded, recorded_where, actual, diff)
            at = "" if diff.index is None else f" (first differing event: events[{diff.index}])"
            report.add(seq, "divergence", recorded_where, f"seq {seq}: recorded outcome differs from the replay{at}")
        self._chain(seq, recorded, actual)
        self._after(seq)
        return True

    def fold_recorded(self, seq: int, recorded: bytes | None, recorded_where: str, why: str) -> bool:
        """No usable command for ``seq``: fold its recorded outcome (unverified) to go on."""
        report = self.report
        if recorded is None:
            report.stopped = (
                f"seq {seq}: {why} and no outcome is recorded for it, so the state after it is unknown; "
                f"the replay stops at seq {seq - 1}"
            )
            return False
        try:
            fold(self.engine.state, decode_outcome_json(recorded))
        except Exception as err:  # a bogus outcome can break the fold anywhere
            report.stopped = f"seq {seq}: {why} and its recorded outcome cannot be folded ({err!r}); replay stops"
            return False
        report.add(
            seq, "missing_command", recorded_where, f"seq {seq}: {why}; its recorded outcome was folded unverified"
        )
        self._chain(seq, recorded, None)
        self._after(seq)
        return True

    def chain_prefix(self, seq: int, recorded: bytes | None) -> None:
        """Chain a recorded outcome before the replay's start (snapshot prefix)."""
        if self.chain is None or self.chain.seq != seq - 1:
            return
        if recorded is None:
            self.report.chain_note = f"no chain: the outcome of seq {seq} (before the replay's start) is unreadable"
            self.chain = None
            return
        self.chain.update(seq, recorded)

    def finish(self, started: float) -> AuditReport:
        report = self.report
        report.digest = snapshot.digest(self.engine.state)
        if self.chain is not None:
            report.chain_seq = self.chain.seq
            report.chain_hex = self.chain.hex
            if self._chain_fallback:
                report.chain_note = (
                    f"{self._chain_fallback} seq(s) had no readable recorded outcome: the chain uses the replayed "
                    f"outcome there"
                )
        if self.progress is not None:
            self.progress(report.last_seq)
        report.elapsed = time.perf_counter() - started
        return report
