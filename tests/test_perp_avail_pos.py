"""``availPos`` of a perpetual position counts its pending close orders (issue 11, bug 2).

Seed 001, "Perpetual/Futures in New Isolated Margin Mode": "Available | Only in Hedge Mode:
Total - Pending Close Orders". ``spec/domain.md`` §1.9: "availPos = assets − frozen by pending
close orders". So in hedge mode (``long_short_mode``) a resting sell-long / buy-short order
holds its size of the position: the view's ``availPos`` is the size less every resting close
order of that side, and a new close order above ``availPos`` is refused
(``exceeds_available_to_close``, naming the numbers). In net mode the close orders are the
reduce-only ones (a plain order on the other side may flip the position and is no close order):
they count the same way. ``close_position`` first cancels the position's pending close orders
(reason ``close_position``) and then closes the whole size.

Listing as ``tests/test_perpetuals.py`` (100 contracts = 1 BTC, maker fee 0).
"""

from __future__ import annotations

from decimal import Decimal

from helpers import Harness, dec, events_of, only, rejection
from test_perpetuals import SWAP, _fund, _listed, _open

from events import journal as ev

D = Decimal


def _hedged(mode: str) -> Harness:
    """A in hedge mode: long 100 at 60,000 and short 50 at 60,000 (``mode`` margin)."""
    h = _listed()
    _fund(h, "A", "mm", "mm2")
    h.ok("set_position_mode", acct="A", posMode="long_short_mode")
    if mode == "isolated":
        h.ok("set_leverage", acct="A", instId=SWAP, mgnMode="isolated", lever="10")
    _open(h, "A", "buy", "100", "60000", mode, posSide="long")
    _open(h, "A", "sell", "50", "60000", mode, against="mm2", posSide="short")
    return h


def _avail(h: Harness, side: str) -> tuple[Decimal, Decimal]:
    pos = only([p for p in h.positions("A") if p.posSide == side])
    return dec(pos.pos), dec(pos.availPos)


def _close_order(h: Harness, side: str, pos_side: str, sz: str, px: str, cl: str, mode: str = "isolated") -> ev.Outcome:
    return h.order("A", side, sz, px, inst=SWAP, td_mode=mode, posSide=pos_side, cl_ord_id=cl)


def test_hedge_mode_available_is_total_less_pending_close_orders() -> None:
    """Isolated hedge mode, long 100 and short 50.

    * close sell-long 30 @ 62,000 rests ⇒ long availPos 100 − 30 = **70**; the short side is
      untouched (50);
    * close sell-long 80 ⇒ refused: 80 > 70 (``exceeds_available_to_close``); nothing rests;
    * close sell-long 70 @ 63,000 rests ⇒ availPos **0**; any further close is refused;
    * close buy-short 20 @ 58,000 ⇒ short availPos 50 − 20 = **30**;
    * mm buys 10 @ 62,000: the first close order fills 10 ⇒ long 90, pending 20 + 70 ⇒
      availPos still **0**;
    * cancel the 70 ⇒ availPos 90 − 20 = **70**."""
    h = _hedged("isolated")
    assert _avail(h, "long") == (D(100), D(100))
    assert _avail(h, "short") == (D(-50), D(50))
    only(events_of(_close_order(h, "sell", "long", "30", "62000", "c1"), ev.OrderRested))
    assert _avail(h, "long") == (D(100), D(70))
    assert _avail(h, "short") == (D(-50), D(50))
    refused = rejection(_close_order(h, "sell", "long", "80", "62000", "c2"))
    assert refused.reason == "exceeds_available_to_close"
    assert refused.message == "sz 80 is above the availPos 70 (position 100 less 30 in pending close orders)"
    assert _avail(h, "long") == (D(100), D(70))
    only(events_of(_close_order(h, "sell", "long", "70", "63000", "c3"), ev.OrderRested))
    assert _avail(h, "long") == (D(100), D(0))
    assert rejection(_close_order(h, "sell", "long", "1", "64000", "c4")).reason == "exceeds_available_to_close"
    only(events_of(_close_order(h, "buy", "short", "20", "58000", "c5"), ev.OrderRested))
    assert _avail(h, "short") == (D(-50), D(30))
    fill = h.order("mm", "buy", "10", "62000", inst=SWAP, td_mode="cross")
    assert only(events_of(fill, ev.Traded)).sz == D(10)
    assert _avail(h, "long") == (D(90), D(0))
    h.ok("cancel_order", acct="A", instId=SWAP, clOrdId="c3")
    assert _avail(h, "long") == (D(90), D(70))


def test_hedge_mode_cross_positions_count_pending_close_orders_too() -> None:
    """The same rule for cross hedge positions: long 100, close sell-long 60 rests ⇒ availPos 40;
    close sell-long 41 refused, 40 accepted. A buy-long (opening) order is no close order."""
    h = _hedged("cross")
    only(events_of(_close_order(h, "sell", "long", "60", "62000", "c1", "cross"), ev.OrderRested))
    only(events_of(_close_order(h, "buy", "long", "10", "59000", "o1", "cross"), ev.OrderRested))
    assert _avail(h, "long") == (D(100), D(40))
    assert rejection(_close_order(h, "sell", "long", "41", "62000", "c2", "cross")).reason == (
        "exceeds_available_to_close"
    )
    only(events_of(_close_order(h, "sell", "long", "40", "62000", "c3", "cross"), ev.OrderRested))
    assert _avail(h, "long") == (D(100), D(0))


def test_net_mode_reduce_only_orders_are_pending_close_orders() -> None:
    """Net mode, isolated long 100: reduce-only sell 60 rests ⇒ availPos 40; reduce-only sell 50
    refused (50 > 40); a plain sell 150 (may flip: no close order) is accepted and changes
    nothing of availPos."""
    h = _listed()
    _fund(h, "A", "mm")
    h.ok("set_leverage", acct="A", instId=SWAP, mgnMode="isolated", lever="10")
    _open(h, "A", "buy", "100", "60000", "isolated")
    assert dec(h.position("A", SWAP).availPos) == D(100)
    rested = h.order("A", "sell", "60", "62000", inst=SWAP, td_mode="isolated", reduceOnly=True, cl_ord_id="r1")
    only(events_of(rested, ev.OrderRested))
    assert dec(h.position("A", SWAP).availPos) == D(40)
    refused = rejection(h.order("A", "sell", "50", "62000", inst=SWAP, td_mode="isolated", reduceOnly=True))
    assert (refused.reason, refused.message) == (
        "exceeds_available_to_close",
        "sz 50 is above the availPos 40 (position 100 less 60 in pending close orders)",
    )
    only(events_of(h.order("A", "sell", "150", "65000", inst=SWAP, td_mode="isolated"), ev.OrderRested))
    assert dec(h.position("A", SWAP).availPos) == D(40)


def test_close_position_cancels_pending_close_orders_then_closes_everything() -> None:
    """Hedge mode, isolated long 100 with a close sell-long 30 resting and mm bidding 100 at
    59,000: ``close_position`` cancels the 30 (``close_position``, remaining 30) and sells the
    whole 100 at market."""
    h = _hedged("isolated")
    only(events_of(_close_order(h, "sell", "long", "30", "62000", "c1"), ev.OrderRested))
    h.order("mm", "buy", "100", "59000", inst=SWAP, td_mode="cross", cl_ord_id="bid")
    out = h.ok("close_position", acct="A", instId=SWAP, mgnMode="isolated", posSide="long")
    canceled = only(events_of(out, ev.OrderCanceled))
    assert (canceled.clOrdId, canceled.remaining, canceled.reason) == ("c1", D(30), "close_position")
    trade = only(events_of(out, ev.Traded))
    assert (trade.takerAcct, trade.takerSide, trade.sz, trade.px) == ("A", "sell", D(100), D(59000))
    assert [p.posSide for p in h.positions("A")] == ["short"]
