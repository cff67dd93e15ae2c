"""Account risk in cross spot margin: valuation, the margin ratio, initial-margin checks.

Everything is valued in the state's valuation currency ``V`` at mark prices: ``P(V) = 1``; any
other currency ``c`` is priced by the mark of its SPOT instrument ``c-V`` (``state.price_inst``).
A holding without a mark counts for nothing; a debt needs a mark (borrowing without one is
refused).

Cross debt is pooled per currency (``Balance.liab`` + ``Balance.interest``). The tier table,
taker fee and leverage that apply to debt in ``c`` are those of ``c``'s margin instrument
(``state.margin_inst``): the first listed SPOT instrument with ``c`` as base (limits read in
``maxBorrowBase``), else the first with ``c`` as quote (``maxBorrowQuote``). A currency no
SPOT instrument trades cannot be borrowed; a debt in it — a perpetual loss, fee or funding
payment beyond the cash on a perpetual-only listing — has no tier table and counts in equity
only (no maintenance of its own; docs/decisions.md 21a).

Formulas (``engine.core.margin``; §1.4(e)): ``equity = Σ (cash − D)·P``,
``MM = Σ D·P·m_tier``, ``fees = Σ D·P·(1+m)·f``, ``MR = equity / (MM + fees)``,
initial requirement ``IM = Σ D·P·max(1/L, imr_tier)``.
"""

from __future__ import annotations

from decimal import Decimal

from engine.core import margin
from engine.core.margin import REQUIREMENT_PLACES
from engine.core.money import DOWN, ZERO, fmt, round_down, round_up
from engine.core.state import Account, Instrument, State, TierRow


class AccountRisk:
    """Risk figures of a cross account at the current marks (values in the valuation currency).

    ``required`` = maintenance + closing-fee reserve, so ``ratio = equity / required``.
    ``legs`` lists, per priced non-valuation currency, ``(ccy, price, units, required_per_price)``:
    ``units = cash − D`` and ``required_per_price = D·m + D·(1+m)·f`` — how equity and the
    requirement move with that currency's price (both are linear in it).
    """

    __slots__ = ("equity", "imr", "legs", "ratio", "required")

    def __init__(
        self, equity: Decimal, required: Decimal, imr: Decimal, legs: list[tuple[str, Decimal, Decimal, Decimal]]
    ) -> None:
        self.equity = equity
        self.required = required
        self.imr = imr
        self.legs = legs
        self.ratio = margin.margin_ratio(equity, required, ZERO)


def price_of(state: State, ccy: str) -> Decimal | None:
    """Mark value of one unit of ``ccy`` in the valuation currency (``None``: no mark yet)."""
    return state.prices.get(ccy)


def debt_terms(state: State, account: Account, ccy: str, debt: Decimal) -> tuple[Instrument, TierRow, Decimal]:
    """``(margin instrument, tier for this debt, leverage)`` of cross debt ``debt`` in ``ccy``."""
    inst = state.instruments[state.margin_inst[ccy]]
    row = margin.spot_tier_for_debt(inst.tiers, debt, ccy == inst.base)
    lever = account.leverage.get(inst.inst_id, inst.max_lever)
    return inst, row, lever


def account_risk(state: State, account: Account, with_imr: bool = False) -> AccountRisk:
    """Equity, requirement (MM + closing fees) and, if asked, initial margin of a cross account."""
    equity = required = imr = ZERO
    legs: list[tuple[str, Decimal, Decimal, Decimal]] = []
    valuation = state.valuation_ccy
    for ccy, bal in account.balances.items():
        debt = bal.liab + bal.interest
        price = price_of(state, ccy)
        if price is None:
            if debt:
                raise AssertionError(f"debt in {ccy} without a mark price")
            continue
        units = bal.cash - debt
        equity += units * price
        per_price = ZERO
        if debt and ccy in state.margin_inst:  # else no tier table: it counts in equity only
            inst, row, lever = debt_terms(state, account, ccy, debt)
            per_price = margin.debt_maintenance(debt, row.mmr) + margin.debt_closing_fee(debt, row.mmr, inst.taker_fee)
            required += per_price * price
            if with_imr:
                imr += margin.initial_requirement(debt * price, lever, row)
        if ccy != valuation:
            legs.append((ccy, price, units, per_price))
    if account.perps:
        for (inst_id, _), pos in account.perps.items():
            if pos.mgn_mode != "cross" or not pos.qty:
                continue
            inst = state.instruments[inst_id]
            mark = state.marks.get(inst_id, pos.avg_px)
            units = pos.qty * inst.ct_val
            row = margin.perp_tier(inst.tiers, abs(pos.qty))
            per_price = margin.perp_requirement(abs(units), row.mmr, inst.taker_fee)
            equity += margin.perp_upl(pos.qty, inst.ct_val, mark, pos.avg_px)
            required += per_price * mark
            if with_imr:
                imr += margin.initial_requirement(abs(units) * mark, account.leverage.get(inst_id, inst.max_lever), row)
            legs.append(("@" + inst_id, mark, units, per_price))
    return AccountRisk(equity, required, imr, legs)


#: A hypothetical change of one cross perpetual position, for :func:`margin_excess`:
#: ``(instId, posSide, contracts after)`` — its initial margin is taken at the new size (its
#: uPnL change travels as ``extra_equity``).
PerpChange = tuple[str, str, Decimal]


def cross_perp_terms(
    state: State, account: Account, lever: tuple[str, Decimal] | None, change: PerpChange | None = None,
    resting: bool = True,
) -> tuple[Decimal, Decimal]:  # fmt: skip
    """``(Σ uPnL, Σ initial margin)`` of the account's cross perpetuals: every position at
    ``|q|·ctVal·P / L`` (mark; entry before the first mark) and, if ``resting``, every resting
    cross SWAP order in full at its limit price (``Account.swap_im``: as if all of them
    opened, §1.2). ``change`` replaces one position's size (``margin_excess``)."""
    upl = im = ZERO
    changed = change is None
    for (inst_id, side), pos in account.perps.items():
        if pos.mgn_mode != "cross":
            continue
        inst = state.instruments[inst_id]
        mark = state.marks.get(inst_id, pos.avg_px)
        lev = lever[1] if lever is not None and lever[0] == inst_id else account.leverage.get(inst_id, inst.max_lever)
        upl += margin.perp_upl(pos.qty, inst.ct_val, mark, pos.avg_px)
        size = abs(pos.qty)
        if change is not None and change[0] == inst_id and change[1] == side:
            size, changed = abs(change[2]), True
        im += margin.initial_margin(size * inst.ct_val * mark, lev, REQUIREMENT_PLACES)
    if not changed:
        assert change is not None
        inst = state.instruments[change[0]]
        mark = state.marks[change[0]]
        lev = account.leverage.get(change[0], inst.max_lever)
        im += margin.initial_margin(abs(change[2]) * inst.ct_val * mark, lev, REQUIREMENT_PLACES)
    return upl, im + (account.swap_im if resting else ZERO)


def _fits_without_borrowing(account: Account, out: dict[str, Decimal] | None) -> bool:
    """Fast path: no debt now and every currency's worst-case outflow (resting cross orders plus
    ``out``) fits in its free cash — nothing would be borrowed, so nothing is required."""
    balances = account.balances
    for held in balances.values():
        if held.liab or held.interest:
            return False
    cross_out = account.cross_out
    for ccy, amt in cross_out.items():
        extra = out.get(ccy, ZERO) if out else ZERO
        bal = balances.get(ccy)
        if bal is None or amt + extra > bal.cash - bal.frozen:
            return False
    if out:
        for ccy, amt in out.items():
            if ccy not in cross_out:
                other = balances.get(ccy)
                if other is None or amt > other.cash - other.frozen:
                    return False
    return True


def check_initial_margin(
    state: State,
    account: Account,
    out: dict[str, Decimal] | None = None,
    inflow: dict[str, Decimal] | None = None,
    borrow: dict[str, Decimal] | None = None,
    lever: tuple[str, Decimal] | None = None,
    perp_im: Decimal = ZERO,
    open_loss: Decimal = ZERO,
    repaid: dict[str, Decimal] | None = None,
) -> tuple[str, str] | None:
    """Would the account still meet its initial margin? ``None`` if yes, else ``(reason, message)``.

    The hypothesis: every resting cross order of the account fills at its limit price
    (``account.cross_out``/``cross_in``), plus the extra flows ``out``/``inflow`` (a new order,
    a withdrawal), plus explicit ``borrow``; ``lever`` overrides one instrument's leverage.
    What leaves beyond the free cash (``cash − frozen``) is borrowed. Conditions, per debt
    currency ``c`` after that: ``D_c ≤`` the tier cap for the leverage (§1.8), and over all
    currencies ``equity' ≥ Σ D_c·P_c·max(1/L, imr_tier) + perpetual IM`` with
    ``equity' = equity + Σ (in − out)·P + Σ perpetual uPnL`` (``cross_perp_terms``); a new SWAP
    order adds its initial margin ``perp_im`` and its open loss against the mark ``open_loss``
    (spec §1.2; the flows of a spot order are valued at the mark, which counts its open loss).
    ``repaid``: debt a closing order's proceeds repay (``engine.core.cross_position``).
    """
    # resting cross SWAP orders that may open reserve ``swap_im`` (the others need nothing): the
    # aggregate says whether any rests, without scanning the account's orders
    perps = bool(account.perps) or perp_im > 0 or account.swap_im > 0
    if not perps and borrow is None and lever is None and _fits_without_borrowing(account, out):
        return None
    result = margin_excess(
        state, account, out, inflow, borrow, lever, perp_im + open_loss, perps=perps, resting=True, repaid=repaid
    )
    if isinstance(result, tuple):
        return result
    if result.excess < 0:
        equity, required = result.equity, result.required
        shown = f"equity {fmt(round_down(equity, 8))} would be below the initial margin {fmt(round_up(required, 8))}"
        if open_loss:
            shown += f" (it includes the order's open loss against the mark, {fmt(round_up(open_loss, 8))})"
        return "insufficient_margin", shown
    return None


class Excess:
    """The figures of :func:`margin_excess`: ``equity'`` and ``required'`` (initial margin),
    valued at the mark; ``excess = equity' − required'``."""

    __slots__ = ("equity", "excess", "required")

    def __init__(self, equity: Decimal, required: Decimal) -> None:
        self.equity = equity
        self.required = required
        self.excess = equity - required


def margin_excess(
    state: State,
    account: Account,
    out: dict[str, Decimal] | None = None,
    inflow: dict[str, Decimal] | None = None,
    borrow: dict[str, Decimal] | None = None,
    lever: tuple[str, Decimal] | None = None,
    required_extra: Decimal = ZERO,
    *,
    perps: bool | None = None,
    resting: bool = False,
    change: PerpChange | None = None,
    extra_equity: Decimal = ZERO,
    caps: bool = True,
    repaid: dict[str, Decimal] | None = None,
) -> tuple[str, str] | Excess:
    """The cross account's **excess over its initial margin** after the flows ``out``/``inflow``
    and ``borrow`` (valued at the mark; what leaves beyond the free cash is borrowed), with the
    resting cross orders assumed filled if ``resting`` (placement, :func:`check_initial_margin`)
    or not (a fill, ``engine.core.fill_guard``). ``required_extra`` adds to the requirement,
    ``extra_equity`` to the equity, ``change`` replaces one cross perpetual's size, ``repaid``
    is debt repaid from cash right after (equity unchanged, less debt). A failure
    ``(reason, message)`` when a debt needs a mark or a currency is not borrowable, and (with
    ``caps``) when a debt would exceed its tier cap (§1.8)."""
    if perps is None:
        perps = bool(account.perps) or change is not None
    outs = dict(account.cross_out) if resting else {}
    ins = dict(account.cross_in) if resting else {}
    for extra, target in ((out, outs), (inflow, ins)):
        if extra:
            for ccy, amt in extra.items():
                target[ccy] = target.get(ccy, ZERO) + amt
    ccys = dict.fromkeys(account.balances)
    ccys.update(dict.fromkeys(outs))
    ccys.update(dict.fromkeys(ins))
    if borrow:
        ccys.update(dict.fromkeys(borrow))
    equity = extra_equity
    required = required_extra
    if perps:
        upl, im = cross_perp_terms(state, account, lever, change, resting)
        equity += upl
        required += im
    for ccy in ccys:
        bal = account.balances.get(ccy)
        cash = bal.cash if bal else ZERO
        free = cash - bal.frozen if bal else ZERO
        owed = bal.liab + bal.interest if bal else ZERO
        leaving = outs.get(ccy, ZERO)
        arriving = ins.get(ccy, ZERO)
        debt = owed + max(ZERO, leaving - free) + (borrow.get(ccy, ZERO) if borrow else ZERO)
        if repaid and ccy in repaid:
            debt = max(ZERO, debt - repaid[ccy])
        price = price_of(state, ccy)
        if price is None:
            if debt:
                return "no_mark_price", f"borrowing {ccy} needs a mark price for {ccy}"
            continue
        equity += (cash - owed + arriving - leaving) * price
        if not debt:
            continue
        if ccy not in state.margin_inst:
            if caps:  # new borrowing (placement): nothing to borrow it under
                return "not_borrowable", f"{ccy} is not a currency of any SPOT instrument"
            continue  # a fill's debt beyond the cash: no tier table, equity only (decision 21a)
        inst, row, lev = debt_terms(state, account, ccy, debt)
        if lever is not None and lever[0] == inst.inst_id:
            lev = lever[1]
        if caps:
            cap = margin.spot_borrow_cap(inst.tiers, lev, ccy == inst.base)
            if debt > cap:
                shown = f"{ccy} debt would be {fmt(debt)}, above the limit {fmt(cap)} at leverage {fmt(lev)}"
                return "borrow_limit", shown
        required += margin.initial_requirement(debt * price, lev, row)
    return Excess(equity, required)


def cross_threshold_price(state: State, account: Account, ccy: str, threshold: Decimal) -> Decimal | None:
    """Mark price of ``ccy`` (a currency, or ``@instId`` for a cross perpetual) at which the
    account's MR reaches ``threshold``, all other marks held.

    Splits equity and requirement into the part that moves with ``P(ccy)`` and the rest, then
    solves with :func:`margin.threshold_price`. The tier of a debt depends on its amount, not on
    price, so the requirement is linear in ``P``.
    """
    risk = account_risk(state, account)
    for leg_ccy, price, units, per_price in risk.legs:
        if leg_ccy == ccy:
            equity_rest = risk.equity - units * price
            required_rest = risk.required - per_price * price
            return margin.threshold_price(threshold, equity_rest, units, required_rest, per_price)
    return None


def cross_liquidation_price(state: State, account: Account, ccy: str) -> Decimal | None:
    """Mark price of ``ccy`` at which the account's MR reaches 1, all other marks held
    (:func:`cross_threshold_price` at 1)."""
    return cross_threshold_price(state, account, ccy, margin.LIQUIDATION_RATIO)


def close_buffer(state: State, account: Account, ccy: str, debt: Decimal) -> Decimal:
    """Spec §4 decision 8: the tier's IMR while equity covers the total initial margin,
    otherwise its MMR."""
    _, row, _ = debt_terms(state, account, ccy, debt)
    risk = account_risk(state, account, with_imr=True)
    return row.imr if risk.equity >= risk.imr else row.mmr


def zone_bands(risk: AccountRisk) -> list[tuple[str, Decimal, Decimal]]:
    """Price bands inside which the account's zone cannot change (see ``engine.core.watch``).

    Healthy (``MR > 3``): slack ``s = equity − 3·required``, sensitivity ``|units − 3·rpp|``.
    Warned (``1 < MR ≤ 3``): ``s = min(equity − required, 3·required − equity)``, sensitivity
    ``max(|units − rpp|, |units − 3·rpp|)``. Each of the ``n`` sensitive currencies gets the
    half-width ``s / (n·sensitivity)`` rounded down at 12 places; a band is ``(ccy, price − h, price + h)``.
    """
    warning = margin.WARNING_RATIO
    equity, required = risk.equity, risk.required
    healthy = equity > warning * required
    slack = equity - warning * required if healthy else min(equity - required, warning * required - equity)
    slack = max(slack, ZERO)
    sensitive: list[tuple[str, Decimal, Decimal]] = []
    for ccy, price, units, per_price in risk.legs:
        worst = abs(units - warning * per_price)
        if not healthy:
            worst = max(worst, abs(units - per_price))
        if worst:
            sensitive.append((ccy, price, worst))
    count = Decimal(len(sensitive))
    bands = []
    for ccy, price, worst in sensitive:
        half = round_down(DOWN.divide(slack, count * worst), 12)
        bands.append((ccy, price - half, price + half))
    return bands
