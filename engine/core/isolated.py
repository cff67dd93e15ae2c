"""Isolated spot margin (``tdMode`` ``isolated`` on a SPOT instrument): orders, fills, closing,
margin adjustment. Spec §1.1, §1.2, §1.9, §1.10; decisions 1, 10, 11, 12.

**One position per account and instrument** (``posSide`` ``net``): a buy opens or adds to a
*long* (holds base, owes quote), a sell opens or adds to a *short* (holds quote, owes base).
While a position is open, an order on the other side **closes** it: it may only use the
position's own assets (``availPos``: long — base, short — quote at the order's limit price); a
larger one that is not ``reduceOnly`` is a reverse order (``engine.core.reverse``: it closes the
position and opens the opposite one, seed 001 §3).

**Opening orders.** The margin currency is the order's ``ccy`` (base or quote of the pair;
default: base for a buy, quote for a sell — OKX's old-mode rule) and is fixed while the position
is open or opening orders rest (decision 12). The order's **cost** (§1.2, docs/decisions.md
31a: ``engine.core.opening``) = initial margin ``qty / L`` in base or ``qty × A / L`` in quote
(``A`` the assumed price: the limit price, a sell's at least the mark; market orders: the book
walk) plus the **open loss** against the mark, rounded **up**; it is **frozen** from the account
while the order rests (an opening order needs a mark: ``no_mark_price``; an account with cross
risk must keep its cross initial margin without it). At each fill the cost of that fill moves
from the frozen funds into the position — ``cost(fills after) − cost(fills before)`` at the mark
of the moment, so that splitting a fill does not change it; what the frozen funds lack comes
from free cash (``top_up``), else the fill guard refuses the fill — and the position **borrows at fill**:
a long the quote cost, a short the base sold (``position_borrowed``). Nothing is borrowed and no
interest accrues before a fill. What an order froze and did not post returns when it ends.
The position's debt after every resting opening order fills must stay within the tier cap for
the leverage (§1.8, E13): ``maxBorrow`` of the highest tier whose ``maxLever ≥ L``.

**Closing.** Each closing fill repays the debt from the proceeds at once, interest first
(``position_repaid``). When nothing is owed the position is settled: its pending closing orders
are canceled and its holdings and margin return to the account (``position_released``).
``close_position`` (``engine.core.closing``) closes at market with the position's own assets.

**Margin adjustment** (``adjust_margin``): ``add`` from the account's free cash in the margin
currency; ``reduce`` at most the seed's maximum reducible (§1.10, decision 11), with the
instrument's ``reduceMarginRatio``.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from engine.core import margin
from engine.core.context import Ctx, Rejected
from engine.core.money import ZERO, fmt, plain_zero
from engine.core.opening import order_frozen, post_margin, shortfall_message
from engine.core.position_risk import iso_debt, total_upl
from engine.core.risk import check_initial_margin
from engine.core.state import Account, Instrument, IsoPosition, Order, State
from events import journal as ev

POS_SIDE = "net"


class OrderTerms:
    """What an accepted isolated/SWAP order carries besides the common fields."""

    __slots__ = ("frozen", "lever", "mgn_ccy", "pos_side", "reduce")

    def __init__(self, frozen: Decimal, pos_side: str, mgn_ccy: str, lever: Decimal | None, reduce: bool) -> None:
        self.frozen = frozen
        self.pos_side = pos_side
        self.mgn_ccy = mgn_ccy
        self.lever = lever
        self.reduce = reduce


def _pending_opening(account: Account, inst_id: str) -> list[Order]:
    return [o for o in account.orders.values() if o.inst_id == inst_id and o.td_mode == "isolated" and not o.reduce]


def pending_borrow(order: Order) -> Decimal:
    """What a resting isolated opening order will borrow if it fills: the quote cost of a buy
    at its limit price, the base size of a sell."""
    return order.remaining * order.px if order.is_buy and order.px is not None else order.remaining


def iso_lever(account: Account, inst: Instrument) -> Decimal:
    return account.iso_leverage.get(inst.inst_id, inst.max_lever)


def order_terms(
    state: State,
    account: Account,
    inst: Instrument,
    is_buy: bool,
    sz: Decimal,
    px: Decimal | None,
    fill_notional: Decimal,
    ccy: str | None,
    reduce_only: bool,
    levels: Iterable[tuple[Decimal, Decimal]],
) -> OrderTerms:
    """Check an isolated spot order and decide what it freezes (see module doc); ``levels``:
    the book walk a market order would take."""
    pos = account.isolated.get(inst.inst_id)
    cost = px * sz if px is not None else fill_notional
    if pos is not None and pos.long != is_buy:
        avail = (pos.base if pos.long else pos.quote) - pos.frozen
        need = sz if pos.long else cost
        if need > avail:
            unit = inst.base if pos.long else inst.quote
            raise Rejected("exceeds_available_to_close", f"closing needs {fmt(need)} {unit}, availPos is {fmt(avail)}")
        frozen = need if px is not None else ZERO
        return OrderTerms(frozen, POS_SIDE, pos.mgn_ccy, None, True)
    if reduce_only:
        raise Rejected("reduce_only_would_increase", f"no isolated {'short' if is_buy else 'long'} position to reduce")
    mgn_ccy = ccy if ccy is not None else (inst.base if is_buy else inst.quote)
    if mgn_ccy not in (inst.base, inst.quote):
        raise Rejected("invalid_ccy", f"ccy {mgn_ccy} is neither {inst.base} nor {inst.quote}")
    pending = _pending_opening(account, inst.inst_id)
    if pos is not None and pos.mgn_ccy != mgn_ccy:
        raise Rejected("margin_ccy_fixed", f"the open position on {inst.inst_id} is margined in {pos.mgn_ccy}")
    for order in pending:
        if order.mgn_ccy != mgn_ccy:
            raise Rejected("margin_ccy_fixed", f"resting isolated orders on {inst.inst_id} margin in {order.mgn_ccy}")
        if order.is_buy != is_buy:
            raise Rejected("opposite_orders_pending", f"isolated {order.cl_ord_id} opens the other side")
    if inst.inst_id not in state.marks:
        raise Rejected("no_mark_price", f"opening an isolated position needs a mark price for {inst.inst_id}")
    lever = iso_lever(account, inst)
    order_cost = order_frozen(state, inst, mgn_ccy, is_buy, sz, px, levels, lever)
    if order_cost.im <= 0:
        raise Rejected("invalid_sz", "the order is too small to need any margin")
    debt = (iso_debt(pos) if pos is not None else ZERO) + (cost if is_buy else sz)
    for order in pending:
        debt += pending_borrow(order)
    cap = margin.spot_borrow_cap(inst.tiers, lever, not is_buy)
    if debt > cap:
        ccy_debt = inst.quote if is_buy else inst.base
        shown = f"position debt would be {fmt(debt)} {ccy_debt}, above {fmt(cap)} at {fmt(lever)}x"
        raise Rejected("borrow_limit", shown)
    free = account.free(mgn_ccy)
    if free < order_cost.frozen:
        raise Rejected("insufficient_balance", shortfall_message(order_cost, mgn_ccy, free, is_buy, px))
    if account.at_risk():  # the margin leaves the cross account when the order fills
        failure = check_initial_margin(state, account, out={mgn_ccy: order_cost.frozen})
        if failure is not None:
            raise Rejected(*failure)
    return OrderTerms(order_cost.frozen, POS_SIDE, mgn_ccy, lever, False)


def before_fill(ctx: Ctx, order: Order, inst: Instrument, sz: Decimal, px: Decimal) -> None:
    """Opening fill: open the position if needed, post this fill's margin, borrow the cost."""
    if order.reduce:
        return
    state = ctx.state
    acct = order.acct
    account = state.accounts[acct]
    if inst.inst_id not in account.isolated:
        ctx.emit(
            ev.PositionOpened(
                acct=acct, instId=inst.inst_id, posSide=POS_SIDE, mgnMode="isolated", mgnCcy=order.mgn_ccy,
                long=order.is_buy,
            )
        )  # fmt: skip
    post_margin(ctx, order, inst, POS_SIDE, sz, px)
    ccy, amt = (inst.quote, px * sz) if order.is_buy else (inst.base, sz)
    ctx.emit(ev.PositionBorrowed(acct=acct, instId=inst.inst_id, ccy=ccy, amt=amt))


def after_closing_fill(ctx: Ctx, account: Account, inst: Instrument, reason: str) -> None:
    """Closing fill: repay from the proceeds (``reason`` ``close`` or ``liquidation``); settle
    the position once nothing is owed."""
    pos = account.isolated.get(inst.inst_id)
    if pos is None:
        return
    repay_from_holdings(ctx, account, inst, pos, reason)
    settle_if_repaid(ctx, account, inst, pos)


def liab_ccy(inst: Instrument, pos: IsoPosition) -> str:
    return inst.quote if pos.long else inst.base


def holding(inst: Instrument, pos: IsoPosition, ccy: str) -> Decimal:
    return pos.base if ccy == inst.base else pos.quote


def repay_from_holdings(ctx: Ctx, account: Account, inst: Instrument, pos: IsoPosition, reason: str) -> None:
    """Repay what the position holds of its liability currency, interest first."""
    ccy = liab_ccy(inst, pos)  # pending closing orders freeze the other currency (pos ccy)
    pay = min(holding(inst, pos, ccy), iso_debt(pos))
    if pay > 0:
        interest = min(pay, pos.interest) if pos.interest else ZERO
        ctx.emit(
            ev.PositionRepaid(
                acct=account.acct, instId=inst.inst_id, ccy=ccy, interest=interest, principal=pay - interest,
                reason=reason,
            )
        )  # fmt: skip
    ctx.touch(account.acct)


def use_margin(ctx: Ctx, account: Account, inst: Instrument, pos: IsoPosition, ccy: str, amt: Decimal) -> None:
    """Move up to ``amt`` of the margin (if it is in ``ccy``) into the position's holdings."""
    take = min(amt, pos.margin) if pos.mgn_ccy == ccy else ZERO
    if take > 0:
        ctx.emit(
            ev.PositionMarginChanged(
                acct=account.acct, instId=inst.inst_id, posSide=POS_SIDE, ccy=ccy, amt=take, reason="use"
            )
        )


def cancel_position_orders(ctx: Ctx, account: Account, inst_id: str, reason: str, closing_only: bool) -> None:
    """Cancel the account's isolated orders on ``inst_id`` (only closing ones if asked), oldest first."""
    for order in sorted(account.orders.values(), key=lambda o: o.order_id):
        if order.inst_id == inst_id and order.td_mode == "isolated" and (order.reduce or not closing_only):
            ctx.emit(
                ev.OrderCanceled(
                    orderId=order.order_id, acct=order.acct, instId=order.inst_id, clOrdId=order.cl_ord_id,
                    remaining=order.remaining, reason=reason,
                )
            )  # fmt: skip


def alive(account: Account, inst: Instrument, pos: IsoPosition) -> bool:
    """Is ``pos`` still the account's open position (a closing fill may have released it)?"""
    return account.isolated.get(inst.inst_id) is pos


def settle_if_repaid(ctx: Ctx, account: Account, inst: Instrument, pos: IsoPosition) -> bool:
    """Nothing owed: cancel the position's closing orders and return everything it holds."""
    if not alive(account, inst, pos):
        return True
    if iso_debt(pos) > 0:
        return False
    cancel_position_orders(ctx, account, inst.inst_id, "position_closed", closing_only=True)
    if pos.margin_call:
        ctx.emit(ev.MarginCallCleared(acct=account.acct, mgnRatio=None, instId=inst.inst_id, posSide=POS_SIDE))
    base = plain_zero(pos.base + (pos.margin if pos.mgn_ccy == inst.base else ZERO))
    quote = plain_zero(pos.quote + (pos.margin if pos.mgn_ccy == inst.quote else ZERO))
    ctx.emit(ev.PositionReleased(acct=account.acct, instId=inst.inst_id, posSide=POS_SIDE, base=base, quote=quote))
    ctx.touch(account.acct)
    return True


def adjust_margin(ctx: Ctx, account: Account, inst: Instrument, pos: IsoPosition, action: str, amt: Decimal) -> None:
    mgn_ccy = pos.mgn_ccy
    if action == "add":
        free = account.free(mgn_ccy)
        if free < amt:
            raise Rejected("insufficient_balance", f"add {fmt(amt)} {mgn_ccy}: {fmt(free)} available")
        if account.at_risk():  # the margin leaves the cross account: as a withdrawal, within its IM
            failure = check_initial_margin(ctx.state, account, out={mgn_ccy: amt})
            if failure is not None:
                raise Rejected(*failure)
    else:
        mark = ctx.state.marks.get(inst.inst_id)
        if mark is None:
            raise Rejected("no_mark_price", f"reducing margin needs a mark price for {inst.inst_id}")
        upl = total_upl(inst, pos, mark)
        most = margin.max_reducible(pos.margin, pos.base_margin, upl, inst.reduce_margin_ratio)
        if amt > most:
            raise Rejected("exceeds_max_reducible", f"reduce {fmt(amt)} {mgn_ccy}: at most {fmt(most)} can be removed")
    ctx.emit(
        ev.PositionMarginChanged(
            acct=account.acct, instId=inst.inst_id, posSide=POS_SIDE, ccy=mgn_ccy, amt=amt, reason=action
        )
    )
    ctx.touch(account.acct)
