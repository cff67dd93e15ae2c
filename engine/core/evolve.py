"""The fold: apply one journal event to the state. The only code that mutates engine state.

``apply(state, event)`` is total and makes no decision: every amount was decided (and rounded)
by the command handlers and travels in the event. The engine applies each event the moment it
emits it; projections and replay fold the journal through this same function, which is why a
state rebuilt from events has the same digest as the engine's.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

from engine.core.book import price_key
from engine.core.margin import average_entry, closed_share_pnl, perp_order_im
from engine.core.money import DOWN, NEAR, ZERO, round_down, round_up
from engine.core.opening import add_fill
from engine.core.position_risk import remaining_value
from engine.core.state import (
    FUTURES_SUFFIX,
    Account,
    Asset,
    Balance,
    Instrument,
    IsoPosition,
    Order,
    PerpPosition,
    PositionLedger,
    State,
    TierRow,
)
from events import journal as ev
from events.commands import ListInstrument


def instrument_from_spec(spec: ListInstrument) -> Instrument:
    """Build an :class:`Instrument` from a validated ``list_instrument`` command."""
    spot = spec.instType == "SPOT"
    base = spec.baseCcy if spot else spec.instId.split("-")[0]
    settle = spec.quoteCcy if spot else spec.settleCcy
    assert base is not None and settle is not None
    tiers = tuple(
        TierRow(
            tier=t.tier,
            mmr=Decimal(t.mmr),
            imr=Decimal(t.imr),
            max_lever=Decimal(t.maxLever),
            max_borrow_base=None if t.maxBorrowBase is None else Decimal(t.maxBorrowBase),
            max_borrow_quote=None if t.maxBorrowQuote is None else Decimal(t.maxBorrowQuote),
            max_sz=None if t.maxSz is None else Decimal(t.maxSz),
        )
        for t in spec.tiers
    )
    return Instrument(
        inst_id=spec.instId,
        inst_type=spec.instType,
        base=base,
        quote=settle,
        settle=settle,
        ct_val=Decimal(spec.ctVal) if spec.ctVal is not None else Decimal(1),
        tick=Decimal(spec.tickSz),
        lot=Decimal(spec.lotSz),
        min_sz=Decimal(spec.minSz),
        maker_fee=Decimal(spec.makerFee),
        taker_fee=Decimal(spec.takerFee),
        max_lever=Decimal(spec.maxLever),
        tiers=tiers,
        liq_fee=Decimal(spec.liqFee) if spec.liqFee is not None else ZERO,
        reduce_margin_ratio=Decimal(spec.reduceMarginRatio) if spec.reduceMarginRatio is not None else ZERO,
        px_band=Decimal(spec.pxBand) if isinstance(spec.pxBand, str) else None,
    )


def _add(pool: dict[str, Decimal], ccy: str, amt: Decimal) -> None:
    pool[ccy] = pool.get(ccy, ZERO) + amt


def _asset_listed(state: State, e: ev.AssetListed) -> None:
    asset = state.assets[e.ccy] = Asset(e.ccy, e.decimals)
    if e.discount is not None:
        asset.discount = e.discount


def _instrument_listed(state: State, e: ev.InstrumentListed) -> None:
    inst = instrument_from_spec(e.spec)
    inst.spec = e.spec
    state.instruments[inst.inst_id] = inst
    if state.valuation_ccy is None:
        state.valuation_ccy = inst.quote
        state.prices[inst.quote] = Decimal(1)
    if inst.inst_type != "SPOT":
        return
    if inst.quote == state.valuation_ccy and inst.base not in state.price_inst:
        state.price_inst[inst.base] = inst.inst_id
    current = state.margin_inst.get(inst.base)
    if current is None or state.instruments[current].base != inst.base:
        state.margin_inst[inst.base] = inst.inst_id
    state.margin_inst.setdefault(inst.quote, inst.inst_id)


def _interest_rate_set(state: State, e: ev.InterestRateSet) -> None:
    asset = state.assets[e.ccy]
    asset.daily_rate = e.dailyRate
    asset.hourly_rate = NEAR.divide(e.dailyRate, Decimal(24))
    asset.accrual = e.accrual
    asset.compounding = e.compounding


def _leverage_set(state: State, e: ev.LeverageSet) -> None:
    account = state.account(e.acct)
    (account.iso_leverage if e.mgnMode == "isolated" else account.leverage)[e.instId] = e.lever


def _mark_price_set(state: State, e: ev.MarkPriceSet) -> None:
    state.marks[e.instId] = e.markPx
    base = state.instruments[e.instId].base
    if state.price_inst.get(base) == e.instId:
        state.prices[base] = e.markPx


def _deposited(state: State, e: ev.Deposited) -> None:
    state.account(e.acct).balance(e.ccy).cash += e.amt


def _withdrawn(state: State, e: ev.Withdrawn) -> None:
    state.accounts[e.acct].balances[e.ccy].cash -= e.amt


def _transferred(state: State, e: ev.Transferred) -> None:
    spot = state.accounts[e.acct]
    futures = state.accounts[e.acct + FUTURES_SUFFIX]
    source, target = (spot, futures) if e.source == "spot" else (futures, spot)
    source.balances[e.ccy].cash -= e.amt
    target.balance(e.ccy).cash += e.amt


def _account_mode_set(state: State, e: ev.AccountModeSet) -> None:
    state.accounts[e.acct].acct_mode = e.acctMode
    if e.acctMode == "futures_wallet":
        state.account(e.acct + FUTURES_SUFFIX)


def _exposure(state: State, account: Account) -> None:
    """Keep ``state.debtors`` = the accounts a price can move (``Account.exposed``), ranked in
    order of becoming exposed."""
    acct = account.acct
    if account.exposed():
        if acct not in state.debtors:
            state.debtors[acct] = state.next_debtor_rank
            state.next_debtor_rank += 1
    else:
        state.debtors.pop(acct, None)


def _borrowed(state: State, e: ev.Borrowed) -> None:
    account = state.accounts[e.acct]
    bal = account.balance(e.ccy)
    bal.cash += e.amt
    bal.liab += e.amt
    _exposure(state, account)


def _repaid(state: State, e: ev.Repaid) -> None:
    account = state.accounts[e.acct]
    bal = account.balances[e.ccy]
    bal.cash -= e.interest + e.principal
    bal.interest -= e.interest
    bal.liab -= e.principal
    if account.positions and not (bal.liab or bal.interest):
        for inst_id, ledger in list(account.positions.items()):
            _prune(account, inst_id, ledger, state.instruments[inst_id])
    _exposure(state, account)


def _interest_hour_closed(state: State, e: ev.InterestHourClosed) -> None:
    state.last_interest_hour = e.hour


def _interest_accrued(state: State, e: ev.InterestAccrued) -> None:
    account = state.accounts[e.acct]
    if e.instId:
        account.isolated[e.instId].interest += e.amt
    else:
        account.balances[e.ccy].interest += e.amt
    _add(state.interest_income, e.ccy, e.amt)


# --- positions ----------------------------------------------------------------------------


def _holding(pos: IsoPosition, inst: Instrument, ccy: str, amt: Decimal, kept: bool = False) -> None:
    """Add ``amt`` (signed) of ``ccy`` to an isolated spot position's own holdings; ``kept``:
    to the part that is not the remaining position's P&L too (``IsoPosition.kept_quote``)."""
    if ccy == inst.base:
        pos.base += amt
        if kept:
            pos.kept_base += amt
    else:
        pos.quote += amt
        if kept:
            pos.kept_quote += amt


def _position_opened(state: State, e: ev.PositionOpened) -> None:
    account = state.accounts[e.acct]
    if state.instruments[e.instId].inst_type == "SPOT":
        account.isolated[e.instId] = IsoPosition(e.instId, e.long, e.mgnCcy)
    else:
        account.perps[(e.instId, e.posSide)] = PerpPosition(e.instId, e.posSide, e.mgnMode)
    _exposure(state, account)


def _position_borrowed(state: State, e: ev.PositionBorrowed) -> None:
    pos = state.accounts[e.acct].isolated[e.instId]
    pos.liab += e.amt
    _holding(pos, state.instruments[e.instId], e.ccy, e.amt)


def _margin_holder(state: State, acct: str, inst_id: str, pos_side: str) -> IsoPosition | PerpPosition:
    account = state.accounts[acct]
    if state.instruments[inst_id].inst_type == "SPOT":
        return account.isolated[inst_id]
    return account.perps[(inst_id, pos_side)]


def _position_margin_changed(state: State, e: ev.PositionMarginChanged) -> None:
    pos = _margin_holder(state, e.acct, e.instId, e.posSide)
    bal = state.accounts[e.acct].balance(e.ccy)
    reason = e.reason
    if reason == "open":
        assert e.orderId is not None
        order = state.orders[e.orderId]
        order.frozen -= e.amt
        bal.frozen -= e.amt
        bal.cash -= e.amt
        pos.margin += e.amt
        if isinstance(pos, IsoPosition):
            pos.base_margin += e.amt
    elif reason in ("add", "top_up"):
        bal.cash -= e.amt
        pos.margin += e.amt
        if reason == "top_up" and isinstance(pos, IsoPosition):  # opening margin, like ``open``
            pos.base_margin += e.amt
    elif reason == "reduce":
        pos.margin -= e.amt
        bal.cash += e.amt
    else:  # "use": margin becomes the position's own holdings (isolated spot only)
        assert isinstance(pos, IsoPosition)
        pos.margin -= e.amt
        _holding(pos, state.instruments[e.instId], e.ccy, e.amt, kept=True)


def _position_repaid(state: State, e: ev.PositionRepaid) -> None:
    pos = state.accounts[e.acct].isolated[e.instId]
    _holding(pos, state.instruments[e.instId], e.ccy, -(e.interest + e.principal))
    pos.interest -= e.interest
    pos.liab -= e.principal


def _position_released(state: State, e: ev.PositionReleased) -> None:
    account = state.accounts[e.acct]
    inst = state.instruments[e.instId]
    if inst.inst_type == "SPOT":
        del account.isolated[e.instId]
    else:
        del account.perps[(e.instId, e.posSide)]
    if e.base:
        account.balance(inst.base).cash += e.base
    if e.quote:
        account.balance(inst.quote).cash += e.quote
    _exposure(state, account)


def _position_mode_set(state: State, e: ev.PositionModeSet) -> None:
    state.account(e.acct).pos_mode = e.posMode


def _pnl_realised(state: State, e: ev.PnlRealised) -> None:
    account = state.accounts[e.acct]
    pos = account.perps[(e.instId, e.posSide)]
    bal = account.balance(e.ccy)
    if pos.mgn_mode == "isolated":
        pos.margin += e.amt - e.released
        bal.cash += e.released
    else:
        bal.cash += e.amt
    _add(state.clearing, e.ccy, -e.amt)


def _funding_settled(state: State, e: ev.FundingSettled) -> None:
    account = state.accounts[e.acct]
    pos = account.perps[(e.instId, e.posSide)]
    if pos.mgn_mode == "isolated":
        pos.margin += e.amt
    else:
        account.balance(e.ccy).cash += e.amt


def _funding_residual(state: State, e: ev.FundingResidual) -> None:
    _add(state.insurance, e.ccy, e.amt)


def _track_cross(account: Account, order: Order, inst: Instrument, sz: Decimal, sign: int) -> None:
    """Add (sign=+1) or remove (−1) ``sz`` of a cross limit order's worst-case flows."""
    if order.px is None:
        return
    notional = order.px * sz * sign
    qty = sz * sign
    out_ccy, in_ccy, out_amt, in_amt = (
        (inst.quote, inst.base, notional, qty) if order.is_buy else (inst.base, inst.quote, qty, notional)
    )
    account.cross_out[out_ccy] = account.cross_out.get(out_ccy, ZERO) + out_amt
    account.cross_in[in_ccy] = account.cross_in.get(in_ccy, ZERO) + in_amt


def _order_accepted(state: State, e: ev.OrderAccepted) -> None:
    inst = state.instruments[e.instId]
    is_buy = e.side == "buy"
    px_key = price_key(e.px, inst.tick, is_buy)
    order = Order(e.orderId, e.acct, e.instId, e.clOrdId, is_buy, e.ordType, e.tdMode, e.px, px_key, e.sz, e.frozen)
    order.pos_side = e.posSide
    order.mgn_ccy = e.mgnCcy
    order.lever = e.lever if e.lever is not None else ZERO
    order.reduce = e.reduce
    account = state.account(e.acct)
    account.orders[(e.instId, e.clOrdId)] = order
    state.orders[e.orderId] = order
    state.next_order_id = e.orderId + 1
    if e.frozen:
        _frozen_pool(state, account, inst, order).frozen += e.frozen
    if e.tdMode == "cross" and inst.inst_type == "SPOT":
        _track_cross(account, order, inst, e.sz, 1)
    elif _reserves_im(order):
        account.swap_im += _swap_order_im(inst, order, order.remaining)


def _reserves_im(order: Order) -> bool:
    """A resting cross SWAP limit order that may open (``Account.swap_im``)."""
    return order.td_mode == "cross" and order.px is not None and not order.reduce


def _swap_order_im(inst: Instrument, order: Order, remaining: Decimal) -> Decimal:
    assert order.px is not None
    return perp_order_im(remaining, inst.ct_val, order.px, order.lever) if remaining else ZERO


def _frozen_pool(state: State, account: Account, inst: Instrument, order: Order) -> Balance | IsoPosition:
    """Where an order's frozen funds sit: the account balance it spends (cash orders), the
    margin currency's balance (isolated opening orders) or the position (isolated closing)."""
    if order.td_mode == "isolated":
        if inst.inst_type == "SPOT" and order.reduce:
            return account.isolated[inst.inst_id]
        return account.balance(order.mgn_ccy)
    return account.balance(inst.quote if order.is_buy else inst.base)


def _finish(state: State, order: Order) -> None:
    del state.orders[order.order_id]
    del state.accounts[order.acct].orders[(order.inst_id, order.cl_ord_id)]


def _owes(account: Account, ccy: str) -> bool:
    bal = account.balances.get(ccy)
    return bal is not None and (bal.liab > 0 or bal.interest > 0)


def _prune(account: Account, inst_id: str, ledger: PositionLedger, inst: Instrument) -> None:
    """A cross position ends when it owes nothing in its liability currency (no liability, no
    margin position: what it held is the account's), or at quantity 0 when its margin currency
    is not the position currency (seed 002 §3.2: the whole position sold, the account's equity
    covers the rest). A matched position at quantity 0 that still owes stays (seed 000: "you
    can't fully close the position")."""
    pos_ccy, liab_ccy = (inst.base, inst.quote) if ledger.long else (inst.quote, inst.base)
    if _owes(account, liab_ccy) and (ledger.qty or ledger.mgn_ccy == pos_ccy):
        return
    if account.positions.get(inst_id) is ledger:
        del account.positions[inst_id]


def _ledger_fill(state: State, account: Account, inst: Instrument, order: Order, sz: Decimal, px: Decimal,
                 fee: Decimal) -> None:  # fmt: skip
    """Fold a cross SPOT fill into the account's cross position on ``inst`` (``PositionLedger``).

    ``moved`` = the base the fill moves net of base fees (buy: ``sz − fee``; sell: ``sz``). A
    fill against the position closes ``min(|qty|, moved)`` (a short's quote assets pay for it,
    proportionally when it reverses); the excess — or a fill in the position's direction, or
    with no position — adds to / opens a position in the fill's direction, which a fill with no
    position does only if the account now owes that direction's liability currency (a sale of
    owned coins opens no short). Rounding: the proportional shares round down at 18 places
    (display figures)."""
    is_buy = order.is_buy
    moved = sz - fee if is_buy else sz
    quote_in = ZERO if is_buy else px * sz - fee
    inst_id = inst.inst_id
    ledger = account.positions.get(inst_id)
    excess = moved
    if ledger is not None and ledger.qty and (ledger.qty > 0) != is_buy:
        closing = min(abs(ledger.qty), moved)
        excess = moved - closing
        if ledger.qty > 0:
            ledger.qty -= closing
            ledger.assets = ledger.qty
        else:
            spent = px * sz if not excess else round_down(DOWN.divide(px * sz * closing, moved), 18)
            ledger.qty += closing
            ledger.assets = max(ZERO, ledger.assets - spent) if ledger.qty else ZERO
        _prune(account, inst_id, ledger, inst)
        if not excess:
            return
        ledger = account.positions.get(inst_id)
    added_quote = quote_in if excess == moved else round_down(DOWN.divide(quote_in * excess, moved), 18)
    if ledger is not None and ledger.qty and (ledger.qty > 0) == is_buy:
        ledger.avg_px = average_entry(abs(ledger.qty), ledger.avg_px, excess, px)
        ledger.qty += excess if is_buy else -excess
        ledger.assets = ledger.qty if is_buy else ledger.assets + added_quote
        return
    if not _owes(account, inst.quote if is_buy else inst.base):
        return  # a plain spot trade in cross mode: no position
    mgn_ccy = order.mgn_ccy or (inst.base if is_buy else inst.quote)
    ledger = account.positions[inst_id] = PositionLedger(is_buy, mgn_ccy)
    ledger.avg_px = px
    ledger.qty = excess if is_buy else -excess
    ledger.assets = excess if is_buy else added_quote


def _settle_side(state: State, inst: Instrument, order: Order, sz: Decimal, px: Decimal, fee: Decimal) -> None:
    account = state.accounts[order.acct]
    notional = px * sz
    if inst.inst_type == "SWAP":
        _settle_perp(state, account, inst, order, sz, px, fee)
        if _reserves_im(order):
            account.swap_im += _swap_order_im(inst, order, order.remaining - sz) - _swap_order_im(
                inst, order, order.remaining
            )
        _order_filled(state, inst, order, sz)
        return
    if order.td_mode == "isolated":
        _settle_isolated(state, account, inst, order, sz, px, fee)
        _order_filled(state, inst, order, sz)
        return
    if order.is_buy:
        paid, got = account.balance(inst.quote), account.balance(inst.base)
        if order.frozen:
            release = order.px * sz if order.px is not None else ZERO
            order.frozen -= release
            paid.frozen -= release
        paid.cash -= notional
        received = sz - fee
        got.cash += received
        _add(state.fees, inst.base, fee)
    else:
        paid, got = account.balance(inst.base), account.balance(inst.quote)
        if order.frozen:
            order.frozen -= sz
            paid.frozen -= sz
        paid.cash -= sz
        received = notional - fee
        got.cash += received
        _add(state.fees, inst.quote, fee)
    if order.td_mode == "cross":
        _track_cross(account, order, inst, sz, -1)
        _ledger_fill(state, account, inst, order, sz, px, fee)
    _order_filled(state, inst, order, sz)


def _order_filled(state: State, inst: Instrument, order: Order, sz: Decimal) -> None:
    order.remaining -= sz
    if order.remaining == 0:
        if _resting(inst, order):
            inst.book.remove(order)
        if order.frozen:  # isolated opening orders: margin frozen at the limit and not posted
            _frozen_pool(state, state.accounts[order.acct], inst, order).frozen -= order.frozen
            order.frozen = ZERO
        _finish(state, order)


def _settle_isolated(
    state: State, account: Account, inst: Instrument, order: Order, sz: Decimal, px: Decimal, fee: Decimal
) -> None:
    """An isolated spot fill trades the position's own holdings (the borrowed funds, or its
    assets when closing); fees as everywhere, in the currency received."""
    pos = account.isolated[inst.inst_id]
    notional = px * sz
    closing_value = remaining_value(inst, pos, px) if order.reduce and pos.qty else None
    if order.is_buy:
        pos.quote -= notional
        pos.base += sz - fee
        _add(state.fees, inst.base, fee)
        if order.reduce and order.frozen:
            release = order.px * sz if order.px is not None else ZERO
            order.frozen -= release
            pos.frozen -= release
    else:
        pos.base -= sz
        pos.quote += notional - fee
        _add(state.fees, inst.quote, fee)
        if order.reduce and order.frozen:
            order.frozen -= sz
            pos.frozen -= sz
    if order.reduce:
        closed = min(sz, pos.qty)
        if pos.qty:
            places = state.assets[pos.mgn_ccy].decimals
            pos.base_margin = round_up(NEAR.divide(pos.base_margin * (pos.qty - closed), pos.qty), places)
        if closing_value is not None:  # the closed share's P&L stays in the position, apart
            fee_value = fee * px if order.is_buy else fee
            places = state.assets[inst.quote].decimals
            pos.kept_quote += closed_share_pnl(closing_value, closed, pos.qty, fee_value, places)
        pos.qty -= closed
    else:
        pos.avg_px = average_entry(pos.qty, pos.avg_px, sz, px) if pos.qty else px
        pos.qty += sz
        add_fill(state, order, inst, sz, px)


def _settle_perp(
    state: State, account: Account, inst: Instrument, order: Order, sz: Decimal, px: Decimal, fee: Decimal
) -> None:
    """A SWAP fill: the fee (settlement currency) from the cross cash or the isolated margin;
    the position re-averages on increases, keeps its entry on decreases, takes the fill price
    when it flips (net mode). P&L is settled by the ``pnl_realised`` event that follows."""
    pos = account.perps[(inst.inst_id, order.pos_side)]
    _add(state.fees, inst.settle, fee)
    if pos.mgn_mode == "isolated":
        pos.margin -= fee
    else:
        account.balance(inst.settle).cash -= fee
    delta = sz if order.is_buy else -sz
    qty = pos.qty
    if qty == 0 or (qty > 0) == order.is_buy:
        pos.avg_px = average_entry(abs(qty), pos.avg_px, sz, px) if qty else px
        opened = sz
    else:
        opened = max(ZERO, sz - abs(qty))
        if opened:
            pos.avg_px = px
    pos.qty = qty + delta
    if opened:
        add_fill(state, order, inst, opened * inst.ct_val, px)


def _resting(inst: Instrument, order: Order) -> bool:
    level = inst.book.side(order.is_buy).get(order.px_key)
    return level is not None and order.order_id in level


def _traded(state: State, e: ev.Traded) -> None:
    inst = state.instruments[e.instId]
    maker = state.orders[e.makerOrderId]
    taker = state.orders[e.takerOrderId]
    _settle_side(state, inst, maker, e.sz, e.px, e.makerFee)
    _settle_side(state, inst, taker, e.sz, e.px, e.takerFee)
    state.next_trade_id = e.tradeId + 1


def _order_rested(state: State, e: ev.OrderRested) -> None:
    order = state.orders[e.orderId]
    state.instruments[order.inst_id].book.add(order)


def _order_canceled(state: State, e: ev.OrderCanceled) -> None:
    order = state.orders[e.orderId]
    inst = state.instruments[order.inst_id]
    account = state.accounts[order.acct]
    if _resting(inst, order):
        inst.book.remove(order)
    if order.frozen:
        _frozen_pool(state, account, inst, order).frozen -= order.frozen
        order.frozen = ZERO
    if order.td_mode == "cross" and inst.inst_type == "SPOT":
        _track_cross(account, order, inst, order.remaining, -1)
    elif _reserves_im(order):
        account.swap_im -= _swap_order_im(inst, order, order.remaining)
    _finish(state, order)


def _position_closed(state: State, e: ev.PositionClosed) -> None:
    state.accounts[e.acct].positions.pop(e.instId, None)


def _risk_holder(state: State, acct: str, inst_id: str, pos_side: str) -> Account | IsoPosition | PerpPosition:
    """The account (cross) or the isolated position a risk event is about."""
    if not inst_id:
        return state.accounts[acct]
    return _margin_holder(state, acct, inst_id, pos_side)


def _margin_call_raised(state: State, e: ev.MarginCallRaised) -> None:
    _risk_holder(state, e.acct, e.instId, e.posSide).margin_call = True


def _margin_call_cleared(state: State, e: ev.MarginCallCleared) -> None:
    holder = state.accounts[e.acct] if not e.instId else _find_position(state, e.acct, e.instId, e.posSide)
    if holder is not None:
        holder.margin_call = False


def _find_position(state: State, acct: str, inst_id: str, pos_side: str) -> IsoPosition | PerpPosition | None:
    account = state.accounts[acct]
    if state.instruments[inst_id].inst_type == "SPOT":
        return account.isolated.get(inst_id)
    return account.perps.get((inst_id, pos_side))


def _liquidation_started(state: State, e: ev.LiquidationStarted) -> None:
    _risk_holder(state, e.acct, e.instId, e.posSide).liquidating = True


def _into_holder(state: State, acct: str, ccy: str, amt: Decimal, inst_id: str, pos_side: str) -> None:
    """Pay ``amt`` (signed) of ``ccy`` into the account's cash or the isolated position ``inst_id``
    (spot: its holdings; SWAP: its margin)."""
    if not inst_id:
        state.accounts[acct].balance(ccy).cash += amt
        return
    pos = _margin_holder(state, acct, inst_id, pos_side)
    if isinstance(pos, IsoPosition):  # a liquidation fee, fund cover or write-off: not its P&L
        _holding(pos, state.instruments[inst_id], ccy, amt, kept=True)
    else:
        pos.margin += amt


def _insurance_fund_covered(state: State, e: ev.InsuranceFundCovered) -> None:
    _add(state.insurance, e.ccy, -e.amt)
    _into_holder(state, e.acct, e.ccy, e.amt, e.instId, e.posSide)


def _debt_written_off(state: State, e: ev.DebtWrittenOff) -> None:
    _add(state.written_off, e.ccy, e.amt)
    _into_holder(state, e.acct, e.ccy, e.amt, e.instId, e.posSide)


def _liquidation_fee_charged(state: State, e: ev.LiquidationFeeCharged) -> None:
    _into_holder(state, e.acct, e.ccy, -e.amt, e.instId, e.posSide)
    _add(state.insurance, e.ccy, e.amt)


def _assets_taken_over(state: State, e: ev.AssetsTakenOver) -> None:
    _into_holder(state, e.acct, e.ccy, -e.amt, e.instId, "net")
    _add(state.insurance, e.ccy, e.amt)


def _liquidation_finished(state: State, e: ev.LiquidationFinished) -> None:
    if e.instId:
        pos = _find_position(state, e.acct, e.instId, e.posSide)
        if pos is not None:
            pos.liquidating = False
        return
    account = state.accounts[e.acct]
    account.liquidating = False
    if not account.has_debt():  # a full liquidation: what is left is plain cash
        account.positions.clear()


def _nothing(state: State, e: Any) -> None:
    """Events that record a refusal change nothing."""


_APPLY: Final[dict[type, Callable[[State, Any], None]]] = {
    ev.AssetListed: _asset_listed,
    ev.InstrumentListed: _instrument_listed,
    ev.InterestRateSet: _interest_rate_set,
    ev.LeverageSet: _leverage_set,
    ev.MarkPriceSet: _mark_price_set,
    ev.Deposited: _deposited,
    ev.Withdrawn: _withdrawn,
    ev.Transferred: _transferred,
    ev.AccountModeSet: _account_mode_set,
    ev.Borrowed: _borrowed,
    ev.Repaid: _repaid,
    ev.InterestHourClosed: _interest_hour_closed,
    ev.InterestAccrued: _interest_accrued,
    ev.PositionOpened: _position_opened,
    ev.PositionBorrowed: _position_borrowed,
    ev.PositionMarginChanged: _position_margin_changed,
    ev.PositionRepaid: _position_repaid,
    ev.PositionReleased: _position_released,
    ev.PositionModeSet: _position_mode_set,
    ev.PnlRealised: _pnl_realised,
    ev.FundingSettled: _funding_settled,
    ev.FundingResidual: _funding_residual,
    ev.OrderAccepted: _order_accepted,
    ev.OrderRejected: _nothing,
    ev.Traded: _traded,
    ev.OrderRested: _order_rested,
    ev.OrderCanceled: _order_canceled,
    ev.PositionClosed: _position_closed,
    ev.MarginCallRaised: _margin_call_raised,
    ev.MarginCallCleared: _margin_call_cleared,
    ev.LiquidationStarted: _liquidation_started,
    ev.LiquidationFeeCharged: _liquidation_fee_charged,
    ev.InsuranceFundCovered: _insurance_fund_covered,
    ev.DebtWrittenOff: _debt_written_off,
    ev.AssetsTakenOver: _assets_taken_over,
    ev.LiquidationFinished: _liquidation_finished,
    ev.CommandRejected: _nothing,
}


def apply(state: State, event: ev.Event) -> None:
    """Fold one event into ``state``."""
    _APPLY[type(event)](state, event)
