"""Closing isolated spot positions by seed 001 §3 (issue 11, item 6), through commands and the view.

Seed 001 §3 "Closing Positions":

| Action | Base Currency Margin | Quote Currency Margin |
|---|---|---|
| Buy Position | Full repayment of quote debt | Sell all base assets |
| Sell Position | Sell all quote assets | Full repayment of base debt |

"Non-Reduce-Only: Closes position and may open reverse position."

Setup: BTC-USDT (maker 0, taker 0.1 %, MMR 3 %, 10×), USDT 16 places, BTC 8; alice opens as
the maker (fee 0), so the position holds exactly what it bought or sold.
"""

from __future__ import annotations

from decimal import Decimal as D

from helpers import Harness, dec, events_of, only, rejection

from events import journal as ev


def _market() -> Harness:
    h = Harness()
    h.standard_listing()
    h.mark("100000")
    h.ok("deposit", acct="mm", ccy="BTC", amt="10")
    h.ok("deposit", acct="mm", ccy="USDT", amt="2000000")
    return h


def _open(h: Harness, side: str, ccy: str) -> None:
    """alice opens 1 BTC @ 100,000 isolated at 10× with margin in ``ccy`` (0.1 BTC or 10,000 USDT)."""
    h.ok("deposit", acct="alice", ccy=ccy, amt="0.1" if ccy == "BTC" else "10000")
    h.order("alice", side, "1", "100000", td_mode="isolated", ccy=ccy, cl_ord_id="open")
    h.order("mm", "buy" if side == "sell" else "sell", "1", "100000")
    assert dec(h.position("alice").margin) == D("0.1" if ccy == "BTC" else "10000")


def _close(h: Harness) -> ev.Outcome:
    return h.ok("close_position", acct="alice", instId="BTC-USDT", mgnMode="isolated")


def _alice_fills(out: ev.Outcome) -> list[tuple[str, D, D, D]]:
    return [(t.takerSide, t.sz, t.px, t.takerFee) for t in events_of(out, ev.Traded) if t.takerAcct == "alice"]


def test_buy_position_base_margin_full_repayment_of_the_quote_debt() -> None:
    """Long 1 BTC owing 100,000 USDT, 0.1 BTC margin; bid 110,000. Only what repays the debt is
    sold: 100,000 / (110,000 × 0.999) = 0.910000910… → 0.91000092 BTC; proceeds 100,100.1012
    less the fee 100.1001012 = 100,000.0010988; the rest returns: 0.08999908 + 0.1 margin BTC
    and 0.0010988 USDT."""
    h = _market()
    _open(h, "buy", "BTC")
    h.mark("110000")
    h.order("mm", "buy", "2", "110000")
    out = _close(h)
    assert _alice_fills(out) == [("sell", D("0.91000092"), D(110000), D("100.1001012"))]
    released = only(events_of(out, ev.PositionReleased))
    assert (released.base, released.quote) == (D("0.18999908"), D("0.0010988"))


def test_buy_position_quote_margin_sells_all_base_assets() -> None:
    """Long 1 BTC owing 100,000 USDT, 10,000 USDT margin; bid 110,000. All 1 BTC is sold:
    110,000 − 110 fee = 109,890; 100,000 repaid; 9,890 + the 10,000 margin return, no BTC
    (the old rule sold 0.91000092 and kept 0.08999908 BTC)."""
    h = _market()
    _open(h, "buy", "USDT")
    h.mark("110000")
    h.order("mm", "buy", "2", "110000")
    out = _close(h)
    assert _alice_fills(out) == [("sell", D(1), D(110000), D(110))]
    released = only(events_of(out, ev.PositionReleased))
    assert (released.base, released.quote) == (D(0), D(19890))
    assert h.positions("alice") == []


def test_sell_position_base_margin_sells_all_quote_assets() -> None:
    """Short 1 BTC holding 100,000 USDT, 0.1 BTC margin; ask 90,000. All the quote buys base:
    100,000 / 90,000 = 1.11111111 BTC (whole lots) for 99,999.9999; fee 0.00111112 BTC (0.1 %,
    rounded up); 1.10999999 received repays the 1 BTC; 0.10999999 + 0.1 margin BTC and 0.0001
    USDT return (the old rule bought back 1.00100101 BTC and returned 9,909.9091 USDT)."""
    h = _market()
    _open(h, "sell", "BTC")
    h.mark("90000")
    h.order("mm", "sell", "2", "90000")
    out = _close(h)
    assert _alice_fills(out) == [("buy", D("1.11111111"), D(90000), D("0.00111112"))]
    repaid = only(events_of(out, ev.PositionRepaid))
    assert (repaid.ccy, repaid.principal) == ("BTC", D(1))
    released = only(events_of(out, ev.PositionReleased))
    assert (released.base, released.quote) == (D("0.20999999"), D("0.0001"))


def test_sell_position_quote_margin_full_repayment_of_the_base_debt() -> None:
    """Short 1 BTC holding 100,000 USDT, 10,000 USDT margin; ask 95,000: buys back ⌈1/0.999⌉ =
    1.00100101 BTC (net 1 BTC) for 95,095.09595; 14,904.90405 USDT returns (as
    ``test_isolated.test_short_with_quote_margin_ratio_liq_price_and_close``)."""
    h = _market()
    _open(h, "sell", "USDT")
    h.mark("95000")
    h.order("mm", "sell", "2", "95000")
    out = _close(h)
    assert _alice_fills(out) == [("buy", D("1.00100101"), D(95000), D("0.00100101"))]
    released = only(events_of(out, ev.PositionReleased))
    assert (released.base, released.quote) == (D(0), D("14904.90405"))


# --- reverse: a non-reduce-only order closes the position and opens the other side -------------------


def _long_to_reverse() -> Harness:
    """alice: long 1 BTC owing 100,000 USDT on 0.1 BTC margin; mark 110,000; bids 2 @ 110,000."""
    h = _market()
    _open(h, "buy", "BTC")
    h.mark("110000")
    h.order("mm", "buy", "2", "110000", cl_ord_id="bid")
    return h


def test_a_non_reduce_only_sell_closes_the_long_and_opens_a_short() -> None:
    """Seed 001 §3 'Non-Reduce-Only: Closes position and may open reverse position'. alice sells
    1.5 @ 110,000 (taker, 0.1 %). Closing leg: her 1 BTC; 110,000 − 110 = 109,890 repays the
    100,000; released: 0.1 BTC margin, 9,890 USDT. Opening leg: 0.5 BTC short, USDT margin (a
    sell's default): cost 0.5 × 110,000 / 10 = 5,500 (no open loss at the mark); it borrows
    0.5 BTC and holds 55,000 − 55 = 54,945 USDT; 9,890 − 5,500 = 4,390 USDT stay free."""
    h = _long_to_reverse()
    out = h.order("alice", "sell", "1.5", "110000", td_mode="isolated", cl_ord_id="flip")
    accepted = [(o.sz, o.reduce, o.mgnCcy, o.frozen) for o in events_of(out, ev.OrderAccepted)]
    assert accepted == [(D(1), True, "BTC", D(1)), (D("0.5"), False, "USDT", D(5500))]
    assert _alice_fills(out) == [("sell", D(1), D(110000), D(110)), ("sell", D("0.5"), D(110000), D(55))]
    released = only(events_of(out, ev.PositionReleased))
    assert (released.base, released.quote) == (D("0.1"), D(9890))
    opened = only(events_of(out, ev.PositionOpened))
    assert (opened.long, opened.mgnCcy) == (False, "USDT")
    pos = h.position("alice")
    assert (pos.posCcy, dec(pos.pos), dec(pos.liab), pos.liabCcy) == ("USDT", D(54945), D("0.5"), "BTC")
    assert (dec(pos.margin), pos.mgnCcy, dec(pos.avgPx)) == (D(5500), "USDT", D(110000))
    assert h.bal("alice", "USDT").cash == D(4390)
    assert h.bal("alice", "BTC").cash == D("0.1")


def test_a_reduce_only_order_still_never_reverses() -> None:
    h = _long_to_reverse()
    out = h.order("alice", "sell", "1.5", "110000", td_mode="isolated", reduceOnly=True)
    assert rejection(out).reason == "exceeds_available_to_close"


def test_a_reverse_that_cannot_close_at_once_opens_nothing() -> None:
    """A reverse priced above the bids closes nothing now: the closing leg is canceled (``ioc``)
    and no opposite position opens; the long is untouched."""
    h = _long_to_reverse()
    out = h.order("alice", "sell", "1.5", "120000", td_mode="isolated", cl_ord_id="flip")
    assert [c.reason for c in events_of(out, ev.OrderCanceled)] == ["ioc"]
    assert not events_of(out, ev.Traded)
    pos = h.position("alice")
    assert (pos.posCcy, dec(pos.pos), dec(pos.liab)) == ("BTC", D(1), D(100000))
    refused = h.order("alice", "sell", "1.5", "120000", td_mode="isolated", ord_type="post_only")
    assert rejection(refused).reason == "invalid_ordType"


def test_a_short_reverse_whose_opening_leg_cannot_pay_is_refused_after_the_close() -> None:
    """alice (short 1 BTC holding 100,000 USDT, 10,000 USDT margin) buys 2 @ 95,000, ``ccy`` BTC
    for the long it would open. Closing leg: what her 100,000 USDT buys, 1.05263157 BTC for
    99,999.99915 (fee 0.00105264 BTC, 1.05157893 received); the 1 BTC debt is repaid and the
    position released (0.05157893 BTC, 100,000 − 99,999.99915 + 10,000 = 10,000.00085 USDT).
    Opening leg: 2 − 1.05263157 = 0.94736843 BTC at 10× costs 0.09473685 BTC of margin (up);
    she has 0.05157893: ``order_rejected`` ``insufficient_balance`` — the close stands."""
    h = _market()
    _open(h, "sell", "USDT")
    h.mark("95000")
    h.order("mm", "sell", "2", "95000")
    out = h.order("alice", "buy", "2", "95000", td_mode="isolated", ccy="BTC", cl_ord_id="flip")
    leg = only(events_of(out, ev.OrderAccepted))
    assert (leg.sz, leg.reduce, leg.frozen) == (D("1.05263157"), True, D("99999.99915"))
    assert _alice_fills(out) == [("buy", D("1.05263157"), D(95000), D("0.00105264"))]
    released = only(events_of(out, ev.PositionReleased))
    assert (released.base, released.quote) == (D("0.05157893"), D("10000.00085"))
    refused = only(events_of(out, ev.OrderRejected))
    assert (refused.clOrdId, refused.reason) == ("flip", "insufficient_balance")
    assert h.positions("alice") == []
    assert (h.bal("alice", "BTC").cash, h.bal("alice", "USDT").cash) == (D("0.05157893"), D("10000.00085"))
