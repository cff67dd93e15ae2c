"""The fill guard: every fill of a user's order is valued at the mark before it is made.

``docs/decisions.md`` 31 states the rule; this module applies it, once per fill and per side,
before the fill's first event (``engine.core.orders.match``). A refusal is ``(reason,
message)``: the taker's rest is canceled with it and matching stops; a refused maker is
canceled and matching continues with the next one (as self-trade prevention). Engine-made
**liquidation** orders are exempt (they must close whatever the price; the insurance fund
covers what they lose); every other order is checked, ``close_position``'s included. Fees are
left aside throughout (the cost of trading, not a loss against the mark).

1. **Price band** (``pxBand``, decision 31c): a buy filling above ``P·(1 + band)`` or a sell
   below ``P·(1 − band)`` is refused (``price_band``).
2. **Isolated opening fills** (spot, SWAP; decision 31a) post their order cost at the mark of
   the moment (``engine.core.opening.fill_posting``): from the order's frozen funds, the rest
   from the account's free cash — refused (``insufficient_margin``) if the cash is not there.
3. **Isolated closing fills** (31b). SWAP: the closed contracts pay their realised P&L and fee
   from their share of the margin, ``M·closed/|q|`` (a full close: all of ``M``) — never from
   the rest of the position or the platform. Spot: with ``X = L·equity − D`` at the mark
   (``D`` the debt's value, ``L`` the isolated leverage: ``X ≥ 0`` ⇔ equity ≥ ``D/L``), a
   fill that leaves debt must leave ``X' ≥ min(X, 0)·D'/D``, its fee counted.
4. **Cross accounts** (cross orders, and cash orders of an account with cross debt or cross
   perpetuals; 31): with ``X`` = equity − initial margin at the mark (``risk.margin_excess``
   without the resting-order hypothesis) and ``R`` the initial margin, the fill must leave
   ``X' ≥ min(X, 0)·min(1, R'/R)``: not below the initial margin, or a shortfall that shrinks
   with the requirement (``margin.no_worse_than_before``). A cross closing fill counts the
   repayment that follows it (``engine.core.cross_position``: its proceeds repay the
   position's liability; a ``close_position`` fill's, with the free cash, all of it). Fast paths: an
   account owing nothing that the fill makes borrow nothing; a fill at or better than the mark
   that borrows nothing and opens no perpetual.

Cost: a few dictionary reads per fill on the fast paths; one pass over the account's balances
and perpetual positions otherwise (never over orders).
"""

from __future__ import annotations

from decimal import Decimal

from engine.core import margin
from engine.core.cross_position import closing_part
from engine.core.isolated import iso_lever
from engine.core.money import DOWN, UP, ZERO, fmt, round_down, round_up
from engine.core.opening import fill_posting
from engine.core.position_risk import iso_assets
from engine.core.risk import PerpChange, margin_excess
from engine.core.state import Account, Instrument, Order, State

Refusal = tuple[str, str]


def check(
    state: State, order: Order, inst: Instrument, sz: Decimal, px: Decimal, fee_rate: Decimal, repays: bool = False
) -> Refusal | None:
    """Why the fill of ``sz`` at ``px`` for ``order`` may not be made (``None``: it may).
    ``repays``: a cross ``close_position`` fill, whose proceeds repay the account's debt in the
    currency received right after (counted: a close frees the initial margin of what it repays)."""
    mark = state.marks.get(inst.inst_id)
    band = inst.px_band
    if band is not None and mark is not None and margin.beyond_band(px, mark, band, order.is_buy):
        side = "buy" if order.is_buy else "sell"
        edge = margin.band_edge(mark, band, order.is_buy)
        return (
            "price_band",
            f"{side} fill at {fmt(px)} is beyond the price band ({fmt(edge)}: mark {fmt(mark)} ± {fmt(band)})",
        )
    account = state.accounts[order.acct]
    if inst.inst_type == "SWAP":
        if order.td_mode == "isolated":
            return _isolated_swap(state, account, order, inst, sz, px, fee_rate, mark)
        return _cross_swap(state, account, order, inst, sz, px, mark)
    if order.td_mode == "isolated":
        if order.reduce:
            return _isolated_spot_close(state, account, order, inst, sz, px, mark, fee_rate)
        return _opening(state, account, order, inst, sz, px)
    return _cross_spot(state, account, order, inst, sz, px, repays)


def _cross_rule(
    state: State,
    account: Account,
    out: dict[str, Decimal] | None,
    inflow: dict[str, Decimal] | None,
    change: PerpChange | None = None,
    extra_equity: Decimal = ZERO,
    repaid: dict[str, Decimal] | None = None,
) -> Refusal | None:
    """``X' ≥ min(X, 0)·min(1, R'/R)`` for the cross account (module doc, 4)."""
    after = margin_excess(
        state, account, out, inflow, resting=False, change=change, extra_equity=extra_equity, caps=False, repaid=repaid
    )
    if isinstance(after, tuple):
        return after
    if after.excess >= 0:
        return None
    before = margin_excess(state, account, resting=False, caps=False)
    if not isinstance(before, tuple) and margin.no_worse_than_before(
        after.excess, after.required, before.excess, before.required
    ):
        return None
    equity, required = fmt(round_down(after.equity, 8)), fmt(round_up(after.required, 8))
    return (
        "insufficient_margin",
        f"the fill would leave equity {equity} below the initial margin {required} at the mark",
    )


def _cross_spot(
    state: State, account: Account, order: Order, inst: Instrument, sz: Decimal, px: Decimal, repays: bool
) -> Refusal | None:
    """A cross (or cash) SPOT fill: the account's initial margin at the mark."""
    notional = px * sz
    out_ccy, out_amt, in_ccy, in_amt = (
        (inst.quote, notional, inst.base, sz) if order.is_buy else (inst.base, sz, inst.quote, notional)
    )
    cash = order.td_mode == "cash"
    borrows = not cash and account.free(out_ccy) < out_amt
    if not borrows:
        prices = state.prices
        p_in, p_out = prices.get(in_ccy), prices.get(out_ccy)
        gained = (in_amt * p_in if p_in is not None else ZERO) - (out_amt * p_out if p_out is not None else ZERO)
        if gained >= 0 or not account.at_risk():
            return None  # at or better than the mark, or owing nothing before or after: cannot fall
    if cash:  # paid from what the order froze (or free cash): never borrowed
        return _cross_rule(state, account, None, {in_ccy: in_amt, out_ccy: -out_amt})
    repaid = None
    bal = account.balances.get(in_ccy)
    if bal is not None and (bal.liab or bal.interest):
        owed = bal.liab + bal.interest
        if repays:  # as ``closing._repay`` will
            repaid = {in_ccy: min(owed, account.free(in_ccy) + in_amt)}
        else:  # a closing fill repays from its proceeds (``cross_position``), fees aside
            closed = closing_part(account.positions.get(inst.inst_id), order.is_buy, sz)
            if closed:
                share = in_amt if closed == sz else DOWN.divide(in_amt * closed, sz)
                repaid = {in_ccy: min(owed, share)}
    return _cross_rule(state, account, {out_ccy: out_amt}, {in_ccy: in_amt}, repaid=repaid)


def _closing_pnl(state: State, inst: Instrument, avg_px: Decimal, long: bool, closed: Decimal, px: Decimal) -> Decimal:
    """Realised P&L of closing ``closed`` contracts at ``px`` (as ``swap.before_fill`` books it)."""
    gain = closed * inst.ct_val * ((px - avg_px) if long else (avg_px - px))
    return round_down(gain, state.assets[inst.settle].decimals)


def _cross_swap(
    state: State, account: Account, order: Order, inst: Instrument, sz: Decimal, px: Decimal, mark: Decimal | None
) -> Refusal | None:
    """A cross SWAP fill: the account's initial margin at the mark, with the position at its new
    size and the realised P&L in cash."""
    from engine.core.swap import split

    pos = account.perps.get((inst.inst_id, order.pos_side))
    closing, opening = split(pos, order.is_buy, sz)
    delta = sz if order.is_buy else -sz
    gained = delta * inst.ct_val * ((mark if mark is not None else px) - px)  # at the mark, fees aside
    pnl = _closing_pnl(state, inst, pos.avg_px, pos.qty > 0, closing, px) if closing and pos is not None else ZERO
    settle = inst.settle
    if not opening and gained >= 0 and (pnl >= 0 or account.free(settle) >= -pnl):
        return None  # reduces the position at or better than the mark, nothing borrowed
    qty = pos.qty if pos is not None else ZERO
    flows = {settle: -pnl} if pnl < 0 else None
    inflow = {settle: pnl} if pnl > 0 else None
    change = (inst.inst_id, order.pos_side, qty + delta)
    return _cross_rule(state, account, flows, inflow, change, gained - pnl)


def _opening(
    state: State, account: Account, order: Order, inst: Instrument, qty: Decimal, px: Decimal
) -> Refusal | None:
    """An isolated opening fill of ``qty`` base units posts its cost at the mark (module doc, 2)."""
    _, from_free = fill_posting(state, order, inst, qty, px)
    if not from_free:
        return None
    ccy = order.mgn_ccy
    free = account.free(ccy)
    if free < from_free:
        needed = fmt(from_free + order.frozen)
        shown = f"the fill needs {needed} {ccy} of margin at the mark, the order froze {fmt(order.frozen)}"
        return "insufficient_margin", f"{shown} and {fmt(free)} is free"
    if account.at_risk():  # the top-up leaves the cross account
        return _cross_rule(state, account, {ccy: from_free}, None)
    return None


def _isolated_swap(
    state: State, account: Account, order: Order, inst: Instrument, sz: Decimal, px: Decimal, fee_rate: Decimal,
    mark: Decimal | None,
) -> Refusal | None:  # fmt: skip
    from engine.core.swap import split

    pos = account.perps.get((inst.inst_id, order.pos_side))
    closing, opening = split(pos, order.is_buy, sz)
    if closing and pos is not None:
        places = state.assets[inst.settle].decimals
        size = abs(pos.qty)
        share = pos.margin if closing == size else round_down(DOWN.divide(pos.margin * closing, size), places)
        pnl = _closing_pnl(state, inst, pos.avg_px, pos.qty > 0, closing, px)
        fee = margin.swap_fee(closing, inst.ct_val, px, fee_rate, places)
        if share + pnl - fee < 0:
            return "insufficient_margin", (
                f"closing {fmt(closing)} contracts at {fmt(px)} (mark {fmt(mark)}) realises {fmt(pnl)} and pays"
                f" {fmt(fee)} in fees, more than their margin {fmt(share)}"
            )
    if opening:
        return _opening(state, account, order, inst, opening * inst.ct_val, px)
    return None


def _isolated_spot_close(
    state: State,
    account: Account,
    order: Order,
    inst: Instrument,
    sz: Decimal,
    px: Decimal,
    mark: Decimal | None,
    fee_rate: Decimal,
) -> Refusal | None:
    """Module doc, 3: with ``X = L·equity − D`` at the mark (required ``D``), a fill leaving
    debt keeps ``X' ≥ min(X, 0)·D'/D`` (``margin.no_worse_than_before``), counting the fee it
    pays in the currency received."""
    pos = account.isolated.get(inst.inst_id)
    if pos is None or mark is None:
        return None
    qa, ql, ba, bl = iso_assets(inst, pos)
    equity = qa - ql + (ba - bl) * mark
    if pos.long:  # sells base; the proceeds, net of the fee, repay the quote debt
        debt = ql
        proceeds = px * sz - margin.trade_fee(px * sz, fee_rate, state.assets[inst.quote].decimals)
        after = equity + proceeds - sz * mark
        left = debt - min(pos.quote + proceeds, debt)
    else:  # buys base back; what arrives net of the fee repays the base debt
        debt = bl * mark
        received = sz - margin.trade_fee(sz, fee_rate, state.assets[inst.base].decimals)
        after = equity + received * mark - px * sz
        left = (bl - min(pos.base + received, bl)) * mark
    if left <= 0:
        return None  # repays everything: the position is released, nothing is left at risk
    lever = iso_lever(account, inst)
    if margin.no_worse_than_before(lever * after - left, left, lever * equity - debt, debt):
        return None
    shown = fmt(round_down(after, 8))
    return "insufficient_margin", (
        f"closing {fmt(sz)} at {fmt(px)} (mark {fmt(mark)}) would leave the position's equity {shown} below its"
        f" initial margin {fmt(round_up(UP.divide(left, lever), 8))} ({fmt(lever)}x its debt)"
    )
