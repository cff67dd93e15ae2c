"""Reference data and market data: listings, rates, leverage, mark prices.

Listing rules checked here (a refusal names the field):

* assets and instruments are listed once; an instrument's currencies must be listed assets;
* a SWAP settles in the valuation currency (cross perpetual P&L and margin count in it 1:1;
  docs/decisions.md 21a);
* ``tickSz``, ``lotSz`` > 0, ``minSz`` a positive multiple of ``lotSz``;
* exactness: a lot must be representable at the base asset's precision and a tick × lot
  notional at the quote asset's precision, so that every fill's amounts are exact;
* fees: ``takerFee`` < 1, ``makerFee`` > −1 and ``makerFee ≤ takerFee``;
* ``pxBand`` (optional, docs/decisions.md 31c) a fraction within (0, 1);
* tiers numbered 1, 2, … with increasing limits, ``0 < mmr < imr ≤ 1`` and
  ``1 ≤ maxLever ≤ instrument maxLever``; SPOT rows need ``maxBorrowBase`` and
  ``maxBorrowQuote``, SWAP rows ``maxSz``.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from engine.core import margin
from engine.core.context import Ctx, Rejected
from engine.core.isolated import pending_borrow
from engine.core.money import ONE, ZERO, exponent_places, fmt, is_multiple
from engine.core.risk import check_initial_margin
from engine.core.state import Account, Instrument
from events import journal as ev
from events.commands import ListAsset, ListInstrument, MarkPrice, SetInterestRate, SetLeverage


def list_asset(ctx: Ctx, cmd: ListAsset) -> None:
    if cmd.ccy in ctx.state.assets:
        raise Rejected("already_listed", f"ccy {cmd.ccy} is already listed")
    discount = ONE if isinstance(cmd.discount, msgspec.UnsetType) else Decimal(cmd.discount)
    if discount > ONE:
        raise Rejected("invalid_discount", f"discount {cmd.discount} must be within [0, 1]")
    # 1 (however written) is the default: the event then carries nothing, and the fold takes 1
    ctx.emit(ev.AssetListed(ccy=cmd.ccy, decimals=cmd.decimals, discount=None if discount == ONE else discount))


def _positive(raw: str | None, name: str) -> Decimal:
    if raw is None:
        raise Rejected("missing_field", f"{name} is required")
    value = Decimal(raw)
    if value <= 0:
        raise Rejected("invalid_" + name, f"{name} must be positive, got {raw}")
    return value


def _check_tiers(cmd: ListInstrument, max_lever: Decimal) -> None:
    spot = cmd.instType == "SPOT"
    if not cmd.tiers:
        raise Rejected("invalid_tiers", "tiers must list at least one tier")
    previous: tuple[Decimal, ...] = ()
    for index, row in enumerate(cmd.tiers, start=1):
        where = f"tiers[{index - 1}]"
        if row.tier != index:
            raise Rejected("invalid_tiers", f"{where}.tier must be {index}, got {row.tier}")
        mmr, imr, lever = Decimal(row.mmr), Decimal(row.imr), Decimal(row.maxLever)
        if not (0 < mmr < imr <= 1):
            raise Rejected("invalid_tiers", f"{where}: need 0 < mmr < imr <= 1, got mmr {row.mmr} imr {row.imr}")
        if not (ONE <= lever <= max_lever):
            raise Rejected("invalid_tiers", f"{where}.maxLever {row.maxLever} must be within 1..{max_lever}")
        raw_limits = (row.maxBorrowBase, row.maxBorrowQuote) if spot else (row.maxSz,)
        names = ("maxBorrowBase", "maxBorrowQuote") if spot else ("maxSz",)
        limits = tuple(_positive(raw, f"{where}.{name}") for raw, name in zip(raw_limits, names, strict=True))
        if previous and any(new <= old for new, old in zip(limits, previous, strict=True)):
            raise Rejected("invalid_tiers", f"{where}: limits must increase from tier to tier")
        previous = limits


def list_instrument(ctx: Ctx, cmd: ListInstrument) -> None:
    state = ctx.state
    if cmd.instId in state.instruments:
        raise Rejected("already_listed", f"instId {cmd.instId} is already listed")
    if cmd.instType == "SPOT":
        if cmd.baseCcy is None or cmd.quoteCcy is None:
            raise Rejected("missing_field", "SPOT instruments need baseCcy and quoteCcy")
        base, quote = cmd.baseCcy, cmd.quoteCcy
        if base == quote:
            raise Rejected("invalid_instrument", "baseCcy and quoteCcy must differ")
    else:
        if cmd.settleCcy is None or cmd.ctVal is None:
            raise Rejected("missing_field", "SWAP instruments need settleCcy and ctVal")
        _positive(cmd.ctVal, "ctVal")
        base, quote = cmd.settleCcy, cmd.settleCcy
        valuation = state.valuation_ccy
        if valuation is not None and quote != valuation:
            raise Rejected(
                "invalid_settleCcy", f"settleCcy {quote} must be the valuation currency {valuation} (decision 21a)"
            )
    for field, ccy in (("baseCcy", base), ("quoteCcy", quote)):
        if ccy not in state.assets:
            raise Rejected("unknown_asset", f"{field} {ccy} is not a listed asset")
    tick, lot, min_sz = _positive(cmd.tickSz, "tickSz"), _positive(cmd.lotSz, "lotSz"), _positive(cmd.minSz, "minSz")
    if not is_multiple(min_sz, lot):
        raise Rejected("invalid_minSz", f"minSz {cmd.minSz} must be a multiple of lotSz {cmd.lotSz}")
    if cmd.instType == "SPOT":
        base_dec, quote_dec = state.assets[base].decimals, state.assets[quote].decimals
        if exponent_places(lot.normalize()) > base_dec:
            raise Rejected("invalid_lotSz", f"lotSz {cmd.lotSz} is finer than {base}'s {base_dec} decimals")
        if exponent_places((tick * lot).normalize()) > quote_dec:
            raise Rejected("invalid_tickSz", f"tickSz × lotSz is finer than {quote}'s {quote_dec} decimals")
    maker, taker = Decimal(cmd.makerFee), Decimal(cmd.takerFee)
    if not (-1 < maker <= taker < 1):
        raise Rejected("invalid_fee", f"need -1 < makerFee <= takerFee < 1, got {cmd.makerFee}/{cmd.takerFee}")
    max_lever = _positive(cmd.maxLever, "maxLever")
    if max_lever < 1:
        raise Rejected("invalid_maxLever", f"maxLever must be at least 1, got {cmd.maxLever}")
    _check_tiers(cmd, max_lever)
    if isinstance(cmd.pxBand, str) and not (0 < Decimal(cmd.pxBand) < 1):
        raise Rejected("invalid_pxBand", f"pxBand {cmd.pxBand} must be a fraction within (0, 1)")
    before = dict(state.margin_inst)
    ctx.emit(ev.InstrumentListed(spec=cmd))
    _restale_debtors(ctx, before)


def _restale_debtors(ctx: Ctx, before: dict[str, str]) -> None:
    """A listing can become a currency's margin instrument (a SPOT with it as base replaces one
    with it as quote; or the first SPOT of a currency owed from perpetual losses): its debts
    change tier table, so the risk bands of the accounts owing it
    are stale. They become dirty — evaluated by the next mark they are exposed to, as after a
    restore — not evaluated now (fuzz finding: the uninterrupted run kept the stale band and a
    run restored from a snapshot raised a margin call the other did not)."""
    state = ctx.state
    changed = [ccy for ccy, inst_id in state.margin_inst.items() if before.get(ccy) != inst_id]
    for acct in state.debtors:
        balances = state.accounts[acct].balances
        if any(ccy in balances and (balances[ccy].liab or balances[ccy].interest) for ccy in changed):
            state.watch.forget(acct)
            state.watch.dirty[acct] = None


def set_interest_rate(ctx: Ctx, cmd: SetInterestRate) -> None:
    if cmd.ccy not in ctx.state.assets:
        raise Rejected("unknown_asset", f"ccy {cmd.ccy} is not listed")
    rate = Decimal(cmd.dailyRate)
    if rate >= 1:
        raise Rejected("invalid_dailyRate", f"dailyRate {cmd.dailyRate} must be below 1 (100 % a day)")
    ctx.emit(ev.InterestRateSet(ccy=cmd.ccy, dailyRate=rate, accrual=cmd.accrual, compounding=cmd.compounding))


def set_leverage(ctx: Ctx, cmd: SetLeverage) -> None:
    state = ctx.state
    inst = state.instruments.get(cmd.instId)
    if inst is None:
        raise Rejected("unknown_instrument", f"instId {cmd.instId} is not listed")
    lever = Decimal(cmd.lever)
    if not (ONE <= lever <= inst.max_lever):
        raise Rejected("invalid_lever", f"lever {cmd.lever} must be within 1..{inst.max_lever}")
    account = state.accounts.get(cmd.acct)
    if inst.inst_type == "SWAP":
        from engine.core.swap import check_leverage

        check_leverage(state, account, inst, cmd.mgnMode, lever)
    elif cmd.mgnMode == "isolated":
        _check_isolated_leverage(account, inst, lever)
    elif account is not None and (account.has_debt() or account.cross_out):
        failure = check_initial_margin(state, account, lever=(cmd.instId, lever))
        if failure is not None:
            raise Rejected(*failure)
    ctx.emit(ev.LeverageSet(acct=cmd.acct, instId=cmd.instId, mgnMode=cmd.mgnMode, lever=lever))


def _check_isolated_leverage(account: Account | None, inst: Instrument, lever: Decimal) -> None:
    """Isolated spot leverage applies to new exposure; it must not exceed the ``maxLever`` of
    the tier the open position's debt is in, and that debt plus what resting opening orders
    would borrow must fit the tier cap at the new leverage (§1.8)."""
    if account is None:
        return
    pos = account.isolated.get(inst.inst_id)
    debt = pos.liab + pos.interest if pos is not None else ZERO
    long = pos.long if pos is not None else None
    if pos is not None:
        row = margin.spot_tier_for_debt(inst.tiers, debt, not pos.long)
        if lever > row.max_lever:
            shown = f"lever {fmt(lever)} is above tier {row.tier}'s maxLever {fmt(row.max_lever)}"
            raise Rejected("lever_above_tier", shown)
    for order in account.orders.values():
        if order.inst_id == inst.inst_id and order.td_mode == "isolated" and not order.reduce:
            debt += pending_borrow(order)
            long = order.is_buy
    if long is None:
        return
    cap = margin.spot_borrow_cap(inst.tiers, lever, not long)
    if debt > cap:
        raise Rejected("borrow_limit", f"position debt {fmt(debt)} is above the limit {fmt(cap)} at {fmt(lever)}x")


def mark_price(ctx: Ctx, cmd: MarkPrice) -> None:
    inst = ctx.state.instruments.get(cmd.instId)
    if inst is None:
        raise Rejected("unknown_instrument", f"instId {cmd.instId} is not listed")
    px = _positive(cmd.markPx, "markPx")
    ctx.emit(ev.MarkPriceSet(instId=cmd.instId, markPx=px))
