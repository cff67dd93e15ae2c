"""``close_position`` (market close all) and reduce-only orders on cross SPOT positions.

Setup shared by the tests: standard BTC-USDT (maker 0, taker 0.1 %, MMR 3 %, IMR 10 %), a market
maker ``mm``; alice buys 1 BTC @ 100,000 cross as maker on 10,000 USDT, so she holds 1 BTC and
owes 90,000 USDT.
"""

from __future__ import annotations

from decimal import Decimal as D

from helpers import Harness, events_of, rejection

from events import journal as ev


def _long(extra_btc: str | None = None) -> Harness:
    h = Harness()
    h.standard_listing()
    h.mark("100000")
    h.ok("deposit", acct="mm", ccy="BTC", amt="10")
    h.ok("deposit", acct="mm", ccy="USDT", amt="2000000")
    h.ok("deposit", acct="alice", ccy="USDT", amt="10000")
    if extra_btc:
        h.ok("deposit", acct="alice", ccy="BTC", amt=extra_btc)
    h.order("alice", "buy", "1", "100000", td_mode="cross", cl_ord_id="long")
    h.order("mm", "sell", "1", "100000")
    assert h.bal("alice", "USDT").liab == D(90000)
    return h


def _close(h: Harness) -> ev.Outcome:
    return h.send("close_position", acct="alice", instId="BTC-USDT", mgnMode="cross")


def test_close_in_profit_sells_the_available_to_close_and_repays_everything() -> None:
    h = _long()
    h.mark("110000")
    h.order("mm", "buy", "1.5", "110000")
    out = _close(h)
    # Equity 20,000 ≥ IM 9,000, so b = IMR 10 %: available 90,000 × 1.1 / 110,000 = 0.9 BTC.
    sale = [t for t in events_of(out, ev.Traded) if t.takerAcct == "alice"]
    assert [(t.px, t.sz, t.takerFee) for t in sale] == [(D(110000), D("0.9"), D(99))]
    assert [(r.interest, r.principal, r.reason) for r in events_of(out, ev.Repaid)] == [(0, D(90000), "close")]
    assert events_of(out, ev.PositionClosed)
    assert h.bal("alice", "USDT").liab == 0
    assert h.bal("alice", "USDT").cash == D("8901")  # 99,000 − 99 fee − 90,000
    assert h.bal("alice", "BTC").cash == D("0.1")
    assert h.positions("alice") == []


def test_close_at_a_loss_leaves_the_rest_as_debt() -> None:
    """Seed 000: closing at a loss may not pay off the liability; the rest stays as debt."""
    h = _long(extra_btc="0.5")  # 1.5 BTC held: the extra 0.5 keeps the account solvent
    h.mark("95000")
    h.order("mm", "buy", "1", "80000")  # a thin book: the only bid is far below the mark
    out = _close(h)
    sale = [t for t in events_of(out, ev.Traded) if t.takerAcct == "alice"]
    assert [(t.px, t.sz) for t in sale] == [(D(80000), D(1))]
    assert [r.principal for r in events_of(out, ev.Repaid)] == [D(79920)]  # 80,000 − 80 fee
    assert not events_of(out, ev.PositionClosed)
    assert h.bal("alice", "USDT").liab == D(10080)
    assert h.bal("alice", "BTC").cash == D("0.5")
    assert not events_of(out, ev.LiquidationStarted)


def test_close_a_short_buys_back_the_debt_net_of_fee() -> None:
    h = Harness()
    h.standard_listing()
    h.mark("100000")
    h.ok("deposit", acct="mm", ccy="BTC", amt="10")
    h.ok("deposit", acct="mm", ccy="USDT", amt="2000000")
    h.ok("deposit", acct="alice", ccy="USDT", amt="20000")
    h.order("mm", "buy", "0.2", "100000")
    h.order("alice", "sell", "0.2", ord_type="market", td_mode="cross")
    assert h.bal("alice", "BTC").liab == D("0.2")
    h.mark("90000")
    h.order("mm", "sell", "1", "90000")
    out = _close(h)
    # 0.2 / 0.999 = 0.200200200… → 0.20020021 BTC; fee 0.00020021 BTC; 0.2 BTC received.
    buy = [t for t in events_of(out, ev.Traded) if t.takerAcct == "alice"]
    assert [(t.sz, t.takerFee) for t in buy] == [(D("0.20020021"), D("0.00020021"))]
    assert [(r.ccy, r.principal) for r in events_of(out, ev.Repaid)] == [("BTC", D("0.2"))]
    assert events_of(out, ev.PositionClosed)
    assert h.bal("alice", "BTC").liab == 0
    assert h.bal("alice", "USDT").cash == D("21961.9811")  # 20,000 + 19,980 − 18,018.0189


def test_close_is_refused_by_the_sell_guard_and_changes_nothing() -> None:
    h = _long()
    h.order("mm", "buy", "0.1", "100000")
    h.order("mm", "buy", "5", "90000")
    out = _close(h)
    # 0.99 BTC to sell: VWAP (0.1·100,000 + 0.89·90,000)/0.99 = 91,010 < 95 % of 100,000.
    assert rejection(out).reason == "sell_price_guard"
    assert h.bal("alice", "USDT").liab == D(90000)
    assert h.bal("alice", "BTC").cash == D(1)


def test_close_without_a_position_is_refused() -> None:
    h = _long()
    out = h.send("close_position", acct="mm", instId="BTC-USDT", mgnMode="cross")
    assert rejection(out).reason == "no_position"


def test_reduce_only_orders_may_only_shrink_the_position() -> None:
    h = _long()

    def reduce(side: str, sz: str, td_mode: str = "cross") -> ev.Outcome:
        return h.send(
            "place_order",
            acct="alice",
            instId="BTC-USDT",
            clOrdId=f"r{h.n}",
            side=side,
            ordType="limit",
            px="101000" if side == "sell" else "99000",
            sz=sz,
            tdMode=td_mode,
            reduceOnly=True,
        )

    assert rejection(reduce("buy", "0.1")).reason == "reduce_only_would_increase"
    assert rejection(reduce("sell", "2")).reason == "reduce_only_exceeds_position"
    assert rejection(reduce("sell", "0.5", td_mode="cash")).reason == "invalid_reduceOnly"
    assert events_of(reduce("sell", "0.5"), ev.OrderRested)


def test_regression_a_short_close_that_would_borrow_an_unpriced_quote_is_refused() -> None:
    """Fuzz finding: ETH-USDT and ETH-BTC listed, no BTC price. dave (USDT only) shorts ETH on
    ETH-BTC (cross: the ETH debt is priced by ETH-USDT); buying the 0.082 ETH back grossed up by
    the taker fee costs a little more BTC than the sale brought, and the fill borrowed BTC, which
    has no mark: the evaluation raised
    ``AssertionError: debt in BTC without a mark price``. The close is refused instead
    (``no_mark_price``, decision 6) and changes nothing."""
    h = Harness()
    for ccy in ("USDT", "BTC", "ETH"):
        h.list_asset(ccy, 8)
    h.list_spot("ETH-USDT", tick="0.01", lot="0.001", maker_fee="0.0008")
    h.mark("3000", inst="ETH-USDT")
    h.list_spot("ETH-BTC", tick="0.00001", lot="0.001", min_sz="0.01", maker_fee="0.0008")
    h.ok("deposit", acct="mm", ccy="BTC", amt="200")
    h.ok("deposit", acct="mm", ccy="ETH", amt="3000")
    h.ok("deposit", acct="dave", ccy="USDT", amt="100000")
    h.order("mm", "buy", "0.082", "0.125", inst="ETH-BTC", td_mode="cross")
    sold = h.order("dave", "sell", "0.161", "0.12499", inst="ETH-BTC", td_mode="cross")
    assert events_of(sold, ev.Traded)
    h.order("mm", "sell", "12.931", "0.1238", inst="ETH-BTC", td_mode="cross")
    out = h.send("close_position", acct="dave", instId="ETH-BTC", mgnMode="cross")
    refusal = rejection(out)
    assert refusal.reason == "no_mark_price" and "BTC" in refusal.message
    assert not h.bal("dave", "BTC").liab
