"""The engine's single door: ``Engine.step(command) -> Outcome``.

Pure and deterministic: no clock (time is the command's ``ts``), no randomness, no I/O. Each
command gets the next dense sequence number; ids of orders and trades come from counters in the
state. A command whose ``id`` was seen before is answered ``command_rejected`` /
``duplicate_id`` and changes nothing; every other command's ``id`` is recorded, whether it was
applied or refused (a retry gets the same answer: refused as a duplicate).

Order of work inside one step: the size rule (``engine.core.limits``: a command too large to
journal is refused ``too_large``), then the wallet routing (``engine.core.wallets.route``: a
SWAP command of an account in ``futures_wallet`` mode applies to its futures wallet), then
dispatch to the handler (which emits, and so applies, events);
a business refusal becomes ``order_rejected`` (orders) or ``command_rejected`` — so does a
command whose numbers are too large for exact arithmetic, if nothing was decided yet
(``out_of_range``); then every
account the command touched is evaluated for margin calls and liquidation, in order of touch —
an evaluation that changes other accounts (a liquidation's counterparties) queues them too, until
no account awaits evaluation; then the sweep (``engine.core.sweep``: a mark's candidates in
debtor order, each evaluated with everything it touches before the next; the full-sweep
engine: every exposed account) — numbers too large for exact arithmetic there halt (the
command's events are already applied); then invariants are checked. A broken invariant raises
:class:`InvariantBroken`: the caller must stop without committing the outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from engine.core import closing, funds, isolated, limits, orders, reference, swap, sweep, wallets
from engine.core.context import Ctx, InvariantBroken, Rejected
from engine.core.evolve import apply
from engine.core.liquidation import evaluate
from engine.core.money import use_engine_context
from engine.core.state import State
from events import commands as cmd
from events import journal as ev


def _adjust_margin(ctx: Ctx, command: cmd.AdjustMargin) -> None:
    """Isolated margin add / reduce (spot: ``engine.core.isolated``; SWAP: ``engine.core.swap``)."""
    state = ctx.state
    inst = state.instruments.get(command.instId)
    if inst is None:
        raise Rejected("unknown_instrument", f"instId {command.instId} is not listed")
    account = state.accounts.get(command.acct)
    if inst.inst_type == "SPOT":
        pos = account.isolated.get(inst.inst_id) if account is not None else None
        if account is None or pos is None:
            raise Rejected("no_position", f"{command.acct} has no isolated position on {command.instId}")
        if command.ccy is not None and command.ccy != pos.mgn_ccy:
            raise Rejected("margin_ccy_fixed", f"the position is margined in {pos.mgn_ccy}, not {command.ccy}")
        amt = funds.amount(state, pos.mgn_ccy, command.amt)
        isolated.adjust_margin(ctx, account, inst, pos, command.action, amt)
        return
    if account is None:
        raise Rejected("no_position", f"{command.acct} has no isolated position on {command.instId}")
    swap.adjust_margin(ctx, account, inst, command)


def _mark_price(ctx: Ctx, command: cmd.MarkPrice) -> None:
    """Set the mark, then queue for the sweep the accounts it may move across a threshold
    (``engine.core.sweep.mark_candidates``, in debtor order)."""
    state = ctx.state
    first = command.instId not in state.marks
    reference.mark_price(ctx, command)
    inst = state.instruments[command.instId]
    ctx.sweep = sweep.mark_candidates(state, inst, state.marks[command.instId], first)


_HANDLERS: Final[dict[type, Callable[[Ctx, Any], None]]] = {
    cmd.ListAsset: reference.list_asset,
    cmd.ListInstrument: reference.list_instrument,
    cmd.SetInterestRate: reference.set_interest_rate,
    cmd.Deposit: funds.deposit,
    cmd.Withdraw: funds.withdraw,
    cmd.SetLeverage: reference.set_leverage,
    cmd.SetPositionMode: swap.set_position_mode,
    cmd.PlaceOrder: orders.place_order,
    cmd.CancelOrder: orders.cancel_order,
    cmd.Borrow: funds.borrow,
    cmd.Repay: funds.repay,
    cmd.AdjustMargin: _adjust_margin,
    cmd.ClosePosition: closing.close_position,
    cmd.MarkPrice: _mark_price,
    cmd.AccrueInterest: funds.accrue_interest,
    cmd.SettleFunding: swap.settle_funding,
    cmd.SetAccountMode: wallets.set_account_mode,
    cmd.Transfer: wallets.transfer,
}
#: The full-sweep engine's handlers: a mark only sets the price (every account is swept after).
_FULL_SWEEP_HANDLERS: Final[dict[type, Callable[[Ctx, Any], None]]] = {
    **_HANDLERS,
    cmd.MarkPrice: reference.mark_price,
}
#: A full sweep that still emits after this many rounds is an evaluation that never settles.
MAX_SWEEPS = 8


def record(state: State, outcome: ev.Outcome) -> None:
    """Book-keeping of one outcome shared by the engine and every fold of the journal:
    the sequence number advances and the command id is remembered (unless refused as a
    duplicate, whose id is already known)."""
    if outcome.seq != state.last_seq + 1:
        raise InvariantBroken(f"sequence gap: expected {state.last_seq + 1}, got {outcome.seq}")
    state.last_seq = outcome.seq
    if outcome.id is not None:
        state.seen_ids.add(outcome.id)


def fold(state: State, outcome: ev.Outcome) -> None:
    """Fold one journal record (projections, replay-from-events)."""
    for event in outcome.events:
        apply(state, event)
    record(state, outcome)


class Engine:
    """Holds the state and steps commands through it. Not thread-safe by design.

    ``full_sweep=True`` is the slow reference of the same rules (``engine.core.sweep``): after
    every command every exposed account is evaluated, no risk watch or cached evaluation is
    used. Its journal must be byte-identical to the incremental engine's (the differential
    oracle, ``marginbook replay --full-sweep``)."""

    __slots__ = ("full_sweep", "state")

    def __init__(self, state: State | None = None, *, full_sweep: bool = False) -> None:
        use_engine_context()
        self.state = state if state is not None else State()
        self.full_sweep = full_sweep

    def step(self, command: cmd.Command) -> ev.Outcome:
        state = self.state
        seq = state.last_seq + 1
        full = self.full_sweep
        ctx = Ctx(state, seq, command.ts, full)
        if command.id is not None and command.id in state.seen_ids:
            tag = str(command.__struct_config__.tag)
            ctx.emit(
                ev.CommandRejected(command=tag, reason="duplicate_id", message=f"id {command.id} was already applied")
            )
        else:
            try:
                limits.check_size(command)
                command = wallets.route(state, command)  # SWAP commands to a futures wallet
                (_FULL_SWEEP_HANDLERS if full else _HANDLERS)[type(command)](ctx, command)
            except Rejected as refusal:
                if ctx.events:
                    raise InvariantBroken(f"refusal after events were emitted: {refusal}") from refusal
                ctx.emit(_refusal(command, refusal))
            except ArithmeticError as err:
                # Numbers too large for exact arithmetic (50 digits): refused if nothing was
                # decided yet; past that point the state is half-changed, so the engine halts.
                if ctx.events:
                    raise InvariantBroken(f"seq {seq}: inexact arithmetic after events were emitted") from err
                too_big = Rejected("out_of_range", "amounts or prices too large for exact arithmetic")
                ctx.emit(_refusal(command, too_big))
            _drain(ctx)
            if full:
                _sweep_everyone(ctx, command)
            else:
                for acct in ctx.sweep:
                    ctx.touch(acct)
                    _drain(ctx)
            _check_invariants(ctx, command)
        outcome = ev.Outcome(seq=seq, ts=command.ts, id=command.id, events=ctx.events)
        record(state, outcome)
        return outcome


def _drain(ctx: Ctx) -> None:
    """Evaluate every account awaiting evaluation, oldest first, until none is left. The
    command's events are applied by then: numbers too large for exact arithmetic here (a
    36-digit mark times a balance, found by the fuzz program) halt the engine like any inexact
    step past the first event — never a bare ``decimal`` exception, which would crash-loop a
    restarted shard."""
    acct = ctx.next_touched()
    while acct is not None:
        try:
            evaluate(ctx, acct)
        except ArithmeticError as err:
            raise InvariantBroken(
                f"seq {ctx.seq}: inexact arithmetic evaluating {acct} after the command's events ({err!r})"
            ) from err
        acct = ctx.next_touched()


def _sweep_everyone(ctx: Ctx, command: cmd.Command) -> None:
    """The full sweep (``engine.core.sweep.everyone``), repeated until a round emits nothing."""
    state = ctx.state
    marked = None
    if isinstance(command, cmd.MarkPrice) and ctx.events and isinstance(ctx.events[0], ev.MarkPriceSet):
        marked = state.instruments[command.instId]
    for _ in range(MAX_SWEEPS):
        emitted = len(ctx.events)
        for acct in sweep.everyone(state, marked):
            ctx.touch(acct)
            _drain(ctx)
        if len(ctx.events) == emitted:
            return
    raise InvariantBroken(f"seq {ctx.seq}: the full sweep still emits after {MAX_SWEEPS} rounds")


def _refusal(command: cmd.Command, refusal: Rejected) -> ev.Event:
    if isinstance(command, cmd.PlaceOrder):
        return ev.OrderRejected(
            acct=command.acct,
            instId=command.instId,
            clOrdId=command.clOrdId,
            reason=refusal.reason,
            message=refusal.message,
        )
    return ev.CommandRejected(
        command=str(command.__struct_config__.tag), reason=refusal.reason, message=refusal.message
    )


def _check_invariants(ctx: Ctx, command: cmd.Command) -> None:
    state = ctx.state
    if isinstance(command, cmd.PlaceOrder) and command.instId in state.instruments:
        try:
            state.instruments[command.instId].book.check()
        except RuntimeError as err:
            raise InvariantBroken(str(err)) from err
    for acct in ctx.changed:
        for ccy, bal in state.accounts[acct].balances.items():
            if bal.cash < 0 or bal.frozen < 0 or bal.frozen > bal.cash or bal.liab < 0 or bal.interest < 0:
                raise InvariantBroken(
                    f"seq {ctx.seq}: {acct} {ccy} cash {bal.cash} frozen {bal.frozen}"
                    f" liab {bal.liab} interest {bal.interest}"
                )
