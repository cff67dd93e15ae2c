"""Size limits of a command: the rule that keeps every outcome of one command bounded.

Every field of every command is bounded by the wire contract (``events.commands``: names and
ids at most 64 characters, decimals at most 37), except one: the tier table of
``list_instrument``, a list of any length. A command the engine accepts must yield an outcome
that any log can hold, so the engine refuses, as a normal business rejection with a sequence
number (``command_rejected``, reason ``too_large``, nothing changes), a ``list_instrument`` with
more than :data:`MAX_TIER_ROWS` tier rows.

The rule is part of the engine rules (``engine.core.RULES_VERSION``): it is checked in
``Engine.step`` — the one door every stepper uses (the Kafka loop, the embedded engine, replay,
audit, export) — on the decoded command only, so a replay of either log gives the same outcome.

:data:`MAX_COMMAND_BYTES` is the gateway's limit on a command line as written: ``marginbook
submit`` refuses longer lines before sending anything (naming ``FILE:LINE``; ``--max-command-bytes``
changes it). It is not a rule of the fold — a command that reaches the engine anyway (produced
past the gateway, or run on the embedded log) meets the tier rule above, identically on both
logs. A command that passes the tier rule encodes, in the engine's canonical JSON, to at most
about 34 KB (``tests/test_limits.py`` builds the worst case of every command type), so the
gateway never refuses a command the engine would accept: only padding and oversize tables.
"""

from __future__ import annotations

from typing import Final

from engine.core.context import Rejected
from events import commands as cmd

#: Tier rows a ``list_instrument`` may carry (OKX lists at most a few dozen per instrument).
MAX_TIER_ROWS: Final = 100
#: Bytes of one command line at the gateway (``marginbook submit``): 64 KiB.
MAX_COMMAND_BYTES: Final = 65_536


def check_size(command: cmd.Command) -> None:
    """Raise :class:`Rejected` (``too_large``) if ``command`` breaks the size rule."""
    if type(command) is cmd.ListInstrument and len(command.tiers) > MAX_TIER_ROWS:
        raise Rejected("too_large", f"tiers has {len(command.tiers)} rows; an instrument lists at most {MAX_TIER_ROWS}")
