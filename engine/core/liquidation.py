"""Margin calls and full liquidation of a cross spot-margin account.

After every command, each account whose balances changed (and, on a mark price, each debtor
holding or owing the instrument's base currency) is evaluated on mark prices:

* ``MR ≤ 3`` and no margin call standing → ``margin_call_raised``; back above 3 (or no debt)
  → ``margin_call_cleared`` (so a later fall raises a new call, spec §4.5);
* ``MR ≤ 1`` → full liquidation, in this order:

  1. ``liquidation_started``; every open order of the account is canceled (reason
     ``liquidation``);
  2. debts in non-valuation currencies (shorts) are bought back with market IOC orders sized so
     that, net of the taker fee, they cover the debt (borrowing the valuation currency
     automatically if its cash is short);
  3. each such debt is repaid from its own currency, interest first;
  4. all remaining non-valuation holdings are sold with market IOC orders (whole lots);
  5. the valuation-currency debt is repaid from cash;
  6. if debt is still left, the account's remaining holdings (unsold for want of liquidity, or
     below one lot) pass to the insurance fund of their currency (``assets_taken_over``) and
     the fund pays the remaining debt (``insurance_fund_covered`` then ``repaid``); a fund may
     go negative — that balance is the platform's uncovered loss;
  7. ``liquidation_finished``. What is left in the account stays the user's.

Liquidation orders are exempt from the 95 % sell guard and pay the ordinary taker fee.
"""

from __future__ import annotations

from decimal import Decimal

from engine.core.context import Ctx
from engine.core.funds import emit_repay
from engine.core.margin import LIQUIDATION_RATIO, WARNING_RATIO, display_ratio
from engine.core.money import ONE, div_up
from engine.core.orders import cancel_all, lot_ceil, lot_floor, submit_liquidation_order
from engine.core.risk import account_risk, zone_bands
from engine.core.state import Account
from events import journal as ev


def evaluate(ctx: Ctx, acct: str) -> None:
    """Raise or clear the margin call, or liquidate, for one account (see module doc); then
    re-register the account's zone bands with the risk watch."""
    state = ctx.state
    account = state.accounts[acct]
    if not account.has_debt():
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
            liquidate(ctx, account, ratio)
            if account.margin_call and not account.has_debt():
                ctx.emit(ev.MarginCallCleared(acct=acct, mgnRatio=None))
            if account.has_debt():
                evaluate(ctx, acct)
            else:
                state.watch.forget(acct)
            return
    elif account.margin_call:
        ctx.emit(ev.MarginCallCleared(acct=acct, mgnRatio=_shown(ratio)))
    if ctx.mark_ccy is not None and ctx.mark_ccy in account.balances:
        state.watch.watch(acct, zone_bands(risk))
    else:
        state.watch.mark_dirty(acct)


def _shown(ratio: Decimal) -> Decimal:
    shown = display_ratio(ratio)
    assert shown is not None
    return shown


def _owed(account: Account, ccy: str) -> Decimal:
    bal = account.balances[ccy]
    return bal.liab + bal.interest


def liquidate(ctx: Ctx, account: Account, ratio: Decimal) -> None:
    state = ctx.state
    valuation = state.valuation_ccy
    acct = account.acct
    ctx.emit(ev.LiquidationStarted(acct=acct, mgnRatio=_shown(ratio)))
    cancel_all(ctx, account, "liquidation")
    others = [ccy for ccy in account.balances if ccy != valuation and ccy in state.price_inst]
    for ccy in others:
        bal = account.balances[ccy]
        short = _owed(account, ccy) - bal.cash
        if short > 0:
            inst = state.instruments[state.price_inst[ccy]]
            gross = div_up(short, ONE - inst.taker_fee, state.assets[ccy].decimals)
            submit_liquidation_order(ctx, account, inst, True, lot_ceil(inst, gross))
        pay = min(bal.cash, _owed(account, ccy))
        if pay > 0:
            emit_repay(ctx, acct, ccy, pay, "liquidation")
    for ccy in others:
        inst = state.instruments[state.price_inst[ccy]]
        qty = lot_floor(inst, account.balances[ccy].cash)
        if qty > 0:
            submit_liquidation_order(ctx, account, inst, False, qty)
    if valuation is not None and valuation in account.balances:
        pay = min(account.balances[valuation].cash, _owed(account, valuation))
        if pay > 0:
            emit_repay(ctx, acct, valuation, pay, "liquidation")
    if account.has_debt():
        for ccy, bal in list(account.balances.items()):
            if ccy != valuation and bal.cash > 0 and _owed(account, ccy) < bal.cash:
                ctx.emit(ev.AssetsTakenOver(acct=acct, ccy=ccy, amt=bal.cash - _owed(account, ccy)))
        for ccy in list(account.balances):
            remaining = _owed(account, ccy) - account.balances[ccy].cash
            if remaining > 0:
                ctx.emit(ev.InsuranceFundCovered(acct=acct, ccy=ccy, amt=remaining))
            owed = _owed(account, ccy)
            if owed > 0:
                emit_repay(ctx, acct, ccy, owed, "liquidation")
    ctx.emit(ev.LiquidationFinished(acct=acct))
    ctx.touch(acct)
