"""``close_position`` for cross spot-margin positions: market close all (seed 000, seed 002 §3).

A cross position on a SPOT instrument is the account's net ledger on it (``PositionLedger``):
long (holds base, owes quote) or short (holds quote, owes base). Debt is pooled per currency
(``docs/decisions.md``), so closing a position pays the account's debt in its liability currency.

Long: sell, at market, the **available-to-close** base — ``min(holding, D·(1+b)/P)`` (§1.9,
buffer ``b`` by decision 8), or the position's assets when nothing is owed — then repay the quote
debt from the free quote cash, interest first. If the sale does not cover the debt (a loss), the
rest stays as debt ("you may not be able to pay off your liability"), and the position stays.
Short: buy back the base debt at market, sized so that net of the taker fee it covers the debt
(the fill may borrow quote, as any cross fill), and repay it; then repay quote debt from quote
cash. A margin sell obeys the 95 % guard (decision 7): if walking the book for the size gives a
VWAP below 95 % of the best bid, the close is refused (``sell_price_guard``) and nothing happens.

When no debt is left in the position's liability currency the position is closed
(``position_closed``); what remains (base or quote) is plain cash of the account.
"""

from __future__ import annotations

from decimal import Decimal

from engine.core import margin
from engine.core.context import Ctx, Rejected
from engine.core.funds import emit_repay
from engine.core.money import ONE, ZERO, div_up
from engine.core.orders import lot_ceil, lot_floor, submit_market_order, walk_book
from engine.core.risk import close_buffer, price_of
from engine.core.state import Account, Instrument
from events import journal as ev
from events.commands import ClosePosition


def _owed(account: Account, ccy: str) -> Decimal:
    bal = account.balances.get(ccy)
    return bal.liab + bal.interest if bal else ZERO


def _free(account: Account, ccy: str) -> Decimal:
    bal = account.balances.get(ccy)
    return bal.cash - bal.frozen if bal else ZERO


def close_position(ctx: Ctx, cmd: ClosePosition) -> None:
    state = ctx.state
    inst = state.instruments.get(cmd.instId)
    if inst is None:
        raise Rejected("unknown_instrument", f"instId {cmd.instId} is not listed")
    if cmd.mgnMode != "cross" or inst.inst_type != "SPOT":
        raise Rejected("unsupported", "only cross SPOT positions can be closed yet")
    account = state.accounts.get(cmd.acct)
    ledger = account.positions.get(cmd.instId) if account else None
    if account is None or ledger is None or ledger.qty == 0:
        raise Rejected("no_position", f"{cmd.acct} has no cross position on {cmd.instId}")
    liab_ccy = inst.quote if ledger.qty > 0 else inst.base
    if ledger.qty > 0:
        _close_long(ctx, account, inst, ledger.assets)
    else:
        _close_short(ctx, account, inst)
    if not _owed(account, liab_ccy) and cmd.instId in account.positions:
        ctx.emit(ev.PositionClosed(acct=cmd.acct, instId=cmd.instId))
    ctx.touch(cmd.acct)


def _close_long(ctx: Ctx, account: Account, inst: Instrument, assets: Decimal) -> None:
    state = ctx.state
    debt = _owed(account, inst.quote)
    holding = _free(account, inst.base)
    price = price_of(state, inst.base)
    if debt and price is not None:
        buffer = close_buffer(state, account, inst.quote, debt)
        size = margin.cross_available_to_close(holding, debt, buffer, price, long=True)
    else:
        size = min(holding, assets)
    size = lot_floor(inst, size)
    if size <= 0:
        raise Rejected("nothing_to_close", f"no {inst.base} available to close the position")
    filled, notional = margin.book_walk(walk_book(inst, False, account.acct, None), size)
    best_bid = inst.book.best_bid_ticks()
    if best_bid is not None and filled and not margin.sell_guard_passes(filled, notional, best_bid * inst.tick):
        raise Rejected("sell_price_guard", f"closing {size} {inst.base} would sell below 95% of the best bid")
    submit_market_order(ctx, account, inst, False, size, "close")
    _repay(ctx, account, inst.quote)


def _close_short(ctx: Ctx, account: Account, inst: Instrument) -> None:
    state = ctx.state
    debt = _owed(account, inst.base)
    need = debt - _free(account, inst.base)
    if need > 0:
        gross = div_up(need, ONE - inst.taker_fee, state.assets[inst.base].decimals)
        submit_market_order(ctx, account, inst, True, lot_ceil(inst, gross), "close")
    elif not debt:
        raise Rejected("nothing_to_close", f"no {inst.base} debt to close")
    _repay(ctx, account, inst.base)
    _repay(ctx, account, inst.quote)


def _repay(ctx: Ctx, account: Account, ccy: str) -> None:
    pay = min(_free(account, ccy), _owed(account, ccy))
    if pay > 0:
        emit_repay(ctx, account.acct, ccy, pay, "close")
