"""Linear perpetual swaps (``SWAP``) through commands: the spec's perpetual examples and rules
(``spec/domain.md`` §1.2, §1.3 model 2, §1.4(e)/(g)/(h), §1.5 OKX row, §1.6, §1.10, §1.12,
§1.14, E20, E21, E22; §4 decisions 3, 4, 5, 12).

Every number asserted is read from the engine — the risk view (``build_view``), the events of
the outcomes or the engine state — after commands built the situation. Expected values are
derived by hand in the comments (never by calling an engine formula with the example's numbers).

Common listing (``_listed``): USDT (8 decimals) and BTC, SPOT BTC-USDT first (USDT is the
valuation currency; spot tiers of §1.3 model 1, taker fee 0.1 %), then ``BTC-USDT-SWAP``:
settlement USDT, ``ctVal`` 0.01 BTC, tick 0.1, lot 1, maker fee 0, taker fee 0.05 %,
maxLever 75 and the 1INCHUSDT tier table of §1.3 model 2:

=====  ==========  =====  =====  ========
tier   maxSz       mmr    imr    maxLever
=====  ==========  =====  =====  ========
1      1,000       1 %    1.3 %  75
2      2,500       1.5 %  2 %    50
3      25,000      2 %    5 %    20
4      50,000      2.5 %  5.5 %  18.18
=====  ==========  =====  =====  ========

So 100 contracts = 1 BTC; in tier 1 the additive requirement rate of decision 3 is
``m + f = 0.01 + 0.0005 = 0.0105``. The account whose figures are checked is the **maker** of
its fills (maker fee 0) unless a fee is the point, so margins are round numbers.

Tolerances (spec §2): prices to 0.01, ratios to 1e-4, unless more digits are shown. The view
shows ratios 8 places rounded down and ``liqPx`` 8 places rounded up (long) / down (short).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from helpers import Harness, dec, events_of, only, q, rejection

from events import journal as ev

D = Decimal
SWAP = "BTC-USDT-SWAP"

#: §1.3 model 2, the 1INCHUSDT perpetual table (OKX, 2022), tiers 1–4.
SWAP_TIERS: list[dict[str, Any]] = [
    {"tier": 1, "maxSz": "1000", "mmr": "0.01", "imr": "0.013", "maxLever": "75"},
    {"tier": 2, "maxSz": "2500", "mmr": "0.015", "imr": "0.02", "maxLever": "50"},
    {"tier": 3, "maxSz": "25000", "mmr": "0.02", "imr": "0.05", "maxLever": "20"},
    {"tier": 4, "maxSz": "50000", "mmr": "0.025", "imr": "0.055", "maxLever": "18.18"},
]


def _listed(mark: str = "60000", **swap_extra: Any) -> Harness:
    """USDT, BTC, SPOT BTC-USDT, then the SWAP; both instruments marked at ``mark``."""
    h = Harness()
    h.list_asset("USDT", 8)
    h.list_asset("BTC", 8)
    h.list_spot("BTC-USDT", tick="0.01", lot="0.0001", maker_fee="0", taker_fee="0.001")
    h.ok(
        "list_instrument",
        instId=SWAP,
        instType="SWAP",
        settleCcy="USDT",
        ctVal="0.01",
        tickSz="0.1",
        lotSz="1",
        minSz="1",
        makerFee="0",
        takerFee="0.0005",
        maxLever="75",
        tiers=SWAP_TIERS,
        **swap_extra,
    )
    h.mark(mark)
    h.mark(mark, inst=SWAP)
    return h


def _fund(h: Harness, *accts: str, amt: str = "1000000") -> None:
    for acct in accts:
        h.ok("deposit", acct=acct, ccy="USDT", amt=amt)


def _open(
    h: Harness, acct: str, side: str, sz: str, px: str, mode: str, *, against: str = "mm", **extra: Any
) -> ev.Outcome:
    """``acct`` rests a limit order (maker, fee 0) and ``against`` fills it in full as taker (cross)."""
    rested = h.order(acct, side, sz, px, inst=SWAP, td_mode=mode, **extra)
    assert not [e for e in rested.events if isinstance(e, ev.OrderRejected)], rested.events
    other = "sell" if side == "buy" else "buy"
    fill = h.order(against, other, sz, px, inst=SWAP, td_mode="cross")
    trade = only(events_of(fill, ev.Traded))
    assert (trade.makerAcct, trade.takerAcct, trade.sz, trade.px) == (acct, against, D(sz), D(px))
    return fill


def _usdt(h: Harness, acct: str) -> Decimal:
    cash: Decimal = h.bal(acct, "USDT").cash
    return cash


# --- 1. E22: funding payment -------------------------------------------------------------------


def test_e22_funding_longs_pay_shorts_through_settle_funding() -> None:
    """E22: long 2 BTC at mark 60,000, rate +0.01 % ⇒ pays 12 USDT; short 3 BTC ⇒ receives 18.

    A long 200 contracts (2 BTC), B long 100 (1 BTC), C short 300 (3 BTC), all from trades
    among themselves. ``q·ctVal·P·rate``: A 200·0.01·60,000·0.0001 = 12, B 6, C −18."""
    h = _listed()
    _fund(h, "A", "B", "C")
    _open(h, "A", "buy", "200", "60000", "cross", against="C")
    _open(h, "B", "buy", "100", "60000", "cross", against="C")
    assert {p.acct: dec(p.pos) for p in h.view().positions} == {"A": D(200), "B": D(100), "C": D(-300)}
    before = {a: _usdt(h, a) for a in "ABC"}
    out = h.ok("settle_funding", instId=SWAP, fundingRate="0.0001")
    settled = {e.acct: e for e in events_of(out, ev.FundingSettled)}
    assert sorted(settled) == ["A", "B", "C"]
    assert {a: e.amt for a, e in settled.items()} == {"A": D(-12), "B": D(-6), "C": D(18)}
    assert all((e.instId, e.posSide, e.ccy) == (SWAP, "net", "USDT") for e in settled.values())
    assert {a: _usdt(h, a) - before[a] for a in "ABC"} == {"A": D(-12), "B": D(-6), "C": D(18)}
    residual = only(events_of(out, ev.FundingResidual))
    assert (residual.instId, residual.ccy, residual.rate, residual.markPx, residual.amt) == (
        SWAP,
        "USDT",
        D("0.0001"),
        D(60000),
        D(0),
    )


def test_funding_rounding_residual_goes_to_the_insurance_fund() -> None:
    """Same positions, mark 60,000.1, rate 1.3e-8: A pays 2·60,000.1·1.3e-8 = 0.0015600026 →
    0.00156001 (up), B pays 0.0007800013 → 0.00078001, C receives 0.0023400039 → 0.00234000
    (down); residual 0.00000002 to the USDT insurance fund."""
    h = _listed()
    _fund(h, "A", "B", "C")
    _open(h, "A", "buy", "200", "60000", "cross", against="C")
    _open(h, "B", "buy", "100", "60000", "cross", against="C")
    h.mark("60000.1", inst=SWAP)
    fund = h.state.insurance.get("USDT", D(0))
    out = h.ok("settle_funding", instId=SWAP, fundingRate="0.000000013")
    amounts = {e.acct: e.amt for e in events_of(out, ev.FundingSettled)}
    assert amounts == {"A": D("-0.00156001"), "B": D("-0.00078001"), "C": D("0.00234")}
    assert only(events_of(out, ev.FundingResidual)).amt == D("0.00000002")
    assert h.state.insurance["USDT"] - fund == D("0.00000002")


def test_funding_needs_a_swap_and_its_mark() -> None:
    h = _listed()
    assert rejection(h.send("settle_funding", instId="BTC-USDT", fundingRate="0.0001")).reason == ("unknown_instrument")
    h2 = Harness()
    h2.list_asset("USDT", 8)
    h2.list_asset("BTC", 8)
    h2.list_spot("BTC-USDT")
    h2.ok(
        "list_instrument", instId=SWAP, instType="SWAP", settleCcy="USDT", ctVal="0.01", tickSz="0.1", lotSz="1",
        minSz="1", makerFee="0", takerFee="0.0005", maxLever="75", tiers=SWAP_TIERS,
    )  # fmt: skip
    assert rejection(h2.send("settle_funding", instId=SWAP, fundingRate="0.0001")).reason == "no_mark_price"


# --- 2. Isolated liquidation price and margin ratio (§1.4(g), §1.5 OKX row, decision 3) -------


def _isolated_pair() -> Harness:
    """alice: isolated long 100 contracts (Q = 1 BTC) at E = 60,000, 10× ⇒ M = Q·E/10 = 6,000;
    bob: isolated short 100 at 60,000, 10× ⇒ M = 6,000. Both makers (fee 0); mm takes."""
    h = _listed()
    _fund(h, "alice", "bob", "mm")
    for acct in ("alice", "bob"):
        h.ok("set_leverage", acct=acct, instId=SWAP, mgnMode="isolated", lever="10")
    opened = _open(h, "alice", "buy", "100", "60000", "isolated")
    posted = only(events_of(opened, ev.PositionMarginChanged))
    assert (posted.acct, posted.amt, posted.reason) == ("alice", D(6000), "open")
    _open(h, "bob", "sell", "100", "60000", "isolated")
    return h


def test_isolated_perp_liquidation_price_and_ratio_okx_convention() -> None:
    """Tier 1 (100 ≤ 1,000 contracts): m = 1 %, f = 0.05 %.

    long  liqPx = (Q·E − M)/(Q·(1 − m − f)) = (60,000 − 6,000)/0.9895 = 54,573.01667509 (up)
    short liqPx = (Q·E + M)/(Q·(1 + m + f)) = (60,000 + 6,000)/1.0105 = 65,314.20089064 (down)
    MR = (M + upl)/(Q·P·(m + f)):
      P = 60,000: 6,000/630 = 9.52380952 (both);
      P = 56,000: long (6,000 − 4,000)/588 = 3.40136054; short (6,000 + 4,000)/588 = 17.00680272.
    The liquidation price does not move with the mark."""
    h = _isolated_pair()
    for mark, long_mr, short_mr in (("60000", "9.5238", "9.5238"), ("56000", "3.4014", "17.0068")):
        h.mark(mark, inst=SWAP)
        alice, bob = h.position("alice", SWAP), h.position("bob", SWAP)
        assert (alice.mgnMode, alice.posSide, dec(alice.pos), dec(alice.margin)) == ("isolated", "net", D(100), D(6000))
        assert (bob.mgnMode, dec(bob.pos), dec(bob.margin)) == ("isolated", D(-100), D(6000))
        assert q(alice.liqPx, 2) == D("54573.02")
        assert alice.liqPx == "54573.01667509"
        assert q(bob.liqPx, 2) == D("65314.20")
        assert bob.liqPx == "65314.20089064"
        assert q(alice.mgnRatio, 4) == D(long_mr)
        assert q(bob.mgnRatio, 4) == D(short_mr)
    # upl = q·ctVal·(P − E) at 56,000: long −4,000, short +4,000; uplRatio = upl / IM (6,000).
    alice, bob = h.position("alice", SWAP), h.position("bob", SWAP)
    assert (dec(alice.upl), dec(bob.upl)) == (D(-4000), D(4000))
    assert q(alice.uplRatio, 4) == D("-0.6667")
    # MR 3.40 > 3: no margin call for alice; bob is far from it.
    assert not events_of(h.outcomes, ev.MarginCallRaised)


def test_isolated_perp_liquidates_at_ratio_one_not_above_long() -> None:
    """Add 567 USDT to alice's margin: M = 6,567 ⇒ liqPx = (60,000 − 6,567)/0.9895 = 54,000
    exactly. At 54,000.1: MR = (6,567 − 5,999.9)/(54,000.1·0.0105) = 567.1/567.00105
    = 1.000175 > 1 ⇒ margin call only. At 54,000: MR = 567/567 = 1 ⇒ liquidation (≤ 1)."""
    h = _isolated_pair()
    h.ok("adjust_margin", acct="alice", instId=SWAP, posSide="net", action="add", amt="567")
    assert dec(h.position("alice", SWAP).liqPx) == D(54000)
    h.order("mm", "buy", "100", "54000", inst=SWAP, td_mode="cross", cl_ord_id="bid")
    above = h.mark("54000.1", inst=SWAP)
    assert q(h.position("alice", SWAP).mgnRatio, 4) == D("1.0002")
    call = only(events_of(above, ev.MarginCallRaised))
    assert (call.acct, call.instId, call.posSide) == ("alice", SWAP, "net")
    assert not events_of(above, ev.LiquidationStarted)
    at = h.mark("54000", inst=SWAP)
    started = only(events_of(at, ev.LiquidationStarted))
    assert (started.acct, started.instId, started.posSide, started.mgnRatio) == ("alice", SWAP, "net", D(1))
    trade = only(events_of(at, ev.Traded))
    assert (trade.takerAcct, trade.sz, trade.px, trade.liquidation) == ("alice", D(100), D(54000), True)
    finished = only(events_of(at, ev.LiquidationFinished))
    assert (finished.acct, finished.instId) == ("alice", SWAP)
    assert not [p for p in h.positions("alice") if p.instId == SWAP]


def test_isolated_perp_liquidates_at_ratio_one_not_above_short() -> None:
    """Add 693 USDT to bob's margin: M = 6,693 ⇒ liqPx = (60,000 + 6,693)/1.0105 = 66,000
    exactly. At 65,999.9: MR = (6,693 − 5,999.9)/(65,999.9·0.0105) = 1.000146 > 1; at 66,000:
    MR = 693/693 = 1 ⇒ liquidation."""
    h = _isolated_pair()
    h.ok("adjust_margin", acct="bob", instId=SWAP, posSide="net", action="add", amt="693")
    assert dec(h.position("bob", SWAP).liqPx) == D(66000)
    h.order("mm", "sell", "100", "66000", inst=SWAP, td_mode="cross", cl_ord_id="ask")
    above = h.mark("65999.9", inst=SWAP)
    assert q(h.position("bob", SWAP).mgnRatio, 4) == D("1.0001")
    assert not events_of(above, ev.LiquidationStarted)
    at = h.mark("66000", inst=SWAP)
    started = only(events_of(at, ev.LiquidationStarted))
    assert (started.acct, started.instId, started.mgnRatio) == ("bob", SWAP, D(1))
    trade = only(events_of(at, ev.Traded))
    assert (trade.takerAcct, trade.takerSide, trade.sz, trade.liquidation) == ("bob", "buy", D(100), True)
    assert not [p for p in h.positions("bob") if p.instId == SWAP]


# --- 3. Cross ratio spanning spot-margin debt and a perpetual (§1.4(e)/(h)) -------------------


def test_cross_ratio_spans_spot_margin_debt_and_perpetual() -> None:
    """carol deposits 20,000 USDT; sells 0.5 BTC cross at 60,000 as taker (auto-borrows 0.5 BTC,
    fee 0.1 % of 30,000 = 30 USDT ⇒ USDT 49,970); buys 100 contracts (1 BTC) cross at 60,000
    as maker. Marks: BTC-USDT 58,000, SWAP 58,100.

    equity = 49,970 − 0.5·58,000 + 1·(58,100 − 60,000) = 19,070
    spot debt: D·P·(k − 1), k = 1.03·1.001 (tier 1, f 0.1 %) ⇒ 29,000·0.03103 = 899.87
    perp:      notional·(m + f) = 58,100·0.0105 = 610.05
    MR = 19,070 / (899.87 + 610.05) = 19,070 / 1,509.92 = 12.62980820
    Perp liqPx (SWAP mark at MR = 1, spot mark held): equity = −39,030 + P, requirement
    899.87 + 0.0105·P ⇒ P = 39,929.87/0.9895 = 40,353.58261748."""
    h = _listed()
    _fund(h, "mm", amt="10000000")
    h.ok("deposit", acct="mm", ccy="BTC", amt="10")
    h.ok("deposit", acct="carol", ccy="USDT", amt="20000")
    h.order("mm", "buy", "0.5", "60000", cl_ord_id="spot-bid")
    sold = h.order("carol", "sell", "0.5", "60000", td_mode="cross", ord_type="ioc")
    borrowed = only(events_of(sold, ev.Borrowed))
    assert (borrowed.acct, borrowed.ccy, borrowed.amt) == ("carol", "BTC", D("0.5"))
    _open(h, "carol", "buy", "100", "60000", "cross")
    h.mark("58000")
    h.mark("58100", inst=SWAP)
    acct = h.account("carol")
    assert dec(acct.totalEq) == D(19070)
    assert dec(acct.mmr) == D("1509.92")
    assert q(acct.mgnRatio, 4) == D("12.6298")
    assert dec(acct.mgnRatio) == D("12.6298082")  # 8 places, rounded down
    perp = h.position("carol", SWAP)
    assert (perp.mgnMode, dec(perp.pos), dec(perp.upl)) == ("cross", D(100), D(-1900))
    assert perp.mgnRatio == acct.mgnRatio
    assert q(perp.liqPx, 2) == D("40353.58")


# --- 4. Net mode flip, realised P&L; hedge mode ----------------------------------------------


def test_net_mode_sell_through_flips_with_entry_at_fill_and_realises_pnl() -> None:
    """Net mode: buy 100 at 60,000, then sell 150 at 61,000.5 (both maker, fee 0) ⇒ the first
    100 close with P&L 100·0.01·(61,000.5 − 60,000) = 1,000.5 to the cash; the other 50 open a
    short at the fill price 61,000.5."""
    h = _listed()
    _fund(h, "A", "mm", "mm2")
    _open(h, "A", "buy", "100", "60000", "cross")
    cash = _usdt(h, "A")
    flip = _open(h, "A", "sell", "150", "61000.5", "cross", against="mm2")
    pnl = only([e for e in events_of(flip, ev.PnlRealised) if e.acct == "A"])
    assert (pnl.instId, pnl.posSide, pnl.ccy, pnl.amt, pnl.released) == (SWAP, "net", "USDT", D("1000.5"), D(0))
    assert _usdt(h, "A") - cash == D("1000.5")
    pos = h.position("A", SWAP)
    assert (pos.posSide, dec(pos.pos), dec(pos.avgPx)) == ("net", D(-50), D("61000.5"))


def test_realised_pnl_rounds_toward_minus_infinity() -> None:
    """Buy 100 at 60,000 and 50 at 60,000.1 ⇒ entry 9,000,005/150 = 60,000.0333…; sell 250 at
    59,000 closes the 150 with P&L = 150·0.01·59,000 − 90,000.05 = −1,500.05 (a loss rounded
    toward −∞ is −1,500.05, not the −1,500.04999999 of rounding toward zero); 100 open short at
    59,000."""
    h = _listed()
    _fund(h, "A", "mm", "mm2")
    _open(h, "A", "buy", "100", "60000", "cross")
    _open(h, "A", "buy", "50", "60000.1", "cross")
    assert q(h.position("A", SWAP).avgPx, 4) == D("60000.0333")
    cash = _usdt(h, "A")
    flip = _open(h, "A", "sell", "250", "59000", "cross", against="mm2")
    pnl = only([e for e in events_of(flip, ev.PnlRealised) if e.acct == "A"])
    assert pnl.amt == D("-1500.05")
    assert _usdt(h, "A") - cash == D("-1500.05")
    pos = h.position("A", SWAP)
    assert (dec(pos.pos), dec(pos.avgPx)) == (D(-100), D(59000))


def test_hedge_mode_long_and_short_coexist() -> None:
    h = _listed()
    _fund(h, "A", "mm", "mm2")
    h.ok("set_position_mode", acct="A", posMode="long_short_mode")
    # posSide is required in hedge mode.
    assert rejection(h.order("A", "buy", "10", "60000", inst=SWAP, td_mode="cross")).reason == "invalid_posSide"
    _open(h, "A", "buy", "100", "60000", "cross", posSide="long")
    _open(h, "A", "sell", "50", "60000", "cross", against="mm2", posSide="short")
    sides = {p.posSide: dec(p.pos) for p in h.positions("A")}
    assert sides == {"long": D(100), "short": D(-50)}
    # Selling the long side closes it and may not exceed it.
    too_much = h.order("A", "sell", "150", "61000", inst=SWAP, td_mode="cross", posSide="long")
    assert rejection(too_much).reason == "exceeds_position"
    # The mode cannot change while positions are open.
    assert rejection(h.send("set_position_mode", acct="A", posMode="net_mode")).reason == "positions_open"
    cash = _usdt(h, "A")
    closed = _open(h, "A", "sell", "40", "61000", "cross", against="mm2", posSide="long")
    pnl = only([e for e in events_of(closed, ev.PnlRealised) if e.acct == "A"])
    assert (pnl.posSide, pnl.amt) == ("long", D(400))  # 40·0.01·(61,000 − 60,000)
    assert _usdt(h, "A") - cash == D(400)
    held = {p.posSide: (dec(p.pos), dec(p.avgPx)) for p in h.positions("A")}
    assert held == {"long": (D(60), D(60000)), "short": (D(-50), D(60000))}
    # Close both sides at market; with nothing open the mode can change again.
    h.order("mm", "buy", "60", "61000", inst=SWAP, td_mode="cross", cl_ord_id="bid")
    h.order("mm2", "sell", "50", "61001", inst=SWAP, td_mode="cross", cl_ord_id="ask")
    long_close = h.ok("close_position", acct="A", instId=SWAP, mgnMode="cross", posSide="long")
    assert [(t.takerSide, t.sz, t.px) for t in events_of(long_close, ev.Traded)] == [("sell", 60, 61000)]
    short_close = h.ok("close_position", acct="A", instId=SWAP, mgnMode="cross", posSide="short")
    assert [(t.takerSide, t.sz, t.px) for t in events_of(short_close, ev.Traded)] == [("buy", 50, 61001)]
    assert h.positions("A") == []
    h.ok("set_position_mode", acct="A", posMode="net_mode")


def test_position_mode_refused_with_a_resting_swap_order() -> None:
    h = _listed()
    _fund(h, "A")
    h.order("A", "buy", "10", "59000", inst=SWAP, td_mode="cross", cl_ord_id="rest")
    assert rejection(h.send("set_position_mode", acct="A", posMode="long_short_mode")).reason == "positions_open"
    h.ok("cancel_order", acct="A", instId=SWAP, clOrdId="rest")
    h.ok("set_position_mode", acct="A", posMode="long_short_mode")


# --- 5. reduceOnly -----------------------------------------------------------------------------


def test_reduce_only_refused_when_it_would_open_accepted_when_reducing() -> None:
    h = _listed()
    _fund(h, "A", "mm")
    nothing = h.order("A", "sell", "10", "60000", inst=SWAP, td_mode="cross", reduceOnly=True)
    assert rejection(nothing).reason == "reduce_only_would_increase"
    _open(h, "A", "buy", "100", "60000", "cross")
    same_side = h.order("A", "buy", "10", "60000", inst=SWAP, td_mode="cross", reduceOnly=True)
    assert rejection(same_side).reason == "reduce_only_would_increase"
    through = h.order("A", "sell", "150", "60000", inst=SWAP, td_mode="cross", reduceOnly=True)
    assert rejection(through).reason == "reduce_only_would_increase"
    h.order("mm", "buy", "60", "60000", inst=SWAP, td_mode="cross", cl_ord_id="bid")
    reduced = h.order("A", "sell", "60", "60000", inst=SWAP, td_mode="cross", reduceOnly=True)
    only(events_of(reduced, ev.OrderAccepted))
    assert only(events_of(reduced, ev.Traded)).sz == D(60)
    assert dec(h.position("A", SWAP).pos) == D(40)


# --- 6. Tier cap by leverage (§1.3 model 2, §1.8 analogue) -----------------------------------


def test_position_size_capped_by_the_tier_of_the_leverage() -> None:
    """Cap = maxSz of the highest tier whose maxLever ≥ L: 75× → 1,000; 50× → 2,500;
    20× → 25,000. Resting orders on the same side count."""
    h = _listed()
    _fund(h, "A", amt="10000000")
    assert rejection(h.order("A", "buy", "1001", "60000", inst=SWAP, td_mode="cross")).reason == "position_limit"
    h.ok("set_leverage", acct="A", instId=SWAP, mgnMode="cross", lever="50")
    assert rejection(h.order("A", "buy", "2501", "60000", inst=SWAP, td_mode="cross")).reason == "position_limit"
    h.order("A", "buy", "2500", "59000", inst=SWAP, td_mode="cross", cl_ord_id="big")
    assert only(events_of(h.outcomes[-1], ev.OrderRested)).sz == D(2500)
    assert rejection(h.order("A", "buy", "1", "59000", inst=SWAP, td_mode="cross")).reason == "position_limit"
    h.ok("set_leverage", acct="A", instId=SWAP, mgnMode="cross", lever="20")
    h.order("A", "buy", "22500", "59000", inst=SWAP, td_mode="cross", cl_ord_id="bigger")
    assert only(events_of(h.outcomes[-1], ev.OrderRested)).sz == D(22500)
    assert rejection(h.order("A", "buy", "1", "59000", inst=SWAP, td_mode="cross")).reason == "position_limit"


def test_isolated_position_size_capped_by_the_tier_of_the_leverage() -> None:
    h = _listed()
    _fund(h, "A", amt="10000000")
    h.ok("set_leverage", acct="A", instId=SWAP, mgnMode="isolated", lever="50")
    refused = h.order("A", "buy", "2501", "60000", inst=SWAP, td_mode="isolated")
    assert rejection(refused).reason == "position_limit"
    h.ok("set_leverage", acct="A", instId=SWAP, mgnMode="isolated", lever="20")
    accepted = only(events_of(h.order("A", "buy", "25000", "60000", inst=SWAP, td_mode="isolated"), ev.OrderAccepted))
    # Isolated initial margin frozen: 25,000·0.01·60,000 / 20 = 750,000.
    assert accepted.frozen == D(750000)
    assert rejection(h.order("A", "buy", "1", "60000", inst=SWAP, td_mode="isolated")).reason == "position_limit"


# --- 7. E21: partial liquidation, one tier at a time (decision 5) ----------------------------


def _e21(mark: str) -> tuple[Harness, ev.Outcome]:
    """alice: isolated long 30,000 contracts (300 BTC, tier 4) at 60,000, 18× ⇒
    M = 18,000,000/18 = 1,000,000 (maker, fee 0). bb rests bids for 30,000 contracts at 60,000
    (the entry), so every liquidation fill realises P&L 0 and the margin moves only by the
    release and the taker fee (0.05 % of 60,000·0.01 = 0.3 per contract). Then the mark falls
    to ``mark``.

    Tier 4 (m + f = 0.0255): MR0 = (M + 300·(P − 60,000))/(300·P·0.0255) ≤ 1 ⇔ P ≤ 58,149.48.
    Step 1 — close 5,000 down to tier 3's maxSz 25,000: the closed share of the margin
      1,000,000·5,000/30,000 = 166,666.66666666 (down) plus P&L 0 less the closed contracts'
      own fee 1,500 is released: 165,166.66666666; the fill's fee 1,500 leaves the margin
      ⇒ M1 = 1,000,000 − 165,166.66666666 − 1,500 = 833,333.33333334 (the rest keeps its
      share: 25/30 of the margin); MR1 = (M1 + 250·(P − 60,000))/(250·P·0.0205) (tier 3).
    Step 2 — if MR1 ≤ 1, close 22,500 down to tier 2's maxSz 2,500: share
      M1·22,500/25,000 = 750,000.000000006 → 750,000.00000000 (down), less fee 6,750 ⇒
      released 743,250; M2 = 833,333.33333334 − 743,250 − 6,750 = 83,333.33333334;
      MR2 = (M2 + 25·(P − 60,000))/(25·P·0.0155) (tier 2, m + f = 0.0155).
    Tier 2 is not stepped: if MR2 ≤ 1 the rest is closed in full.

    | P      | MR0        | MR1        | MR2        | end size |
    | 58,000 | 0.90151003 | 1.12139052 | –          | 25,000   |
    | 57,850 | 0.80216471 | 0.99781464 | 1.31969033 | 2,500    |
    | 57,000 | 0.22933150 | 0.28526601 | 0.37728730 | 0 (tier 2 closed in full) |
    """
    h = _listed()
    _fund(h, "alice", amt="2000000")
    _fund(h, "mm", "bb", amt="20000000")
    h.ok("set_leverage", acct="alice", instId=SWAP, mgnMode="isolated", lever="18")
    for acct in ("mm", "bb"):
        h.ok("set_leverage", acct=acct, instId=SWAP, mgnMode="cross", lever="18")
    _open(h, "alice", "buy", "30000", "60000", "isolated")
    pos = h.position("alice", SWAP)
    assert (dec(pos.pos), dec(pos.margin)) == (D(30000), D(1000000))
    assert q(pos.mgnRatio, 4) == D("2.1786")  # 1,000,000/(300·60,000·0.0255)
    h.order("bb", "buy", "30000", "60000", inst=SWAP, td_mode="cross", cl_ord_id="bids")
    return h, h.mark(mark, inst=SWAP)


def _liquidation_fills(out: ev.Outcome) -> list[Decimal]:
    trades = events_of(out, ev.Traded)
    assert all(t.takerAcct == "alice" and t.liquidation and t.px == D(60000) for t in trades)
    return [t.sz for t in trades]


def test_e21_partial_liquidation_stops_at_tier_3_when_ratio_recovers() -> None:
    h, out = _e21("58000")
    started = only(events_of(out, ev.LiquidationStarted))
    assert q(started.mgnRatio, 4) == D("0.9015")
    assert _liquidation_fills(out) == [D(5000)]
    released = only([e for e in events_of(out, ev.PnlRealised) if e.acct == "alice"])
    assert (released.amt, released.released) == (D(0), D("165166.66666666"))
    only(events_of(out, ev.LiquidationFinished))
    pos = h.position("alice", SWAP)
    assert (dec(pos.pos), dec(pos.margin)) == (D(25000), D("833333.33333334"))
    assert q(pos.mgnRatio, 4) == D("1.1214")
    assert dec(pos.mmr) == D("297250")  # 250·58,000·0.0205
    assert not events_of(out, ev.InsuranceFundCovered) and not events_of(out, ev.DebtWrittenOff)


def test_e21_partial_liquidation_steps_to_tier_2_then_stops() -> None:
    h, out = _e21("57850")
    assert q(only(events_of(out, ev.LiquidationStarted)).mgnRatio, 4) == D("0.8022")
    assert _liquidation_fills(out) == [D(5000), D(22500)]
    only(events_of(out, ev.LiquidationFinished))
    pos = h.position("alice", SWAP)
    assert (dec(pos.pos), dec(pos.margin)) == (D(2500), D("83333.33333334"))
    assert q(pos.mgnRatio, 4) == D("1.3197")


def test_e21_tier_2_is_closed_in_full() -> None:
    h, out = _e21("57000")
    assert _liquidation_fills(out) == [D(5000), D(22500), D(2500)]
    only(events_of(out, ev.LiquidationFinished))
    assert not [p for p in h.positions("alice") if p.instId == SWAP]


def test_full_liquidation_below_tier_3_is_one_close() -> None:
    """A tier-2 position (2,000 contracts, 50×: M = 2,000·0.01·60,000/50 = 24,000) liquidated
    with one market close of the whole size (decision 5: tiers 1–2 full). m + f = 0.0155:
    liqPx = (1,200,000 − 24,000)/(20·0.9845) = 59,725.74911122; at 59,700 MR < 1."""
    h = _listed()
    _fund(h, "alice", "mm", "bb", amt="5000000")
    h.ok("set_leverage", acct="alice", instId=SWAP, mgnMode="isolated", lever="50")
    for acct in ("mm", "bb"):
        h.ok("set_leverage", acct=acct, instId=SWAP, mgnMode="cross", lever="50")
    _open(h, "alice", "buy", "2000", "60000", "isolated")
    assert q(h.position("alice", SWAP).liqPx, 2) == D("59725.75")
    h.order("bb", "buy", "2000", "59700", inst=SWAP, td_mode="cross", cl_ord_id="bids")
    out = h.mark("59700", inst=SWAP)
    only(events_of(out, ev.LiquidationStarted))
    trade = only(events_of(out, ev.Traded))
    assert (trade.takerAcct, trade.sz, trade.liquidation) == ("alice", D(2000), True)
    assert not [p for p in h.positions("alice") if p.instId == SWAP]


def test_partial_close_of_isolated_perp_keeps_the_rest_ratio() -> None:
    """Margin released pro rata (§1.10 spirit; OKX/Binance "released proportionally"): alice
    isolated long 100 at 60,000, M = 6,000; mark 57,000 ⇒ equity 6,000 − 3,000 = 3,000,
    MR = 3,000/(57,000·0.0105) = 5.01253133. She sells 50 at 57,000 (maker, fee 0): the closed
    half's share of the margin (3,000) plus its P&L (−1,500) = 1,500 returns to her cash; the
    rest keeps margin 3,000 and upl −1,500 ⇒ MR = 1,500/(28,500·0.0105) = 5.01253133 — the
    same ratio, no margin call. (Charging the closed half's loss to the remaining margin would
    leave 2,250 of margin and MR 2.506: a margin call caused by reducing risk.)"""
    h = _listed()
    _fund(h, "alice", "mm", "mm2")
    h.ok("set_leverage", acct="alice", instId=SWAP, mgnMode="isolated", lever="10")
    _open(h, "alice", "buy", "100", "60000", "isolated")
    h.mark("57000", inst=SWAP)
    assert q(h.position("alice", SWAP).mgnRatio, 4) == D("5.0125")
    cash = _usdt(h, "alice")
    out = _open(h, "alice", "sell", "50", "57000", "isolated", against="mm2")
    pnl = only([e for e in events_of(out, ev.PnlRealised) if e.acct == "alice"])
    assert pnl.amt == D(-1500)
    assert _usdt(h, "alice") - cash == D(1500)
    pos = h.position("alice", SWAP)
    assert (dec(pos.pos), dec(pos.margin)) == (D(50), D(3000))
    assert q(pos.mgnRatio, 4) == D("5.0125")
    assert not events_of(out, ev.MarginCallRaised)


def test_cross_perp_liquidates_at_account_ratio_one() -> None:
    """dave: 6,000 USDT, cross long 100 at 60,000 (maker, fee 0). Account MR =
    (6,000 + (P − 60,000))/(P·0.0105) ⇒ liqPx = 54,000/0.9895 = 54,573.01667509 (as isolated
    with M = 6,000). At 54,573.1: 573.1/573.01755 = 1.00014 > 1; at 54,573: 573/573.0165 =
    0.99997 ⇒ the cross liquidation closes the perpetual at market (tier 1: full): P&L −5,427,
    fee 54,573·0.0005 = 27.2865 ⇒ 545.7135 USDT left, no debt."""
    h = _listed()
    _fund(h, "mm", "bb")
    h.ok("deposit", acct="dave", ccy="USDT", amt="6000")
    _open(h, "dave", "buy", "100", "60000", "cross")
    assert q(h.position("dave", SWAP).liqPx, 2) == D("54573.02")
    h.order("bb", "buy", "100", "54573", inst=SWAP, td_mode="cross", cl_ord_id="bid")
    above = h.mark("54573.1", inst=SWAP)
    assert q(h.account("dave").mgnRatio, 4) == D("1.0001")
    assert not events_of(above, ev.LiquidationStarted)
    at = h.mark("54573", inst=SWAP)
    started = only(events_of(at, ev.LiquidationStarted))
    assert (started.acct, started.instId) == ("dave", "")
    trade = only(events_of(at, ev.Traded))
    assert (trade.takerAcct, trade.sz, trade.px, trade.liquidation) == ("dave", D(100), D(54573), True)
    assert h.positions("dave") == []
    assert _usdt(h, "dave") == D("545.7135")
    assert not h.state.accounts["dave"].has_debt()


def _cross_e21(mark: str) -> tuple[Harness, ev.Outcome]:
    """Cross analogue of E21: carl holds 1,000,000 USDT and goes long 30,000 contracts cross at
    60,000, 18× (IM 18,000,000/18 = 1,000,000 = equity). Liquidation fills hit bids at 60,000
    (P&L 0), taker fee 0.3 per contract from the cash. Account MR (no other risk):
      MR0 = (1,000,000 + 300·(P − 60,000))/(300·P·0.0255)
      after 5,000 closed (fee 1,500): MR1 = (998,500 + 250·(P − 60,000))/(250·P·0.0205)
      after 22,500 more (fee 6,750):  MR2 = (991,750 + 25·(P − 60,000))/(25·P·0.0155)
    | P      | MR0        | MR1        | MR2        | end size |
    | 58,000 | 0.90151003 | 1.67703953 | –          | 25,000   |
    | 57,100 | 0.29760883 | 0.93460339 | 41.5456754 | 2,500    |"""
    h = _listed()
    _fund(h, "mm", "bb", amt="20000000")
    h.ok("deposit", acct="carl", ccy="USDT", amt="1000000")
    for acct in ("carl", "mm", "bb"):
        h.ok("set_leverage", acct=acct, instId=SWAP, mgnMode="cross", lever="18")
    _open(h, "carl", "buy", "30000", "60000", "cross")
    h.order("bb", "buy", "30000", "60000", inst=SWAP, td_mode="cross", cl_ord_id="bids")
    return h, h.mark(mark, inst=SWAP)


def test_cross_e21_partial_liquidation_stops_at_tier_3() -> None:
    h, out = _cross_e21("58000")
    assert q(only(events_of(out, ev.LiquidationStarted)).mgnRatio, 4) == D("0.9015")
    assert [t.sz for t in events_of(out, ev.Traded) if t.takerAcct == "carl"] == [D(5000)]
    assert dec(h.position("carl", SWAP).pos) == D(25000)
    assert _usdt(h, "carl") == D(998500)
    assert q(h.account("carl").mgnRatio, 4) == D("1.6770")


def test_cross_e21_partial_liquidation_steps_to_tier_2() -> None:
    h, out = _cross_e21("57100")
    assert [t.sz for t in events_of(out, ev.Traded) if t.takerAcct == "carl"] == [D(5000), D(22500)]
    assert dec(h.position("carl", SWAP).pos) == D(2500)
    assert _usdt(h, "carl") == D(991750)
    assert q(h.account("carl").mgnRatio, 4) == D("41.5457")


# --- 8. Funding from isolated margin vs cross cash (§1.14) ------------------------------------


def test_funding_taken_from_isolated_margin_or_cross_cash() -> None:
    """alice isolated long 100 (M = 6,000, 10×), bob cross long 100, mm short 200, all at
    60,000. Rate +0.01 % at 60,000: each long pays 100·0.01·60,000·0.0001 = 6 — alice from her
    margin (6,000 → 5,994; liqPx (60,000 − 5,994)/0.9895 = 54,579.08034361), bob from his cash;
    mm receives 12. Rate −0.02 % at 61,000: each long receives 12.2 (alice's margin 6,006.2,
    liqPx 54,566.75088428), mm pays 24.4."""
    h = _listed()
    _fund(h, "alice", "bob", "mm")
    h.ok("set_leverage", acct="alice", instId=SWAP, mgnMode="isolated", lever="10")
    _open(h, "alice", "buy", "100", "60000", "isolated")
    _open(h, "bob", "buy", "100", "60000", "cross")
    assert q(h.position("alice", SWAP).liqPx, 2) == D("54573.02")
    cash = {a: _usdt(h, a) for a in ("alice", "bob", "mm")}
    out = h.ok("settle_funding", instId=SWAP, fundingRate="0.0001")
    assert {e.acct: e.amt for e in events_of(out, ev.FundingSettled)} == {"alice": -6, "bob": -6, "mm": 12}
    assert {a: _usdt(h, a) - cash[a] for a in cash} == {"alice": 0, "bob": -6, "mm": 12}
    alice = h.position("alice", SWAP)
    assert dec(alice.margin) == D(5994)
    assert q(alice.liqPx, 2) == D("54579.08")
    assert h.position("bob", SWAP).margin == ""
    h.mark("61000", inst=SWAP)
    cash = {a: _usdt(h, a) for a in ("alice", "bob", "mm")}
    out = h.ok("settle_funding", instId=SWAP, fundingRate="-0.0002")
    amounts = {e.acct: e.amt for e in events_of(out, ev.FundingSettled)}
    assert amounts == {"alice": D("12.2"), "bob": D("12.2"), "mm": D("-24.4")}
    assert {a: _usdt(h, a) - cash[a] for a in cash} == {"alice": 0, "bob": D("12.2"), "mm": D("-24.4")}
    alice = h.position("alice", SWAP)
    assert dec(alice.margin) == D("6006.2")
    assert q(alice.liqPx, 2) == D("54566.75")
    assert only(events_of(out, ev.FundingResidual)).amt == 0


# --- 9. close_position and adjust_margin -------------------------------------------------------


def test_close_position_cross_swap_closes_everything_at_market() -> None:
    """bob cross long 100 at 60,000; mm bids 100 at 59,000. close_position sells 100 at market:
    P&L 100·0.01·(59,000 − 60,000) = −1,000, taker fee 59,000·0.0005 = 29.5 ⇒ cash −1,029.5."""
    h = _listed()
    _fund(h, "bob", "mm")
    _open(h, "bob", "buy", "100", "60000", "cross")
    h.order("mm", "buy", "100", "59000", inst=SWAP, td_mode="cross", cl_ord_id="bid")
    assert rejection(h.send("close_position", acct="bob", instId=SWAP, mgnMode="isolated")).reason == "no_position"
    cash = _usdt(h, "bob")
    out = h.ok("close_position", acct="bob", instId=SWAP, mgnMode="cross")
    trade = only(events_of(out, ev.Traded))
    assert (trade.takerAcct, trade.takerSide, trade.sz, trade.px, trade.takerFee) == (
        "bob",
        "sell",
        D(100),
        D(59000),
        D("29.5"),
    )
    assert only([e for e in events_of(out, ev.PnlRealised) if e.acct == "bob"]).amt == D(-1000)
    assert _usdt(h, "bob") - cash == D("-1029.5")
    assert not [p for p in h.positions("bob") if p.instId == SWAP]


def test_close_position_isolated_swap_returns_margin_net_of_pnl_and_fee() -> None:
    """alice isolated long 100 at 60,000, M = 6,000; mm bids 100 at 59,000. close_position:
    P&L −1,000 and taker fee 29.5 come out of the margin; the account gets back
    6,000 − 1,000 − 29.5 = 4,970.5 and no one else pays (no fund cover, nothing written off)."""
    h = _listed()
    _fund(h, "alice", "mm")
    h.ok("set_leverage", acct="alice", instId=SWAP, mgnMode="isolated", lever="10")
    _open(h, "alice", "buy", "100", "60000", "isolated")
    h.order("mm", "buy", "100", "59000", inst=SWAP, td_mode="cross", cl_ord_id="bid")
    assert rejection(h.send("close_position", acct="alice", instId=SWAP, mgnMode="cross")).reason == "no_position"
    cash = _usdt(h, "alice")
    out = h.ok("close_position", acct="alice", instId=SWAP, mgnMode="isolated")
    trade = only(events_of(out, ev.Traded))
    assert (trade.takerAcct, trade.sz, trade.px, trade.takerFee) == ("alice", D(100), D(59000), D("29.5"))
    assert not [p for p in h.positions("alice") if p.instId == SWAP]
    assert not events_of(out, ev.InsuranceFundCovered)
    assert not events_of(out, ev.DebtWrittenOff)
    assert _usdt(h, "alice") - cash == D("4970.5")


def test_isolated_liquidation_fee_comes_out_of_the_margin() -> None:
    """The boundary case above (M = 6,567, liquidated at 54,000 into a bid at 54,000): P&L
    −6,000, taker fee 54,000·0.0005 = 27 ⇒ 540 returns to alice, and the insurance fund pays
    nothing (the margin covered the fee)."""
    h = _isolated_pair()
    h.ok("adjust_margin", acct="alice", instId=SWAP, posSide="net", action="add", amt="567")
    h.order("mm", "buy", "100", "54000", inst=SWAP, td_mode="cross", cl_ord_id="bid")
    cash = _usdt(h, "alice")
    out = h.mark("54000", inst=SWAP)
    assert only(events_of(out, ev.Traded)).takerFee == D(27)
    assert not events_of(out, ev.InsuranceFundCovered)
    assert not events_of(out, ev.DebtWrittenOff)
    assert _usdt(h, "alice") - cash == D(540)


def _adjust(h: Harness, acct: str, action: str, amt: str) -> ev.Outcome:
    return h.send("adjust_margin", acct=acct, instId=SWAP, posSide="net", action=action, amt=amt)


def test_adjust_margin_on_isolated_perp_e20() -> None:
    """E20 through commands: long 1 BTC (100 contracts) at 60,000, 10× ⇒ base margin 6,000;
    add 2,000 ⇒ assigned 8,000; r_reduce 0.5 (``reduceMarginRatio``).
    Max reducible: upl +2,000 (62,000) ⇒ 8,000 − 6,000 = 2,000; upl −1,000 (59,000) ⇒
    8,000 − (6,000 + 1,500) = 500; upl −2,000 (58,000) ⇒ 0. Adding moves liqPx down:
    (60,000 − 8,000)/0.9895 = 52,551.79383527."""
    h = _listed(reduceMarginRatio="0.5")
    _fund(h, "alice", "mm", amt="100000")
    h.ok("set_leverage", acct="alice", instId=SWAP, mgnMode="isolated", lever="10")
    _open(h, "alice", "buy", "100", "60000", "isolated")
    cash = _usdt(h, "alice")
    # 100,000 deposited − 6,000 posted = 94,000 free.
    assert rejection(_adjust(h, "alice", "add", "94000.00000001")).reason == "insufficient_balance"
    added = only(events_of(_adjust(h, "alice", "add", "2000"), ev.PositionMarginChanged))
    assert (added.amt, added.reason) == (D(2000), "add")
    assert _usdt(h, "alice") - cash == D(-2000)
    pos = h.position("alice", SWAP)
    assert dec(pos.margin) == D(8000)
    assert q(pos.liqPx, 2) == D("52551.79")
    for mark, most in (("62000", "2000"), ("59000", "500"), ("58000", "0")):
        h.mark(mark, inst=SWAP)
        over = _adjust(h, "alice", "reduce", f"{D(most) + D('0.00000001'):f}")
        assert rejection(over).reason == "exceeds_max_reducible", mark
    h.mark("59000", inst=SWAP)
    cash = _usdt(h, "alice")
    reduced = only(events_of(_adjust(h, "alice", "reduce", "500"), ev.PositionMarginChanged))
    assert (reduced.amt, reduced.reason) == (D(500), "reduce")
    assert _usdt(h, "alice") - cash == D(500)
    assert dec(h.position("alice", SWAP).margin) == D(7500)
    # In profit again: assigned 7,500 − base 6,000 = 1,500.
    h.mark("62000", inst=SWAP)
    assert rejection(_adjust(h, "alice", "reduce", "1500.00000001")).reason == "exceeds_max_reducible"
    _adjust(h, "alice", "reduce", "1500")
    assert dec(h.position("alice", SWAP).margin) == D(6000)
    # A cross position has no isolated margin to adjust.
    assert rejection(_adjust(h, "mm", "add", "1")).reason == "no_position"


def test_regression_swap_settled_outside_the_valuation_currency_is_refused() -> None:
    """Fuzz finding: a cross SWAP settled in USDC next to BTC-USDT (valuation USDT) traded, its
    taker fee became a USDC debt without a price, and the risk evaluation raised a bare
    ``AssertionError`` out of ``Engine.step``. A SWAP must settle in the valuation currency."""
    h = _listed()
    h.list_asset("USDC", 6)
    out = h.send(
        "list_instrument",
        instId="BTC-USDC-SWAP",
        instType="SWAP",
        settleCcy="USDC",
        ctVal="0.01",
        tickSz="0.1",
        lotSz="1",
        minSz="1",
        makerFee="0",
        takerFee="0.0005",
        maxLever="75",
        tiers=SWAP_TIERS,
    )
    refusal = rejection(out)
    assert refusal.reason == "invalid_settleCcy"
    assert "USDC" in refusal.message and "USDT" in refusal.message
    assert "BTC-USDC-SWAP" not in h.state.instruments


def test_regression_cross_debt_on_a_perpetual_only_listing() -> None:
    """Fuzz finding: with only SWAPs listed, closing a cross short whose loss (1,200) exceeds the
    cash (1,000) while a long is in profit leaves a USDT debt that no SPOT tier table covers;
    the evaluation raised ``KeyError: 'USDT'`` out of ``Engine.step``. Such a debt counts in
    equity only (decision 21a): the account stays healthy on its long's profit."""
    tiers = [{"tier": 1, "maxSz": "100000", "mmr": "0.01", "imr": "0.05", "maxLever": "20"}]
    h = Harness()
    for ccy in ("USDT", "BTC", "ETH"):
        h.list_asset(ccy, 8)
    for inst in ("BTC-USDT-SWAP", "ETH-USDT-SWAP"):
        h.ok(
            "list_instrument",
            instId=inst,
            instType="SWAP",
            settleCcy="USDT",
            ctVal="0.01",
            tickSz="0.1",
            lotSz="1",
            minSz="1",
            makerFee="0",
            takerFee="0",
            maxLever="20",
            tiers=tiers,
        )
    h.mark("60000", inst="BTC-USDT-SWAP")
    h.mark("3000", inst="ETH-USDT-SWAP")
    _fund(h, "alice", amt="1000")
    _fund(h, "mm", amt="10000000")
    for side, sz, px, inst in (("buy", "2", "60000", "BTC-USDT-SWAP"), ("sell", "20", "3000", "ETH-USDT-SWAP")):
        h.order("mm", "sell" if side == "buy" else "buy", sz, px, inst=inst, td_mode="cross")
        assert events_of(h.order("alice", side, sz, px, inst=inst, td_mode="cross"), ev.Traded)
    h.mark("150000", inst="BTC-USDT-SWAP")
    h.mark("9000", inst="ETH-USDT-SWAP")
    h.order("mm", "sell", "20", "9000", inst="ETH-USDT-SWAP", td_mode="cross")
    out = h.ok("close_position", acct="alice", instId="ETH-USDT-SWAP", mgnMode="cross")
    assert events_of(out, ev.Traded)
    assert (h.bal("alice", "USDT").cash, h.bal("alice", "USDT").liab) == (D(0), D(200))
    assert h.account("alice").mgnRatio.startswith("53.33")  # (1,800 profit − 200 debt) / the long's MM 30
