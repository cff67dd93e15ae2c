"""A net-mode perpetual flip is a full close followed by an open (issue 11, bug 1).

Seed 001 ("Non-Reduce-Only: Closes position and may open reverse position") and
``docs/decisions.md`` 21a: an order through zero first **closes** the position in full — an
isolated one releases its margin net of the realised P&L and of the closed contracts' own fee —
and the rest **opens** the other way at the fill price, paying its own initial margin (and its
open loss against the mark, decision 31a) like any opening order. Before the fix the closing
branch never ran for a flip (the size never passed through zero): the new position kept the
old margin and P&L (``pnl_realised.released`` 0) — the review's "margin 533 where imr is 183".

Listing as ``tests/test_perpetuals.py``: ``BTC-USDT-SWAP``, ``ctVal`` 0.01 (100 contracts =
1 BTC), tick 0.1, lot 1, maker fee 0, taker fee 0.05 %, tier 1 up to 1,000 contracts (m 1 %,
so ``m + f`` = 0.0105). Expected figures by hand in each docstring; everything is read from
the events and the risk view after commands.
"""

from __future__ import annotations

from decimal import Decimal

from helpers import Harness, dec, events_of, only
from hypothesis import given, settings
from hypothesis import strategies as st
from test_perpetuals import SWAP, _fund, _listed, _open, _usdt

from events import journal as ev

D = Decimal


def _isolated_long(mark: str = "60000") -> Harness:
    """alice: isolated 10×, long 100 at 60,000 as maker (fee 0): M = 100·0.01·60,000/10 = 6,000."""
    h = _listed(mark)
    _fund(h, "alice", "mm", "mm2")
    h.ok("set_leverage", acct="alice", instId=SWAP, mgnMode="isolated", lever="10")
    _open(h, "alice", "buy", "100", "60000", "isolated")
    assert dec(h.position("alice", SWAP).margin) == D(6000)
    return h


def test_issue_example_margin_533_where_imr_is_183() -> None:
    """The review's numbers: isolated 10× long 5 contracts at 60,000 (M = 5·0.01·60,000/10 =
    300), then sell 8 at 61,000 as maker (fee 0; above the mark 60,000: no open loss).

    close 5: P&L 5·0.01·1,000 = 50, released 300 + 50 = **350**;
    open 3 short at 61,000: IM 3·0.01·61,000/10 = **183**, the margin of the new position.
    The bug kept the long's margin and P&L in it: 300 + 50 + 183 = 533 against imr 183, and
    liqPx (0.03·61,000 + 533)/(0.03·1.0105) = 2,363/0.030315 = 77,948.21 instead of
    (1,830 + 183)/0.030315 = 66,402.77090549 (both checked on the engine before and after)."""
    h = _listed()
    _fund(h, "alice", "mm", "mm2")
    h.ok("set_leverage", acct="alice", instId=SWAP, mgnMode="isolated", lever="10")
    _open(h, "alice", "buy", "5", "60000", "isolated")
    flip = _open(h, "alice", "sell", "8", "61000", "isolated", against="mm2")
    pnl = only([e for e in events_of(flip, ev.PnlRealised) if e.acct == "alice"])
    assert (pnl.amt, pnl.released) == (D(50), D(350))
    pos = h.position("alice", SWAP)
    assert (dec(pos.pos), dec(pos.margin), dec(pos.imr), pos.liqPx) == (D(-3), D(183), D(183), "66402.77090549")


def test_isolated_flip_as_maker_releases_the_old_margin_and_posts_the_new_one() -> None:
    """alice sells 150 at 61,000 as maker (fee 0), mark 60,000 (a sell above the mark: no open
    loss).

    close 100: P&L 100·0.01·(61,000 − 60,000) = 1,000; released M + P&L − fee = 6,000 + 1,000
    − 0 = **7,000** to her cash;
    open 50 short at 61,000: IM 50·0.01·61,000/10 = **3,050** posted (``open``) from what the
    order froze; the new position's margin = its imr = 3,050 (the bug showed 6,000 + 1,000 +
    3,050 = 10,050).
    Cash: she had 1,000,000 − 6,000 = 994,000 free; the order froze 150·0.01·61,000/10 = 9,150
    (its whole size, decision 31a), 3,050 of it posted, the rest returned ⇒ 994,000 + 7,000 −
    3,050 = 997,950.
    View at mark 60,000: upl −50·0.01·(60,000 − 61,000) = +500, uplRatio 500/3,050 =
    0.16393442; MR (3,050 + 500)/(50·0.01·60,000·0.0105) = 3,550/315 = 11.26984126;
    liqPx (short) = (Q·E + M)/(Q·(1 + m + f)) = (30,500 + 3,050)/(0.5·1.0105) = 33,550/0.50525
    = 66,402.77090549 (down)."""
    h = _isolated_long()
    cash = _usdt(h, "alice")
    flip = _open(h, "alice", "sell", "150", "61000", "isolated", against="mm2")
    pnl = only([e for e in events_of(flip, ev.PnlRealised) if e.acct == "alice"])
    assert (pnl.posSide, pnl.amt, pnl.released) == ("net", D(1000), D(7000))
    posted = [(e.amt, e.reason) for e in events_of(flip, ev.PositionMarginChanged) if e.acct == "alice"]
    assert posted == [(D(3050), "open")]
    assert _usdt(h, "alice") - cash == D(7000) - D(3050)
    assert h.bal("alice", "USDT").frozen == 0
    pos = h.position("alice", SWAP)
    assert (dec(pos.pos), dec(pos.avgPx), dec(pos.margin), dec(pos.imr)) == (D(-50), D(61000), D(3050), D(3050))
    assert (pos.upl, pos.uplRatio, pos.mgnRatio) == ("500", "0.16393442", "11.26984126")
    assert pos.liqPx == "66402.77090549"


def test_isolated_flip_as_taker_each_part_pays_its_own_fee() -> None:
    """mm2 rests a bid of 150 at 59,000; alice sells 150 at market (taker, 0.05 %), mark 60,000.

    fee of the fill: 150·0.01·59,000·0.0005 = 44.25, of which the closed 100 contracts' own
    fee is 100·0.01·59,000·0.0005 = 29.5 and the opened 50's 14.75.
    close 100: P&L 100·0.01·(59,000 − 60,000) = −1,000; released 6,000 − 1,000 − 29.5 =
    **4,970.5** (as ``close_position`` of the whole long would return);
    open 50 short at 59,000 below the mark 60,000: IM at the assumed price max(59,000, 60,000)
    = 60,000: 50·0.01·60,000/10 = 3,000, plus the open loss 0.5·(60,000 − 59,000) = 500 ⇒
    **3,500** posted; the fold then takes the whole fee 44.25 from the margin, 29.5 of which
    the release left behind ⇒ margin 3,500 − 14.75 = **3,485.25**, what a plain market sell
    of 50 at 59,000 would leave.
    Cash: 4,970.5 − 3,500 = +1,470.5."""
    h = _isolated_long()
    h.order("mm2", "buy", "150", "59000", inst=SWAP, td_mode="cross", cl_ord_id="bid")
    cash = _usdt(h, "alice")
    flip = h.order("alice", "sell", "150", None, inst=SWAP, ord_type="market", td_mode="isolated")
    trade = only(events_of(flip, ev.Traded))
    assert (trade.takerAcct, trade.sz, trade.px, trade.takerFee) == ("alice", D(150), D(59000), D("44.25"))
    pnl = only([e for e in events_of(flip, ev.PnlRealised) if e.acct == "alice"])
    assert (pnl.amt, pnl.released) == (D(-1000), D("4970.5"))
    posted = [(e.amt, e.reason) for e in events_of(flip, ev.PositionMarginChanged) if e.acct == "alice"]
    assert posted == [(D(3500), "open")]
    assert _usdt(h, "alice") - cash == D("1470.5")
    pos = h.position("alice", SWAP)
    assert (dec(pos.pos), dec(pos.avgPx), dec(pos.margin)) == (D(-50), D(59000), D("3485.25"))
    assert not events_of(flip, ev.InsuranceFundCovered)


def test_isolated_flip_ends_the_closed_positions_margin_call() -> None:
    """alice's long at mark 56,000: MR (6,000 − 4,000)/(56,000·0.0105) = 2,000/588 = 3.401 —
    at 55,800: (6,000 − 4,200)/585.9 = 3.0722; at 55,700: 1,700/584.85 = 2.9067 ≤ 3 ⇒ a margin
    call on the position. She then sells 150 at 55,700 as maker: the long is closed
    (P&L −4,300, released 6,000 − 4,300 = 1,700), its call ends with it
    (``margin_call_cleared`` with no ratio, as at a release), and the new short of 50 at
    55,700 has margin 50·0.01·55,700/10 = 2,785, MR 2,785/(27,850·0.0105) = 9.52 — no call."""
    h = _isolated_long()
    call = h.mark("55700", inst=SWAP)
    assert only(events_of(call, ev.MarginCallRaised)).acct == "alice"
    flip = _open(h, "alice", "sell", "150", "55700", "isolated", against="mm2")
    pnl = only([e for e in events_of(flip, ev.PnlRealised) if e.acct == "alice"])
    assert (pnl.amt, pnl.released) == (D(-4300), D(1700))
    cleared = only([e for e in events_of(flip, ev.MarginCallCleared) if e.acct == "alice"])
    assert (cleared.instId, cleared.posSide, cleared.mgnRatio) == (SWAP, "net", None)
    assert not events_of(flip, ev.MarginCallRaised)
    pos = h.position("alice", SWAP)
    assert (dec(pos.pos), dec(pos.margin), pos.mgnRatio) == (D(-50), D(2785), "9.52380952")


def test_cross_flip_realises_to_cash_and_opens_at_the_fill_price() -> None:
    """Cross net mode (no margin of its own): buy 100 at 60,000, sell 150 at 61,000 (maker,
    fee 0) ⇒ P&L 1,000 to the cash, released 0 (nothing is held by a cross position); short 50
    at 61,000 whose imr is 50·0.01·P/L at the mark, 75× (the default maxLever): at 60,000
    30,000/75 = 400."""
    h = _listed()
    _fund(h, "A", "mm", "mm2")
    _open(h, "A", "buy", "100", "60000", "cross")
    cash = _usdt(h, "A")
    flip = _open(h, "A", "sell", "150", "61000", "cross", against="mm2")
    pnl = only([e for e in events_of(flip, ev.PnlRealised) if e.acct == "A"])
    assert (pnl.amt, pnl.released) == (D(1000), D(0))
    assert _usdt(h, "A") - cash == D(1000)
    pos = h.position("A", SWAP)
    assert (dec(pos.pos), dec(pos.avgPx), pos.margin, dec(pos.imr)) == (D(-50), D(61000), "", D(400))


def _flip_or_two_orders(
    q0: int, q1: int, entry: str, px: str, mark: str, lever: str, *, split: bool
) -> tuple[str, str, str, Decimal]:
    """alice isolated long ``q0`` at ``entry``, then at ``mark`` sells ``q0 + q1`` at ``px`` as
    maker — in one order (a flip) or, ``split``, in two (a full close, then an open of ``q1``).
    Returns her position's (pos, avgPx, margin) and her cash."""
    h = _listed(entry)
    _fund(h, "alice", "mm", "mm2")
    h.ok("set_leverage", acct="alice", instId=SWAP, mgnMode="isolated", lever=lever)
    # the counterparty's size cap at 20x is 25,000 contracts (at the default 75x: 1,000)
    h.ok("set_leverage", acct="mm2", instId=SWAP, mgnMode="cross", lever="20")
    _open(h, "alice", "buy", str(q0), entry, "isolated")
    h.mark(mark, inst=SWAP)
    for sz in (q0, q1) if split else (q0 + q1,):
        _open(h, "alice", "sell", str(sz), px, "isolated", against="mm2")
    pos = h.position("alice", SWAP)
    return pos.pos, pos.avgPx, pos.margin, _usdt(h, "alice")


@settings(max_examples=40, deadline=None, database=None)
@given(
    q0=st.integers(1, 900),
    q1=st.integers(1, 900),
    entry=st.integers(55_000, 65_000),
    move=st.integers(-400, 400),
    gap=st.integers(-200, 200),
    lever=st.sampled_from(["2", "5", "10", "20"]),
)
def test_property_a_flip_is_a_full_close_then_an_open(
    q0: int, q1: int, entry: int, move: int, gap: int, lever: str
) -> None:
    """Whatever the sizes, prices and leverage (the close loses at most 400/55,000 < 1/20 of the
    notional, within its margin): one order through zero leaves alice with the same position,
    margin and cash as closing in full and then opening the rest in a second order — the
    flip's open part pays its own initial margin and open loss against the mark, and nothing
    of the closed position's margin or P&L stays in the new one (maker fills: fee 0)."""
    px, mark = str(entry + move), str(entry + move + gap)
    one = _flip_or_two_orders(q0, q1, str(entry), px, mark, lever, split=False)
    two = _flip_or_two_orders(q0, q1, str(entry), px, mark, lever, split=True)
    assert one == two
    assert dec(one[0]) == -q1


def test_regression_a_maker_rebate_on_a_flip_never_takes_the_margin_below_zero() -> None:
    """Found by ``test_static_marks_never_liquidate``: with a maker **rebate** (maker fee
    −0.02 %, ``ctVal`` 0.001) bob's isolated 20× short of 20 at 48,000 (M = 20·0.001·48,000/20
    = 48, plus the rebate 960·0.0002 = 0.192 ⇒ 48.192) flips by a resting buy of 40 at 48,000.
    The closed 20's own fee is −0.192: releasing M + P&L − fee = 48.384 would take the margin to −0.192 before the
    ``traded`` brings the rebate — a shortfall the platform wrote off with the marks standing
    still. The release is capped at what the margin holds (48.192 + 0); the new short of 20
    posts 48 and receives the whole rebate 0.384 ⇒ margin **48.384**, no fund, no write-off."""
    h = Harness()
    h.list_asset("USDT", 8)
    h.ok(
        "list_instrument", instId=SWAP, instType="SWAP", settleCcy="USDT", ctVal="0.001", tickSz="0.1", lotSz="1",
        minSz="1", makerFee="-0.0002", takerFee="0.0005", maxLever="20",
        tiers=[{"tier": 1, "maxSz": "10000", "mmr": "0.01", "imr": "0.05", "maxLever": "20"}],
    )  # fmt: skip
    h.mark("48000", inst=SWAP)
    _fund(h, "bob", "alice")
    h.order("bob", "sell", "20", "48000", inst=SWAP, td_mode="isolated")
    h.order("alice", "buy", "20", None, inst=SWAP, ord_type="market", td_mode="cross")
    assert dec(h.position("bob", SWAP).margin) == D("48.192")
    h.order("bob", "buy", "40", "48000", inst=SWAP, td_mode="isolated")
    flip = h.order("alice", "sell", "40", None, inst=SWAP, ord_type="market", td_mode="cross")
    pnl = only([e for e in events_of(flip, ev.PnlRealised) if e.acct == "bob"])
    assert (pnl.amt, pnl.released) == (D(0), D("48.192"))
    assert not events_of(flip, ev.DebtWrittenOff)
    assert not events_of(flip, ev.InsuranceFundCovered)
    pos = h.position("bob", SWAP)
    assert (dec(pos.pos), dec(pos.margin)) == (D(20), D("48.384"))
