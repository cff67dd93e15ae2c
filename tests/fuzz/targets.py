"""The fuzz targets: ``decode`` (raw bytes through the codec, then the engine) and ``engine``
(a grammar-built log stepped three ways). Each takes one input and returns normally, or raises:
any exception is a finding (:class:`Finding` for a broken check, ``InvariantBroken`` when the
engine would halt, anything else a crash).

``decode`` — the input is JSON lines and, as a whole, one msgpack record:

* only :class:`~events.codec.BadCommand` may escape a decoder, naming a ``$…`` path;
* a decoded command re-encodes (JSON and msgpack) and decodes to itself, byte-stable;
* the decoded commands step through a fresh engine, and every outcome encodes and decodes
  back to itself.

``engine`` — the input drives :mod:`grammar` (a prefix of JSON lines, then fuzzer-driven
commands); lines the codec refuses are skipped, as ``marginbook run`` does. Then:

* run 1 steps every command: no exception (``InvariantBroken`` included);
* run 2, a fresh engine on the same commands: byte-identical ``encode_outcome_json`` journal
  and equal ``snapshot.digest``;
* run 3: the state snapshotted by run 1 at the input's cut point is restored (its encoding and
  digest must be the original's) and steps the tail: identical journal and digest;
* the journal, through the JSON codec, is folded by the audit's conservation checker
  (``replay.conservation.check_outcomes``, a recount after every seq): every currency
  conserved, and the folded state's digest is the engine's.
"""

from __future__ import annotations

from collections.abc import Callable

from grammar import build_lines

from engine.core import snapshot
from engine.core.state import State
from engine.core.step import Engine
from events import commands as cmd
from events.codec import (
    BadCommand,
    decode_command_json,
    decode_command_msgpack,
    decode_outcome_json,
    encode_command_json,
    encode_command_msgpack,
    encode_outcome_json,
)
from replay.conservation import check_outcomes

#: Commands the decode target steps at most (a long input is mostly refused lines anyway).
MAX_DECODE_STEPS = 400


class Finding(AssertionError):
    """A check of a fuzz target failed (the message says which and where)."""


def _decoded(decode: Callable[[bytes], cmd.Command], raw: bytes) -> cmd.Command | None:
    try:
        return decode(raw)
    except BadCommand as err:
        if not err.field.startswith("$") or not err.message:
            raise Finding(f"BadCommand without a $ path or message: {err.field!r} {err.message!r}") from err
        return None


def _round_trips(command: cmd.Command) -> None:
    as_json = encode_command_json(command)
    again = decode_command_json(as_json)
    if again != command or encode_command_json(again) != as_json:
        raise Finding(f"JSON round trip changed the command: {command!r} -> {as_json!r} -> {again!r}")
    as_msgpack = encode_command_msgpack(command)
    again = decode_command_msgpack(as_msgpack)
    if again != command or encode_command_msgpack(again) != as_msgpack:
        raise Finding(f"msgpack round trip changed the command: {command!r} -> {again!r}")


def decode_target(data: bytes) -> None:
    commands: list[cmd.Command] = []
    for raw in data.split(b"\n"):
        command = _decoded(decode_command_json, raw)
        if command is not None:
            _round_trips(command)
            commands.append(command)
    packed = _decoded(decode_command_msgpack, data)
    if packed is not None:
        _round_trips(packed)
        commands.append(packed)
    engine = Engine()
    for command in commands[:MAX_DECODE_STEPS]:
        outcome = engine.step(command)
        as_json = encode_outcome_json(outcome)
        if encode_outcome_json(decode_outcome_json(as_json)) != as_json:
            raise Finding(f"seq {outcome.seq}: the outcome does not round-trip through JSON: {as_json!r}")


def engine_commands(data: bytes) -> tuple[list[cmd.Command], int]:
    """The commands one structured input gives (lines the codec refuses left out) and the cut."""
    lines, cut = build_lines(data)
    commands = [c for c in (_decoded(decode_command_json, raw) for raw in lines) if c is not None]
    return commands, cut * len(commands) // 255


def engine_target(data: bytes) -> None:
    commands, cut = engine_commands(data)
    first = Engine()
    journal: list[bytes] = []
    blob = b""
    for index, command in enumerate(commands):
        if index == cut:
            blob = snapshot.encode(first.state)
        journal.append(encode_outcome_json(first.step(command)))
    if cut == len(commands):
        blob = snapshot.encode(first.state)
    digest = snapshot.digest(first.state)

    second = Engine()
    again = [encode_outcome_json(second.step(command)) for command in commands]
    _same("a second run", journal, again, 0)
    if snapshot.digest(second.state) != digest:
        raise Finding("a second run on the same commands ends in a different state digest")

    restored = snapshot.restore(blob)
    if snapshot.encode(restored) != blob:
        raise Finding(f"restore(encode(state)) at seq {restored.last_seq} encodes differently")
    resumed = Engine(restored)
    tail = [encode_outcome_json(resumed.step(command)) for command in commands[cut:]]
    _same(f"the run restored from the snapshot at seq {cut}", journal[cut:], tail, cut)
    if snapshot.digest(resumed.state) != digest:
        raise Finding(f"the run restored from the snapshot at seq {cut} ends in a different state digest")

    folded = State()
    report = check_outcomes(folded, (decode_outcome_json(raw) for raw in journal), "fuzz", full_every=1)
    if not report.ok:
        lines = [f"{ln.ccy}: first off at seq {ln.first_seq} by {ln.first_difference}" for ln in report.lines.values()]
        raise Finding("money not conserved: " + "; ".join(lines + [m for _, m in report.recount_errors]))
    if snapshot.digest(folded) != digest:
        raise Finding("folding the journal does not rebuild the engine's state (digests differ)")


def _same(what: str, expected: list[bytes], got: list[bytes], offset: int) -> None:
    if expected == got:
        return
    at = next((i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b), len(got))
    raise Finding(f"{what} diverges at seq {offset + at + 1}:\n  expected {expected[at]!r}\n  got      {got[at]!r}")


TARGETS: dict[str, Callable[[bytes], None]] = {"decode": decode_target, "engine": engine_target}
