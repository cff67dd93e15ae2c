"""Orders: validation, funds and margin checks, price-time matching, cancels.

Order types (``ordType``): ``limit`` rests what does not fill; ``post_only`` is refused if it
would take liquidity; ``ioc`` takes what it can at its limit and cancels the rest; ``fok`` fills
in full at its limit or not at all; ``market`` takes at any price and cancels the rest.

Fills are at the maker's price. Fees are charged in the currency received (buyer: base,
seller: quote), ``amount × rate`` rounded up (a rebate rounds down in magnitude).

Self-trade prevention (``cancel_maker``): when an incoming order meets a resting order of the
same account, the resting order is canceled (``order_canceled`` reason ``self_trade``) and
matching continues; no trade between an account and itself ever happens.

Funds (``tdMode``): ``cash`` orders freeze what they may spend (limit price × size for buys,
size for sells) and never borrow; ``cross`` orders freeze nothing — the initial-margin check
(``risk.check_initial_margin``) is made at placement assuming all the account's resting cross
orders fill, and a fill borrows automatically whatever the free cash does not cover. A cross
sell is refused when the VWAP of walking the book for its size is below 95 % of the best bid.
Isolated and SWAP orders: ``engine.core.isolated``, ``engine.core.swap`` (order cost with the
open loss against the mark, ``engine.core.opening``).

**Price band** (``pxBand``, docs/decisions.md 31c): with a mark, a limit-type order priced
beyond ``P·(1 ± band)`` on its aggressive side is refused (``price_band``) and a market order
walks the book no further. **The fill guard** (``engine.core.fill_guard``): before each fill,
the taker (unless a liquidation order) and then the maker are checked at the mark; a refused
taker's rest is canceled with the guard's reason and matching stops, a refused maker is canceled
and matching continues (as self-trade prevention).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

from engine.core import cross_position, fill_guard, isolated, margin, reverse
from engine.core.adjusted import check_held_equity
from engine.core.context import Ctx, Rejected
from engine.core.funds import emit_borrow
from engine.core.money import DOWN, NEAR, ZERO, fmt, is_multiple
from engine.core.risk import check_initial_margin
from engine.core.state import Account, Instrument, Order, State
from events import journal as ev
from events.commands import CancelOrder, PlaceOrder

_PRICED = frozenset({"limit", "post_only", "ioc", "fok"})


def walk_book(inst: Instrument, is_buy: bool, acct: str, limit_px: Decimal | None) -> Iterator[tuple[Decimal, Decimal]]:
    """``(price, size)`` an order could take, best first, skipping the account's own orders
    (self-trade prevention cancels them) and stopping at the limit price."""
    tick = inst.tick
    for ticks, level in inst.book.opposite_levels(is_buy):
        px = ticks * tick
        if limit_px is not None and (px > limit_px if is_buy else px < limit_px):
            return
        size = ZERO
        for order in level.values():
            if order.acct != acct:
                size += order.remaining
        if size:
            yield px, size


def _decimal_field(raw: str, name: str, step: Decimal, step_name: str) -> Decimal:
    value = Decimal(raw)
    if value <= 0:
        raise Rejected("invalid_" + name, f"{name} must be positive, got {raw}")
    if not is_multiple(value, step):
        raise Rejected(f"{name}_off_{step_name}", f"{name} {raw} is not a multiple of {step_name} {step}")
    return value


def place_order(ctx: Ctx, cmd: PlaceOrder) -> None:
    state = ctx.state
    inst = state.instruments.get(cmd.instId)
    if inst is None:
        raise Rejected("unknown_instrument", f"instId {cmd.instId} is not listed")
    swap = inst.inst_type == "SWAP"
    if swap and cmd.tdMode == "cash":
        raise Rejected("invalid_tdMode", "SWAP orders trade in cross or isolated margin, not cash")
    account = state.accounts.get(cmd.acct)
    if account is None:
        raise Rejected("unknown_account", f"acct {cmd.acct} has never deposited")
    if (cmd.instId, cmd.clOrdId) in account.orders:
        raise Rejected("duplicate_clordid", f"clOrdId {cmd.clOrdId} is already an open order on {cmd.instId}")
    sz = _decimal_field(cmd.sz, "sz", inst.lot, "lotSz")
    if sz < inst.min_sz:
        raise Rejected("sz_below_min", f"sz {cmd.sz} is below minSz {inst.min_sz}")
    is_buy = cmd.side == "buy"
    if cmd.reduceOnly and cmd.tdMode == "cross" and not swap:
        check_reduce_only(account, inst, cmd.tdMode, is_buy, sz)
    elif cmd.reduceOnly and cmd.tdMode == "cash":
        raise Rejected("invalid_reduceOnly", "reduceOnly applies to margin orders only")
    px: Decimal | None = None
    if cmd.ordType == "market":
        if cmd.px is not None:
            raise Rejected("invalid_px", "px must be omitted for market orders")
    else:
        if cmd.px is None:
            raise Rejected("missing_px", f"px is required for {cmd.ordType} orders")
        px = _decimal_field(cmd.px, "px", inst.tick, "tickSz")
    mark = state.marks.get(cmd.instId)
    walk_limit = px
    if inst.px_band is not None and mark is not None:
        edge = margin.band_edge(mark, inst.px_band, is_buy)
        if px is None:
            walk_limit = edge  # a market order walks the book no further than the band
        elif margin.beyond_band(px, mark, inst.px_band, is_buy):
            shown = f"{cmd.side} at {fmt(px)} is beyond the price band: {fmt(edge)} (mark {fmt(mark)} ± {inst.px_band})"
            raise Rejected("price_band", shown)
    if cmd.ordType == "post_only" and next(walk_book(inst, is_buy, cmd.acct, px), None) is not None:
        raise Rejected("post_only_would_cross", f"post_only {cmd.side} at {px} would take liquidity")
    fill_sz, fill_notional = margin.book_walk(walk_book(inst, is_buy, cmd.acct, walk_limit), sz)
    levels = walk_book(inst, is_buy, cmd.acct, walk_limit)  # (a generator, used by market orders only)
    if swap:
        from engine.core import swap as perps

        terms = perps.order_terms(state, account, inst, cmd, is_buy, sz, px, levels)
    elif cmd.tdMode == "isolated":
        if not is_buy:
            _sell_guard(inst, fill_sz, fill_notional)
        cost = px * sz if px is not None else fill_notional
        if reverse.is_reverse(account, inst, is_buy, sz, cost, cmd.reduceOnly):  # seed 001 §3
            reverse.place_reverse(ctx, cmd, account, inst, is_buy, sz, px, walk_limit)
            return
        terms = isolated.order_terms(
            state, account, inst, is_buy, sz, px, fill_notional, cmd.ccy, cmd.reduceOnly, levels
        )
    else:
        mgn_ccy = cross_position.check_margin_ccy(account, inst, is_buy, cmd.ccy) if cmd.tdMode == "cross" else ""
        terms = isolated.OrderTerms(
            _check_funds(state, account, inst, cmd, is_buy, sz, px, fill_sz, fill_notional), "", mgn_ccy, None, False
        )
    if cmd.tdMode == "isolated" and not terms.reduce and terms.frozen:
        check_held_equity(state, account, terms.mgn_ccy, terms.frozen)  # seed 001, decision 35
    order_id = state.next_order_id
    ctx.emit(
        ev.OrderAccepted(
            orderId=order_id,
            acct=cmd.acct,
            instId=cmd.instId,
            clOrdId=cmd.clOrdId,
            side=cmd.side,
            ordType=cmd.ordType,
            tdMode=cmd.tdMode,
            px=px,
            sz=sz,
            frozen=terms.frozen,
            posSide=terms.pos_side,
            mgnCcy=terms.mgn_ccy,
            lever=terms.lever,
            reduce=terms.reduce,
        )
    )
    order = state.orders[order_id]
    if cmd.ordType == "fok" and fill_sz < sz:
        _cancel(ctx, order, "fok")
        return
    run_order(ctx, order, inst, cmd.ordType)


def run_order(ctx: Ctx, order: Order, inst: Instrument, ord_type: str) -> None:
    """Match an accepted order; its rest rests (``limit``, ``post_only``) or is canceled (``ioc``)."""
    match(ctx, order, inst)
    if order.remaining and order.order_id in ctx.state.orders:  # (a reduce-only order may be gone)
        if ord_type in ("limit", "post_only"):
            ctx.emit(ev.OrderRested(orderId=order.order_id, sz=order.remaining))
        else:
            _cancel(ctx, order, "ioc")


def check_reduce_only(account: Account, inst: Instrument, td_mode: str, is_buy: bool, sz: Decimal) -> None:
    """A reduce-only order may only shrink the account's cross position on the instrument:
    opposite side, and no larger than the position (checked at placement)."""
    if td_mode != "cross":
        raise Rejected("invalid_reduceOnly", "reduceOnly applies to margin (cross) orders only")
    ledger = account.positions.get(inst.inst_id)
    qty = ledger.qty if ledger is not None else ZERO
    if qty == 0 or (qty > 0) == is_buy:
        raise Rejected("reduce_only_would_increase", f"no {'short' if is_buy else 'long'} position to reduce")
    if sz > abs(qty):
        raise Rejected("reduce_only_exceeds_position", f"sz {sz} is above the position {abs(qty)}")


def _check_funds(
    state: State,
    account: Account,
    inst: Instrument,
    cmd: PlaceOrder,
    is_buy: bool,
    sz: Decimal,
    px: Decimal | None,
    fill_sz: Decimal,
    fill_notional: Decimal,
) -> Decimal:
    """Refuse what the account cannot afford; return the amount to freeze (cash mode)."""
    spend_ccy = inst.quote if is_buy else inst.base
    buy_cost = px * sz if px is not None else fill_notional
    spend = buy_cost if is_buy else sz
    if cmd.tdMode == "cash":
        bal = account.balances.get(spend_ccy)
        free = bal.cash - bal.frozen if bal else ZERO
        if free < spend:
            raise Rejected("insufficient_balance", f"needs {spend} {spend_ccy}, {free} available")
        if account.at_risk():  # the trade moves the cross account's equity (valued at the mark)
            received = (sz if px is not None else fill_sz) if is_buy else (px * sz if px is not None else fill_notional)
            inflow = {inst.base if is_buy else inst.quote: received, spend_ccy: -spend}
            failure = check_initial_margin(state, account, inflow=inflow)
            if failure is not None:
                raise Rejected(*failure)
        return spend if px is not None else ZERO
    if not is_buy:
        _sell_guard(inst, fill_sz, fill_notional)
    qty = sz if px is not None else fill_sz
    notional = px * sz if px is not None else fill_notional
    out, inflow = ({inst.quote: notional}, {inst.base: qty}) if is_buy else ({inst.base: qty}, {inst.quote: notional})
    repaid = None  # what the part closing a cross position repays from its proceeds (fees aside)
    closed = cross_position.closing_part(account.positions.get(inst.inst_id), is_buy, qty)
    if closed and qty:
        repaid = {inst.base: closed} if is_buy else {inst.quote: DOWN.divide(notional * closed, qty)}
    failure = check_initial_margin(state, account, out=out, inflow=inflow, repaid=repaid)
    if failure is not None:
        raise Rejected(*failure)
    return ZERO


def _sell_guard(inst: Instrument, fill_sz: Decimal, fill_notional: Decimal) -> None:
    """Decision 7: refuse a margin sell whose estimated VWAP is below 95 % of the best bid."""
    best_bid = inst.book.best_bid_ticks()
    if best_bid is not None and fill_sz and not margin.sell_guard_passes(fill_sz, fill_notional, best_bid * inst.tick):
        estimate = NEAR.divide(fill_notional, fill_sz)
        raise Rejected(
            "sell_price_guard", f"estimated price {estimate} is below 95% of the best bid {best_bid * inst.tick}"
        )


def sell_guard_refusal(inst: Instrument, acct: str, size: Decimal) -> Rejected | None:
    """The 95 % guard for an engine-made market sell of ``size`` (``close_position``)."""
    filled, notional = margin.book_walk(walk_book(inst, False, acct, None), size)
    try:
        _sell_guard(inst, filled, notional)
    except Rejected as refusal:
        return refusal
    return None


def _before_fill(ctx: Ctx, order: Order, inst: Instrument, sz: Decimal, px: Decimal, fee_rate: Decimal) -> None:
    """What a fill needs first: cross spot borrows; isolated spot posts margin and borrows;
    SWAP settles its own way (``engine.core.swap``)."""
    if inst.inst_type == "SWAP":
        from engine.core import swap as perps

        perps.before_fill(ctx, order, inst, sz, px, fee_rate)
    elif order.td_mode == "cross":
        _borrow_for_fill(ctx, order, inst, sz, px)
    elif order.td_mode == "isolated":
        isolated.before_fill(ctx, order, inst, sz, px)


def _after_fill(
    ctx: Ctx, order_id: int, td_mode: str, acct: str, inst: Instrument, sz: Decimal, px: Decimal, liquidation: bool
) -> None:
    """After ``traded``: SWAP settles cash/margin and releases flat positions; an isolated spot
    closing fill repays from its proceeds."""
    if inst.inst_type == "SWAP":
        from engine.core import swap as perps

        perps.after_fill(ctx, order_id, acct, inst, sz, px)
    elif td_mode == "isolated":
        reason = "liquidation" if liquidation else "close"
        isolated.after_closing_fill(ctx, ctx.state.accounts[acct], inst, reason)


def _capped(ctx: Ctx, taker: Order, maker: Order, inst: Instrument, sz: Decimal) -> Decimal:
    """Cap a SWAP fill by the reduce-only orders' positions; an order with nothing left to
    reduce is canceled (reason ``reduce_only``). Returns the size to fill (0: none now)."""
    from engine.core.swap import reduce_cap

    state = ctx.state
    for order in (maker, taker):
        cap = reduce_cap(state, order, inst)
        if cap is None:
            continue
        if not cap:
            _cancel(ctx, order, "reduce_only")
            return ZERO
        sz = min(sz, cap)
    return sz


def _borrow_for_fill(ctx: Ctx, order: Order, inst: Instrument, sz: Decimal, px: Decimal) -> None:
    """Cross orders borrow at fill whatever the account's free cash does not cover."""
    ccy, need = (inst.quote, px * sz) if order.is_buy else (inst.base, sz)
    bal = ctx.state.accounts[order.acct].balances.get(ccy)
    free = bal.cash - bal.frozen if bal else ZERO
    if free < need:
        emit_borrow(ctx, order.acct, ccy, need - free, auto=True)


def match(ctx: Ctx, order: Order, inst: Instrument, liquidation: bool = False, repays: bool = False) -> None:
    """Match ``order`` against the opposite side, best price first, FIFO within a level. It
    stops when the order is filled, the book side is empty or beyond the limit, or the order is
    gone (a closing fill that repays an isolated position releases it, and that cancels the
    position's orders, this one included). ``repays``: a cross ``close_position`` order, whose
    proceeds repay the debt right after (the fill guard counts that repayment)."""
    state = ctx.state
    orders = state.orders
    levels = inst.book.asks if order.is_buy else inst.book.bids
    limit = order.px
    quote_dec = state.assets[inst.quote].decimals
    base_dec = state.assets[inst.base].decimals if inst.inst_type == "SPOT" else quote_dec
    while order.remaining and levels and order.order_id in orders:
        level = levels.peekitem(0)[1]
        maker = next(iter(level.values()))
        px = maker.px
        assert px is not None
        if limit is not None and (px > limit if order.is_buy else px < limit):
            break
        if maker.acct == order.acct:
            _cancel(ctx, maker, "self_trade")
            continue
        sz = min(order.remaining, maker.remaining)
        if inst.inst_type == "SWAP":
            sz = _capped(ctx, order, maker, inst, sz)
            if not sz:
                if not order.remaining or order.order_id not in state.orders:
                    break
                continue
        if not liquidation:  # the fill guard (engine.core.fill_guard): the taker first ...
            refusal = fill_guard.check(state, order, inst, sz, px, inst.taker_fee, repays)
            if refusal is not None:
                _cancel(ctx, order, *refusal)
                break
        refusal = fill_guard.check(state, maker, inst, sz, px, inst.maker_fee)
        if refusal is not None:  # ... then the maker, canceled like a self-trade
            _cancel(ctx, maker, *refusal)
            continue
        if maker.td_mode != "cash":
            _before_fill(ctx, maker, inst, sz, px, inst.maker_fee)
            ctx.touch(maker.acct)
        if order.td_mode != "cash":
            _before_fill(ctx, order, inst, sz, px, inst.taker_fee)
        maker_reduce, taker_reduce = maker.reduce, order.reduce
        maker_id, maker_mode, taker_id, taker_mode = maker.order_id, maker.td_mode, order.order_id, order.td_mode
        notional = px * sz
        if inst.inst_type == "SWAP":  # both sides pay in the settlement currency, on the notional
            maker_fee = margin.swap_fee(sz, inst.ct_val, px, inst.maker_fee, quote_dec)
            taker_fee = margin.swap_fee(sz, inst.ct_val, px, inst.taker_fee, quote_dec)
        else:
            maker_fee = margin.trade_fee(
                notional if order.is_buy else sz, inst.maker_fee, quote_dec if order.is_buy else base_dec
            )
            taker_fee = margin.trade_fee(
                sz if order.is_buy else notional, inst.taker_fee, base_dec if order.is_buy else quote_dec
            )
        repayments = []  # cross closing fills repay from their proceeds (engine.core.cross_position)
        if inst.inst_type == "SPOT":
            if maker.td_mode == "cross":
                repayments.append(cross_position.closing_repayment(state, maker, inst, sz, px, maker_fee))
            if order.td_mode == "cross" and not liquidation:
                repayments.append(cross_position.closing_repayment(state, order, inst, sz, px, taker_fee))
        ctx.emit(
            ev.Traded(
                tradeId=state.next_trade_id,
                instId=inst.inst_id,
                px=px,
                sz=sz,
                takerSide="buy" if order.is_buy else "sell",
                makerOrderId=maker.order_id,
                takerOrderId=order.order_id,
                makerAcct=maker.acct,
                takerAcct=order.acct,
                makerFee=maker_fee,
                takerFee=taker_fee,
                liquidation=liquidation,
            )
        )
        if liquidation and inst.liq_fee:
            received, ccy, places = (sz, inst.base, base_dec) if order.is_buy else (notional, inst.quote, quote_dec)
            if inst.inst_type == "SWAP":
                received, ccy, places = notional * inst.ct_val, inst.quote, quote_dec
            fee = margin.trade_fee(received, inst.liq_fee, places)
            if fee > 0:
                iso = order.td_mode == "isolated"
                ctx.emit(
                    ev.LiquidationFeeCharged(
                        acct=order.acct, ccy=ccy, amt=fee, instId=inst.inst_id if iso else "",
                        posSide=order.pos_side if iso else "",
                    )
                )  # fmt: skip
        for repayment in repayments:
            if repayment is not None:
                cross_position.repay_closing(ctx, repayment)
        if maker_mode != "cash" and (maker_reduce or inst.inst_type == "SWAP"):
            _after_fill(ctx, maker_id, maker_mode, maker.acct, inst, sz, px, False)
        if taker_mode != "cash" and (taker_reduce or inst.inst_type == "SWAP"):
            _after_fill(ctx, taker_id, taker_mode, order.acct, inst, sz, px, liquidation)
        ctx.touch(maker.acct)
        ctx.touch(order.acct)


def cancel(ctx: Ctx, order: Order, reason: str, message: str = "") -> None:
    """Cancel ``order`` (``order_canceled`` with ``reason``; ``message`` for guard reasons)."""
    _cancel(ctx, order, reason, message)


def _cancel(ctx: Ctx, order: Order, reason: str, message: str = "") -> None:
    ctx.emit(
        ev.OrderCanceled(
            orderId=order.order_id,
            acct=order.acct,
            instId=order.inst_id,
            clOrdId=order.cl_ord_id,
            remaining=order.remaining,
            reason=reason,
            message=message,
        )
    )


def cancel_all(ctx: Ctx, account: Account, reason: str, td_modes: tuple[str, ...] | None = None) -> None:
    """Cancel the open orders of an account whose ``tdMode`` is in ``td_modes`` (all if
    ``None``), oldest first — except isolated spot **closing** orders, which hold their
    position's assets, not the account's (the position's own liquidation cancels them)."""
    for order in sorted(account.orders.values(), key=lambda o: o.order_id):
        if order.td_mode == "isolated" and order.reduce and ctx.state.instruments[order.inst_id].inst_type == "SPOT":
            continue
        if td_modes is None or order.td_mode in td_modes:
            _cancel(ctx, order, reason)


def cancel_order(ctx: Ctx, cmd: CancelOrder) -> None:
    account = ctx.state.accounts.get(cmd.acct)
    order = account.orders.get((cmd.instId, cmd.clOrdId)) if account else None
    if order is None:
        raise Rejected("order_not_found", f"no open order clOrdId {cmd.clOrdId} on {cmd.instId} for {cmd.acct}")
    _cancel(ctx, order, "user")


def submit_liquidation_order(ctx: Ctx, account: Account, inst: Instrument, is_buy: bool, sz: Decimal) -> Decimal:
    """Send a liquidation market order (IOC, exempt from the sell guard); return size filled."""
    return submit_market_order(ctx, account, inst, is_buy, sz, "liq")


def submit_market_order(
    ctx: Ctx,
    account: Account,
    inst: Instrument,
    is_buy: bool,
    sz: Decimal,
    purpose: str,
    td_mode: str = "cross",
    reduce: bool = False,
    pos_side: str = "",
) -> Decimal:
    """Send an engine-made market order (IOC), ``clOrdId`` ``<purpose>-<orderId>``; fills of
    ``liq``/``liquidation`` orders are liquidation fills. Isolated and SWAP closing orders carry
    ``reduce`` (and the position side). Checks (sell guard) are the caller's. Returns size filled."""
    state = ctx.state
    order_id = state.next_order_id
    iso_spot = td_mode == "isolated" and inst.inst_type == "SPOT"
    ctx.emit(
        ev.OrderAccepted(
            orderId=order_id,
            acct=account.acct,
            instId=inst.inst_id,
            clOrdId=f"{purpose}-{order_id}",
            side="buy" if is_buy else "sell",
            ordType="market",
            tdMode=td_mode,
            px=None,
            sz=sz,
            frozen=ZERO,
            posSide="net" if iso_spot else pos_side,
            mgnCcy=account.isolated[inst.inst_id].mgn_ccy if iso_spot else "",
            reduce=reduce,
        )
    )
    order = state.orders[order_id]
    match(ctx, order, inst, liquidation=purpose in ("liq", "liquidation"), repays=purpose == "close")
    filled = order.sz - order.remaining
    if order.remaining and order_id in state.orders:
        _cancel(ctx, order, "ioc")
    return filled


def lot_floor(inst: Instrument, qty: Decimal) -> Decimal:
    """Largest multiple of the lot not above ``qty``."""
    return (qty // inst.lot) * inst.lot


def lot_ceil(inst: Instrument, qty: Decimal) -> Decimal:
    """Smallest multiple of the lot not below ``qty``."""
    lots = qty // inst.lot
    return (lots if lots * inst.lot == qty else lots + 1) * inst.lot
