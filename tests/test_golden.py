"""Golden scenarios: commands in, events out, compared outcome by outcome.

Each scenario in ``tests/golden/`` is three files:

* ``<name>.commands.jsonl`` — hand-written commands, one JSON object per line;
* ``<name>.md`` — what the scenario exercises and, for every interesting outcome, why the
  expected events are right, with the arithmetic;
* ``<name>.events.jsonl`` — the expected outcomes, one per command line, exactly as
  :func:`events.codec.encode_outcome_json` writes them.

The test steps every command through ``decode_command_json`` and ``Engine.step`` and compares the
encoded outcome with the expected line, byte for byte; a mismatch is shown as a diff of the
pretty-printed JSON of that outcome, with the command that produced it. It then folds the
expected outcomes into a fresh state (``engine.core.step.fold``, what projections and replay do)
and checks the state digest equals the engine's: the journal alone rebuilds the state.

Updating: ``MARGINBOOK_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py`` rewrites
every ``<name>.events.jsonl`` from the engine's current output (and the test then passes). **A
golden change is a change of behaviour and must be reviewed**: read the diff of the events files
line by line against the arithmetic in ``<name>.md``, fix the ``.md`` if the new numbers are
right, and never accept a regenerated file you have not checked by hand.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest

from engine.core.snapshot import digest
from engine.core.state import State
from engine.core.step import Engine, fold
from events.codec import decode_command_json, decode_outcome_json, encode_outcome_json

GOLDEN_DIR = Path(__file__).parent / "golden"
SCENARIOS = sorted(p.name.removesuffix(".commands.jsonl") for p in GOLDEN_DIR.glob("*.commands.jsonl"))
UPDATE = os.environ.get("MARGINBOOK_UPDATE_GOLDEN") == "1"
#: How many mismatching outcomes a failure shows in full.
SHOWN = 5


def _lines(path: Path) -> list[bytes]:
    """Non-blank lines, stripped."""
    return [raw.strip() for raw in path.read_bytes().splitlines() if raw.strip()]


def _pretty(raw: bytes | None) -> list[str]:
    if raw is None:
        return ["<no outcome>"]
    return json.dumps(json.loads(raw), indent=2).splitlines()


def _report(name: str, commands: list[bytes], expected: list[bytes], actual: list[bytes]) -> str:
    parts: list[str] = []
    bad = [
        i
        for i in range(max(len(expected), len(actual)))
        if (expected[i] if i < len(expected) else None) != (actual[i] if i < len(actual) else None)
    ]
    if len(expected) != len(actual):
        parts.append(f"{name}: {len(actual)} outcomes produced, {len(expected)} expected")
    parts.append(f"{name}: {len(bad)} outcome(s) differ; first at command line {bad[0] + 1}")
    for i in bad[:SHOWN]:
        want = expected[i] if i < len(expected) else None
        got = actual[i] if i < len(actual) else None
        command = commands[i].decode() if i < len(commands) else "<no command>"
        diff = difflib.unified_diff(_pretty(want), _pretty(got), "expected", "actual", lineterm="", n=2)
        parts.append(f"\n--- command line {i + 1}: {command}\n" + "\n".join(diff))
    if len(bad) > SHOWN:
        parts.append(f"\n... and {len(bad) - SHOWN} more")
    parts.append(
        "\nIf the change is intended: MARGINBOOK_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py,"
        f" then review tests/golden/{name}.events.jsonl against tests/golden/{name}.md by hand."
    )
    return "\n".join(parts)


def test_every_scenario_is_complete() -> None:
    assert {"margin_call", "liquidation", "interest"} <= set(SCENARIOS)
    for name in SCENARIOS:
        assert (GOLDEN_DIR / f"{name}.md").is_file(), f"{name}.md explains the scenario"
        assert UPDATE or (GOLDEN_DIR / f"{name}.events.jsonl").is_file(), f"{name}.events.jsonl is missing"


@pytest.mark.parametrize("name", SCENARIOS)
def test_golden_scenario(name: str) -> None:
    commands = _lines(GOLDEN_DIR / f"{name}.commands.jsonl")
    engine = Engine()
    actual = [encode_outcome_json(engine.step(decode_command_json(raw))) for raw in commands]
    expected_path = GOLDEN_DIR / f"{name}.events.jsonl"
    if UPDATE:
        expected_path.write_bytes(b"".join(raw + b"\n" for raw in actual))
    expected = _lines(expected_path)
    if expected != actual:
        pytest.fail(_report(name, commands, expected, actual), pytrace=False)
    # The journal alone rebuilds the engine's state (what projections and replay rely on).
    folded = State()
    for raw in expected:
        fold(folded, decode_outcome_json(raw))
    assert digest(folded) == digest(engine.state)
