"""``close_position``: market close all of cross, isolated and perpetual positions (seed 000,
seed 001 §3, seed 002 §3; docs/decisions.md 21b, 33b, 33d).

A cross position on a SPOT instrument is the account's margin position on it
(``PositionLedger``, ``engine.core.cross_position``): long (holds base, owes quote) or short
(holds quote, owes base), with a margin currency. Debt is pooled per currency, so closing a
position pays the account's debt in its liability currency. Every closing fill repays from its
proceeds (decision 33a); ``close_position`` then repays from the free cash too.

**Matched** (margin = position currency). Long: sell, at market, the **available-to-close**
base — ``min(holding, D·(1+b)/P)`` (§1.9, buffer ``b`` by decision 8), or the position's assets
when nothing is owed — then repay the quote debt from the free quote cash, interest first. If
the sale does not cover the debt (a loss), the rest stays as the position's liability ("you may
not be able to pay off your liability"), and the position stays. Short: buy back the base debt
at market, sized so that net of the taker fee it covers the debt (the fill may borrow quote, as
any cross fill), and repay it; then repay quote debt from quote cash.
**Mismatched** (long + quote margin, short + base margin; seed 002 §3.2): the **whole**
position is sold (a short spends all its quote assets on base), then the account's cash in the
liability currency pays what is still owed; the position is closed.
A margin sell obeys the 95 % guard (decision 7): if walking the book for the size gives a VWAP
below 95 % of the best bid, the close is refused (``sell_price_guard``) and nothing happens.
``position_closed`` is written when the position is gone or owes nothing.

**Isolated spot positions** close with their own assets only (spec §1.1), by seed 001 §3's
table: the position's pending closing orders are canceled (their assets are needed), then —
margin in the position currency (buy + base, sell + quote) — a **full repayment** of the debt:
a long sells just enough base to repay its debt net of the taker fee — the size found by walking
the book; base margin is sold too when the assets do not suffice (E3: 6 ETH held, 5,000 USDT
owed, ETH at 2,000 → sell 2.5, keep 3.5) — and a short buys back its base debt grossed up by the
fee, paying with its quote and then its quote margin; margin in the liability currency (buy +
quote, sell + base) — a long **sells all its base assets**, a short **spends all its quote
assets** on base, and the margin pays what is still owed. The debt is repaid from the proceeds,
and when nothing is owed the position's holdings and margin return to the account
(``position_released``). What cannot be repaid stays as the position's debt. Liquidation uses
the "full repayment" routines for every position, with the liquidation fee added to the fee
rate and no sell guard.

**Perpetuals**: ``close_position`` sends a market order for the whole position (reduce).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from engine.core import cross_position, margin
from engine.core.context import Ctx, Rejected
from engine.core.funds import emit_repay
from engine.core.isolated import (
    alive,
    cancel_position_orders,
    liab_ccy,
    repay_from_holdings,
    settle_if_repaid,
    use_margin,
)
from engine.core.money import DOWN, NEAR, ONE, UP, ZERO, div_up
from engine.core.orders import lot_ceil, lot_floor, sell_guard_refusal, submit_market_order, walk_book
from engine.core.position_risk import iso_debt
from engine.core.risk import close_buffer, price_of
from engine.core.state import Account, Instrument, IsoPosition
from events import journal as ev
from events.commands import ClosePosition


def _owed(account: Account, ccy: str) -> Decimal:
    bal = account.balances.get(ccy)
    return bal.liab + bal.interest if bal else ZERO


def close_position(ctx: Ctx, cmd: ClosePosition) -> None:
    state = ctx.state
    inst = state.instruments.get(cmd.instId)
    if inst is None:
        raise Rejected("unknown_instrument", f"instId {cmd.instId} is not listed")
    account = state.accounts.get(cmd.acct)
    if account is not None and inst.inst_type == "SWAP":
        from engine.core.swap import close_perp

        close_perp(ctx, account, inst, cmd.mgnMode, cmd.posSide)
        return
    if cmd.mgnMode == "isolated":
        if account is None or inst.inst_id not in account.isolated:
            raise Rejected("no_position", f"{cmd.acct} has no isolated position on {cmd.instId}")
        close_isolated(ctx, account, inst, account.isolated[inst.inst_id])
        return
    ledger = account.positions.get(cmd.instId) if account else None
    if account is None or ledger is None:
        raise Rejected("no_position", f"{cmd.acct} has no cross position on {cmd.instId}")
    owed_ccy = inst.quote if ledger.long else inst.base
    if not ledger.qty and not _owed(account, owed_ccy):
        raise Rejected("no_position", f"{cmd.acct} has no cross position on {cmd.instId}")
    whole = not cross_position.matched(inst, ledger)
    if ledger.long:
        _close_long(ctx, account, inst, ledger.qty, whole)
    else:
        _close_short(ctx, account, inst, ledger.assets, whole)
    if cmd.instId not in account.positions or not _owed(account, owed_ccy):
        ctx.emit(ev.PositionClosed(acct=cmd.acct, instId=cmd.instId))
    ctx.touch(cmd.acct)


def _close_long(ctx: Ctx, account: Account, inst: Instrument, assets: Decimal, whole: bool) -> None:
    """Matched (base margin): sell the available-to-close. Mismatched (``whole``, quote margin):
    sell the whole position, then the account's quote pays what is still owed."""
    state = ctx.state
    debt = _owed(account, inst.quote)
    holding = account.free(inst.base)
    price = price_of(state, inst.base)
    if whole or not debt or price is None:
        size = min(holding, assets)
    else:
        buffer = close_buffer(state, account, inst.quote, debt)
        size = margin.cross_available_to_close(holding, debt, buffer, price, long=True)
    size = lot_floor(inst, size)
    if size <= 0:
        if whole and debt and assets <= 0:  # the position was sold: the account pays the rest
            _repay(ctx, account, inst.quote)
            return
        raise Rejected("nothing_to_close", f"no {inst.base} available to close the position")
    filled, notional = margin.book_walk(walk_book(inst, False, account.acct, None), size)
    best_bid = inst.book.best_bid_ticks()
    if best_bid is not None and filled and not margin.sell_guard_passes(filled, notional, best_bid * inst.tick):
        raise Rejected("sell_price_guard", f"closing {size} {inst.base} would sell below 95% of the best bid")
    submit_market_order(ctx, account, inst, False, size, "close")
    _repay(ctx, account, inst.quote)


def _close_short(ctx: Ctx, account: Account, inst: Instrument, assets: Decimal, whole: bool) -> None:
    """Matched (quote margin): buy back the base debt net of the fee. Mismatched (``whole``,
    base margin): spend the whole position's quote on base, then the account's base pays what
    is still owed."""
    state = ctx.state
    debt = _owed(account, inst.base)
    if whole:
        budget = min(assets, account.free(inst.quote))
        size = lot_floor(inst, size_for_cost(walk_book(inst, True, account.acct, None), budget))
        if size > 0:
            submit_market_order(ctx, account, inst, True, size, "close")
        elif not debt:
            raise Rejected("nothing_to_close", f"no {inst.quote} available to close the position")
        _repay(ctx, account, inst.base)
        _repay(ctx, account, inst.quote)
        return
    need = debt - account.free(inst.base)
    if need > 0:
        size = lot_ceil(inst, div_up(need, ONE - inst.taker_fee, state.assets[inst.base].decimals))
        if price_of(state, inst.quote) is None:  # the fill could borrow the quote: it needs a mark
            _, cost = margin.book_walk(walk_book(inst, True, account.acct, None), size)
            if cost > account.free(inst.quote):
                raise Rejected("no_mark_price", f"closing needs to borrow {inst.quote}, which has no mark price")
        submit_market_order(ctx, account, inst, True, size, "close")
    elif not debt:
        raise Rejected("nothing_to_close", f"no {inst.base} debt to close")
    _repay(ctx, account, inst.base)
    _repay(ctx, account, inst.quote)


def _repay(ctx: Ctx, account: Account, ccy: str) -> None:
    pay = min(account.free(ccy), _owed(account, ccy))
    if pay > 0:
        emit_repay(ctx, account.acct, ccy, pay, "close")


# --- isolated spot ----------------------------------------------------------------------------


def close_isolated(ctx: Ctx, account: Account, inst: Instrument, pos: IsoPosition) -> None:
    """``close_position`` of an isolated spot position by seed 001 §3's table: a buy position
    with base margin makes a full repayment of the quote debt (sells what repays it), with
    quote margin it sells all base assets; a sell position with base margin sells all quote
    assets (buys base with them), with quote margin it makes a full repayment of the base debt
    (buys it back grossed up by the fee)."""
    sell_all = pos.mgn_ccy == liab_ccy(inst, pos)  # margin in the liability currency
    if pos.long:
        size = lot_floor(inst, pos.base) if sell_all else long_close_size(account, inst, pos, inst.taker_fee)
    else:
        size = ZERO
    if size > 0:
        refusal = sell_guard_refusal(inst, account.acct, size)
        if refusal is not None:
            raise refusal
    cancel_position_orders(ctx, account, inst.inst_id, "close_position", closing_only=True)
    if pos.long:
        close_long(ctx, account, inst, pos, size, "close")
    elif sell_all:
        _spend_all_quote(ctx, account, inst, pos)
    else:
        close_short(ctx, account, inst, pos, inst.taker_fee, "close")
    settle_if_repaid(ctx, account, inst, pos)
    ctx.touch(account.acct)


def long_close_size(account: Account, inst: Instrument, pos: IsoPosition, fee_rate: Decimal) -> Decimal:
    """Lots of base (assets, then base margin) whose sale at the book repays the debt net of
    ``fee_rate``; all there is if that is not enough."""
    need = iso_debt(pos) - pos.quote - (pos.margin if pos.mgn_ccy == inst.quote else ZERO)
    available = pos.base + (pos.margin if pos.mgn_ccy == inst.base else ZERO)
    if need <= 0:
        return ZERO
    size = lot_ceil(inst, size_for_proceeds(walk_book(inst, False, account.acct, None), need, ONE - fee_rate))
    return lot_floor(inst, min(size, available))


def close_long(ctx: Ctx, account: Account, inst: Instrument, pos: IsoPosition, size: Decimal, purpose: str) -> None:
    """Sell ``size`` base (using base margin for what the assets lack), then repay the quote debt
    from the proceeds and, if still owed, from quote margin."""
    if size > 0:
        use_margin(ctx, account, inst, pos, inst.base, size - pos.base)
        submit_market_order(ctx, account, inst, False, size, purpose, td_mode="isolated", reduce=True)
        if not alive(account, inst, pos):  # the fills repaid everything and released it
            return
    use_margin(ctx, account, inst, pos, inst.quote, iso_debt(pos) - pos.quote)
    repay_from_holdings(ctx, account, inst, pos, purpose)


def close_short(
    ctx: Ctx, account: Account, inst: Instrument, pos: IsoPosition, fee_rate: Decimal, purpose: str
) -> None:
    """Buy back the base debt grossed up by ``fee_rate`` with the quote (then quote margin) the
    position holds; repay; base margin pays what is still owed."""
    need = iso_debt(pos) - pos.base - (pos.margin if pos.mgn_ccy == inst.base else ZERO)
    if need > 0:
        places = ctx.state.assets[inst.base].decimals
        gross = lot_ceil(inst, div_up(need, ONE - fee_rate, places))
        spendable = pos.quote + (pos.margin if pos.mgn_ccy == inst.quote else ZERO)
        affordable = lot_floor(inst, size_for_cost(walk_book(inst, True, account.acct, None), spendable))
        size = min(gross, affordable)
        if size > 0:
            _, cost = margin.book_walk(walk_book(inst, True, account.acct, None), size)
            use_margin(ctx, account, inst, pos, inst.quote, cost - pos.quote)
            submit_market_order(ctx, account, inst, True, size, purpose, td_mode="isolated", reduce=True)
            if not alive(account, inst, pos):
                return
    use_margin(ctx, account, inst, pos, inst.base, iso_debt(pos) - pos.base)
    repay_from_holdings(ctx, account, inst, pos, purpose)


def _spend_all_quote(ctx: Ctx, account: Account, inst: Instrument, pos: IsoPosition) -> None:
    """A base-margined short's close: buy base with all the position's quote assets (what the
    book sells for them, whole lots), repay; the base margin pays what is still owed."""
    size = lot_floor(inst, size_for_cost(walk_book(inst, True, account.acct, None), pos.quote))
    if size > 0:
        submit_market_order(ctx, account, inst, True, size, "close", td_mode="isolated", reduce=True)
        if not alive(account, inst, pos):
            return
    use_margin(ctx, account, inst, pos, inst.base, iso_debt(pos) - pos.base)
    repay_from_holdings(ctx, account, inst, pos, "close")


def size_for_proceeds(levels: Iterable[tuple[Decimal, Decimal]], need: Decimal, net_rate: Decimal) -> Decimal:
    """Smallest size whose book-walk proceeds × ``net_rate`` reach ``need`` (or all there is).

    A sizing estimate (the caller rounds it up to whole lots): quotients are rounded up and the
    running sums kept at 50 digits."""
    size = got = ZERO
    for price, available in levels:
        per_unit = price * net_rate
        take = min(available, UP.divide(need - got, per_unit))
        size = UP.add(size, take)
        got = NEAR.add(got, NEAR.multiply(take, per_unit))
        if got >= need:
            break
    return size


def size_for_cost(levels: Iterable[tuple[Decimal, Decimal]], budget: Decimal) -> Decimal:
    """Largest size the book sells for at most ``budget``, best price first (an estimate the
    caller rounds down to whole lots: quotients rounded down, sums at 50 digits)."""
    size = ZERO
    left = budget
    for price, available in levels:
        take = min(available, DOWN.divide(left, price))
        size = DOWN.add(size, take)
        left = UP.subtract(left, UP.multiply(take, price))
        if take < available:
            break
    return size
