"""Linear perpetual swaps (``SWAP``): orders, fills, funding, margin, position mode.

Sizes are contracts; one contract is ``ctVal`` base units; P&L, fees, margin and funding are in
the settlement currency ``settleCcy`` (the instrument's ``quote``). Spec §1.2–§1.6, §1.14;
decisions 3, 4, 5, 12.

**Position mode** (``set_position_mode``, refused while the account has a SWAP position or
order): ``net_mode`` (default) keeps one position per instrument (``posSide`` ``net``,
signed): an order first reduces an opposite position and the rest opens the other way. A
**flip** (a fill through zero) is a full close followed by an open: the closing part realises
its P&L and — isolated — releases the whole margin net of that P&L and of the closed contracts'
own fee (``pnl_realised.released``; a standing margin call of the closed position ends); the
opening part takes the fill price as entry and posts its own cost (initial margin plus open
loss, ``engine.core.opening``), so the new position starts exactly as a plain open would.
``long_short_mode`` keeps a ``long`` and a ``short`` position:
the order's ``posSide`` is required; buy-long / sell-short open, sell-long / buy-short close and
may not exceed the position's ``availPos`` = size − pending close orders (seed 001;
:func:`available_to_close`), nor may a reduce-only order in net mode.

**Margin mode** (``tdMode`` ``cross``/``isolated``) is fixed while the position is open
(decision 12). Leverage per instrument and mode (``set_leverage``; default ``maxLever``).

**Opening**: the resulting size (position + resting opening orders + this order) must fit the
tier cap for the leverage (``maxSz`` of the highest tier with ``maxLever ≥ L``, §1.3 model 2).
An opening order needs a mark (``no_mark_price``) and is costed on its whole size at the
assumed price ``A`` (the limit price; a sell's at least the mark; market: the book walk) plus its
open loss against the mark (§1.2, docs/decisions.md 31a). Isolated: that cost,
``sz·ctVal·A / L + OL`` rounded up, is frozen from the account's free settlement cash while the
order rests and posted per fill as ``cost(fills after) − cost(fills before)`` at the mark of
the moment (``engine.core.opening``; fill splitting never changes it). Cross: the account's
initial-margin check (``engine.core.risk.check_initial_margin``) includes ``|q|·ctVal·P / L`` of
every cross perpetual position, of every resting cross SWAP order at its limit price, and the
new order's cost. Every fill is then checked by ``engine.core.fill_guard``.

**Fills** (in this order): the closing part realises P&L ``closed·ctVal·(px − E)`` (long; mirror
for short) rounded toward −∞ (``pnl_realised``) — cross: to the account's cash; isolated: to the
margin, and on a partial close the closed share of the margin (``M·closed/|q|``, rounded down;
a flip: all of ``M``) plus that P&L less the closed contracts' fee returns to the account, so
the rest keeps its ratio (a plain full close returns the margin left after the fee when the
position is released);
then the opening part's margin
(isolated); then ``traded``, whose fold re-averages the entry on increases and takes the fee
(settlement currency, on the notional) from the cross cash or the isolated margin. A cross
account whose settlement cash falls below what its cash orders froze borrows the difference (auto-borrow, as any cross
debt: it bears interest); an isolated margin below zero is a shortfall covered by the insurance
fund (``engine.core.shortfall``). A position at zero size is released (its margin returns).

**Funding** (``settle_funding``, E22): for every position on the instrument at the current mark,
``q·ctVal·P·rate`` — positive: the holder pays, rounded up; negative: receives, rounded down;
cross from/to the account's cash (borrowing if short), isolated from/to the margin (a shortfall
covered as above). Positions are settled in debtor order, then position order; what payers paid
beyond what receivers got (rounding) goes to the insurance fund (``funding_residual``).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from engine.core import margin
from engine.core.context import Ctx, Rejected
from engine.core.funds import amount, emit_borrow
from engine.core.isolated import OrderTerms
from engine.core.money import DOWN, ONE, ZERO, fmt, plain_zero, round_down, round_up
from engine.core.opening import order_frozen, post_margin, shortfall_message
from engine.core.risk import check_initial_margin
from engine.core.shortfall import cover_shortfall
from engine.core.state import Account, Instrument, Order, PerpPosition, State
from events import commands as cmd
from events import journal as ev


def _orders_on(account: Account, inst_id: str) -> list[Order]:
    return [o for o in account.orders.values() if o.inst_id == inst_id]


def set_position_mode(ctx: Ctx, command: cmd.SetPositionMode) -> None:
    state = ctx.state
    account = state.accounts.get(command.acct)
    if account is None:
        raise Rejected("unknown_account", f"acct {command.acct} has never deposited")
    swaps = [o for o in account.orders.values() if state.instruments[o.inst_id].inst_type == "SWAP"]
    if account.perps or swaps:
        raise Rejected("positions_open", "the position mode cannot change with SWAP positions or orders open")
    ctx.emit(ev.PositionModeSet(acct=command.acct, posMode=command.posMode))


def lever_of(account: Account, inst: Instrument, mgn_mode: str) -> Decimal:
    table = account.iso_leverage if mgn_mode == "isolated" else account.leverage
    return table.get(inst.inst_id, inst.max_lever)


def _pos_side(account: Account, raw: str | None) -> str:
    if account.pos_mode == "net_mode":
        if raw not in (None, "net"):
            raise Rejected("invalid_posSide", f"posSide {raw} is not allowed in net_mode (use net or omit it)")
        return "net"
    if raw not in ("long", "short"):
        raise Rejected("invalid_posSide", "long_short_mode needs posSide long or short")
    return raw


def split(pos: PerpPosition | None, is_buy: bool, sz: Decimal) -> tuple[Decimal, Decimal]:
    """``(closing, opening)`` parts of ``sz`` against the position's current size."""
    qty = pos.qty if pos is not None else ZERO
    closing = min(sz, abs(qty)) if qty and (qty > 0) != is_buy else ZERO
    return closing, sz - closing


def order_terms(
    state: State,
    account: Account,
    inst: Instrument,
    command: cmd.PlaceOrder,
    is_buy: bool,
    sz: Decimal,
    px: Decimal | None,
    levels: Iterable[tuple[Decimal, Decimal]],
) -> OrderTerms:
    """Check a SWAP order and decide what it freezes (module doc); ``levels``: the book walk a
    market order would take."""
    pos_side = _pos_side(account, command.posSide)
    mode = command.tdMode
    key = (inst.inst_id, pos_side)
    pos = account.perps.get(key)
    if pos is not None and pos.mgn_mode != mode:
        raise Rejected("margin_mode_fixed", f"the {pos_side} position on {inst.inst_id} is {pos.mgn_mode}")
    for order in _orders_on(account, inst.inst_id):
        if order.pos_side == pos_side and order.td_mode != mode:
            raise Rejected("margin_mode_fixed", f"resting {order.td_mode} orders on {inst.inst_id} {pos_side}")
    if pos_side == "net":
        closing, opening = split(pos, is_buy, sz)
        reduce = False
    else:
        reduce = (pos_side == "long") != is_buy
        held = abs(pos.qty) if pos is not None else ZERO
        if reduce and sz > held:
            raise Rejected("exceeds_position", f"sz {fmt(sz)} is above the {pos_side} position {fmt(held)}")
        closing, opening = (sz, ZERO) if reduce else (ZERO, sz)
    if command.reduceOnly and opening:
        raise Rejected("reduce_only_would_increase", f"sz {fmt(sz)} would open {fmt(opening)} contracts")
    if (command.reduceOnly or reduce) and pos is not None:
        pending = pending_close(account, pos)
        if closing > abs(pos.qty) - pending:
            avail = fmt(available_to_close(account, pos))
            shown = f"position {fmt(abs(pos.qty))} less {fmt(pending)} in pending close orders"
            raise Rejected("exceeds_available_to_close", f"sz {fmt(sz)} is above the availPos {avail} ({shown})")
    del closing
    lever = lever_of(account, inst, mode)
    if command.reduceOnly or reduce:
        # never opens: a fill is capped at the position's size when it happens (``reduce_cap``)
        return OrderTerms(ZERO, pos_side, "", lever, True)
    if not opening and mode == "cross":
        return OrderTerms(ZERO, pos_side, "", lever, False)
    same = abs(pos.qty) if pos is not None and (pos.qty > 0) == is_buy else ZERO
    pending = sum(
        (o.remaining for o in _orders_on(account, inst.inst_id) if o.pos_side == pos_side and o.is_buy == is_buy),
        ZERO,
    )
    cap = margin.perp_size_cap(inst.tiers, lever)
    if same + pending + opening > cap:
        shown = f"position would reach {fmt(same + pending + opening)} contracts, above {fmt(cap)} at {fmt(lever)}x"
        raise Rejected("position_limit", shown)
    mark = state.marks.get(inst.inst_id)
    if mark is None:
        raise Rejected("no_mark_price", f"opening a {inst.inst_id} position needs a mark price for it")
    # net-mode orders are costed on their whole size: the position may have shrunk by the time
    # they fill, so that more of the order opens than at placement
    places = state.assets[inst.settle].decimals
    if mode == "isolated":
        cost = order_frozen(state, inst, inst.settle, is_buy, sz, px, levels, lever)
        free = account.free(inst.settle)
        if cost.im <= 0 or free < cost.frozen:
            raise Rejected("insufficient_balance", shortfall_message(cost, inst.settle, free, is_buy, px))
        if account.at_risk():  # the margin leaves the cross account when the order fills
            failure = check_initial_margin(state, account, out={inst.settle: cost.frozen})
            if failure is not None:
                raise Rejected(*failure)
        return OrderTerms(cost.frozen, pos_side, inst.settle, lever, reduce)
    # cross: IM at the assumed price plus the open loss against the mark (spec §1.2), whole size
    if px is not None:
        value = sz * inst.ct_val * margin.assumed_price(px, mark, is_buy)
        loss = margin.open_loss(sz * inst.ct_val, px, mark, is_buy)
    else:
        _, _, value, loss = margin.book_walk_cost(levels, sz, inst.ct_val, mark, is_buy)
    im = margin.initial_margin(value, lever, places)
    failure = check_initial_margin(state, account, perp_im=im, open_loss=loss)
    if failure is not None:
        raise Rejected(*failure)
    return OrderTerms(ZERO, pos_side, "", lever, reduce)


def close_orders(account: Account, pos: PerpPosition) -> list[Order]:
    """The resting **close orders** of ``pos``, oldest first: the account's reduce orders on its
    instrument and side (hedge mode: every sell-long / buy-short order; net mode: reduce-only
    orders) on the side opposite to the position; none for a position at size 0."""
    if not pos.qty:
        return []
    closes_long = pos.qty > 0
    found = [
        o
        for o in account.orders.values()
        if o.inst_id == pos.inst_id and o.pos_side == pos.pos_side and o.reduce and o.is_buy != closes_long
    ]
    return sorted(found, key=lambda o: o.order_id)


def pending_close(account: Account, pos: PerpPosition) -> Decimal:
    """Contracts of ``pos`` that its resting close orders will close (their remaining size)."""
    return sum((o.remaining for o in close_orders(account, pos)), ZERO)


def available_to_close(account: Account, pos: PerpPosition) -> Decimal:
    """``availPos`` of a perpetual position (seed 001, new isolated mode: "Available = Total −
    Pending Close Orders"): ``max(0, |q| − pending_close)`` contracts. A new close order (hedge
    mode's closing side, a reduce-only order) may not exceed it (``exceeds_available_to_close``);
    the position may still shrink under resting close orders (a liquidation), whose fills are
    then capped at the position (``reduce_cap``)."""
    return max(ZERO, abs(pos.qty) - pending_close(account, pos))


def reduce_cap(state: State, order: Order, inst: Instrument) -> Decimal | None:
    """A reduce(-only) SWAP order fills at most the size of the position it reduces, at the time
    of the fill (it never opens or flips); ``None`` for other orders."""
    if not order.reduce:
        return None
    pos = state.accounts[order.acct].perps.get((inst.inst_id, order.pos_side))
    if pos is None or not pos.qty or (pos.qty > 0) == order.is_buy:
        return ZERO
    return abs(pos.qty)


def before_fill(ctx: Ctx, order: Order, inst: Instrument, sz: Decimal, px: Decimal, fee_rate: Decimal) -> None:
    """Realise the closing part's P&L, open the position if needed, post the opening margin."""
    state = ctx.state
    acct = order.acct
    account = state.accounts[acct]
    key = (inst.inst_id, order.pos_side)
    pos = account.perps.get(key)
    closing, opening = split(pos, order.is_buy, sz)
    settle = inst.settle
    places = state.assets[settle].decimals
    if closing and pos is not None:
        long = pos.qty > 0
        gain = closing * inst.ct_val * ((px - pos.avg_px) if long else (pos.avg_px - px))
        pnl = round_down(gain, places)
        released = ZERO
        flip = bool(opening)  # net mode through zero: a full close, then an open (below)
        if pos.mgn_mode == "isolated" and (closing < abs(pos.qty) or flip):
            # the closed share of the margin (a flip: all of it) plus the closed part's P&L
            # returns to the account, so the rest of the position keeps its ratio and a flip's
            # new side starts from its own opening margin; a plain full close returns what is
            # left after the fee (``position_released``).
            # The closed contracts pay their own fee: the ``traded`` fold takes the whole
            # fill's fee from the margin, so that part of it stays behind (never below 0: the
            # fill guard refuses a close its share cannot pay, decision 31b). A maker rebate
            # (negative fee) arrives only with ``traded``: what is released never exceeds what
            # the margin holds before it (a flip's closed contracts leave their rebate to the
            # new side rather than take the margin below zero)
            share = pos.margin if flip else round_down(DOWN.divide(pos.margin * closing, abs(pos.qty)), places)
            fee = margin.swap_fee(closing, inst.ct_val, px, fee_rate, places)
            released = max(ZERO, min(pos.margin + pnl, share + pnl - fee))
        ctx.emit(
            ev.PnlRealised(
                acct=acct, instId=inst.inst_id, posSide=order.pos_side, ccy=settle, amt=pnl, released=released
            )
        )
        _make_whole(ctx, account, inst, pos)
        if flip and pos.mgn_mode == "isolated" and pos.margin_call:  # it ends with the closed position
            ctx.emit(ev.MarginCallCleared(acct=acct, mgnRatio=None, instId=inst.inst_id, posSide=order.pos_side))
    if not opening:
        return
    if pos is None:
        ctx.emit(
            ev.PositionOpened(
                acct=acct, instId=inst.inst_id, posSide=order.pos_side, mgnMode=order.td_mode, mgnCcy=settle,
                long=order.is_buy,
            )
        )  # fmt: skip
    if order.td_mode == "isolated":
        post_margin(ctx, order, inst, order.pos_side, opening * inst.ct_val, px)


def _make_whole(ctx: Ctx, account: Account, inst: Instrument, pos: PerpPosition) -> None:
    """Cross cash below what resting cash orders froze is borrowed (free cash never goes
    negative); an isolated margin below zero is a shortfall."""
    if pos.mgn_mode == "isolated":
        if pos.margin < 0:
            cover_shortfall(ctx, account.acct, inst.settle, -pos.margin, inst.inst_id, pos.pos_side)
        return
    bal = account.balances.get(inst.settle)
    if bal is not None and bal.cash < bal.frozen:
        emit_borrow(ctx, account.acct, inst.settle, bal.frozen - bal.cash, auto=True)


def after_fill(ctx: Ctx, order_id: int, acct: str, inst: Instrument, sz: Decimal, px: Decimal) -> None:
    """After ``traded`` (fee taken): make cash/margin whole; release positions at zero size."""
    account = ctx.state.accounts[acct]
    for key, pos in list(account.perps.items()):
        if key[0] != inst.inst_id:
            continue
        _make_whole(ctx, account, inst, pos)
        if pos.qty == 0:
            release(ctx, account, inst, pos)
    ctx.touch(acct)


def release(ctx: Ctx, account: Account, inst: Instrument, pos: PerpPosition) -> None:
    """A position at zero size: its margin call (if any) ends, its margin returns."""
    if pos.margin_call:
        ctx.emit(ev.MarginCallCleared(acct=account.acct, mgnRatio=None, instId=inst.inst_id, posSide=pos.pos_side))
    ctx.emit(
        ev.PositionReleased(
            acct=account.acct, instId=inst.inst_id, posSide=pos.pos_side, base=ZERO, quote=plain_zero(pos.margin)
        )
    )


def close_perp(ctx: Ctx, account: Account, inst: Instrument, mgn_mode: str, pos_side: str | None) -> None:
    """``close_position`` of a perpetual: the position's pending close orders are canceled
    (``close_position``; they hold its available-to-close, as an isolated spot close does),
    then a market order for the whole size (reduce)."""
    from engine.core.orders import submit_market_order

    side = pos_side or "net"
    pos = account.perps.get((inst.inst_id, side))
    if pos is None or pos.mgn_mode != mgn_mode:
        raise Rejected("no_position", f"{account.acct} has no {mgn_mode} {side} position on {inst.inst_id}")
    for order in close_orders(account, pos):
        ctx.emit(
            ev.OrderCanceled(
                orderId=order.order_id, acct=order.acct, instId=order.inst_id, clOrdId=order.cl_ord_id,
                remaining=order.remaining, reason="close_position",
            )
        )  # fmt: skip
    submit_market_order(ctx, account, inst, pos.qty < 0, abs(pos.qty), "close", pos.mgn_mode, True, side)
    ctx.touch(account.acct)


def adjust_margin(ctx: Ctx, account: Account, inst: Instrument, command: cmd.AdjustMargin) -> None:
    state = ctx.state
    side = command.posSide
    pos = account.perps.get((inst.inst_id, side))
    if pos is None or pos.mgn_mode != "isolated":
        raise Rejected("no_position", f"{account.acct} has no isolated {side} position on {inst.inst_id}")
    if command.ccy is not None and command.ccy != inst.settle:
        raise Rejected("margin_ccy_fixed", f"the position is margined in {inst.settle}, not {command.ccy}")
    amt = amount(state, inst.settle, command.amt)
    if command.action == "add":
        free = account.free(inst.settle)
        if free < amt:
            raise Rejected("insufficient_balance", f"add {fmt(amt)} {inst.settle}: {fmt(free)} available")
        if account.at_risk():  # the margin leaves the cross account: as a withdrawal, within its IM
            failure = check_initial_margin(ctx.state, account, out={inst.settle: amt})
            if failure is not None:
                raise Rejected(*failure)
    else:
        mark = state.marks.get(inst.inst_id)
        if mark is None:
            raise Rejected("no_mark_price", f"reducing margin needs a mark price for {inst.inst_id}")
        upl = margin.perp_upl(pos.qty, inst.ct_val, mark, pos.avg_px)
        base_margin = margin.initial_margin(
            abs(pos.qty) * inst.ct_val * pos.avg_px,
            lever_of(account, inst, "isolated"),
            state.assets[inst.settle].decimals,
        )
        most = min(pos.margin, margin.max_reducible(pos.margin, base_margin, upl, inst.reduce_margin_ratio))
        if amt > most:
            raise Rejected("exceeds_max_reducible", f"reduce {fmt(amt)}: at most {fmt(most)} can be removed")
    ctx.emit(
        ev.PositionMarginChanged(
            acct=account.acct, instId=inst.inst_id, posSide=side, ccy=inst.settle, amt=amt, reason=command.action
        )
    )
    ctx.touch(account.acct)


def check_leverage(state: State, account: Account | None, inst: Instrument, mgn_mode: str, lever: Decimal) -> None:
    """New leverage must allow the open position's size (tier cap), and for cross the account's
    initial margin at the new leverage."""
    if account is None:
        return
    for (inst_id, _), pos in account.perps.items():
        if inst_id == inst.inst_id and pos.mgn_mode == mgn_mode:
            cap = margin.perp_size_cap(inst.tiers, lever)
            if abs(pos.qty) > cap:
                raise Rejected("lever_above_tier", f"position {fmt(abs(pos.qty))} is above {fmt(cap)} at {fmt(lever)}x")
    if mgn_mode == "cross" and (account.at_risk() or account.cross_out):
        failure = check_initial_margin(state, account, lever=(inst.inst_id, lever))
        if failure is not None:
            raise Rejected(*failure)


def settle_funding(ctx: Ctx, command: cmd.SettleFunding) -> None:
    state = ctx.state
    inst = state.instruments.get(command.instId)
    if inst is None or inst.inst_type != "SWAP":
        raise Rejected("unknown_instrument", f"instId {command.instId} is not a listed SWAP")
    mark = state.marks.get(inst.inst_id)
    if mark is None:
        raise Rejected("no_mark_price", f"funding settles at the mark: no mark price for {inst.inst_id} yet")
    rate = Decimal(command.fundingRate)
    if abs(rate) >= ONE:
        raise Rejected("invalid_fundingRate", f"fundingRate {command.fundingRate} must be within (-1, 1)")
    places = state.assets[inst.settle].decimals
    paid = received = ZERO
    for acct in list(state.debtors):
        account = state.accounts[acct]
        for key, pos in list(account.perps.items()):
            if key[0] != inst.inst_id or pos.qty == 0:
                continue
            owed = margin.funding_payment(pos.qty, inst.ct_val, mark, rate)
            if owed > 0:
                amt = round_up(owed, places)
                paid += amt
                signed = -amt
            else:
                amt = round_down(-owed, places)
                received += amt
                signed = amt
            if not amt:
                continue
            ctx.emit(ev.FundingSettled(acct=acct, instId=inst.inst_id, posSide=key[1], ccy=inst.settle, amt=signed))
            _make_whole(ctx, account, inst, pos)
            ctx.touch(acct)
    residual = plain_zero(paid - received)
    ctx.emit(ev.FundingResidual(instId=inst.inst_id, ccy=inst.settle, rate=rate, markPx=mark, amt=residual))
