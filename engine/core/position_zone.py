"""The margin-call and liquidation zones of one isolated position (spot or perpetual).

Spec §4 decisions 5 and 6, on the position's own ratio: ``MR ≤ 3`` raises a margin call once
(``instId``/``posSide`` scoped), back above 3 clears it; ``MR ≤ 1`` liquidates — at most once
per command (``Ctx.liquidated``: what the book could not absorb is retried by a later command).
Outside liquidation the position's zone band is registered with ``State.pos_watch`` and the
inputs it was computed from are remembered (``seen``), so an evaluation with the same inputs
is skipped (same zone, same band) — but only while that band is still registered
(:func:`unchanged`). A band leaves the watch when a mark leaves it (``RiskWatch.crossed``, which
also drops a zero-width band at a mark exactly on a threshold, so the *same* mark again pops
it), or with :meth:`RiskWatch.forget` (no ratio, liquidation, no position or mark); after that
the next evaluation is a full one and registers a band again, so the cache can never lose a
band. Every path of :func:`judge` either registers the band and sets ``seen`` or drops both.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from engine.core.context import Ctx
from engine.core.margin import LIQUIDATION_RATIO, WARNING_RATIO, display_ratio
from engine.core.position_risk import PositionFigures
from engine.core.state import Account, IsoPosition, PerpPosition
from events import journal as ev


def shown(ratio: Decimal) -> Decimal:
    """A ratio as events carry it (8 places, rounded down)."""
    value = display_ratio(ratio)
    assert value is not None
    return value


def unchanged(ctx: Ctx, wkey: str, pos: IsoPosition | PerpPosition, inputs: tuple[Decimal, ...]) -> bool:
    """May the evaluation of ``pos`` be skipped? Only when nothing it depends on moved since the
    last full evaluation (``seen``) **and** the band that evaluation registered is still in the
    watch (a mark that left it, even at the same price, popped it: the position must be judged
    and banded again). The full-sweep engine (``Ctx.exhaustive``) never skips."""
    return pos.seen == inputs and not ctx.exhaustive and ctx.state.pos_watch.holds(wkey)


def judge(
    ctx: Ctx,
    account: Account,
    wkey: str,
    pos: IsoPosition | PerpPosition,
    inputs: tuple[Decimal, ...],
    figures: PositionFigures,
    scope: dict[str, str],
    liquidate: Callable[[Decimal], None],
) -> bool:
    """Apply the zones to one position; True when it was liquidated (the caller re-evaluates)."""
    state = ctx.state
    ratio = figures.ratio
    pos.seen = None  # set again below only together with a registered band
    if ratio is None or figures.band is None:
        state.pos_watch.forget(wkey)
        return False
    if ratio <= WARNING_RATIO:
        if not pos.margin_call:
            ctx.emit(ev.MarginCallRaised(acct=account.acct, mgnRatio=shown(ratio), **scope))
        if ratio <= LIQUIDATION_RATIO:
            state.pos_watch.forget(wkey)
            if wkey in ctx.liquidated:  # the book could not absorb it: a later command retries
                state.stuck[account.acct] = None
                return False
            ctx.liquidated.add(wkey)
            liquidate(ratio)
            return True
    elif pos.margin_call:
        ctx.emit(ev.MarginCallCleared(acct=account.acct, mgnRatio=shown(ratio), **scope))
    state.pos_watch.watch(wkey, [("@" + scope["instId"], *figures.band)])
    pos.seen = inputs
    return False
