"""Cross spot-margin positions and their closing, from the seeds' sentences (issue 11, items 4–5).

Seed 002 §1: "Assets: positive assets in the position (excluding margin)"; "Liability: initial
liabilities + accrued interest". §2: "Both pair tokens can serve as margin"; FAQ: "margin
currency is fixed when opening the position". §3.1 (matching position and margin currencies):
"Only available assets can close positions"; "Limit Close: allows partial closing with the
remaining liability"; "Reduce + Reverse: closes position, uses excess to open opposite
position". §3.2 (mismatched): "Only position assets can close positions; entire position must
be sold to close; account equity covers unpaid liabilities". Seed 000: "When you use the quote
currency as margin to open long position, the position assets = available assets."

Setup: BTC-USDT (maker 0, taker 0.1 %, MMR 3 %, IMR 10 %, 10×), a market maker ``mm``.
"""

from __future__ import annotations

from decimal import Decimal as D

from helpers import Harness, dec, events_of, rejection

from events import journal as ev


def _market() -> Harness:
    h = Harness()
    h.standard_listing(usdt_daily_rate="0.0024")  # 0.01 % an hour
    h.mark("100000")
    h.ok("deposit", acct="mm", ccy="BTC", amt="10")
    h.ok("deposit", acct="mm", ccy="USDT", amt="2000000")
    return h


def _long(h: Harness, ccy: str | None = None) -> None:
    """alice: 10,000 USDT, buys 1 BTC @ 100,000 cross as the maker (fee 0): owes 90,000 USDT."""
    h.ok("deposit", acct="alice", ccy="USDT", amt="10000")
    h.order("alice", "buy", "1", "100000", td_mode="cross", cl_ord_id="open", ccy=ccy)
    h.order("mm", "sell", "1", "100000")
    assert h.bal("alice", "USDT").liab == D(90000)


def test_a_cross_sale_of_owned_coins_is_no_short() -> None:
    """Issue 11 item 4: selling 0.5 of 1 owned BTC in cross mode borrows nothing: no position,
    no negative upl (it used to show a 'short' of 0.5 with upl −0.5·(P − 100,000))."""
    h = _market()
    h.ok("deposit", acct="bob", ccy="BTC", amt="1")
    h.order("mm", "buy", "0.5", "100000")
    h.order("bob", "sell", "0.5", ord_type="market", td_mode="cross")
    h.mark("110000")
    assert h.positions("bob") == []
    assert h.bal("bob", "BTC").cash == D("0.5") and not h.bal("bob", "BTC").liab


def test_one_quantity_net_of_base_fees_in_view_upl_and_reduce_only() -> None:
    """Issue 11 item 4: the view said pos 0.3995, the reduce-only refusal 'above the position 0.4'
    and upl was on 0.4. alice takes 0.4 BTC @ 100,000 (fee 0.1 % = 0.0004 BTC): the position is
    0.3996 everywhere; at mark 101,000 upl = 0.3996 × 1,000 = 399.6."""
    h = _market()
    h.ok("deposit", acct="alice", ccy="USDT", amt="4000")
    h.order("mm", "sell", "0.4", "100000")
    h.order("alice", "buy", "0.4", ord_type="market", td_mode="cross")
    assert h.bal("alice", "USDT").liab == D(36000)
    h.mark("101000")
    pos = h.position("alice")
    assert (dec(pos.pos), pos.posCcy, dec(pos.upl)) == (D("0.3996"), "BTC", D("399.6"))
    refused = h.order("alice", "sell", "0.4", "101000", td_mode="cross", reduceOnly=True)
    assert rejection(refused).reason == "reduce_only_exceeds_position"
    assert "0.3996" in rejection(refused).message
    assert events_of(h.order("alice", "sell", "0.3996", "101000", td_mode="cross", reduceOnly=True), ev.OrderRested)


def test_limit_close_repays_interest_first_and_leaves_the_rest_of_the_liability() -> None:
    """Seed 002 §3.1 Limit Close: alice owes 90,000 + 9 interest (90,000 × 0.0024 / 24); her
    resting sell of 0.5 @ 102,000 fills: the 51,000 proceeds repay 9 interest, then 50,991
    principal, at once — 39,009 stays owed by the 0.5 BTC left, and the next hour charges
    39,009 × 0.0001 = 3.9009 (not 9 on the whole debt)."""
    h = _market()
    _long(h)
    h.accrue()
    assert h.bal("alice", "USDT").interest == D(9)
    h.order("alice", "sell", "0.5", "102000", td_mode="cross", cl_ord_id="close")
    out = h.order("mm", "buy", "0.5", "102000")
    repaid = [(r.acct, r.interest, r.principal, r.reason) for r in events_of(out, ev.Repaid)]
    assert repaid == [("alice", D(9), D(50991), "close")]
    pos = h.position("alice")
    assert (dec(pos.pos), dec(pos.liab), pos.liabCcy) == (D("0.5"), D(39009), "USDT")
    assert h.bal("alice", "USDT").cash == 0
    interest = events_of(h.accrue(), ev.InterestAccrued)
    assert [(e.acct, e.amt) for e in interest] == [("alice", D("3.9009"))]


def test_reduce_and_reverse_closes_repays_and_opens_the_short_with_the_excess() -> None:
    """Seed 002 §3.1 Reduce + Reverse: alice (long 1 BTC, owes 90,000) sells 1.5 BTC at market
    into a bid of 1.5 @ 100,000; fee 150 USDT. The first BTC closes the long: its share of the
    proceeds, (150,000 − 150)·1/1.5 = 99,900, repays the 90,000; the excess 0.5 BTC is borrowed
    and opens a short at 100,000 holding (149,850)·0.5/1.5 = 49,950 USDT, owing 0.5 BTC."""
    h = _market()
    _long(h)
    h.order("mm", "buy", "1.5", "100000")
    out = h.order("alice", "sell", "1.5", ord_type="market", td_mode="cross")
    assert [(b.ccy, b.amt) for b in events_of(out, ev.Borrowed)] == [("BTC", D("0.5"))]
    assert [(r.ccy, r.principal) for r in events_of(out, ev.Repaid)] == [("USDT", D(90000))]
    pos = h.position("alice")
    assert (pos.posCcy, dec(pos.pos), dec(pos.liab), pos.liabCcy) == ("USDT", D(49950), D("0.5"), "BTC")
    assert (dec(pos.avgPx), pos.mgnCcy) == (D(100000), "USDT")
    assert h.bal("alice", "USDT").cash == D(59850)  # 149,850 − 90,000
    h.mark("98000")
    assert dec(h.position("alice").upl) == D(1000)  # 0.5 × (100,000 − 98,000)


def test_close_all_at_a_loss_leaves_pos_0_with_its_liability_and_no_upl() -> None:
    """Seed 000: 'If you're at a loss and you proceed to select Close all, you may not be able to
    pay off your liability, which means you can't fully close the position.' alice (long 1 BTC
    bought as taker: 0.999 BTC; plus 0.5 BTC of her own) closes into the only bid, 1 @ 80,000:
    the 1 BTC sold closes the 0.999 of the position (its share 79,920 × 0.999 = 79,840.08 repays
    at the fill) and 0.001 of her own BTC, whose 79.92 close all repays after it: 79,920 in all,
    10,080 stays; the position shows pos 0, upl 0 and the liability."""
    h = _market()
    h.ok("deposit", acct="alice", ccy="USDT", amt="10000")
    h.ok("deposit", acct="alice", ccy="BTC", amt="0.5")
    h.order("mm", "sell", "1", "100000")
    h.order("alice", "buy", "1", ord_type="market", td_mode="cross")
    assert dec(h.position("alice").pos) == D("0.999")
    h.mark("95000")
    h.order("mm", "buy", "1", "80000")
    out = h.send("close_position", acct="alice", instId="BTC-USDT", mgnMode="cross")
    assert [r.principal for r in events_of(out, ev.Repaid)] == [D("79840.08"), D("79.92")]
    assert not events_of(out, ev.PositionClosed)
    pos = h.position("alice")
    assert (dec(pos.pos), dec(pos.upl), dec(pos.liab)) == (D(0), D(0), D(10080))
    h.ok("deposit", acct="alice", ccy="USDT", amt="10080")
    h.ok("repay", acct="alice", ccy="USDT", amt="10080")
    assert h.positions("alice") == []  # paid off: the position is closed


def test_mismatched_long_quote_margin_sells_the_whole_position_to_close() -> None:
    """Seed 002 §3.2 / seed 000: a long margined in USDT (``ccy`` USDT on the opening order):
    availPos is the position's assets, 1 BTC (a BTC-margined long shows 90,000·1.1/100,000 =
    0.99); close all sells the whole 1 BTC @ 110,000: 109,890 net, 90,000 repaid, 19,890 left."""
    h = _market()
    _long(h, ccy="USDT")
    pos = h.position("alice")
    assert (pos.mgnCcy, dec(pos.availPos)) == ("USDT", D(1))
    h.mark("110000")
    h.order("mm", "buy", "1.5", "110000")
    out = h.send("close_position", acct="alice", instId="BTC-USDT", mgnMode="cross")
    sale = [t for t in events_of(out, ev.Traded) if t.takerAcct == "alice"]
    assert [(t.sz, t.takerFee) for t in sale] == [(D(1), D(110))]
    assert events_of(out, ev.PositionClosed)
    assert h.bal("alice", "USDT").cash == D(19890) and not h.bal("alice", "USDT").liab
    assert h.positions("alice") == []


def test_matched_long_shows_the_available_asset_formula() -> None:
    """Seed 002 §3.1 table: long available asset = (liability + interest)·(1 + IMR)/mark =
    90,000 × 1.1 / 100,000 = 0.99 BTC of the 1 BTC held (BTC margin, the default)."""
    h = _market()
    _long(h)
    pos = h.position("alice")
    assert (pos.mgnCcy, dec(pos.availPos)) == ("BTC", D("0.99"))


def test_mismatched_close_at_a_loss_the_account_equity_pays_the_rest() -> None:
    """Seed 002 §3.2 'account equity covers unpaid liabilities': the USDT-margined long sold at
    85,000 brings 84,915; the 5,085 still owed is repaid from the account's other 10,000 USDT,
    and the position is closed (4,915 USDT left)."""
    h = _market()
    _long(h, ccy="USDT")
    h.ok("deposit", acct="alice", ccy="USDT", amt="10000")
    h.mark("85000")
    h.order("mm", "buy", "1", "85000")
    out = h.send("close_position", acct="alice", instId="BTC-USDT", mgnMode="cross")
    assert [r.principal for r in events_of(out, ev.Repaid)] == [D(84915), D(5085)]
    assert events_of(out, ev.PositionClosed)
    assert h.bal("alice", "USDT").cash == D(4915) and not h.bal("alice", "USDT").liab
    assert h.positions("alice") == []


def test_margin_currency_is_fixed_when_the_position_opens() -> None:
    """Seed 002 FAQ: 'margin currency is fixed when opening the position'."""
    h = _market()
    _long(h, ccy="USDT")
    refused = h.order("alice", "buy", "0.01", "100000", td_mode="cross", ccy="BTC")
    assert rejection(refused).reason == "margin_ccy_fixed"
    assert rejection(h.order("alice", "buy", "0.01", "100000", td_mode="cross", ccy="ETH")).reason == "invalid_ccy"
    assert not events_of(h.order("alice", "buy", "0.01", "99000", td_mode="cross", ccy="USDT"), ev.OrderRejected)
