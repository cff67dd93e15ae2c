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

from engine.core.margin import average_entry
from engine.core.money import DOWN, NEAR, ZERO, round_down
from engine.core.state import Account, Asset, Instrument, Order, PositionLedger, State, TierRow
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
    )


def _add(pool: dict[str, Decimal], ccy: str, amt: Decimal) -> None:
    pool[ccy] = pool.get(ccy, ZERO) + amt


def _asset_listed(state: State, e: ev.AssetListed) -> None:
    state.assets[e.ccy] = Asset(e.ccy, e.decimals)


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
    state.account(e.acct).leverage[e.instId] = e.lever


def _mark_price_set(state: State, e: ev.MarkPriceSet) -> None:
    state.marks[e.instId] = e.markPx
    base = state.instruments[e.instId].base
    if state.price_inst.get(base) == e.instId:
        state.prices[base] = e.markPx


def _deposited(state: State, e: ev.Deposited) -> None:
    state.account(e.acct).balance(e.ccy).cash += e.amt


def _withdrawn(state: State, e: ev.Withdrawn) -> None:
    state.accounts[e.acct].balances[e.ccy].cash -= e.amt


def _borrowed(state: State, e: ev.Borrowed) -> None:
    bal = state.accounts[e.acct].balance(e.ccy)
    bal.cash += e.amt
    bal.liab += e.amt
    if e.acct not in state.debtors:
        state.debtors[e.acct] = state.next_debtor_rank
        state.next_debtor_rank += 1


def _repaid(state: State, e: ev.Repaid) -> None:
    account = state.accounts[e.acct]
    bal = account.balances[e.ccy]
    bal.cash -= e.interest + e.principal
    bal.interest -= e.interest
    bal.liab -= e.principal
    if not account.has_debt():
        state.debtors.pop(e.acct, None)


def _interest_hour_closed(state: State, e: ev.InterestHourClosed) -> None:
    state.last_interest_hour = e.hour


def _interest_accrued(state: State, e: ev.InterestAccrued) -> None:
    state.accounts[e.acct].balances[e.ccy].interest += e.amt
    _add(state.interest_income, e.ccy, e.amt)


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
    px_key = 0
    if e.px is not None:
        ticks = int(e.px // inst.tick)
        px_key = -ticks if is_buy else ticks
    order = Order(e.orderId, e.acct, e.instId, e.clOrdId, is_buy, e.ordType, e.tdMode, e.px, px_key, e.sz, e.frozen)
    account = state.account(e.acct)
    account.orders[(e.instId, e.clOrdId)] = order
    state.orders[e.orderId] = order
    state.next_order_id = e.orderId + 1
    if e.frozen:
        account.balance(inst.quote if is_buy else inst.base).frozen += e.frozen
    if e.tdMode == "cross":
        _track_cross(account, order, inst, e.sz, 1)


def _finish(state: State, order: Order) -> None:
    del state.orders[order.order_id]
    del state.accounts[order.acct].orders[(order.inst_id, order.cl_ord_id)]


def _ledger_fill(account: Account, inst_id: str, is_buy: bool, sz: Decimal, px: Decimal, received: Decimal) -> None:
    ledger = account.positions.get(inst_id)
    if ledger is None:
        ledger = account.positions[inst_id] = PositionLedger()
    qty = ledger.qty
    if qty == 0 or (qty > 0) == is_buy:
        ledger.avg_px = average_entry(abs(qty), ledger.avg_px, sz, px) if qty else px
        ledger.assets += received
        ledger.qty = qty + sz if is_buy else qty - sz
        return
    closing = min(abs(qty), sz)
    ledger.assets = max(ZERO, ledger.assets - (closing if qty > 0 else closing * px))
    ledger.qty = qty + sz if is_buy else qty - sz
    if ledger.qty == 0:
        del account.positions[inst_id]
    elif closing < sz:  # flipped: the rest opens the other side at this fill's price
        ledger.avg_px = px
        ledger.assets = round_down(DOWN.divide(received * (sz - closing), sz), 18)


def _settle_side(state: State, inst: Instrument, order: Order, sz: Decimal, px: Decimal, fee: Decimal) -> None:
    account = state.accounts[order.acct]
    notional = px * sz
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
        _ledger_fill(account, inst.inst_id, order.is_buy, sz, px, received)
    order.remaining -= sz
    if order.remaining == 0:
        if _resting(inst, order):
            inst.book.remove(order)
        _finish(state, order)


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
        account.balances[inst.quote if order.is_buy else inst.base].frozen -= order.frozen
        order.frozen = ZERO
    if order.td_mode == "cross":
        _track_cross(account, order, inst, order.remaining, -1)
    _finish(state, order)


def _position_closed(state: State, e: ev.PositionClosed) -> None:
    state.accounts[e.acct].positions.pop(e.instId, None)


def _margin_call_raised(state: State, e: ev.MarginCallRaised) -> None:
    state.accounts[e.acct].margin_call = True


def _margin_call_cleared(state: State, e: ev.MarginCallCleared) -> None:
    state.accounts[e.acct].margin_call = False


def _liquidation_started(state: State, e: ev.LiquidationStarted) -> None:
    state.accounts[e.acct].liquidating = True


def _insurance_fund_covered(state: State, e: ev.InsuranceFundCovered) -> None:
    _add(state.insurance, e.ccy, -e.amt)
    state.accounts[e.acct].balance(e.ccy).cash += e.amt


def _liquidation_fee_charged(state: State, e: ev.LiquidationFeeCharged) -> None:
    state.accounts[e.acct].balances[e.ccy].cash -= e.amt
    _add(state.insurance, e.ccy, e.amt)


def _assets_taken_over(state: State, e: ev.AssetsTakenOver) -> None:
    state.accounts[e.acct].balances[e.ccy].cash -= e.amt
    _add(state.insurance, e.ccy, e.amt)


def _liquidation_finished(state: State, e: ev.LiquidationFinished) -> None:
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
    ev.Borrowed: _borrowed,
    ev.Repaid: _repaid,
    ev.InterestHourClosed: _interest_hour_closed,
    ev.InterestAccrued: _interest_accrued,
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
    ev.AssetsTakenOver: _assets_taken_over,
    ev.LiquidationFinished: _liquidation_finished,
    ev.CommandRejected: _nothing,
}


def apply(state: State, event: ev.Event) -> None:
    """Fold one event into ``state``."""
    _APPLY[type(event)](state, event)
