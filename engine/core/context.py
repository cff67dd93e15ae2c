"""Per-command decision context: emit events (applied at once) and refuse commands.

Handlers read the state, decide, and change it only through :meth:`Ctx.emit`, which appends the
event to the command's outcome and folds it into the state immediately, so later decisions in
the same command (the next fill, the next liquidation step) see its effect.
"""

from __future__ import annotations

from collections.abc import Sequence

from mypy_extensions import mypyc_attr

from engine.core.evolve import apply
from engine.core.state import State
from events import journal as ev


class Rejected(Exception):
    """A business refusal: becomes a rejection event with a stable ``reason`` code.

    Handlers raise it only before their first :meth:`Ctx.emit`, so a refused command changes
    nothing. ``message`` names the field and what was wrong.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@mypyc_attr(native_class=False)  # mypyc cannot compile a native subclass of RuntimeError
class InvariantBroken(RuntimeError):
    """A broken invariant: the engine halts without committing the command's outcome."""


class Ctx:
    __slots__ = ("changed", "events", "exhaustive", "liquidated", "seq", "state", "sweep", "touched", "ts")

    def __init__(self, state: State, seq: int, ts: int, exhaustive: bool = False) -> None:
        self.state = state
        self.seq = seq
        self.ts = ts
        self.events: list[ev.Event] = []
        #: Accounts whose balances changed and that still await a risk evaluation (a queue:
        #: evaluating one account may change others, which are queued again).
        self.touched: dict[str, None] = {}
        #: Every account touched by the command (invariant checks).
        self.changed: dict[str, None] = {}
        #: Accounts and positions liquidated by this command: liquidated at most once per
        #: command (what the book could not absorb is retried at a later command).
        self.liquidated: set[str] = set()
        #: Accounts to evaluate after the command's own touches, one at a time in this order,
        #: each followed by everything its evaluation touched (a mark's candidates, debtor order).
        self.sweep: Sequence[str] = ()
        #: The full-sweep engine (``Engine(full_sweep=True)``): no evaluation is skipped as
        #: unchanged (``engine.core.position_zone.unchanged``).
        self.exhaustive = exhaustive

    def emit(self, event: ev.Event) -> None:
        self.events.append(event)
        apply(self.state, event)

    def touch(self, acct: str) -> None:
        self.touched[acct] = None
        self.changed[acct] = None

    def next_touched(self) -> str | None:
        """Pop the oldest account awaiting evaluation."""
        for acct in self.touched:
            del self.touched[acct]
            return acct
        return None
