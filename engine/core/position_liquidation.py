"""Margin calls and liquidation of isolated spot-margin positions, apart from cross (spec §4.5).

Each isolated position is evaluated on its own instrument's mark whenever its account is
evaluated (after every command that touched it, and on a mark that leaves the position's
zone band — ``state.pos_watch``):

* ``MR ≤ 3`` and no call standing → ``margin_call_raised`` (with ``instId``/``posSide``);
  back above 3 → ``margin_call_cleared``;
* ``MR ≤ 1`` → ``liquidation_started``; the position's orders are canceled (opening orders add
  risk, closing orders hold its assets); then

  **Partial (debt in tier ≥ 2).** The debt is brought down to the limit of the tier below —
  a long sells base at the book (sized from the walk, net of taker and liquidation fees), a
  short buys back base — and the proceeds repay it; the ratio is re-evaluated after each step,
  and above 100 % the liquidation ends (E21: 2,500,000 USDT in tier 3 → 2,000,000 → 1,000,000).

  **Full** otherwise, or when a step reduces nothing: the position is closed with its own
  assets and margin (``engine.core.closing.close_long``/``close_short``, liquidation fee
  added); holdings the book cannot absorb pass to the insurance fund (``assets_taken_over``);
  a debt still unpaid is covered (``engine.core.shortfall``: fund, then written off);
  ``liquidation_finished``, and the position's remaining holdings and margin return to the
  account (``position_released``).

Liquidation orders are market IOC orders exempt from the 95 % guard; each fill pays the
instrument's ``liqFee`` from the position to the insurance fund.
"""

from __future__ import annotations

from decimal import Decimal

from engine.core import position_risk
from engine.core.closing import close_long, close_short, long_close_size, size_for_proceeds
from engine.core.context import Ctx
from engine.core.isolated import (
    POS_SIDE,
    alive,
    cancel_position_orders,
    repay_from_holdings,
    settle_if_repaid,
    use_margin,
)
from engine.core.margin import LIQUIDATION_RATIO, spot_tier_limit
from engine.core.money import ONE, ZERO, div_up
from engine.core.orders import lot_ceil, lot_floor, submit_market_order, walk_book
from engine.core.position_zone import judge, shown, unchanged
from engine.core.shortfall import cover_shortfall
from engine.core.state import Account, Instrument, IsoPosition
from engine.core.watch import watch_key
from events import journal as ev


def evaluate_isolated(ctx: Ctx, account: Account, inst_id: str) -> None:
    state = ctx.state
    key = watch_key(account.acct, inst_id, POS_SIDE)
    pos = account.isolated.get(inst_id)
    mark = state.marks.get(inst_id)
    if pos is None or mark is None:
        state.pos_watch.forget(key)
        return
    inputs = (pos.base, pos.quote, pos.margin, pos.liab, pos.interest, mark)
    if unchanged(ctx, key, pos, inputs):  # same inputs, band still watched: same zone
        return
    inst = state.instruments[inst_id]
    figures = position_risk.isolated_spot(inst, pos, mark)
    scope = {"instId": inst_id, "posSide": POS_SIDE}
    liquidated = judge(
        ctx, account, key, pos, inputs, figures, scope, lambda ratio: liquidate_isolated(ctx, account, inst, pos, ratio)
    )
    if liquidated and inst_id in account.isolated:
        evaluate_isolated(ctx, account, inst_id)


def _step_down(ctx: Ctx, account: Account, inst: Instrument, pos: IsoPosition) -> bool:
    """One partial step: debt in tier t ≥ 2 down to tier t−1's limit. True if it went down."""
    row = position_risk.iso_tier(inst, pos)
    if row.tier < 2:
        return False
    target = spot_tier_limit(inst.tiers[row.tier - 2], not pos.long)
    before = position_risk.iso_debt(pos)
    fee_rate = inst.taker_fee + inst.liq_fee
    if pos.long:
        need = before - target - pos.quote
        if need > 0:
            size = lot_ceil(inst, size_for_proceeds(walk_book(inst, False, account.acct, None), need, ONE - fee_rate))
            size = lot_floor(inst, min(size, pos.base))
            if size > 0:
                submit_market_order(ctx, account, inst, False, size, "liquidation", td_mode="isolated", reduce=True)
                if not alive(account, inst, pos):
                    return True
    else:
        need = before - target - pos.base
        if need > 0:
            places = ctx.state.assets[inst.base].decimals
            gross = lot_ceil(inst, div_up(need, ONE - fee_rate, places))
            affordable = lot_floor(inst, _affordable(inst, account, pos))
            size = min(gross, affordable)
            if size > 0:
                submit_market_order(ctx, account, inst, True, size, "liquidation", td_mode="isolated", reduce=True)
                if not alive(account, inst, pos):
                    return True
    repay_from_holdings(ctx, account, inst, pos, "liquidation")
    return position_risk.iso_debt(pos) < before


def _affordable(inst: Instrument, account: Account, pos: IsoPosition) -> Decimal:
    from engine.core.closing import size_for_cost

    return size_for_cost(walk_book(inst, True, account.acct, None), pos.quote)


def liquidate_isolated(ctx: Ctx, account: Account, inst: Instrument, pos: IsoPosition, ratio: Decimal) -> None:
    state = ctx.state
    acct = account.acct
    scope = {"instId": inst.inst_id, "posSide": POS_SIDE}
    ctx.emit(ev.LiquidationStarted(acct=acct, mgnRatio=shown(ratio), **scope))
    cancel_position_orders(ctx, account, inst.inst_id, "liquidation", closing_only=False)
    for _ in range(64):
        if not _step_down(ctx, account, inst, pos):
            break
        if not alive(account, inst, pos):
            break
        after = position_risk.isolated_spot(inst, pos, state.marks[inst.inst_id]).ratio
        if after is None or after > LIQUIDATION_RATIO:
            ctx.emit(ev.LiquidationFinished(acct=acct, **scope))
            settle_if_repaid(ctx, account, inst, pos)
            ctx.touch(acct)
            return
    fee_rate = inst.taker_fee + inst.liq_fee
    if not alive(account, inst, pos):
        pass
    elif pos.long:
        close_long(ctx, account, inst, pos, long_close_size(account, inst, pos, fee_rate), "liquidation")
    else:
        close_short(ctx, account, inst, pos, fee_rate, "liquidation")
    debt = position_risk.iso_debt(pos) if alive(account, inst, pos) else ZERO
    if debt > 0:
        liab = inst.quote if pos.long else inst.base
        other = inst.base if pos.long else inst.quote
        use_margin(ctx, account, inst, pos, other, pos.margin)
        held = pos.base if pos.long else pos.quote
        if held > 0:
            ctx.emit(ev.AssetsTakenOver(acct=acct, ccy=other, amt=held, instId=inst.inst_id))
        owned = pos.quote if pos.long else pos.base
        cover_shortfall(ctx, acct, liab, debt - owned, inst.inst_id, POS_SIDE)
        repay_from_holdings(ctx, account, inst, pos, "liquidation")
    ctx.emit(ev.LiquidationFinished(acct=acct, **scope))
    settle_if_repaid(ctx, account, inst, pos)
    ctx.touch(acct)
