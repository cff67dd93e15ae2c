"""Margin calls, partial liquidation by tier and full liquidation of a cross spot-margin account.

After every command, each account whose balances changed (and, on a mark price, each debtor
holding or owing the instrument's base currency) is evaluated on mark prices:

* ``MR ≤ 3`` and no margin call standing → ``margin_call_raised``; back above 3 (or no debt)
  → ``margin_call_cleared`` (so a later fall raises a new call, spec §4.5);
* ``MR ≤ 1`` → ``liquidation_started``; the account's risk-increasing orders — its cross orders,
  which borrow when they fill — are canceled (reason ``liquidation``); then, spec §4.5:

  **Partial (tier ≥ 2).** While some debt sits in tier ``t ≥ 2`` of its margin instrument's table
  (the largest such debt by value first), it is reduced to the limit of tier ``t − 1``: first from
  the account's own cash in that currency, then — for valuation-currency debt — by selling
  holdings (in balance order) sized at the mark net of the taker and liquidation fees, or — for a
  base-currency debt — by buying it back; the proceeds repay the debt. After each step the margin
  ratio is re-evaluated: above 100 % the liquidation ends there (``liquidation_finished``) and the
  account keeps the rest. A step that reduces nothing, or no debt above tier 1, leads to:

  **Full**: the remaining cash orders and isolated opening orders are canceled too — the funds
  they froze in the account are needed — then,
  in this order:

  2. debts in non-valuation currencies (shorts) are bought back with market IOC orders sized so
     that, net of the taker fee, they cover the debt (borrowing the valuation currency
     automatically if its cash is short);
  3. each such debt is repaid from its own currency, interest first;
  4. all remaining non-valuation holdings are sold with market IOC orders (whole lots);
  5. the valuation-currency debt is repaid from cash;
  6. if debt is still left, the account's remaining holdings (unsold for want of liquidity, or
     below one lot) pass to the insurance fund of their currency (``assets_taken_over``) and
     the fund pays the remaining debt (``insurance_fund_covered`` then ``repaid``) as far as
     its balance goes and the platform writes off the rest (``debt_written_off``,
     ``engine.core.shortfall``);
  7. ``liquidation_finished``. What is left in the account stays the user's.

Liquidation orders are exempt from the 95 % sell guard and pay the ordinary taker fee; on
instruments with a ``liqFee`` each liquidation fill also pays that rate, in the currency received,
to the insurance fund (``liquidation_fee_charged``).
"""

from __future__ import annotations

from decimal import Decimal

from engine.core.context import Ctx
from engine.core.funds import emit_repay
from engine.core.margin import LIQUIDATION_RATIO, WARNING_RATIO, display_ratio, spot_tier_limit
from engine.core.money import ONE, div_up
from engine.core.orders import cancel_all, lot_ceil, lot_floor, submit_liquidation_order
from engine.core.position_liquidation import evaluate_isolated
from engine.core.risk import account_risk, debt_terms, price_of, zone_bands
from engine.core.shortfall import cover_shortfall
from engine.core.state import Account
from engine.core.swap_liquidation import close_at_market, evaluate_perps, step_down
from events import journal as ev


def evaluate(ctx: Ctx, acct: str) -> None:
    """Evaluate the cross account, then each of its isolated positions
    (``engine.core.position_liquidation``)."""
    account = ctx.state.accounts[acct]
    ctx.state.stuck.pop(acct, None)  # this evaluation says again whether it is stuck
    evaluate_cross(ctx, acct)
    if account.isolated:
        for inst_id in list(account.isolated):
            evaluate_isolated(ctx, account, inst_id)
    if account.perps:
        evaluate_perps(ctx, account)


def evaluate_cross(ctx: Ctx, acct: str, retry: bool = True) -> None:
    """Raise or clear the margin call, or liquidate, for one cross account (see module doc);
    then re-register the account's zone bands with the risk watch."""
    state = ctx.state
    account = state.accounts[acct]
    if not account.at_risk():
        state.watch.forget(acct)
        if account.margin_call:
            ctx.emit(ev.MarginCallCleared(acct=acct, mgnRatio=None))
        return
    risk = account_risk(state, account)
    ratio = risk.ratio
    if ratio is None:
        return
    if ratio <= WARNING_RATIO:
        if not account.margin_call:
            ctx.emit(ev.MarginCallRaised(acct=acct, mgnRatio=_shown(ratio)))
        if ratio <= LIQUIDATION_RATIO:
            if not retry or acct in ctx.liquidated:  # the book could not absorb it: a later command
                state.watch.forget(acct)
                state.stuck[acct] = None
                return
            ctx.liquidated.add(acct)
            liquidate(ctx, account, ratio)
            if account.margin_call and not account.at_risk():
                ctx.emit(ev.MarginCallCleared(acct=acct, mgnRatio=None))
            if account.at_risk():
                evaluate_cross(ctx, acct, retry=False)
            else:
                state.watch.forget(acct)
            return
    elif account.margin_call:
        ctx.emit(ev.MarginCallCleared(acct=acct, mgnRatio=_shown(ratio)))
    state.watch.watch(acct, zone_bands(risk))


def _shown(ratio: Decimal) -> Decimal:
    shown = display_ratio(ratio)
    assert shown is not None
    return shown


# Payments use free cash only (``Account.free``): orders the liquidation does not cancel keep
# what they froze.
def _owed(account: Account, ccy: str) -> Decimal:
    bal = account.balances[ccy]
    return bal.liab + bal.interest


def _tiered_debt(ctx: Ctx, account: Account) -> tuple[str, Decimal] | None:
    """The largest debt (by value) above tier 1, and the limit of the tier below its own."""
    state = ctx.state
    best: tuple[Decimal, str, Decimal] | None = None
    for ccy, bal in account.balances.items():
        debt = bal.liab + bal.interest
        price = price_of(state, ccy)
        if not debt or price is None or ccy not in state.margin_inst:  # untiered: full liquidation pays it
            continue
        inst, row, _ = debt_terms(state, account, ccy, debt)
        if row.tier < 2:
            continue
        value = debt * price
        if best is None or value > best[0]:
            best = (value, ccy, spot_tier_limit(inst.tiers[row.tier - 2], ccy == inst.base))
    return None if best is None else (best[1], best[2])


def _reduce_debt(ctx: Ctx, account: Account, ccy: str, target: Decimal) -> bool:
    """One partial-liquidation step: bring the ``ccy`` debt down to ``target``. True if the debt
    went down at all."""
    state = ctx.state
    acct = account.acct
    before = _owed(account, ccy)
    places = state.assets[ccy].decimals
    if ccy == state.valuation_ccy:
        for held, bal in list(account.balances.items()):
            need = _owed(account, ccy) - target - account.free(ccy)
            if need <= 0:
                break
            price = price_of(state, held)
            if held == ccy or price is None or bal.liab or bal.interest:
                continue
            inst = state.instruments[state.price_inst[held]]
            net = ONE - inst.taker_fee - inst.liq_fee
            qty = min(lot_ceil(inst, div_up(need, price * net, places)), lot_floor(inst, bal.cash - bal.frozen))
            if qty > 0:
                submit_liquidation_order(ctx, account, inst, False, qty)
    elif ccy in state.price_inst:
        need = _owed(account, ccy) - target - account.free(ccy)
        if need > 0:
            inst = state.instruments[state.price_inst[ccy]]
            gross = div_up(need, ONE - inst.taker_fee - inst.liq_fee, places)
            submit_liquidation_order(ctx, account, inst, True, lot_ceil(inst, gross))
    pay = min(account.free(ccy), _owed(account, ccy) - target)
    if pay > 0:
        emit_repay(ctx, acct, ccy, pay, "liquidation")
    return _owed(account, ccy) < before


def _partial(ctx: Ctx, account: Account) -> bool:
    """Step cross perpetuals in tier ≥ 3, then tiered debts, down until the ratio is above
    100 %; True if that happened."""
    for _ in range(64):
        stepped = False
        for key, pos in list(account.perps.items()):
            if pos.mgn_mode == "cross" and step_down(ctx, account, ctx.state.instruments[key[0]], pos):
                stepped = True
                break
        if not stepped:
            found = _tiered_debt(ctx, account)
            if found is None or not _reduce_debt(ctx, account, *found):
                return False
        ratio = account_risk(ctx.state, account).ratio
        if ratio is None or ratio > LIQUIDATION_RATIO:
            return True
    return False


def liquidate(ctx: Ctx, account: Account, ratio: Decimal) -> None:
    state = ctx.state
    valuation = state.valuation_ccy
    acct = account.acct
    ctx.emit(ev.LiquidationStarted(acct=acct, mgnRatio=_shown(ratio)))
    cancel_all(ctx, account, "liquidation", ("cross",))  # the risk-increasing ones: they borrow
    if _partial(ctx, account):
        ctx.emit(ev.LiquidationFinished(acct=acct))
        ctx.touch(acct)
        return
    # a full liquidation needs what cash orders and isolated opening orders froze in the account
    cancel_all(ctx, account, "liquidation", ("cash", "isolated"))
    for key, pos in list(account.perps.items()):
        if pos.mgn_mode == "cross" and key in account.perps:
            close_at_market(ctx, account, state.instruments[key[0]], pos)
    others = [ccy for ccy in account.balances if ccy != valuation and ccy in state.price_inst]
    for ccy in others:
        short = _owed(account, ccy) - account.free(ccy)
        if short > 0:
            inst = state.instruments[state.price_inst[ccy]]
            gross = div_up(short, ONE - inst.taker_fee - inst.liq_fee, state.assets[ccy].decimals)
            submit_liquidation_order(ctx, account, inst, True, lot_ceil(inst, gross))
        pay = min(account.free(ccy), _owed(account, ccy))
        if pay > 0:
            emit_repay(ctx, acct, ccy, pay, "liquidation")
    for ccy in others:
        inst = state.instruments[state.price_inst[ccy]]
        qty = lot_floor(inst, account.free(ccy))
        if qty > 0:
            submit_liquidation_order(ctx, account, inst, False, qty)
    if valuation is not None and valuation in account.balances:
        pay = min(account.free(valuation), _owed(account, valuation))
        if pay > 0:
            emit_repay(ctx, acct, valuation, pay, "liquidation")
    if account.has_debt():
        for ccy in list(account.balances):
            if ccy != valuation and _owed(account, ccy) < account.free(ccy):
                ctx.emit(ev.AssetsTakenOver(acct=acct, ccy=ccy, amt=account.free(ccy) - _owed(account, ccy)))
        for ccy in list(account.balances):
            remaining = _owed(account, ccy) - account.free(ccy)
            cover_shortfall(ctx, acct, ccy, remaining)
            owed = _owed(account, ccy)
            if owed > 0:
                emit_repay(ctx, acct, ccy, owed, "liquidation")
    ctx.emit(ev.LiquidationFinished(acct=acct))
    ctx.touch(acct)
