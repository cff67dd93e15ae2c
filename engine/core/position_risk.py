"""Risk figures of one isolated or perpetual position at the current mark.

Composes the formulas of ``engine.core.margin`` (the one place they live); the engine's risk
evaluation and the projections' risk view both read these figures.

Isolated spot (spec §1.4(d), §1.5, §1.6; decision 3 — multiplicative ``k = (1+m)(1+f)``):
``QA``/``BA`` are the position's holdings plus its margin in that currency, ``QL``/``BL`` its
debt (liability + interest) — quote for a long, base for a short. ``m`` is the MMR of the tier
holding the debt (§1.3 model 1), ``f`` the instrument's taker fee. ``upl`` is the P&L of the
**remaining** position (docs/decisions.md 32b): a closing fill realises its share
``closed/qty`` of it at the fill price, net of its fee (``margin.closed_share_pnl``), which
stays in the position apart (``kept_quote``/``kept_base``) — the same fraction the initial
margin (``base_margin``, the view's ``imr``) is scaled by, so ``uplRatio = upl / imr`` is the
remaining position's own.

Perpetual (§1.4(g), §1.5 OKX, decision 3 — additive ``m + f``): ``Q = |q|·ctVal`` base units,
``E`` average entry, ``M`` isolated margin, ``m`` the MMR of the tier holding the whole size
(§1.3 model 2). A cross perpetual adds a *leg* to the account's risk
(``engine.core.risk.account_risk``) instead.

Every figure is in the margin currency (isolated spot: ``mgn_ccy``; SWAP: the settlement
currency) unless stated; exact ``Decimal`` (50 digits), rounded only for display.
"""

from __future__ import annotations

from decimal import Decimal

from engine.core import margin
from engine.core.money import NEAR, ZERO
from engine.core.state import Instrument, IsoPosition, PerpPosition, TierRow


class PositionFigures:
    """``ratio`` (None: nothing owed), ``liq_px``, ``required`` (MM + closing fee), ``upl``,
    ``band`` (prices between which the zone cannot change) and the tier row applied."""

    __slots__ = ("band", "liq_px", "ratio", "required", "row", "upl")

    def __init__(
        self,
        ratio: Decimal | None,
        liq_px: Decimal | None,
        required: Decimal,
        upl: Decimal,
        row: TierRow,
        band: tuple[Decimal, Decimal] | None,
    ) -> None:
        self.ratio = ratio
        self.liq_px = liq_px
        self.required = required
        self.upl = upl
        self.row = row
        self.band = band


def iso_debt(pos: IsoPosition) -> Decimal:
    """``D = liab + interest`` of an isolated spot position."""
    return pos.liab + pos.interest


def iso_assets(inst: Instrument, pos: IsoPosition) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """``(QA, QL, BA, BL)`` of §1.4(d): holdings with the margin counted in its currency."""
    debt = iso_debt(pos)
    quote = pos.quote + (pos.margin if pos.mgn_ccy == inst.quote else ZERO)
    base = pos.base + (pos.margin if pos.mgn_ccy == inst.base else ZERO)
    return (quote, debt, base, ZERO) if pos.long else (quote, ZERO, base, debt)


def remaining_value(inst: Instrument, pos: IsoPosition, price: Decimal) -> Decimal:
    """P&L of the **remaining** isolated spot position at ``price``, in quote:
    ``(quote − kept_q − QL) + (base − kept_b − BL)·price`` — its own holdings (margin
    excluded) net of its debt, less what earlier closing fills realised and the position keeps
    (``IsoPosition.kept_quote``/``kept_base``). Exact."""
    _, ql, _, bl = iso_assets(inst, pos)
    return pos.quote - pos.kept_quote - ql + (pos.base - pos.kept_base - bl) * price


def total_upl(inst: Instrument, pos: IsoPosition, mark: Decimal) -> Decimal:
    """P&L of the whole isolated spot position since it opened (what earlier closing fills
    realised included: it stays in the position), in the margin currency — the ``upl`` the
    margin-reduction rule weighs against the margin assigned (``margin + total_upl`` is the
    position's equity; docs/decisions.md 32b)."""
    _, ql, _, bl = iso_assets(inst, pos)
    return margin.isolated_upl(pos.quote, ql, pos.base, bl, mark, pos.mgn_ccy == inst.base)


def iso_tier(inst: Instrument, pos: IsoPosition) -> TierRow:
    return margin.spot_tier_for_debt(inst.tiers, iso_debt(pos), not pos.long)


def isolated_spot(inst: Instrument, pos: IsoPosition, mark: Decimal) -> PositionFigures:
    qa, ql, ba, bl = iso_assets(inst, pos)
    row = iso_tier(inst, pos)
    m, f = row.mmr, inst.taker_fee
    ratio = margin.isolated_margin_ratio(qa, ql, ba, bl, mark, m, f)
    debt_value = ql + bl * mark
    required = margin.debt_maintenance(debt_value, m) + margin.debt_closing_fee(debt_value, m, f)
    in_base = pos.mgn_ccy == inst.base
    if in_base:
        required = NEAR.divide(required, mark)
    upl = margin.isolated_upl(pos.quote - pos.kept_quote, ql, pos.base - pos.kept_base, bl, mark, in_base)
    band = margin.zone_band(*_iso_line(inst, qa, ql, ba, bl, row), mark) if ratio is not None else None
    liq_px = margin.isolated_liquidation_price(qa, ql, ba, bl, m, f) if ratio is not None else None
    return PositionFigures(ratio, liq_px, required, upl, row, band)


def _iso_line(
    inst: Instrument, qa: Decimal, ql: Decimal, ba: Decimal, bl: Decimal, row: TierRow
) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """``(c₀, c₁, d₀, d₁)`` of an isolated spot position (``iso_assets``), in quote:
    ``net = c₀ + c₁·P`` (``(QA − QL) + (BA − BL)·P``), ``required = d₀ + d₁·P``
    (``(QL + BL·P)·(k − 1)``, ``k = (1+m)(1+f)``)."""
    k1 = (1 + row.mmr) * (1 + inst.taker_fee) - 1
    return qa - ql, ba - bl, ql * k1, bl * k1


def _perp_line(inst: Instrument, pos: PerpPosition, row: TierRow) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """``(c₀, c₁, d₀, d₁)`` of an isolated perpetual: ``net = M + q·ctVal·(P − E)``,
    ``required = |q|·ctVal·P·(m + f)``."""
    signed = pos.qty * inst.ct_val
    return pos.margin - signed * pos.avg_px, signed, ZERO, abs(signed) * (row.mmr + inst.taker_fee)


def threshold_price(inst: Instrument, pos: IsoPosition | PerpPosition, threshold: Decimal) -> Decimal | None:
    """Mark at which an isolated spot or isolated perpetual position's ratio equals
    ``threshold`` (``margin.threshold_price``; at 1 it is the liquidation price, at 3 the
    margin-call price). ``None`` without a ratio (no debt, a cross perpetual, size 0) or when
    no positive price solves it."""
    if isinstance(pos, IsoPosition):
        if not iso_debt(pos):
            return None
        return margin.threshold_price(threshold, *_iso_line(inst, *iso_assets(inst, pos), iso_tier(inst, pos)))
    if pos.mgn_mode != "isolated" or pos.qty == 0:
        return None
    return margin.threshold_price(threshold, *_perp_line(inst, pos, perp_tier(inst, pos)))


def perp_tier(inst: Instrument, pos: PerpPosition) -> TierRow:
    return margin.perp_tier(inst.tiers, abs(pos.qty))


def perpetual(inst: Instrument, pos: PerpPosition, mark: Decimal) -> PositionFigures:
    """Figures of a perpetual position; ``ratio``/``liq_px``/``band`` only for isolated ones
    (a cross position's ratio is the account's)."""
    row = perp_tier(inst, pos)
    size = abs(pos.qty) * inst.ct_val
    upl = margin.perp_upl(pos.qty, inst.ct_val, mark, pos.avg_px)
    required = margin.perp_requirement(size * mark, row.mmr, inst.taker_fee)
    if pos.mgn_mode != "isolated" or pos.qty == 0:
        return PositionFigures(None, None, required, upl, row, None)
    ratio = margin.margin_ratio(pos.margin + upl, required, ZERO)
    liq_px = margin.perp_isolated_liquidation_price(size, pos.avg_px, pos.margin, row.mmr, inst.taker_fee, pos.qty > 0)
    band = margin.zone_band(*_perp_line(inst, pos, row), mark)
    return PositionFigures(ratio, liq_px, required, upl, row, band)
