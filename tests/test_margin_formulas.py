"""Unit tests of the pure formulas in engine/core/margin.py against spec/domain.md §2.

Issue-level acceptance goes through commands (tests/test_spec_examples.py); these pin the
formulas themselves, including those the engine does not use yet (isolated margin)."""

from __future__ import annotations

from decimal import Decimal as D

from helpers import TEST_CONTEXT

from engine.core import margin

K_E2 = dict(mmr=D("0.03"), taker_fee=D("0.001"))  # k = 1.03103


def r(value: D | None, places: int) -> D:
    assert value is not None
    return value.quantize(D(1).scaleb(-places), context=TEST_CONTEXT)


def test_e2_isolated_long_base_margin() -> None:
    # 1 BTC bought at 100,000 with 10×, margin 0.1 BTC: BA 1.1, QL 100,000.
    args = dict(quote_assets=D(0), quote_debt=D(100000), base_assets=D("1.1"), base_debt=D(0))
    assert r(margin.isolated_liquidation_price(**args, **K_E2), 2) == D("93730.00")
    assert r(margin.isolated_margin_ratio(**args, price=D(100000), **K_E2), 4) == D("3.2227")
    assert r(margin.isolated_margin_ratio(**args, price=D(95000), **K_E2), 4) == D("1.4502")
    upl = margin.isolated_upl(D(0), D(100000), D(1), D(0), D(95000), in_base=True)
    assert r(upl, 8) == D("-0.05263158")
    assert r(TEST_CONTEXT.divide(upl, D("0.1")), 4) == D("-0.5263")


def test_e2_isolated_long_quote_margin_and_interest() -> None:
    args = dict(quote_assets=D(10000), quote_debt=D(100000), base_assets=D(1), base_debt=D(0))
    assert r(margin.isolated_liquidation_price(**args, **K_E2), 2) == D("93103.00")
    assert r(margin.isolated_margin_ratio(**args, price=D(95000), **K_E2), 4) == D("1.6113")
    with_interest = dict(quote_assets=D(0), quote_debt=D(100012), base_assets=D("1.1"), base_debt=D(0))
    assert r(margin.isolated_liquidation_price(**with_interest, **K_E2), 4) == D("93741.2476")


def test_isolated_short_formulas_agree_with_the_specific_forms() -> None:
    """§1.5: short with quote margin ``(proceeds + Mq)/(D_b·k)``; with base margin
    ``proceeds/(D_b·k − Mb)`` — both special cases of the general form."""
    k = D("1.03103")
    proceeds, debt, quote_margin, base_margin = D(100000), D(1), D(10000), D("0.1")
    short_q = margin.isolated_liquidation_price(proceeds + quote_margin, D(0), D(0), debt, **K_E2)
    assert r(short_q, 8) == r(TEST_CONTEXT.divide(proceeds + quote_margin, debt * k), 8)
    short_b = margin.isolated_liquidation_price(proceeds, D(0), base_margin, debt, **K_E2)
    assert r(short_b, 8) == r(TEST_CONTEXT.divide(proceeds, debt * k - base_margin), 8)


def test_e13_borrow_caps_by_tier_and_leverage() -> None:
    from engine.core.state import TierRow

    tiers = [
        TierRow(1, D("0.03"), D("0.1"), D(10), D(35), D(1_000_000), None),
        TierRow(2, D("0.0625"), D("0.125"), D(8), D(70), D(2_000_000), None),
        TierRow(3, D("0.10"), D("0.2"), D(5), D(105), D(3_000_000), None),
    ]
    margin_value = D(150_000)
    assert margin.max_borrowable(margin_value, D(10), margin.spot_borrow_cap(tiers, D(10), False)) == D(1_000_000)
    assert margin.max_borrowable(margin_value, D(8), margin.spot_borrow_cap(tiers, D(8), False)) == D(1_200_000)
    assert margin.max_borrowable(margin_value, D(5), margin.spot_borrow_cap(tiers, D(5), False)) == D(750_000)
