"""Margin calls and liquidation of isolated perpetual positions (spec §4.5, decision 5).

Each isolated perpetual is evaluated on its instrument's mark whenever its account is
evaluated (§1.4(g): ``MR = (M + upl) / (|q|·ctVal·P·(m + f))``):

* ``MR ≤ 3`` → ``margin_call_raised`` once (``instId``/``posSide``); above 3 → cleared;
* ``MR ≤ 1`` → ``liquidation_started``; the account's orders on that position are canceled;
  **partial** while the size sits in tier ``t ≥ 3``: close down to tier ``t − 1``'s ``maxSz``
  with a market IOC order and re-evaluate (E21: 30,000 contracts in tier 4 → 25,000 → 2,500);
  above 100 % the liquidation ends; otherwise **full**: the whole position at market. A margin
  that ends below zero is a shortfall (``engine.core.shortfall``); what is left returns to the
  account when the size reaches zero. Contracts the book cannot absorb stay open and are
  retried at the next evaluation.

Cross perpetuals count in the account's cross ratio (``engine.core.risk``) and are closed at
market by the cross liquidation (``engine.core.liquidation``), tier step-down first.
"""

from __future__ import annotations

from decimal import Decimal

from engine.core import position_risk
from engine.core.context import Ctx
from engine.core.margin import LIQUIDATION_RATIO
from engine.core.orders import submit_market_order
from engine.core.position_zone import judge, shown, unchanged
from engine.core.state import Account, Instrument, PerpPosition
from engine.core.watch import watch_key
from events import journal as ev

#: Perpetual positions in this tier or above are reduced one tier at a time (§4.5).
PARTIAL_FROM_TIER = 3


def evaluate_perps(ctx: Ctx, account: Account) -> None:
    for key in list(account.perps):
        pos = account.perps.get(key)
        if pos is not None and pos.mgn_mode == "isolated":
            evaluate_perp(ctx, account, key[0], key[1])


def evaluate_perp(ctx: Ctx, account: Account, inst_id: str, pos_side: str) -> None:
    state = ctx.state
    wkey = watch_key(account.acct, inst_id, pos_side)
    pos = account.perps.get((inst_id, pos_side))
    mark = state.marks.get(inst_id)
    if pos is None or mark is None or pos.qty == 0:
        state.pos_watch.forget(wkey)
        return
    inputs = (pos.qty, pos.avg_px, pos.margin, mark)
    if unchanged(ctx, wkey, pos, inputs):  # same inputs, band still watched: same zone
        return
    inst = state.instruments[inst_id]
    figures = position_risk.perpetual(inst, pos, mark)
    scope = {"instId": inst_id, "posSide": pos_side}
    liquidated = judge(
        ctx, account, wkey, pos, inputs, figures, scope, lambda ratio: liquidate_perp(ctx, account, inst, pos, ratio)
    )
    if liquidated and (inst_id, pos_side) in account.perps:
        evaluate_perp(ctx, account, inst_id, pos_side)


def step_down(ctx: Ctx, account: Account, inst: Instrument, pos: PerpPosition) -> bool:
    """Close down to the tier below when the size sits in tier ≥ 3; True if the size fell."""
    row = position_risk.perp_tier(inst, pos)
    if row.tier < PARTIAL_FROM_TIER:
        return False
    target = inst.tiers[row.tier - 2].max_sz
    assert target is not None
    size = abs(pos.qty) - target
    if size <= 0:
        return False
    filled = submit_market_order(ctx, account, inst, pos.qty < 0, size, "liquidation", pos.mgn_mode, True, pos.pos_side)
    return filled > 0


def close_at_market(ctx: Ctx, account: Account, inst: Instrument, pos: PerpPosition) -> None:
    if pos.qty:
        submit_market_order(
            ctx, account, inst, pos.qty < 0, abs(pos.qty), "liquidation", pos.mgn_mode, True, pos.pos_side
        )


def liquidate_perp(ctx: Ctx, account: Account, inst: Instrument, pos: PerpPosition, ratio: Decimal) -> None:
    acct = account.acct
    key = (inst.inst_id, pos.pos_side)
    scope = {"instId": inst.inst_id, "posSide": pos.pos_side}
    ctx.emit(ev.LiquidationStarted(acct=acct, mgnRatio=shown(ratio), **scope))
    for order in sorted(account.orders.values(), key=lambda o: o.order_id):
        if order.inst_id == inst.inst_id and order.pos_side == pos.pos_side:
            ctx.emit(
                ev.OrderCanceled(
                    orderId=order.order_id, acct=acct, instId=order.inst_id, clOrdId=order.cl_ord_id,
                    remaining=order.remaining, reason="liquidation",
                )
            )  # fmt: skip
    for _ in range(64):
        if not step_down(ctx, account, inst, pos) or key not in account.perps:
            break
        after = position_risk.perpetual(inst, pos, ctx.state.marks[inst.inst_id]).ratio
        if after is None or after > LIQUIDATION_RATIO:
            ctx.emit(ev.LiquidationFinished(acct=acct, **scope))
            ctx.touch(acct)
            return
    if key in account.perps:
        close_at_market(ctx, account, inst, pos)
    ctx.emit(ev.LiquidationFinished(acct=acct, **scope))
    ctx.touch(acct)
