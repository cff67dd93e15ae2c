"""The margin formulas — the one place they live (engine and projections both call these).

Orientation is OKX's (``spec/domain.md`` §0.3): a margin ratio ``MR ≥ 1`` is healthy, ``MR ≤ 3``
raises a margin call, ``MR ≤ 1`` liquidates. Every price is a **mark** price. ``D`` is always
liability **plus** accrued interest. Units are stated per function; "value" means an amount in
the account's valuation currency.

Rounding: amounts owed (interest, fees) are rounded up at the asset's precision by the caller's
``decimals``; requirements and ratios are exact ``Decimal`` arithmetic (50 significant digits)
and are only rounded for display (:func:`display_ratio`, :func:`display_price`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Final

from engine.core.money import DOWN, NEAR, ONE, UP, ZERO, div_up, quantum, round_down, round_up
from engine.core.state import TierRow

#: Margin-call threshold (300 %) and liquidation threshold (100 %), spec §4 decisions 5 and 6.
WARNING_RATIO: Final = Decimal(3)
LIQUIDATION_RATIO: Final = ONE
#: A margin sell is refused when its estimated VWAP is below this share of the best bid (§4.7).
SELL_GUARD_SHARE: Final = Decimal("0.95")
#: Decimal places of ratios and derived prices in the risk view.
DISPLAY_PLACES: Final = 8
#: Decimal places an average entry price is kept at.
AVERAGE_PLACES: Final = 16


# --- tiers and leverage (OKX spot tiers by borrowed amount, §1.3 model 1) -------------------


def spot_tier_limit(row: TierRow, debt_is_base: bool) -> Decimal:
    """A SPOT tier's borrow limit in the debt's currency (base or quote of the pair)."""
    limit = row.max_borrow_base if debt_is_base else row.max_borrow_quote
    assert limit is not None
    return limit


def spot_tier_for_debt(tiers: Sequence[TierRow], debt: Decimal, debt_is_base: bool) -> TierRow:
    """The tier whose borrow limit first covers ``debt`` (liab + interest, in its currency).

    Beyond the last listed tier the last tier applies (borrowing past it is refused anyway).
    """
    for row in tiers:
        if debt <= spot_tier_limit(row, debt_is_base):
            return row
    return tiers[-1]


def spot_borrow_cap(tiers: Sequence[TierRow], lever: Decimal, debt_is_base: bool) -> Decimal:
    """Most that may be owed at leverage ``lever``: the limit of the highest tier whose
    ``maxLever ≥ lever`` (§1.8, E13). Zero when no tier allows that leverage."""
    cap = ZERO
    for row in tiers:
        if row.max_lever >= lever:
            cap = spot_tier_limit(row, debt_is_base)
    return cap


#: Decimal places initial-margin requirements are kept at (rounded up: an amount owed).
REQUIREMENT_PLACES: Final = 18


def initial_requirement(debt_value: Decimal, lever: Decimal, row: TierRow) -> Decimal:
    """Initial margin of a debt worth ``D·P``: ``D·P·max(1/L, imr_tier)`` (§1.2, spot cross),
    computed as ``max(D·P / L, D·P·imr)`` and rounded **up** at :data:`REQUIREMENT_PLACES`."""
    by_lever = UP.divide(debt_value, lever)
    return round_up(max(by_lever, debt_value * row.imr), REQUIREMENT_PLACES)


def max_borrowable(margin_value: Decimal, lever: Decimal, cap: Decimal) -> Decimal:
    """OKX: ``margin × L``, but not beyond the tier cap for that leverage (§1.8, E13)."""
    return min(margin_value * lever, cap)


# --- requirements and the margin ratio (§1.4(e), §4 decision 3) ------------------------------


def debt_maintenance(debt_value: Decimal, mmr: Decimal) -> Decimal:
    """Maintenance margin of a spot-margin debt: ``D·P·m`` (value)."""
    return debt_value * mmr


def debt_closing_fee(debt_value: Decimal, mmr: Decimal, taker_fee: Decimal) -> Decimal:
    """Reserve for the fee of the closing trade: ``D·P·(1+m)·f`` (value); with the MM term this
    makes the multiplicative ``k = (1+m)(1+f)`` of spot margin: ``MM + fees = D·P·(k−1)``."""
    return debt_value * (ONE + mmr) * taker_fee


def margin_ratio(equity: Decimal, maintenance: Decimal, fees: Decimal) -> Decimal | None:
    """``MR = equity / (MM + fees)``; ``None`` when nothing is required (no debt)."""
    required = maintenance + fees
    if required <= 0:
        return None
    return NEAR.divide(equity, required)


def threshold_price(
    threshold: Decimal, net_const: Decimal, net_slope: Decimal, req_const: Decimal, req_slope: Decimal
) -> Decimal | None:
    """The price ``P`` at which a ratio linear-fractional in one price reaches ``threshold``.

    With ``net = c₀ + c₁·P`` and ``required = d₀ + d₁·P`` (other prices held), ``MR = T`` where
    ``c₀ + c₁·P = T·(d₀ + d₁·P)``: ``P_T = (T·d₀ − c₀) / (c₁ − T·d₁)``, 50 significant digits,
    half-even. ``None`` when the ratio does not depend on ``P`` (zero slope) or the solution is
    not a positive price. The one root formula: zone bands (:func:`zone_band`), the cross
    liquidation price (:func:`linear_liquidation_price`) and the risk module's threshold prices
    all solve it.
    """
    slope = net_slope - threshold * req_slope
    if slope == 0:
        return None
    price = NEAR.divide(threshold * req_const - net_const, slope)
    return price if price > 0 else None


def linear_liquidation_price(
    equity_rest: Decimal, net_units: Decimal, required_rest: Decimal, required_per_price: Decimal
) -> Decimal | None:
    """Mark price of one asset at which ``MR = 1``, all other prices held (§1.5, cross).

    Equity is linear in the asset's price ``P``: ``equity_rest + net_units·P``; the requirement
    too: ``required_rest + required_per_price·P``. Solving equality gives
    ``P = (required_rest − equity_rest) / (net_units − required_per_price)``
    (:func:`threshold_price` at 1). ``None`` when the ratio does not depend on ``P`` or the
    solution is not a positive price.
    """
    return threshold_price(LIQUIDATION_RATIO, equity_rest, net_units, required_rest, required_per_price)


# --- Binance-style margin level (§1.4(f), E14): reported alongside, not used for triggers ------


def margin_level(asset_value: Decimal, debt_value: Decimal) -> Decimal | None:
    """Binance spot margin level: ``total asset value / (liabilities + interest)``."""
    if debt_value <= 0:
        return None
    return NEAR.divide(asset_value, debt_value)


def price_for_margin_level(level: Decimal, units: Decimal, other_assets: Decimal, debt_value: Decimal) -> Decimal:
    """Price of the risky asset at which ``(units·P + other_assets) / debt = level``."""
    return NEAR.divide(level * debt_value - other_assets, units)


# --- interest (§1.7, §4 decision 2), fees, averages ------------------------------------------


def hourly_interest(liab: Decimal, daily_rate: Decimal, decimals: int) -> Decimal:
    """One hour of interest: ``liab × daily_rate / 24``, rounded **up** at ``decimals`` (E4)."""
    return div_up(liab * daily_rate, Decimal(24), decimals)


def trade_fee(amount: Decimal, rate: Decimal, decimals: int) -> Decimal:
    """Fee on ``amount`` (the currency received): ``amount × rate`` rounded toward +∞ — a fee
    owed rounds up, a rebate (negative rate) is paid rounded down in magnitude."""
    return round_up(amount * rate, decimals)


def average_entry(qty_old: Decimal, px_old: Decimal, qty_new: Decimal, px_new: Decimal) -> Decimal:
    """``(q_old·E_old + q_new·px)/(q_old + q_new)`` (E23), for increases only; quantities > 0.

    Kept at :data:`AVERAGE_PLACES` decimals, half-even (a display figure; it settles nothing),
    so that later products with it stay exact."""
    average = NEAR.divide(qty_old * px_old + qty_new * px_new, qty_old + qty_new)
    return average.quantize(quantum(AVERAGE_PLACES), context=NEAR)


def book_walk(levels: Iterable[tuple[Decimal, Decimal]], size: Decimal) -> tuple[Decimal, Decimal]:
    """Walk ``(price, available)`` levels best first for ``size``; return ``(filled, notional)``
    (exact). The estimated execution price is ``notional / filled`` (E24)."""
    filled = ZERO
    notional = ZERO
    for price, available in levels:
        take = min(available, size - filled)
        filled += take
        notional += take * price
        if filled >= size:
            break
    return filled, notional


def sell_guard_passes(filled: Decimal, notional: Decimal, best_bid: Decimal) -> bool:
    """§4.7: a margin sell passes when its estimated VWAP ``notional / filled`` is at least
    95 % of the best bid (E24). Compared without dividing: ``notional ≥ 0.95·bid·filled``."""
    return notional >= SELL_GUARD_SHARE * best_bid * filled


# --- display --------------------------------------------------------------------------------


def display_ratio(ratio: Decimal | None) -> Decimal | None:
    """Ratios are shown at 8 places, rounded down (never flatter than the truth)."""
    return None if ratio is None else round_down(ratio, DISPLAY_PLACES)


def display_price(price: Decimal | None, falling_is_risk: bool) -> Decimal | None:
    """Liquidation prices at 8 places, rounded toward the current price side that is safer
    for the user to watch: up for a long (liquidates when the price falls), down for a short."""
    if price is None:
        return None
    if falling_is_risk:
        return round_up(price, DISPLAY_PLACES)
    return round_down(price, DISPLAY_PLACES)


def cross_available_to_close(holding: Decimal, debt: Decimal, buffer: Decimal, price: Decimal, long: bool) -> Decimal:
    """§1.9 (cross): the part of a holding that closes the margin position.

    Long (holding base, debt in quote): ``min(holding, D·(1+b)/P)`` base;
    short (holding quote, debt in base): ``min(holding, D·(1+b)·P)`` quote, ``b`` = buffer rate.
    """
    need = NEAR.divide(debt * (ONE + buffer), price) if long else debt * (ONE + buffer) * price
    return min(holding, need)


# --- isolated spot margin (§1.2, §1.4(a)–(d), §1.5, §1.10) ----------------------------------


def initial_margin(value: Decimal, lever: Decimal, decimals: int) -> Decimal:
    """Isolated initial margin of an opening order (§1.2): ``value / L`` rounded **up** at the
    margin currency's precision. ``value`` is the open quantity (base margin), the notional
    ``qty·px`` (quote margin) or, for SWAP, ``contracts·ctVal·px``."""
    return div_up(value, lever, decimals)


def opening_value(qty: Decimal, limit_px: Decimal | None, fill_px: Decimal, in_base: bool) -> Decimal:
    """What an opening fill of ``qty`` base units adds to the order's margin base: the quantity
    itself for base margin, else its value at the order's **limit** price (market orders: at the
    fill price). Margin posted by a fill = ``IM(value after) − IM(value before)``, so splitting
    a fill never changes the order's total margin."""
    if in_base:
        return qty
    return qty * (limit_px if limit_px is not None else fill_px)


def open_loss(qty: Decimal, px: Decimal, mark: Decimal, is_buy: bool) -> Decimal:
    """Open loss of ``qty`` base units (SWAP: ``contracts·ctVal``) traded at ``px`` against the
    mark ``P`` (spec §1.2, Binance): ``qty·max(0, s·(px − P))``, ``s`` = +1 buy, −1 sell — a
    buy above the mark or a sell below it is worth less at the mark than it cost. In the quote
    (settlement) currency; exact, or rounded up at 50 significant digits beyond that."""
    gap = px - mark if is_buy else mark - px
    return UP.multiply(qty, gap) if gap > 0 else ZERO


def assumed_price(px: Decimal, mark: Decimal | None, is_buy: bool) -> Decimal:
    """The price an opening order's initial margin is computed at (Binance's "assuming
    price"): the order's price for a buy; ``max(px, P)`` for a sell, whose base debt (or
    short exposure) is valued at the mark. Without a mark: the order's price."""
    if is_buy or mark is None or px >= mark:
        return px
    return mark


def opening_cost(
    qty: Decimal, basis_px: Decimal, fill_px: Decimal, mark: Decimal | None, is_buy: bool, in_base: bool,
    lever: Decimal,
) -> tuple[Decimal, Decimal]:  # fmt: skip
    """What an opening fill of ``qty`` base units adds to its order's ``(value, loss)``, from
    which :func:`order_cost` gives the margin (spec §1.2's order cost, ``IM(assumed price) +
    open loss``); posted fill by fill as ``cost(after) − cost(before)`` so that splitting a
    fill never changes it.

    * quote margin and SWAP: ``value = qty·A``, ``A = assumed_price(basis)``;
      ``loss = L·OL``, ``OL = open_loss(qty, fill_px, P)``; margin ``(value + loss) / L``;
    * base margin (spot): ``value = qty``; ``loss = L·OL + qty·max(0, basis − P)`` for a buy
      (its quote debt ``qty·basis`` valued at the mark is more than ``qty`` base), ``L·OL``
      for a sell (its debt is the base itself); margin ``value/L + loss/(P·L)`` in base.

    ``basis_px`` is the order's limit price (a market order: the fill price), ``fill_px`` the
    fill's, ``P`` the mark when the fill happens (``None``: no mark, no loss). A buy at or
    below the mark or a sell at or above it has no loss: ``value`` is then spec §1.2's margin
    base — ``qty`` (base margin) or ``qty·basis`` — and the margin is the spec's ``IM``.

    Each fill so margined adds to its position, valued at the mark, at least ``D/L`` of
    equity (fees aside), ``D`` being what the fill makes the position owe at the mark (spot:
    the quote borrowed, or the base borrowed × P; SWAP: its notional at the mark)."""
    if mark is None:
        return (qty if in_base else qty * basis_px), ZERO
    loss = UP.multiply(lever, open_loss(qty, fill_px, mark, is_buy))
    if not in_base:
        return qty * assumed_price(basis_px, mark, is_buy), loss
    if is_buy and basis_px > mark:
        loss = UP.add(loss, UP.multiply(qty, basis_px - mark))
    return qty, loss


def order_cost(
    value: Decimal, loss: Decimal, mark: Decimal | None, in_base: bool, lever: Decimal, decimals: int
) -> Decimal:
    """Margin of an isolated opening order (or of its fills so far) from :func:`opening_cost`'s
    sums, rounded **up** at the margin currency's ``decimals``: ``(value + loss) / L`` (quote
    margin, SWAP) or ``value/L + loss/(P·L)`` (base margin; computed as one quotient, numerator
    rounded up and denominator down at 50 digits — exact at realistic sizes)."""
    if not loss:
        return div_up(value, lever, decimals)
    if not in_base:
        return div_up(UP.add(value, loss), lever, decimals)
    assert mark is not None
    return div_up(UP.add(UP.multiply(value, mark), loss), DOWN.multiply(mark, lever), decimals)


def book_walk_cost(
    levels: Iterable[tuple[Decimal, Decimal]], size: Decimal, unit: Decimal, mark: Decimal | None, is_buy: bool
) -> tuple[Decimal, Decimal, Decimal, Decimal]:  # fmt: skip
    """:func:`book_walk` for a market order that opens: ``(filled, notional, value, OL)`` with
    ``value = Σ q·assumed_price(px)`` and ``OL = Σ open_loss(q, px, P)`` over the levels it
    would take, ``q`` = the level's size × ``unit`` (base units; SWAP: ``ctVal``)."""
    filled = notional = value = loss = ZERO
    for price, available in levels:
        take = min(available, size - filled)
        filled += take
        notional += take * price
        qty = take * unit
        value += qty * assumed_price(price, mark, is_buy)
        if mark is not None:
            loss = UP.add(loss, open_loss(qty, price, mark, is_buy))
        if filled >= size:
            break
    return filled, notional, value, loss


def beyond_band(px: Decimal, mark: Decimal, band: Decimal, is_buy: bool) -> bool:
    """Price band (``pxBand``, docs/decisions.md): a buy above ``P·(1 + band)`` or a sell
    below ``P·(1 − band)`` is beyond it. Only the aggressive direction is limited."""
    return px > mark * (ONE + band) if is_buy else px < mark * (ONE - band)


def band_edge(mark: Decimal, band: Decimal, is_buy: bool) -> Decimal:
    """The worst price within the band: ``P·(1 + band)`` for a buy, ``P·(1 − band)`` for a sell."""
    return mark * (ONE + band) if is_buy else mark * (ONE - band)


def max_reducible(assigned: Decimal, base_margin: Decimal, upl: Decimal, reduce_ratio: Decimal) -> Decimal:
    """Seed rule (§1.10, decision 11), all in the margin currency: in profit (``upl ≥ 0``)
    ``assigned − base_margin``; in loss ``assigned − (base_margin + |upl|·(1 + r_reduce))``;
    never below zero (E20)."""
    floor = base_margin if upl >= 0 else base_margin + (-upl) * (ONE + reduce_ratio)
    return max(ZERO, assigned - floor)


def zone_band(
    net_const: Decimal, net_slope: Decimal, req_const: Decimal, req_slope: Decimal, price: Decimal
) -> tuple[Decimal, Decimal]:
    """Price interval around ``price`` inside which a single-price position cannot cross 100 %
    or 300 %: with ``net = c₀ + c₁·P`` and ``required = d₀ + d₁·P`` the threshold ``T`` is
    crossed at ``P_T`` (:func:`threshold_price`); the band runs from the nearest such root
    below ``price`` (or 0) to the nearest above (or 10³⁶). A root at ``price`` itself gives an
    empty band (every mark re-evaluates, the same mark again included)."""
    low, high = ZERO, Decimal(10) ** 36
    for threshold in (LIQUIDATION_RATIO, WARNING_RATIO):
        root = threshold_price(threshold, net_const, net_slope, req_const, req_slope)
        if root is None:
            continue
        if root <= price and root > low:
            low = root
        if root >= price and root < high:
            high = root
    return low, high


def isolated_margin_ratio(
    quote_assets: Decimal, quote_debt: Decimal, base_assets: Decimal, base_debt: Decimal, price: Decimal,
    mmr: Decimal, taker_fee: Decimal,
) -> Decimal | None:  # fmt: skip
    """General two-asset isolated position (OKX "quick margin", §1.4(d)), values in quote:

    ``net = (QA − QL) + (BA − BL)·P``, ``MM = (QL + BL·P)·m``, ``fees = (QL + BL·P)·(1+m)·f``,
    ``MR = net / (MM + fees)``; debts include interest. Margin counts in the assets (new mode:
    ``BA = bought + base margin``, ``QA = proceeds + quote margin``). ``None`` without debt.
    """
    debt_value = quote_debt + base_debt * price
    net = quote_assets - quote_debt + (base_assets - base_debt) * price
    return margin_ratio(net, debt_maintenance(debt_value, mmr), debt_closing_fee(debt_value, mmr, taker_fee))


def isolated_liquidation_price(
    quote_assets: Decimal, quote_debt: Decimal, base_assets: Decimal, base_debt: Decimal, mmr: Decimal,
    taker_fee: Decimal,
) -> Decimal | None:  # fmt: skip
    """Mark price where the isolated ratio reaches 1 (§1.5, general form):
    ``(QL·k − QA) / (BA − BL·k)`` with ``k = (1+m)(1+f)``. ``None`` if not a positive price."""
    k = (ONE + mmr) * (ONE + taker_fee)
    denominator = base_assets - base_debt * k
    if denominator == 0:
        return None
    price = NEAR.divide(quote_debt * k - quote_assets, denominator)
    return price if price > 0 else None


def isolated_upl(
    quote: Decimal, quote_debt: Decimal, base: Decimal, base_debt: Decimal, price: Decimal, in_base: bool
) -> Decimal:
    """Unrealised P&L of an isolated spot position in its margin currency (§1.6): what the
    position's own holdings (margin excluded) are worth net of its debt,
    ``(quote − QL) + (base − BL)·P`` in quote, or that ÷ ``P`` in base — OKX's
    ``pos − margin − D/P`` for a base-margined long (E2)."""
    value = quote - quote_debt + (base - base_debt) * price
    return NEAR.divide(value, price) if in_base else value


def closed_share_pnl(value: Decimal, closed: Decimal, size: Decimal, fee_value: Decimal, decimals: int) -> Decimal:
    """P&L an isolated spot closing fill realises (issue 11, docs/decisions.md 32b): its share
    ``closed/size`` of the remaining position's P&L ``value`` at the fill price (quote units,
    rounded toward −∞ at ``decimals``, as realised P&L is), less the fill's fee valued at the
    fill price. What is left, ``(1 − closed/size)·value``, is the P&L of the contracts that
    remain — the fraction their initial margin is scaled by — so a close at the mark leaves
    ``uplRatio`` unchanged."""
    return round_down(DOWN.divide(value * closed, size), decimals) - fee_value


# --- linear perpetuals (§1.2, §1.3 model 2, §1.4(g)/(h), §1.5, §1.14; decision 3) --------------


def perp_tier(tiers: Sequence[TierRow], contracts: Decimal) -> TierRow:
    """OKX derivatives tier (§1.3 model 2): the first tier whose ``maxSz`` covers the whole
    position size in contracts; beyond the table, the last tier."""
    for row in tiers:
        assert row.max_sz is not None
        if contracts <= row.max_sz:
            return row
    return tiers[-1]


def perp_size_cap(tiers: Sequence[TierRow], lever: Decimal) -> Decimal:
    """Largest position (contracts) allowed at leverage ``lever``: ``maxSz`` of the highest
    tier whose ``maxLever ≥ lever``; zero if none."""
    cap = ZERO
    for row in tiers:
        if row.max_lever >= lever:
            assert row.max_sz is not None
            cap = row.max_sz
    return cap


def swap_fee(contracts: Decimal, ct_val: Decimal, px: Decimal, rate: Decimal, decimals: int) -> Decimal:
    """Fee of a SWAP fill in the settlement currency: ``contracts·ctVal·px × rate`` rounded as
    :func:`trade_fee`."""
    return trade_fee(contracts * ct_val * px, rate, decimals)


def perp_order_im(remaining: Decimal, ct_val: Decimal, px: Decimal, lever: Decimal) -> Decimal:
    """Initial margin a resting cross SWAP order reserves in the account's initial-margin check:
    ``remaining·ctVal·px / L`` rounded up at :data:`REQUIREMENT_PLACES` (counted in full, as if
    the whole order opened)."""
    return initial_margin(remaining * ct_val * px, lever, REQUIREMENT_PLACES)


def perp_upl(qty: Decimal, ct_val: Decimal, price: Decimal, entry: Decimal) -> Decimal:
    """Linear uPnL (§1.6): ``q·ctVal·(P − E)``, ``q`` signed contracts; settlement currency."""
    return qty * ct_val * (price - entry)


def perp_requirement(notional: Decimal, mmr: Decimal, taker_fee: Decimal) -> Decimal:
    """Maintenance margin plus closing fee of a perpetual position worth ``|q|·ctVal·P``:
    ``notional·(m + f)`` — decision 3's additive fee term."""
    return notional * (mmr + taker_fee)


def perp_isolated_liquidation_price(
    size: Decimal, entry: Decimal, margin: Decimal, mmr: Decimal, taker_fee: Decimal, long: bool
) -> Decimal | None:
    """Isolated linear perpetual, OKX convention (§1.5, decision 3), ``Q = |q|·ctVal``:
    long ``(Q·E − M)/(Q·(1 − m − f))``, short ``(Q·E + M)/(Q·(1 + m + f))``. ``None`` if not a
    positive price."""
    if size == 0:
        return None
    if long:
        price = NEAR.divide(size * entry - margin, size * (ONE - mmr - taker_fee))
    else:
        price = NEAR.divide(size * entry + margin, size * (ONE + mmr + taker_fee))
    return price if price > 0 else None


def funding_payment(qty: Decimal, ct_val: Decimal, mark: Decimal, rate: Decimal) -> Decimal:
    """§1.14: ``q·ctVal·P·rate`` (signed contracts); positive → the holder pays (E22)."""
    return qty * ct_val * mark * rate


def no_worse_than_before(excess_after: Decimal, required_after: Decimal, excess: Decimal, required: Decimal) -> bool:
    """The fill guard's rule (docs/decisions.md 31): a fill may leave ``X' = equity' −
    required'`` below zero only if the shortfall shrinks at least in proportion to the
    requirement, ``X' ≥ min(X, 0) · min(1, R'/R)`` — the equity-to-requirement ratio never
    falls while it is below 1. Keeping the shortfall ``X`` merely constant is not enough: a
    position closed in steps at a price off the mark would keep ``X`` while its requirement ``R``
    shrinks, and end with equity ``R' + X`` below maintenance, then below zero (hypothesis
    found it at static marks). Exact: both sides multiplied out by ``R`` (no division); with
    ``R = 0`` the old shortfall must not grow."""
    if excess_after >= 0:
        return True
    if excess >= 0:
        return False
    if required <= 0 or required_after >= required:
        return excess_after >= excess
    return excess_after * required >= excess * required_after


# --- multi-currency isolated margin: adjusted equity (seed 001; docs/decisions.md 35) --------


def adjusted_value(value: Decimal, discount: Decimal) -> Decimal:
    """One currency's contribution to the adjusted equity: its equity ``value`` (net units at
    the mark, in the valuation currency) times its collateral ``discount`` when positive; a
    negative equity (a debt beyond the holding) counts in full. Exact (no rounding)."""
    return value * discount if value > 0 else value
