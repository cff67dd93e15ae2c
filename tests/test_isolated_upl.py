"""``upl`` and ``uplRatio`` of an isolated spot position after a partial close (issue 11, bug 3).

Seed 001, "Margin Position Display": "Floating P&L | Unrealized profit/loss | upl" and
"Floating P&L % | Floating P&L / Initial Margin | uplRatio". After a partial close the view's
``imr`` (the initial margin posted, scaled down to the remaining size) belongs to the remaining
position, so ``upl`` must too: a closing fill realises its share ``closed/qty`` of the floating
P&L at the fill price, less its fee; that part stays in the position (it repaid debt) but is no
longer floating (``docs/decisions.md`` 32b). Before the fix ``upl`` stayed cumulative while
``imr`` was scaled — the review's "79.5 % where 39.8 % is right". A close at the mark therefore
leaves ``uplRatio`` where it was.

Listing: ``Harness.standard_listing`` (USDT 16 dp, BTC 8 dp, BTC-USDT maker fee 0, taker fee
0.1 %, §1.3 tiers, maxLever 10) unless stated; the golden ``isolated_partial`` commands for the
partial liquidation.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from helpers import Harness, dec, div, events_of, only, run_lines
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from events import journal as ev
from projections.risk_view import build_view

D = Decimal


def _long(ccy: str) -> Harness:
    """alice: isolated 10× long 1 BTC at 100,000 as maker (fee 0), margin ``ccy``: quote margin
    1 × 100,000/10 = 10,000 USDT, base margin 1/10 = 0.1 BTC; debt 100,000 USDT."""
    h = Harness()
    h.standard_listing()
    h.mark("100000")
    h.ok("deposit", acct="alice", ccy=ccy, amt="10000" if ccy == "USDT" else "0.1")
    h.ok("deposit", acct="mm", ccy="BTC", amt="10")
    h.ok("deposit", acct="mm", ccy="USDT", amt="1000000")
    h.order("alice", "buy", "1", "100000", td_mode="isolated", ccy=ccy)
    h.order("mm", "sell", "1", "100000")
    assert dec(h.position("alice").liab) == D(100000)
    return h


def test_partial_close_quote_margin_taker_keeps_the_remaining_upl_ratio() -> None:
    """Quote margin. At mark 104,000: upl (0 − 100,000) + 1 × 104,000 = 4,000, uplRatio
    4,000/10,000 = 0.4.

    alice sells 0.5 at 104,000 as taker (fee 0.1 % of 52,000 = 52 USDT): the proceeds net of
    the fee, 51,948, repay ⇒ debt 48,052, BTC 0.5; imr 10,000 × 0.5/1 = 5,000.
    The closed half realises 0.5 × 4,000 − 52 = 1,948 (kept in the position: it repaid debt);
    the remaining half's upl = (−48,052 + 0.5 × 104,000) − 1,948 = 3,948 − 1,948 = **2,000**
    = 0.5 × (104,000 − 100,000), uplRatio 2,000/5,000 = **0.4** (the bug: 3,948/5,000 =
    0.7896). At mark 102,000: upl 0.5 × 2,000 = **1,000**, uplRatio **0.2**; the margin stays
    10,000 and the ratio counts everything the position holds."""
    h = _long("USDT")
    h.mark("104000")
    pos = h.position("alice")
    assert (dec(pos.upl), pos.uplRatio, dec(pos.imr)) == (D(4000), "0.4", D(10000))
    h.order("mm", "buy", "0.5", "104000")
    out = h.order("alice", "sell", "0.5", "104000", td_mode="isolated")
    trade = only(events_of(out, ev.Traded))
    assert (trade.takerAcct, trade.takerFee) == ("alice", D(52))
    pos = h.position("alice")
    assert (dec(pos.pos), dec(pos.liab), dec(pos.imr), dec(pos.margin)) == (D("0.5"), D(48052), D(5000), D(10000))
    assert (dec(pos.upl), pos.uplRatio) == (D(2000), "0.4")
    h.mark("102000")
    pos = h.position("alice")
    assert (dec(pos.upl), pos.uplRatio) == (D(1000), "0.2")
    # MR = (0.5 × 102,000 + 10,000 − 48,052)/(48,052 × (1.03 × 1.001 − 1)) = 12,948/1,491.05356
    assert pos.mgnRatio.startswith("8.68379")


def test_partial_close_base_margin_upl_in_base() -> None:
    """Base margin (0.1 BTC), upl in BTC. At 104,000: 4,000/104,000 = 0.03846153 BTC, uplRatio
    0.03846153…/0.1 = 0.38461538. alice rests a sell of 0.5 at 104,000 and mm buys it (alice
    maker, fee 0): debt 48,000, imr 0.05 BTC; the closed half realises 0.5 × 4,000 = 2,000 USDT;
    the remaining upl = (−48,000 + 52,000 − 2,000)/104,000 = 2,000/104,000 = **0.01923076** BTC
    (8 dp down), uplRatio 0.01923076…/0.05 = **0.38461538** again (the bug: 0.76923076)."""
    h = _long("BTC")
    h.mark("104000")
    pos = h.position("alice")
    assert (pos.upl, pos.uplRatio, pos.imr) == ("0.03846153", "0.38461538", "0.1")
    h.order("alice", "sell", "0.5", "104000", td_mode="isolated")
    h.order("mm", "buy", "0.5", "104000")
    pos = h.position("alice")
    assert (dec(pos.liab), pos.imr) == (D(48000), "0.05")
    assert (pos.upl, pos.uplRatio) == ("0.01923076", "0.38461538")


def test_partial_close_at_a_loss_and_interest_after_it() -> None:
    """Quote margin, mark 97,000: upl −3,000, uplRatio −0.3. alice sells 0.25 at 97,000 as maker
    (fee 0): r = 0.25 ⇒ the closed quarter realises −750; debt 100,000 − 24,250 = 75,750; imr
    7,500; upl (−75,750 + 0.75 × 97,000) + 750 = −3,000 + 750 = **−2,250** = 0.75 × (−3,000),
    uplRatio **−0.3**. The remaining position bears the interest that accrues after: USDT at
    0.24 % a day = 0.0001 an hour on 75,750 ⇒ 7.575 per hour ⇒ upl −2,257.575."""
    h = _long("USDT")
    h.ok("set_interest_rate", ccy="USDT", dailyRate="0.0024")
    h.mark("97000")
    assert (dec(h.position("alice").upl), h.position("alice").uplRatio) == (D(-3000), "-0.3")
    h.order("alice", "sell", "0.25", "97000", td_mode="isolated")
    h.order("mm", "buy", "0.25", "97000")
    pos = h.position("alice")
    assert (dec(pos.liab), dec(pos.imr), dec(pos.upl), pos.uplRatio) == (D(75750), D(7500), D(-2250), "-0.3")
    h.accrue()
    pos = h.position("alice")
    assert (dec(pos.interest), dec(pos.upl)) == (D("7.575"), D("-2257.575"))


def _isolated_partial(lines: int) -> list[object]:
    path = Path(__file__).parent / "golden" / "isolated_partial.commands.jsonl"
    engine, _ = run_lines(path.read_bytes().splitlines()[:lines])
    return [p for p in build_view(engine.state).positions if p.acct == "alice"]


def test_partial_liquidation_steps_keep_the_remaining_upl_ratio() -> None:
    """The golden ``isolated_partial`` (fees 0): alice isolated long 25 BTC at 100,000, quote
    margin 500,000 at 5×, debt 2,500,000.

    Line 15, mark 90,000: the liquidation sells 6.25 at 80,000 (debt → 2,000,000, BTC 18.75,
    imr 500,000 × 18.75/25 = 375,000). The closed quarter realises 0.25 × (25 × 80,000 −
    2,500,000) = −125,000; the rest's upl = (18.75 × 90,000 − 2,000,000) + 125,000 =
    **−187,500** = 18.75 × (90,000 − 100,000), uplRatio **−0.5**, what the whole position showed
    at 90,000 before the step (25 × −10,000/500,000) — the bug: −312,500/375,000 = −0.8333.
    Line 17, mark 85,000: sells 12.5 at 80,000 (r = 2/3; debt 1,000,000, BTC 6.25, imr
    125,000): realised 2/3 × (18.75 × 80,000 − 2,000,000 + 125,000) = 2/3 × −375,000 =
    −250,000; upl (6.25 × 85,000 − 1,000,000) + 375,000 = **−93,750** = 6.25 × −15,000,
    uplRatio **−0.75** (the bug: −468,750/125,000 = −3.75)."""
    (pos,) = _isolated_partial(15)
    assert (dec(pos.pos), dec(pos.liab), dec(pos.imr)) == (D("18.75"), D(2000000), D(375000))
    assert (dec(pos.upl), pos.uplRatio) == (D(-187500), "-0.5")
    (pos,) = _isolated_partial(17)
    assert (dec(pos.pos), dec(pos.liab), dec(pos.imr)) == (D("6.25"), D(1000000), D(125000))
    assert (dec(pos.upl), pos.uplRatio) == (D(-93750), "-0.75")


@settings(max_examples=40, deadline=None, database=None)
@given(
    mark=st.integers(95_000, 105_000),
    closed=st.integers(1, 99_000_000),
    ccy=st.sampled_from(["USDT", "BTC"]),
)
def test_property_a_close_at_the_mark_keeps_the_upl_ratio(mark: int, closed: int, ccy: str) -> None:
    """Any partial close at the mark (alice maker, fee 0) of ``closed`` satoshi of her 1 BTC
    long that leaves debt leaves ``uplRatio`` where it was and ``upl`` scaled by the size left —
    up to rounding: the 8 places shown, and ``imr`` rounded up at the margin currency's
    precision ``u`` (BTC 1e-8, USDT 1e-16), which moves the ratio by up to ``|ratio|·u/imr``."""
    h = _long(ccy)
    h.mark(str(mark))
    before = h.position("alice")
    sz = format(D(closed).scaleb(-8), "f")
    assume(D(sz) * mark < 100_000)  # a sale that repays the whole debt releases the position
    h.order("alice", "sell", sz, str(mark), td_mode="isolated")
    h.order("mm", "buy", sz, str(mark))
    after = h.position("alice")
    unit = D("1e-8") if ccy == "BTC" else D("1e-16")
    ratio = dec(before.uplRatio)
    assert abs(dec(after.uplRatio) - ratio) <= D("2e-8") + div(abs(ratio) * unit, dec(after.imr))
    left = 1 - D(sz)
    assert abs(dec(after.upl) - dec(before.upl) * left) <= 2 * unit
