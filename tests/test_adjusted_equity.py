"""Multi-currency isolated margin (seed 001; docs/decisions.md 35), through commands and the
risk view:

  "For multi-currency isolated margin mode, the adjusted account equity must be greater than or
  equal to the held equity of pending orders, and the available balance of the currency must
  meet the order's requirement."

Listing: USDT (8 decimals, valuation, discount 1), BTC (8 decimals, ``discount`` 0.9),
BTC-USDT (§1.3 tiers, maker fee 0), mark 60,000. alice sets isolated leverage 10.
``adjEq = Σ net·P·discount`` (a negative net in full), ``ordFroz = Σ frozen·P`` of her resting
isolated opening orders.
"""

from __future__ import annotations

from decimal import Decimal

from helpers import Harness, dec, events_of, only, rejection

from events import journal as ev

D = Decimal


def _listed() -> Harness:
    h = Harness()
    h.list_asset("USDT", 8)
    listed = h.ok("list_asset", ccy="BTC", decimals=8, discount="0.9")
    assert only(events_of(listed, ev.AssetListed)).discount == D("0.9")
    h.list_spot("BTC-USDT")
    h.mark("60000")
    h.ok("deposit", acct="alice", ccy="BTC", amt="1")
    h.ok("set_leverage", acct="alice", instId="BTC-USDT", mgnMode="isolated", lever="10")
    return h


def test_adjusted_equity_must_cover_the_held_equity_of_pending_orders() -> None:
    """alice holds 1 BTC: adjEq = 1·60,000·0.9 = 54,000. An isolated buy of 9 BTC at 60,000,
    base margin, freezes 9/10 = 0.9 BTC (no open loss at the mark) = 54,000 held: 54,000 ≥
    54,000, accepted (ordFroz 54,000). A second buy of 0.1 BTC freezes 0.01 BTC = 600: her
    free BTC (0.1) meets it, but 54,000 < 54,600 — refused, short by 600. 600 USDT deposited
    (discount 1): adjEq 54,600 — now accepted (ordFroz 54,600).

    The currency's own balance still rules too: a buy of 2 BTC needs 0.2 BTC, above the free
    0.09 BTC, whatever the adjusted equity (100,000 USDT more: adjEq 154,600) — refused
    ``insufficient_balance``. A mark of 50,000 scales both sides: adjEq 1·50,000·0.9 + 100,600
    = 145,600, ordFroz 0.91·50,000 = 45,500."""
    h = _listed()
    view = h.account("alice")
    assert (dec(view.adjEq), dec(view.ordFroz)) == (D(54000), D(0))
    first = h.order("alice", "buy", "9", "60000", td_mode="isolated", ccy="BTC")
    assert only(events_of(first, ev.OrderAccepted)).frozen == D("0.9")
    assert dec(h.account("alice").ordFroz) == D(54000)

    refused = rejection(h.order("alice", "buy", "0.1", "60000", td_mode="isolated", ccy="BTC"))
    assert refused.reason == "insufficient_adjusted_equity"
    assert refused.message == (
        "adjusted equity 54000 USDT is below the held equity of pending orders 54600 USDT with this order"
        " (short by 600 USDT)"
    )
    h.ok("deposit", acct="alice", ccy="USDT", amt="600")
    assert dec(h.account("alice").adjEq) == D(54600)
    second = h.order("alice", "buy", "0.1", "60000", td_mode="isolated", ccy="BTC")
    assert only(events_of(second, ev.OrderAccepted)).frozen == D("0.01")
    assert dec(h.account("alice").ordFroz) == D(54600)

    h.ok("deposit", acct="alice", ccy="USDT", amt="100000")
    assert rejection(h.order("alice", "buy", "2", "60000", td_mode="isolated", ccy="BTC")).reason == (
        "insufficient_balance"
    )
    h.mark("50000")
    view = h.account("alice")
    assert (dec(view.adjEq), dec(view.ordFroz)) == (D(145600), D(45500))


def test_a_debt_counts_in_full_and_quote_margin_orders_are_held_too() -> None:
    """bob holds 1 BTC and borrows 30,000 USDT (cross): net USDT 30,000 − 30,000 = 0, BTC
    1·60,000·0.9 = 54,000: adjEq 54,000. An isolated USDT-margined buy of 1 BTC at 59,000
    freezes 59,000/10 = 5,900 USDT (ordFroz 5,900 ≤ 54,000: accepted). He then buys 0.4 BTC
    for cash at 60,000 as maker (fee 0): USDT cash 30,000 − 24,000 = 6,000 (the frozen 5,900
    included), net 6,000 − 30,000 = −24,000, counted in full (no discount on a debt); BTC
    1.4·60,000·0.9 = 75,600: adjEq 75,600 − 24,000 = 51,600."""
    h = _listed()
    h.ok("deposit", acct="mm", ccy="BTC", amt="10")
    h.ok("deposit", acct="bob", ccy="BTC", amt="1")
    h.ok("borrow", acct="bob", ccy="USDT", amt="30000")
    assert dec(h.account("bob").adjEq) == D(54000)
    first = h.order("bob", "buy", "1", "59000", td_mode="isolated", ccy="USDT", cl_ord_id="iso1")
    assert only(events_of(first, ev.OrderAccepted)).frozen == D(5900)
    h.order("bob", "buy", "0.4", "60000", td_mode="cash")
    h.order("mm", "sell", "0.4", "60000", td_mode="cash")
    assert dec(h.bal("bob", "BTC").cash) == D("1.4")
    assert dec(h.account("bob").adjEq) == D(51600)
    assert dec(h.account("bob").ordFroz) == D(5900)


def test_discount_is_validated_and_defaults_to_one() -> None:
    h = Harness()
    assert rejection(h.send("list_asset", ccy="BTC", decimals=8, discount="1.5")).reason == "invalid_discount"
    listed = h.ok("list_asset", ccy="USDT", decimals=8, discount="1.0")
    assert only(events_of(listed, ev.AssetListed)).discount is None  # the default is not written
    assert h.state.assets["USDT"].discount == D(1)


def test_a_reverse_orders_opening_leg_meets_the_adjusted_equity_rule() -> None:
    """The opening leg of an isolated reverse (decision 33c) is an isolated opening order too.
    Discounts: USDT 0.5, BTC 0. alice: 0.1 BTC and 20,000 USDT (adjEq 20,000·0.5 = 10,000);
    long 1 BTC @ 100,000, base margin 0.1 BTC (held 0.1·100,000 = 10,000 ≤ 10,000). Mark
    110,000; she sells 2.5 @ 110,000 (taker 0.1 %): the closing leg sells her 1 BTC for
    110,000 − 110 = 109,890, repays the 100,000, releases 0.1 BTC and 9,890 USDT (USDT
    29,890). The opening leg, 1.5 BTC short on USDT margin, costs 1.5·110,000/10 = 16,500 —
    within her free 29,890 USDT, but adjEq = 29,890·0.5 + 0.1·110,000·0 = 14,945 < 16,500:
    refused after the close, short by 1,555."""
    h = Harness()
    h.ok("list_asset", ccy="USDT", decimals=8, discount="0.5")
    h.ok("list_asset", ccy="BTC", decimals=8, discount="0")
    h.list_spot("BTC-USDT")
    h.mark("100000")
    h.ok("deposit", acct="mm", ccy="BTC", amt="10")
    h.ok("deposit", acct="mm", ccy="USDT", amt="2000000")
    h.ok("deposit", acct="alice", ccy="BTC", amt="0.1")
    h.ok("deposit", acct="alice", ccy="USDT", amt="20000")
    assert dec(h.account("alice").adjEq) == D(10000)
    h.order("alice", "buy", "1", "100000", td_mode="isolated", ccy="BTC", cl_ord_id="open")
    h.order("mm", "sell", "1", "100000")
    h.mark("110000")
    h.order("mm", "buy", "3", "110000", cl_ord_id="bid")
    out = h.order("alice", "sell", "2.5", "110000", td_mode="isolated", cl_ord_id="flip")
    released = only(events_of(out, ev.PositionReleased))
    assert (released.base, released.quote) == (D("0.1"), D(9890))
    refused = only(events_of(out, ev.OrderRejected))
    assert (refused.clOrdId, refused.reason) == ("flip", "insufficient_adjusted_equity")
    assert "adjusted equity 14945 USDT" in refused.message and "(short by 1555 USDT)" in refused.message
    assert h.positions("alice") == []
