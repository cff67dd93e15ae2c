"""Isolated spot **reverse orders**: a non-reduce-only order that closes the position and opens
the opposite one (seed 001 §3: "Non-Reduce-Only: Closes position and may open reverse
position"; docs/decisions.md 33c).

An isolated order on the other side of the account's open isolated spot position, not
``reduceOnly``, larger than what the position can close (``availPos``: a long's base, a
short's quote at the order's price) is a reverse order. It runs in two legs in the same
command, both under the order's ``clOrdId``:

1. **Closing leg**: an isolated closing order (``reduce``) of ``c`` = what the position can
   close — a long sells its whole available base, a short buys what its available quote pays
   for at the limit price (a market order: along the book) — capped at the order's size, with
   the order's type and price, matched at once; what it does not fill is canceled (``ioc``):
   a reverse happens at once or not at all. Each fill repays from its proceeds; once the leg has
   filled in full, margin in the liability currency pays what is still owed (as
   ``close_position``). If the position still owes something, nothing opens.
2. **Opening leg**: with the position released, ``sz − filled`` opens the reverse position as a
   new isolated opening order (``ccy`` of the order, default by side; its order cost per
   decisions 31–31d, checked now, at the book and mark after the close): it matches and rests
   (``limit``) or is canceled (``ioc``/``market``) as any order. If its checks fail it is
   refused (``order_rejected`` after the closing leg's events: the close stands).

``post_only`` and ``fok`` orders cannot reverse (``invalid_ordType``): the first never takes,
the second could not promise its whole size across two legs.
"""

from __future__ import annotations

from decimal import Decimal

from engine.core import isolated, margin
from engine.core.adjusted import check_held_equity
from engine.core.context import Ctx, Rejected
from engine.core.money import DOWN, ZERO
from engine.core.position_risk import iso_debt
from engine.core.state import Account, Instrument, IsoPosition
from events import journal as ev
from events.commands import PlaceOrder


def is_reverse(account: Account, inst: Instrument, is_buy: bool, sz: Decimal, cost: Decimal, reduce_only: bool) -> bool:
    """An order the position cannot close alone (``cost``: its quote at the limit price or
    along the book), not reduce-only, on the other side of the open isolated position."""
    pos = account.isolated.get(inst.inst_id)
    if pos is None or pos.long == is_buy or reduce_only:
        return False
    avail = (pos.base if pos.long else pos.quote) - pos.frozen
    return (sz if pos.long else cost) > avail


def _closing_size(account: Account, inst: Instrument, pos: IsoPosition, sz: Decimal, px: Decimal | None) -> Decimal:
    from engine.core.closing import size_for_cost
    from engine.core.orders import lot_floor, walk_book

    avail = (pos.base if pos.long else pos.quote) - pos.frozen
    if pos.long:
        size = avail
    elif px is not None:
        size = DOWN.divide(avail, px)
    else:
        size = size_for_cost(walk_book(inst, True, account.acct, None), avail)
    return min(lot_floor(inst, size), sz)


def place_reverse(
    ctx: Ctx, cmd: PlaceOrder, account: Account, inst: Instrument, is_buy: bool, sz: Decimal, px: Decimal | None,
    walk_limit: Decimal | None,
) -> None:  # fmt: skip
    """Run both legs (module doc)."""
    from engine.core.orders import cancel, match, run_order, walk_book

    if cmd.ordType in ("post_only", "fok"):
        raise Rejected("invalid_ordType", f"a {cmd.ordType} order cannot close and reverse a position")
    state = ctx.state
    pos = account.isolated[inst.inst_id]
    close_sz = _closing_size(account, inst, pos, sz, px)
    filled = ZERO
    if close_sz > 0:
        order_id = state.next_order_id
        frozen = (close_sz if pos.long else close_sz * px) if px is not None else ZERO  # as closing orders
        ctx.emit(
            ev.OrderAccepted(
                orderId=order_id, acct=cmd.acct, instId=cmd.instId, clOrdId=cmd.clOrdId, side=cmd.side,
                ordType=cmd.ordType, tdMode="isolated", px=px, sz=close_sz, frozen=frozen,
                posSide=isolated.POS_SIDE, mgnCcy=pos.mgn_ccy, reduce=True,
            )
        )  # fmt: skip
        order = state.orders[order_id]
        match(ctx, order, inst)
        filled = close_sz - order.remaining
        if order_id in state.orders:
            cancel(ctx, order, "ioc")
    if isolated.alive(account, inst, pos) and filled == close_sz:
        liab = isolated.liab_ccy(inst, pos)
        isolated.use_margin(ctx, account, inst, pos, liab, iso_debt(pos) - isolated.holding(inst, pos, liab))
        isolated.repay_from_holdings(ctx, account, inst, pos, "close")
        isolated.settle_if_repaid(ctx, account, inst, pos)
    ctx.touch(account.acct)
    rest = sz - filled
    if isolated.alive(account, inst, pos) or rest <= 0:
        return  # the position could not be closed: nothing opens
    _, notional = margin.book_walk(walk_book(inst, is_buy, cmd.acct, walk_limit), rest)
    levels = walk_book(inst, is_buy, cmd.acct, walk_limit)
    try:
        terms = isolated.order_terms(state, account, inst, is_buy, rest, px, notional, cmd.ccy, False, levels)
        check_held_equity(state, account, terms.mgn_ccy, terms.frozen)  # an opening leg: decision 35
    except Rejected as refusal:
        ctx.emit(
            ev.OrderRejected(
                acct=cmd.acct, instId=cmd.instId, clOrdId=cmd.clOrdId, reason=refusal.reason, message=refusal.message
            )
        )
        return
    order_id = state.next_order_id
    ctx.emit(
        ev.OrderAccepted(
            orderId=order_id, acct=cmd.acct, instId=cmd.instId, clOrdId=cmd.clOrdId, side=cmd.side,
            ordType=cmd.ordType, tdMode="isolated", px=px, sz=rest, frozen=terms.frozen, posSide=terms.pos_side,
            mgnCcy=terms.mgn_ccy, lever=terms.lever, reduce=False,
        )
    )  # fmt: skip
    run_order(ctx, state.orders[order_id], inst, cmd.ordType)
