"""Isolated spot margin through commands: the worked examples of ``spec/domain.md`` §2 (E2, E3,
E13, E20, E21 spot case) and the rules of §1.1, §1.2, §1.4(a)–(d), §1.5, §1.6, §1.8, §1.10,
§1.12 and §4 (decisions 1, 2, 5, 10, 11, 12).

Every number asserted is read from the engine — the risk view (``build_view``), the events of
the outcomes or the engine state — after driving it with command JSON lines. No test calls a
formula with the example's numbers; expected values are the spec's (or derived by hand in a
comment where the spec leaves the design to the test).

Tolerances (spec §2): prices to 0.01, ratios to 1e-4, unless the example shows more digits; the
helper ``q(x, n)`` rounds half-up to the spec's printed digits. The view shows ratios at 8
decimals rounded down and liquidation prices at 8 decimals rounded up (long).

An isolated position holds its own assets apart from the account (new mode, §1.1): ``pos`` is
what was bought, ``margin`` is kept separately, and the account's balances no longer hold
either while the position is open.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal, localcontext

import pytest
from helpers import BTC_USDT_TIERS, TEST_CONTEXT, Harness, dec, events_of, only, q, rejection

from engine.core import holdings
from engine.core.step import Engine
from events import journal as ev
from events.codec import decode_command_json

D = Decimal
LOT = D("0.00000001")


# --- shared setup ------------------------------------------------------------------------------


def _list_btc_usdt(
    h: Harness,
    *,
    maker_fee: str = "0",
    taker_fee: str = "0.001",
    liq_fee: str | None = None,
    reduce_margin_ratio: str | None = None,
) -> None:
    """USDT (16 places) and BTC (8), then BTC-USDT with the §1.3 tier table (maxLever 10)."""
    h.list_asset("USDT", 16)
    h.list_asset("BTC", 8)
    h.ok(
        "list_instrument",
        instId="BTC-USDT",
        instType="SPOT",
        baseCcy="BTC",
        quoteCcy="USDT",
        tickSz="0.01",
        lotSz="0.00000001",
        minSz="0.00000001",
        makerFee=maker_fee,
        takerFee=taker_fee,
        maxLever="10",
        tiers=BTC_USDT_TIERS,
        liqFee=liq_fee,
        reduceMarginRatio=reduce_margin_ratio,
    )


def _iso(h: Harness, acct: str, side: str, sz: str, px: str | None, ccy: str, **extra: object) -> ev.Outcome:
    """An isolated order on BTC-USDT with margin currency ``ccy``."""
    return h.order(acct, side, sz, px, td_mode="isolated", ccy=ccy, **extra)


def _adjust(h: Harness, action: str, amt: str, acct: str = "alice", inst: str = "BTC-USDT") -> ev.Outcome:
    return h.send("adjust_margin", acct=acct, instId=inst, posSide="net", action=action, amt=amt)


def _refusal_reason(outcome: ev.Outcome) -> str:
    return rejection(outcome).reason


def _deposits(outcomes: list[ev.Outcome]) -> dict[str, Decimal]:
    flows: dict[str, Decimal] = defaultdict(Decimal)
    with localcontext(TEST_CONTEXT):
        for e in (e for o in outcomes for e in o.events):
            if isinstance(e, ev.Deposited):
                flows[e.ccy] += e.amt
            elif isinstance(e, ev.Withdrawn):
                flows[e.ccy] -= e.amt
    return flows


def _assert_conserved_throughout(h: Harness) -> None:
    """Re-step the harness's command lines on a fresh engine; after every command, per currency:
    deposits − withdrawals = Σ accounts (assets − liab − interest, isolated positions included)
    + fees + insurance funds + interest income − written off; every insurance fund ≥ 0.
    The fresh engine must also journal the same outcomes (determinism)."""
    engine = Engine()
    outcomes: list[ev.Outcome] = []
    for raw, recorded in zip(h.lines, h.outcomes, strict=True):
        outcome = engine.step(decode_command_json(raw))
        assert outcome == recorded
        outcomes.append(outcome)
        state = engine.state
        with localcontext(TEST_CONTEXT):
            held: dict[str, Decimal] = defaultdict(Decimal)
            for account in state.accounts.values():
                for ccy in holdings.currencies(state, account):
                    assets, liab, interest = holdings.held(state, account, ccy)
                    held[ccy] += assets - liab - interest
            for pool in (state.fees, state.insurance, state.interest_income):
                for ccy, amt in pool.items():
                    held[ccy] += amt
            for ccy, amt in state.written_off.items():
                held[ccy] -= amt
            flows = _deposits(outcomes)
            for ccy in set(held) | set(flows):
                assert held[ccy] == flows[ccy], f"seq {state.last_seq}: {ccy} {held[ccy]} != {flows[ccy]}"
        assert all(amt >= 0 for amt in state.insurance.values()), f"seq {state.last_seq}: {state.insurance}"


# --- E2: 1 BTC bought at 100,000 with 10× (isolated, new mode) ---------------------------------


def _e2(margin_ccy: str, daily_rate: str | None = None) -> tuple[Harness, ev.Outcome]:
    """alice rests an isolated limit buy of 1 BTC @100,000 at the default leverage (the
    instrument's maxLever 10) with 0.1 BTC or 10,000 USDT of margin; a market maker's cash sell
    fills it (alice is maker: fee 0). Returns the harness and the fill's outcome."""
    h = Harness()
    h.standard_listing(usdt_daily_rate=daily_rate)
    h.mark("100000")
    deposit = "0.1" if margin_ccy == "BTC" else "10000"
    h.ok("deposit", acct="alice", ccy=margin_ccy, amt=deposit)
    h.ok("deposit", acct="mm", ccy="BTC", amt="5")
    placed = _iso(h, "alice", "buy", "1", "100000", margin_ccy, cl_ord_id="long")
    accepted = only(events_of(placed, ev.OrderAccepted))
    assert (accepted.tdMode, accepted.mgnCcy, accepted.lever) == ("isolated", margin_ccy, D(10))
    assert accepted.frozen == D(deposit)  # sz / L in BTC, or sz·px / L in USDT
    fill = h.order("mm", "sell", "1", "100000")
    trade = only(events_of(fill, ev.Traded))
    assert (trade.makerAcct, trade.makerFee, trade.sz, trade.px) == ("alice", 0, D(1), D(100000))
    opened = only(events_of(fill, ev.PositionOpened))
    assert (opened.acct, opened.instId, opened.mgnMode, opened.mgnCcy, opened.long) == (
        "alice",
        "BTC-USDT",
        "isolated",
        margin_ccy,
        True,
    )
    posted = only(events_of(fill, ev.PositionMarginChanged))
    assert (posted.reason, posted.ccy, posted.amt) == ("open", margin_ccy, D(deposit))
    borrowed = only(events_of(fill, ev.PositionBorrowed))
    assert (borrowed.acct, borrowed.instId, borrowed.ccy, borrowed.amt) == ("alice", "BTC-USDT", "USDT", D(100000))
    # The isolated position borrows on its own: nothing is borrowed by the account.
    assert not events_of(fill, ev.Borrowed)
    return h, fill


def test_e2_base_margin_position_at_100000() -> None:
    h, _ = _e2("BTC")
    pos = h.position("alice")
    assert (pos.mgnMode, pos.posSide, pos.posCcy, pos.liabCcy, pos.mgnCcy) == ("isolated", "net", "BTC", "USDT", "BTC")
    # New mode: assets 1 BTC + margin 0.1 BTC (old-mode 1.1), liability 100,000 USDT.
    assert (dec(pos.pos), dec(pos.margin), dec(pos.liab)) == (D(1), D("0.1"), D(100000))
    assert (dec(pos.availPos), dec(pos.avgPx), dec(pos.lever)) == (D(1), D(100000), D(10))
    assert q(pos.mgnRatio, 4) == D("3.2227")
    assert q(pos.liqPx, 2) == D("93730.00")
    # Holdings are separate from the account: the margin left it, no debt sits on it.
    btc = h.balance_view("alice", "BTC")
    assert (dec(btc.cashBal), dec(btc.availBal), btc.liab) == (D(0), D(0), "")
    assert "USDT" not in h.state.accounts["alice"].balances or h.bal("alice", "USDT").liab == 0
    # 322 % opens just above the 300 % warning line: no margin call yet.
    assert not events_of(h.outcomes, ev.MarginCallRaised)


def test_e2_base_margin_at_95000_margin_call_no_liquidation() -> None:
    h, _ = _e2("BTC")
    out = h.mark("95000")
    pos = h.position("alice")
    assert q(pos.mgnRatio, 4) == D("1.4502")
    assert q(pos.upl, 8) == D("-0.05263158")  # BTC: pos − D/P = 1 − 100,000/95,000
    assert q(pos.uplRatio, 4) == D("-0.5263")  # upl / initial margin 0.1
    # MR fell through 300 %: a position-scoped margin call, no liquidation (MR > 1).
    call = only(events_of(out, ev.MarginCallRaised))
    assert (call.acct, call.instId, call.posSide) == ("alice", "BTC-USDT", "net")
    assert q(call.mgnRatio, 4) == D("1.4502")
    assert not events_of(out, ev.LiquidationStarted)
    assert not [t for t in events_of(out, ev.Traded) if t.liquidation]
    # The liquidation price does not move with the mark.
    assert q(pos.liqPx, 2) == D("93730.00")
    # A second mark on the same side of 300 % does not call again.
    assert not events_of(h.mark("94500"), ev.MarginCallRaised)


def test_e2_quote_margin_liq_price_and_ratios() -> None:
    h, _ = _e2("USDT")
    pos = h.position("alice")
    assert (pos.mgnCcy, dec(pos.pos), dec(pos.margin), dec(pos.liab)) == ("USDT", D(1), D(10000), D(100000))
    assert q(pos.mgnRatio, 4) == D("3.2227")  # either margin currency at 100,000
    assert q(pos.liqPx, 2) == D("93103.00")
    # Margin currency matters: USDT margin liquidates later than BTC margin (93,103 < 93,730).
    assert dec(pos.liqPx) < D("93730")
    assert dec(h.balance_view("alice", "USDT").cashBal) == 0
    out = h.mark("95000")
    assert q(h.position("alice").mgnRatio, 4) == D("1.6113")
    assert q(only(events_of(out, ev.MarginCallRaised)).mgnRatio, 4) == D("1.6113")
    assert not events_of(out, ev.LiquidationStarted)


def test_e2_interest_is_charged_to_the_position() -> None:
    """24 hourly accruals at dailyRate 0.00012 (0.0005 %/h) on 100,000 USDT = 12 USDT;
    D = 100,012 ⇒ liqPx 100,012·k / 1.1 = 93,741.2476 (base margin). Decision 10: the interest
    is the position's, in its liability currency; the account's balances get none."""
    h, _ = _e2("BTC", daily_rate="0.00012")
    charged = [only(events_of(h.accrue(), ev.InterestAccrued)) for _ in range(24)]
    assert all(
        (e.acct, e.instId, e.ccy, e.liab, e.amt) == ("alice", "BTC-USDT", "USDT", D(100000), D("0.5")) for e in charged
    )
    pos = h.position("alice")
    assert (dec(pos.liab), dec(pos.interest)) == (D(100000), D(12))
    assert q(pos.liqPx, 4) == D("93741.2476")
    assert dec(pos.liqPx) > D("93730")  # interest moves the liquidation price toward the mark
    assert all(b.liab == "" and b.interest == "" for b in h.account("alice").balances)
    assert all(b.liab == 0 and b.interest == 0 for b in h.state.accounts["alice"].balances.values())
    assert h.state.interest_income["USDT"] == D(12)


# --- §1.1: margin frozen while the order rests; borrowing at fill ------------------------------


def test_margin_is_frozen_while_resting_and_released_on_cancel() -> None:
    h = Harness()
    h.standard_listing(usdt_daily_rate="0.00012")
    h.mark("100000")
    h.ok("deposit", acct="alice", ccy="BTC", amt="0.15")
    h.ok("deposit", acct="mm", ccy="BTC", amt="5")
    placed = _iso(h, "alice", "buy", "1", "100000", "BTC", cl_ord_id="long")
    assert only(events_of(placed, ev.OrderAccepted)).frozen == D("0.1")
    btc = h.balance_view("alice", "BTC")
    assert (dec(btc.cashBal), dec(btc.availBal)) == (D("0.15"), D("0.05"))
    assert h.positions("alice") == []
    # A full hour passes while the order rests: nothing is borrowed, so nothing accrues.
    hour = h.accrue()
    assert not events_of(hour, ev.InterestAccrued)
    assert not events_of(h.outcomes, ev.PositionBorrowed)
    assert not events_of(h.outcomes, ev.Borrowed)
    # Cancel: the frozen margin returns.
    canceled = h.ok("cancel_order", acct="alice", instId="BTC-USDT", clOrdId="long")
    assert only(events_of(canceled, ev.OrderCanceled)).remaining == D(1)
    btc = h.balance_view("alice", "BTC")
    assert (dec(btc.cashBal), dec(btc.availBal)) == (D("0.15"), D("0.15"))
    assert h.positions("alice") == []
    assert not h.state.accounts["alice"].isolated


def test_partial_fill_posts_and_borrows_only_the_filled_part() -> None:
    h = Harness()
    h.standard_listing(usdt_daily_rate="0.00012")
    h.mark("100000")
    h.ok("deposit", acct="alice", ccy="BTC", amt="0.1")
    h.ok("deposit", acct="mm", ccy="BTC", amt="5")
    _iso(h, "alice", "buy", "1", "100000", "BTC", cl_ord_id="long")
    fill = h.order("mm", "sell", "0.4", "100000")
    assert only(events_of(fill, ev.PositionMarginChanged)).amt == D("0.04")
    assert only(events_of(fill, ev.PositionBorrowed)).amt == D(40000)
    pos = h.position("alice")
    assert (dec(pos.pos), dec(pos.margin), dec(pos.liab)) == (D("0.4"), D("0.04"), D(40000))
    assert dec(h.balance_view("alice", "BTC").availBal) == 0  # 0.06 still frozen by the rest
    # Only the borrowed 40,000 accrues: 40,000 × 0.00012 / 24 = 0.2.
    accrued = only(events_of(h.accrue(), ev.InterestAccrued))
    assert (accrued.instId, accrued.liab, accrued.amt) == ("BTC-USDT", D(40000), D("0.2"))
    h.ok("cancel_order", acct="alice", instId="BTC-USDT", clOrdId="long")
    btc = h.balance_view("alice", "BTC")
    assert (dec(btc.cashBal), dec(btc.availBal)) == (D("0.06"), D("0.06"))
    assert dec(h.position("alice").margin) == D("0.04")


# --- E3: OKX 5× ETH long, closed at 2,000 -----------------------------------------------------------


def _e3_open(taker_fee: str) -> Harness:
    """ETH at 1,000; alice posts 1 ETH of margin at 5× and buys 5 ETH (maker, fee 0)."""
    h = Harness()
    h.list_asset("USDT", 16)
    h.list_asset("ETH", 8)
    h.list_spot("ETH-USDT", tick="0.01", lot="0.00000001", maker_fee="0", taker_fee=taker_fee)
    h.mark("1000", inst="ETH-USDT")
    h.ok("deposit", acct="alice", ccy="ETH", amt="1")
    h.ok("deposit", acct="mm", ccy="ETH", amt="100")
    h.ok("deposit", acct="mm", ccy="USDT", amt="100000")
    h.ok("set_leverage", acct="alice", instId="ETH-USDT", mgnMode="isolated", lever="5")
    placed = h.order("alice", "buy", "5", "1000", inst="ETH-USDT", td_mode="isolated", ccy="ETH", cl_ord_id="open")
    assert only(events_of(placed, ev.OrderAccepted)).frozen == D(1)  # 5 / 5
    fill = h.order("mm", "sell", "5", "1000", inst="ETH-USDT")
    assert only(events_of(fill, ev.PositionBorrowed)).amt == D(5000)
    pos = h.position("alice", "ETH-USDT")
    # Assets 6 ETH (5 bought + 1 margin), liability 5,000 USDT.
    assert (dec(pos.pos), dec(pos.margin), dec(pos.liab), pos.liabCcy) == (D(5), D(1), D(5000), "USDT")
    assert dec(pos.pos) + dec(pos.margin) == D(6)
    assert dec(pos.lever) == D(5)
    return h


def _e3_close(h: Harness) -> tuple[ev.Outcome, Decimal]:
    h.mark("2000", inst="ETH-USDT")
    h.order("mm", "buy", "10", "2000", inst="ETH-USDT", cl_ord_id="bid")
    out = h.ok("close_position", acct="alice", instId="ETH-USDT", mgnMode="isolated")
    sold = sum((t.sz for t in events_of(out, ev.Traded) if t.takerAcct == "alice"), D(0))
    assert all(t.px == D(2000) for t in events_of(out, ev.Traded))
    repaid = events_of(out, ev.PositionRepaid)
    assert sum(r.principal for r in repaid) == D(5000)
    released = only(events_of(out, ev.PositionReleased))
    assert released.instId == "ETH-USDT"
    assert h.positions("alice") == []
    assert not h.state.accounts["alice"].isolated
    return out, sold


def test_e3_close_without_fee_keeps_3_5_eth_250_percent() -> None:
    h = _e3_open(taker_fee="0")
    h.mark("2000", inst="ETH-USDT")
    pos = h.position("alice", "ETH-USDT")
    # upl (ETH, new mode) = pos − D/P = 5 − 2.5 = 2.5 ETH; ratio to the 1 ETH margin = 250 %.
    assert (dec(pos.upl), q(pos.uplRatio, 4)) == (D("2.5"), D("2.5"))
    _, sold = _e3_close(h)
    assert sold == D("2.5")
    kept = h.bal("alice", "ETH").cash
    assert kept == D("3.5")
    pnl = kept - D(1)  # minus the 1 ETH of margin deposited
    assert pnl == D("2.5")
    assert pnl / D(1) == D("2.5")  # 250 % of the margin
    usdt = h.state.accounts["alice"].balances.get("USDT")
    assert usdt is None or usdt.cash == 0  # the 5,000 of proceeds all went to the debt


def test_e3_close_with_taker_fee_sells_2_5025025_eth() -> None:
    """Sell 5,000 / (2,000 · 0.999) = 2.50250250… ETH (within one lot) and keep ≈ 3.49749750."""
    h = _e3_open(taker_fee="0.001")
    out, sold = _e3_close(h)
    assert abs(sold - D("2.50250250")) <= LOT
    kept = h.bal("alice", "ETH").cash
    assert abs(kept - D("3.49749750")) <= LOT
    assert sold + kept == D(6)
    # The proceeds net of the fee cover the debt (nothing is left owed).
    sale = only([t for t in events_of(out, ev.Traded) if t.takerAcct == "alice"])
    assert sale.sz * sale.px - sale.takerFee >= D(5000)
    assert h.bal("alice", "USDT").cash < D("0.0001")  # at most one lot's worth of change


# --- E13: the tier cap depends on the leverage (isolated, quote margin) --------------------------


@pytest.mark.parametrize(
    ("lever", "allowed", "too_much", "refusal"),
    [
        # 150,000 × 10 = 1,500,000 wanted, but at 10× only tier 1 applies: cap 1,000,000.
        ("10", "10", "10.00000001", "borrow_limit"),
        # 8× reaches tier 2 (cap 2,000,000): 150,000 × 8 = 1,200,000 is the margin's limit.
        ("8", "12", "12.00000001", "insufficient_balance"),
        # 5×: 150,000 × 5 = 750,000.
        ("5", "7.5", "7.50000001", "insufficient_balance"),
    ],
)
def test_e13_isolated_borrow_cap_by_leverage(lever: str, allowed: str, too_much: str, refusal: str) -> None:
    h = Harness()
    h.standard_listing()
    h.mark("100000")
    h.ok("deposit", acct="alice", ccy="USDT", amt="150000")
    h.ok("deposit", acct="mm", ccy="BTC", amt="20")
    if lever != "10":
        h.ok("set_leverage", acct="alice", instId="BTC-USDT", mgnMode="isolated", lever=lever)
    else:
        # The default isolated leverage is the instrument's maxLever 10: 15 BTC (margin
        # 150,000 exactly) would borrow 1,500,000 — above the tier-1 cap.
        assert _refusal_reason(_iso(h, "alice", "buy", "15", "100000", "USDT")) == "borrow_limit"
    assert _refusal_reason(_iso(h, "alice", "buy", too_much, "100000", "USDT")) == refusal
    placed = _iso(h, "alice", "buy", allowed, "100000", "USDT", cl_ord_id="open")
    assert only(events_of(placed, ev.OrderAccepted)).lever == D(lever)
    # A resting opening order counts: one more lot is refused (by the cap, or the margin).
    assert _refusal_reason(_iso(h, "alice", "buy", "0.00000001", "100000", "USDT")) in (
        "borrow_limit",
        "insufficient_balance",
    )
    fill = h.order("mm", "sell", allowed, "100000")
    borrowed = only(events_of(fill, ev.PositionBorrowed)).amt
    assert borrowed == D(allowed) * 100000
    assert dec(h.position("alice").liab) == {"10": D(1_000_000), "8": D(1_200_000), "5": D(750_000)}[lever]


def _e13_at_8x_resting() -> Harness:
    """150,000 USDT of margin at 8×; a resting isolated buy of 12 BTC @100,000 (would borrow
    1,200,000: within the 8× cap 2,000,000, above the 10× cap 1,000,000)."""
    h = Harness()
    h.standard_listing()
    h.mark("100000")
    h.ok("deposit", acct="alice", ccy="USDT", amt="150000")
    h.ok("deposit", acct="mm", ccy="BTC", amt="20")
    h.ok("set_leverage", acct="alice", instId="BTC-USDT", mgnMode="isolated", lever="8")
    _iso(h, "alice", "buy", "12", "100000", "USDT", cl_ord_id="open")
    return h


def test_e13_leverage_cannot_rise_above_the_tier_of_the_open_debt() -> None:
    """1,200,000 owed at 8× sits in tier 2 (maxLever 8): 10× is refused."""
    h = _e13_at_8x_resting()
    h.order("mm", "sell", "12", "100000")
    refused = rejection(h.send("set_leverage", acct="alice", instId="BTC-USDT", mgnMode="isolated", lever="10"))
    assert refused.reason == "lever_above_tier"
    assert dec(h.position("alice").lever) == D(8)


def test_e13_leverage_change_counts_resting_opening_orders() -> None:
    """No position yet, but the resting order would borrow 1,200,000 — above the 10× cap
    1,000,000 (isolated.py: the debt after every resting opening order fills must stay within
    the tier cap for the leverage). Raising the leverage to 10× must be refused."""
    h = _e13_at_8x_resting()
    refused = rejection(h.send("set_leverage", acct="alice", instId="BTC-USDT", mgnMode="isolated", lever="10"))
    assert refused.reason == "borrow_limit"


# --- E20: reducing isolated margin, seed rule -------------------------------------------------------


def _e20(mark: str) -> Harness:
    """Long 1 BTC @60,000 at 10× with USDT margin: base margin 6,000, 2,000 added ⇒ assigned
    8,000; reduceMarginRatio 0.5; fees 0 so upl = mark − 60,000 exactly."""
    h = Harness()
    _list_btc_usdt(h, maker_fee="0", taker_fee="0", reduce_margin_ratio="0.5")
    h.mark("60000")
    h.ok("deposit", acct="alice", ccy="USDT", amt="8000")
    h.ok("deposit", acct="mm", ccy="BTC", amt="5")
    placed = _iso(h, "alice", "buy", "1", "60000", "USDT", cl_ord_id="long")
    assert only(events_of(placed, ev.OrderAccepted)).frozen == D(6000)
    h.order("mm", "sell", "1", "60000")
    assert (dec(h.position("alice").margin), dec(h.position("alice").imr)) == (D(6000), D(6000))
    assert dec(h.balance_view("alice", "USDT").availBal) == D(2000)
    added = only(events_of(h.ok("adjust_margin", **_adjust_fields("add", "2000")), ev.PositionMarginChanged))
    assert (added.reason, added.ccy, added.amt) == ("add", "USDT", D(2000))
    pos = h.position("alice")
    assert (dec(pos.margin), dec(pos.imr)) == (D(8000), D(6000))
    assert dec(h.balance_view("alice", "USDT").cashBal) == 0
    h.mark(mark)
    assert dec(h.position("alice").upl) == D(mark) - D(60000)
    return h


def _adjust_fields(action: str, amt: str) -> dict[str, str]:
    return {"acct": "alice", "instId": "BTC-USDT", "posSide": "net", "action": action, "amt": amt}


@pytest.mark.parametrize(
    ("mark", "most"),
    [
        ("62000", "2000"),  # in profit: 8,000 − 6,000
        ("59000", "500"),  # in loss 1,000: 8,000 − (6,000 + 1,000 × 1.5)
        ("58000", "0"),  # in loss 2,000: 8,000 − 9,000 < 0 ⇒ 0
    ],
)
def test_e20_seed_rule_max_reducible(mark: str, most: str) -> None:
    h = _e20(mark)
    over = D(most) + D("0.01")
    assert _refusal_reason(_adjust(h, "reduce", str(over))) == "exceeds_max_reducible"
    assert dec(h.position("alice").margin) == D(8000)
    if D(most) > 0:
        out = h.ok("adjust_margin", **_adjust_fields("reduce", most))
        changed = only(events_of(out, ev.PositionMarginChanged))
        assert (changed.reason, changed.amt) == ("reduce", D(most))
        assert dec(h.position("alice").margin) == D(8000) - D(most)
        assert dec(h.balance_view("alice", "USDT").cashBal) == D(most)
        # Nothing more can go.
        assert _refusal_reason(_adjust(h, "reduce", "0.01")) == "exceeds_max_reducible"


# --- E21: partial liquidation of a spot position by tier reduction -------------------------------


def _e21(mark: str) -> tuple[Harness, ev.Outcome]:
    """alice: isolated long of 50 BTC @50,000 at 5× with quote margin 500,000 USDT, so the
    position owes 2,500,000 USDT (tier 3: limit 3,000,000, MMR 10 %, maxLever 5). mm keeps a
    bid of 40 BTC @50,000. The mark then falls to ``mark``; the book still bids 50,000."""
    h = Harness()
    h.standard_listing()  # maker 0, taker 0.1 %, no liquidation fee
    h.mark("50000")
    h.ok("deposit", acct="alice", ccy="USDT", amt="500000")
    h.ok("deposit", acct="mm", ccy="BTC", amt="60")
    h.ok("deposit", acct="mm", ccy="USDT", amt="2000000")
    # At the default 10× the cap is tier 1's 1,000,000.
    assert _refusal_reason(_iso(h, "alice", "buy", "50", "50000", "USDT")) == "borrow_limit"
    h.ok("set_leverage", acct="alice", instId="BTC-USDT", mgnMode="isolated", lever="5")
    placed = _iso(h, "alice", "buy", "50", "50000", "USDT", cl_ord_id="long")
    assert only(events_of(placed, ev.OrderAccepted)).frozen == D(500000)
    h.order("mm", "sell", "50", "50000")
    h.order("mm", "buy", "40", "50000", cl_ord_id="bid")
    pos = h.position("alice")
    assert (dec(pos.pos), dec(pos.margin), dec(pos.liab)) == (D(50), D(500000), D(2500000))
    return h, h.mark(mark)


def _liquidation_sales(out: ev.Outcome) -> list[ev.Traded]:
    sales = [t for t in events_of(out, ev.Traded) if t.liquidation]
    assert all((t.takerAcct, t.takerSide, t.px) == ("alice", "sell", D(50000)) for t in sales)
    return sales


def test_e21_partial_liquidation_two_tier_steps() -> None:
    """Mark 40,000. Tier 3 (k − 1 = 1.1·1.001 − 1 = 0.1011):
    MR = (50·40,000 + 500,000 − 2,500,000) / (2,500,000·0.1011) = 0 ⇒ liquidate.

    Step 1 (tier 3 → tier-2 limit 2,000,000): repay 500,000 net of the 0.1 % fee at the bid
    50,000 ⇒ sell ⌈500,000 / 49,950⌉ = ⌈10.0100100100…⌉ = 10.01001002 BTC; proceeds
    500,500.501 − fee 500.500501 = 500,000.000499, all repaid ⇒ debt 1,999,999.999501 (tier 2,
    k − 1 = 1.0625·1.001 − 1 = 0.0635625). MR = (39.98998998·40,000 + 500,000 −
    1,999,999.999501) / (1,999,999.999501·0.0635625) = 99,599.599699 / 127,124.99996… = 0.7835
    ≤ 1 ⇒ another step.

    Step 2 (tier 2 → tier-1 limit 1,000,000): need 999,999.999501 ⇒ sell
    ⌈999,999.999501 / 49,950⌉ = ⌈20.02002001003…⌉ = 20.02002002 BTC; proceeds 1,001,001.001 −
    fee 1,001.001001 = 999,999.999999, all repaid ⇒ debt 999,999.999502 (tier 1,
    k − 1 = 1.03·1.001 − 1 = 0.03103). MR = (19.96996996·40,000 + 500,000 − 999,999.999502) /
    (999,999.999502·0.03103) = 298,798.798898 / 31,029.99998… = 9.6294 > 1 ⇒ the liquidation
    stops.

    Totals: 30.03003004 BTC sold and 1,500,000.000498 USDT repaid (spec: 1,500,000 /
    (50,000·0.999) = 30.03003003 BTC and 1,500,000 USDT — each step rounds its size up by less
    than one lot)."""
    h, out = _e21("40000")
    started = only(events_of(out, ev.LiquidationStarted))
    assert (started.acct, started.instId, started.posSide, started.mgnRatio) == ("alice", "BTC-USDT", "net", 0)
    sales = _liquidation_sales(out)
    assert [t.sz for t in sales] == [D("10.01001002"), D("20.02002002")]
    assert abs(sum(t.sz for t in sales) - D("30.03003003")) <= LOT
    repaid = events_of(out, ev.PositionRepaid)
    assert [r.principal for r in repaid] == [D("500000.000499"), D("999999.999999")]
    total = sum(r.principal for r in repaid)
    assert q(total, 2) == D(1_500_000)
    assert D(1_500_000) <= total < D(1_500_000) + LOT * D(50000)
    only(events_of(out, ev.LiquidationFinished))
    assert not events_of(out, ev.InsuranceFundCovered)
    assert not events_of(out, ev.DebtWrittenOff)
    assert not events_of(out, ev.PositionReleased)  # partial: the position stays open
    pos = h.position("alice")
    assert (dec(pos.liab), dec(pos.pos), dec(pos.margin)) == (D("999999.999502"), D("19.96996996"), D(500000))
    assert dec(pos.liab) <= D(1_000_000)  # tier 1 now
    assert q(pos.mgnRatio, 4) == D("9.6294")
    _assert_conserved_throughout(h)


def test_e21_partial_liquidation_stops_after_one_step_when_mr_recovers() -> None:
    """Mark 45,000: MR = (50·45,000 − 2,000,000) / 252,750 = 0.98911968 ⇒ liquidate. Step 1 as
    above (sell 10.01001002, repay 500,000.000499 ⇒ debt 1,999,999.999501, tier 2); then
    MR = (39.98998998·45,000 + 500,000 − 1,999,999.999501) / 127,124.9999… = 299,549.549599 /
    127,124.99996828 = 2.3563 > 1 ⇒ no second step."""
    h, out = _e21("45000")
    assert only(events_of(out, ev.LiquidationStarted)).mgnRatio == D("0.98911968")
    sales = _liquidation_sales(out)
    assert [t.sz for t in sales] == [D("10.01001002")]
    assert [r.principal for r in events_of(out, ev.PositionRepaid)] == [D("500000.000499")]
    only(events_of(out, ev.LiquidationFinished))
    pos = h.position("alice")
    assert (dec(pos.liab), dec(pos.pos)) == (D("1999999.999501"), D("39.98998998"))
    assert q(pos.mgnRatio, 4) == D("2.3563")


# --- refusals (§1.1, §1.9, decision 12) ---------------------------------------------------------------


def _long_btc_margin() -> Harness:
    """alice: isolated long 1 BTC @100,000 on 0.1 BTC margin (plus 1 BTC and 20,000 USDT spare)."""
    h = Harness()
    h.standard_listing()
    h.mark("100000")
    h.ok("deposit", acct="alice", ccy="BTC", amt="1.1")
    h.ok("deposit", acct="alice", ccy="USDT", amt="20000")
    h.ok("deposit", acct="mm", ccy="BTC", amt="5")
    h.ok("deposit", acct="mm", ccy="USDT", amt="500000")
    _iso(h, "alice", "buy", "1", "100000", "BTC", cl_ord_id="long")
    h.order("mm", "sell", "1", "100000")
    assert dec(h.position("alice").pos) == D(1)
    return h


def test_margin_currency_is_fixed_once_the_position_is_open() -> None:
    h = _long_btc_margin()
    assert _refusal_reason(_iso(h, "alice", "buy", "0.1", "100000", "USDT")) == "margin_ccy_fixed"
    assert _refusal_reason(_adjust_ccy(h, "USDT")) == "margin_ccy_fixed"
    # The same currency is accepted (adds to the position when filled).
    h.ok("place_order", **_order_fields("buy", "0.1", "99000", "BTC", "more"))


def test_margin_currency_is_fixed_by_resting_opening_orders() -> None:
    h = Harness()
    h.standard_listing()
    h.mark("100000")  # opening isolated orders need a mark (docs/decisions.md 31d)
    h.ok("deposit", acct="alice", ccy="BTC", amt="1")
    h.ok("deposit", acct="alice", ccy="USDT", amt="100000")
    _iso(h, "alice", "buy", "1", "90000", "BTC", cl_ord_id="first")
    assert _refusal_reason(_iso(h, "alice", "buy", "1", "90000", "USDT")) == "margin_ccy_fixed"


def test_opposite_opening_orders_cannot_both_be_pending() -> None:
    h = Harness()
    h.standard_listing()
    h.mark("100000")  # opening isolated orders need a mark (docs/decisions.md 31d)
    h.ok("deposit", acct="alice", ccy="USDT", amt="100000")
    _iso(h, "alice", "buy", "1", "90000", "USDT", cl_ord_id="long")
    assert _refusal_reason(_iso(h, "alice", "sell", "1", "110000", "USDT")) == "opposite_orders_pending"


def test_closing_order_is_limited_to_avail_pos() -> None:
    """A reduce-only closing order is limited to availPos (a larger non-reduce-only one is a
    reverse order: ``tests/test_isolated_closing.py``)."""
    h = _long_btc_margin()
    too_big = _iso(h, "alice", "sell", "1.00000001", "120000", "BTC", reduceOnly=True)
    assert _refusal_reason(too_big) == "exceeds_available_to_close"
    h.ok("place_order", **_order_fields("sell", "0.6", "120000", "BTC", "tp"))
    pos = h.position("alice")
    assert (dec(pos.pos), dec(pos.availPos)) == (D(1), D("0.4"))
    assert (
        _refusal_reason(_iso(h, "alice", "sell", "0.5", "121000", "BTC", reduceOnly=True))
        == "exceeds_available_to_close"
    )
    h.ok("place_order", **_order_fields("sell", "0.4", "121000", "BTC", "tp2"))
    assert dec(h.position("alice").availPos) == 0
    # The account's own 1 BTC is not the position's: it does not make a closing order possible.
    assert dec(h.balance_view("alice", "BTC").availBal) == D(1)


def test_reduce_only_without_a_position_is_refused() -> None:
    h = Harness()
    h.standard_listing()
    h.ok("deposit", acct="alice", ccy="BTC", amt="1")
    out = h.order("alice", "sell", "0.5", "100000", td_mode="isolated", ccy="BTC", reduceOnly=True)
    assert _refusal_reason(out) == "reduce_only_would_increase"


def test_adjust_margin_without_a_position_is_refused() -> None:
    h = Harness()
    h.standard_listing()
    h.ok("deposit", acct="alice", ccy="USDT", amt="1000")
    refused = rejection(_adjust(h, "add", "100"))
    assert (refused.command, refused.reason) == ("adjust_margin", "no_position")
    assert rejection(_adjust(h, "reduce", "100")).reason == "no_position"


def test_adding_more_margin_than_available_is_refused() -> None:
    h = _long_btc_margin()  # 1 BTC of the account is free
    assert _refusal_reason(_adjust(h, "add", "1.00000001")) == "insufficient_balance"
    h.ok("adjust_margin", **_adjust_fields("add", "1"))
    assert dec(h.position("alice").margin) == D("1.1")


def _adjust_ccy(h: Harness, ccy: str) -> ev.Outcome:
    return h.send("adjust_margin", acct="alice", instId="BTC-USDT", posSide="net", action="add", amt="1", ccy=ccy)


def _order_fields(side: str, sz: str, px: str, ccy: str, cl_ord_id: str) -> dict[str, str]:
    return {
        "acct": "alice",
        "instId": "BTC-USDT",
        "clOrdId": cl_ord_id,
        "side": side,
        "ordType": "limit",
        "sz": sz,
        "px": px,
        "tdMode": "isolated",
        "ccy": ccy,
    }


# --- closing orders repay; released when nothing is owed ---------------------------------------------


def test_closing_fills_repay_then_release_the_position() -> None:
    """Long 1 BTC @100,000 (0.1 BTC margin); sells of 0.5 then 0.5 at 110,000 (taken by mm,
    alice maker: fee 0). First fill: proceeds 55,000 repay 55,000 (debt 45,000 left). Second
    fill: 55,000 repays the 45,000; nothing owed ⇒ released: 10,000 USDT + 0.1 BTC margin."""
    h = _long_btc_margin()
    h.mark("110000")
    h.ok("place_order", **_order_fields("sell", "0.5", "110000", "BTC", "tp1"))
    first = h.order("mm", "buy", "0.5", "110000")
    repaid = only(events_of(first, ev.PositionRepaid))
    assert (repaid.ccy, repaid.interest, repaid.principal) == ("USDT", 0, D(55000))
    assert dec(h.position("alice").liab) == D(45000)
    assert not events_of(first, ev.PositionReleased)
    h.ok("place_order", **_order_fields("sell", "0.5", "110000", "BTC", "tp2"))
    second = h.order("mm", "buy", "0.5", "110000")
    assert only(events_of(second, ev.PositionRepaid)).principal == D(45000)
    released = only(events_of(second, ev.PositionReleased))
    assert (released.base, released.quote) == (D("0.1"), D(10000))
    assert h.positions("alice") == []
    assert h.bal("alice", "USDT").cash == D(30000)  # 20,000 spare + 10,000 profit
    assert h.bal("alice", "BTC").cash == D("1.1")  # 1 spare + 0.1 margin back
    _assert_conserved_throughout(h)


def test_short_with_quote_margin_ratio_liq_price_and_close() -> None:
    """§1.4(c), §1.5 (short, quote margin). alice sells 1 BTC @100,000 isolated with USDT margin
    (maker, fee 0): margin 1·100,000/10 = 10,000 USDT, the position borrows 1 BTC and holds the
    100,000 USDT proceeds. MR = (100,000 + 10,000 − 1·100,000) / (100,000·0.03103) = 3.2227;
    liqPx = (100,000 + 10,000) / (1·1.03103) = 106,689.4271.
    close_position at an ask of 95,000 buys back the 1 BTC grossed up by the 0.1 % fee:
    ⌈1/0.999⌉ = 1.00100101 BTC (fee 0.00100101 BTC, net 1 BTC) for 95,095.09595 USDT; the debt
    is repaid and 100,000 + 10,000 − 95,095.09595 = 14,904.90405 USDT returns to the account."""
    h = Harness()
    h.standard_listing()
    h.mark("100000")
    h.ok("deposit", acct="alice", ccy="USDT", amt="10000")
    h.ok("deposit", acct="mm", ccy="USDT", amt="1000000")
    h.ok("deposit", acct="mm", ccy="BTC", amt="10")
    placed = _iso(h, "alice", "sell", "1", "100000", "USDT", cl_ord_id="short")
    assert only(events_of(placed, ev.OrderAccepted)).frozen == D(10000)
    fill = h.order("mm", "buy", "1", "100000")
    assert only(events_of(fill, ev.PositionOpened)).long is False
    borrowed = only(events_of(fill, ev.PositionBorrowed))
    assert (borrowed.ccy, borrowed.amt) == ("BTC", D(1))
    pos = h.position("alice")
    assert (pos.posCcy, pos.liabCcy, pos.mgnCcy) == ("USDT", "BTC", "USDT")
    assert (dec(pos.pos), dec(pos.liab), dec(pos.margin)) == (D(100000), D(1), D(10000))
    assert q(pos.mgnRatio, 4) == D("3.2227")
    assert q(pos.liqPx, 4) == D("106689.4271")
    h.mark("95000")
    assert dec(h.position("alice").upl) == D(5000)  # 100,000 − 1·95,000 (quote units)
    h.order("mm", "sell", "2", "95000", cl_ord_id="ask")
    out = h.ok("close_position", acct="alice", instId="BTC-USDT", mgnMode="isolated")
    buy = only([t for t in events_of(out, ev.Traded) if t.takerAcct == "alice"])
    assert (buy.takerSide, buy.sz, buy.px, buy.takerFee) == ("buy", D("1.00100101"), D(95000), D("0.00100101"))
    repaid = only(events_of(out, ev.PositionRepaid))
    assert (repaid.ccy, repaid.principal) == ("BTC", D(1))
    released = only(events_of(out, ev.PositionReleased))
    assert (released.base, released.quote) == (D(0), D("14904.90405"))
    assert h.positions("alice") == []
    assert h.bal("alice", "USDT").cash == D("14904.90405")
    _assert_conserved_throughout(h)


# --- full liquidation: insurance fund, then written off ------------------------------------------------


def _long_quote_margin(h: Harness, acct: str) -> None:
    """``acct`` opens an isolated long 1 BTC @100,000 on 10,000 USDT of margin: the position
    borrows the whole cost (100,000 USDT, not 90,000) and holds the margin apart."""
    h.mark("100000")
    h.ok("deposit", acct=acct, ccy="USDT", amt="10000")
    _iso(h, acct, "buy", "1", "100000", "USDT", cl_ord_id=f"{acct}-long")
    h.order("mm", "sell", "1", "100000")
    assert dec(h.position(acct).liab) == D(100000)


def test_full_liquidation_of_a_solvent_base_margin_long() -> None:
    """E2 base margin (1 BTC + 0.1 BTC margin, 100,000 USDT owed), a bid of 2 @93,500.
    Mark 93,000 (< liqPx 93,730): MR = (1.1·93,000 − 100,000) / 3,103 = 0.74121817 ⇒ liquidate;
    tier 1 ⇒ full. The position sells just enough of its 1.1 BTC to repay 100,000 net of the
    0.1 % fee: ⌈100,000 / (93,500·0.999)⌉ = 1.07058931 BTC; proceeds 100,100.100485 − fee
    100.100100485 = 100,000.000384515 ⇒ 100,000 repaid, and the position releases
    1.1 − 1.07058931 = 0.02941069 BTC and 0.000384515 USDT to the account, once."""
    h, _ = _e2("BTC")
    h.ok("deposit", acct="mm", ccy="USDT", amt="200000")
    h.order("mm", "buy", "2", "93500", cl_ord_id="bid")
    out = h.mark("93000")
    started = only(events_of(out, ev.LiquidationStarted))
    assert (started.instId, started.mgnRatio) == ("BTC-USDT", D("0.74121817"))
    assert [(t.sz, t.px) for t in _sales_of(out, "alice")] == [(D("1.07058931"), D(93500))]
    assert sum(r.principal + r.interest for r in events_of(out, ev.PositionRepaid)) == D(100000)
    assert not events_of(out, ev.InsuranceFundCovered)
    assert not events_of(out, ev.DebtWrittenOff)
    only(events_of(out, ev.LiquidationFinished))
    released = only(events_of(out, ev.PositionReleased))
    assert (released.base, released.quote) == (D("0.02941069"), D("0.000384515"))
    assert h.positions("alice") == []
    assert (h.bal("alice", "BTC").cash, h.bal("alice", "USDT").cash) == (D("0.02941069"), D("0.000384515"))
    _assert_conserved_throughout(h)


def test_full_liquidation_with_an_empty_fund_writes_the_shortfall_off() -> None:
    """Tier 1 ⇒ full liquidation. Mark 85,000: MR = (85,000 + 10,000 − 100,000)/3,103 < 0.
    The only bid is 1 @80,000: the position sells its 1 BTC for 80,000 − 80 fee = 79,920, its
    10,000 margin is used, and 100,000 − 89,920 = 10,080 USDT is still owed. The fund is empty:
    all of it is written off; the account ends with nothing and owes nothing."""
    h = Harness()
    _list_btc_usdt(h)
    h.ok("deposit", acct="mm", ccy="BTC", amt="10")
    h.ok("deposit", acct="mm", ccy="USDT", amt="1000000")
    _long_quote_margin(h, "alice")
    h.order("mm", "buy", "1", "80000", cl_ord_id="bid80")
    out = h.mark("85000")
    assert only(events_of(out, ev.LiquidationStarted)).instId == "BTC-USDT"
    assert [(t.sz, t.px) for t in _sales_of(out, "alice")] == [(D(1), D(80000))]
    assert not events_of(out, ev.InsuranceFundCovered)
    written = only(events_of(out, ev.DebtWrittenOff))
    assert (written.acct, written.ccy, written.amt, written.instId) == ("alice", "USDT", D(10080), "BTC-USDT")
    only(events_of(out, ev.LiquidationFinished))
    only(events_of(out, ev.PositionReleased))
    assert h.positions("alice") == []
    assert h.state.written_off["USDT"] == D(10080)
    assert h.state.insurance.get("USDT", D(0)) == 0
    assert all(b.cash == 0 and b.liab == 0 and b.interest == 0 for b in h.state.accounts["alice"].balances.values())
    _assert_conserved_throughout(h)


def test_full_liquidation_uses_the_fund_first_then_writes_off_the_rest() -> None:
    """liqFee 1 %. bob's position is liquidated first into a bid at 93,000 (solvent): the 1 %
    liquidation fee on his sale fills the USDT fund. Then alice's position (as in the empty-fund
    case) sells 1 BTC at 80,000: 80,000 − 80 taker fee − 800 liquidation fee = 79,120, plus the
    10,000 margin ⇒ shortfall 100,000 − 89,120 = 10,880. The fund pays what it holds (bob's fee
    plus alice's own 800), never going below zero; the rest is written off."""
    h = Harness()
    _list_btc_usdt(h, liq_fee="0.01")
    h.ok("deposit", acct="mm", ccy="BTC", amt="10")
    h.ok("deposit", acct="mm", ccy="USDT", amt="1000000")
    _long_quote_margin(h, "bob")
    h.order("mm", "buy", "1", "93000", cl_ord_id="bid93")
    bob = h.mark("92000")
    assert only(events_of(bob, ev.LiquidationStarted)).acct == "bob"
    assert not events_of(bob, ev.InsuranceFundCovered)
    assert not events_of(bob, ev.DebtWrittenOff)
    bob_fee = only(events_of(bob, ev.LiquidationFeeCharged))
    assert bob_fee.amt == q(_sales_of(bob, "bob")[0].sz * D(93000) * D("0.01"), 16)
    assert h.state.insurance["USDT"] == bob_fee.amt > 0
    h.ok("cancel_order", acct="mm", instId="BTC-USDT", clOrdId="bid93")

    _long_quote_margin(h, "alice")
    h.order("mm", "buy", "1", "80000", cl_ord_id="bid80")
    out = h.mark("85000")
    assert [(t.sz, t.px) for t in _sales_of(out, "alice")] == [(D(1), D(80000))]
    alice_fee = only(events_of(out, ev.LiquidationFeeCharged))
    assert alice_fee.amt == D(800)
    covered = only(events_of(out, ev.InsuranceFundCovered))
    written = only(events_of(out, ev.DebtWrittenOff))
    assert (covered.acct, covered.ccy, covered.instId) == ("alice", "USDT", "BTC-USDT")
    assert covered.amt == bob_fee.amt + alice_fee.amt
    assert covered.amt + written.amt == D(10880)
    # insurance_fund_covered comes before debt_written_off.
    kinds = [type(e) for e in out.events]
    assert kinds.index(ev.InsuranceFundCovered) < kinds.index(ev.DebtWrittenOff)
    assert h.state.insurance["USDT"] == 0
    assert h.state.written_off["USDT"] == written.amt
    assert h.positions("alice") == []
    assert all(b.liab == 0 and b.interest == 0 for b in h.state.accounts["alice"].balances.values())
    _assert_conserved_throughout(h)


def _sales_of(out: ev.Outcome, acct: str) -> list[ev.Traded]:
    return [t for t in events_of(out, ev.Traded) if t.liquidation and t.takerAcct == acct]
