"""Matching, order types, cancels, validation, fees and cash funds — all through commands.

Each test writes commands as JSON lines, steps them through ``Engine.step`` and reads the
outcome's events and the resulting state; nothing reaches into the book or the balances except
to read them.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from helpers import Harness, command, event_types, events_of, line, only, rejection

from engine.core import snapshot
from events import journal as ev
from events.codec import BadCommand, decode_command_json

D = Decimal


def _book() -> Harness:
    """BTC-USDT, tick 0.1, lot 0.0001, minSz 0.001; maker 0, taker 0.1 %; three funded accounts."""
    h = Harness()
    h.standard_listing(usdt_decimals=8, tick="0.1", lot="0.0001", min_sz="0.001")
    for acct in ("alice", "bob", "carol"):
        h.ok("deposit", acct=acct, ccy="USDT", amt="1000000")
        h.ok("deposit", acct=acct, ccy="BTC", amt="100")
    return h


def _trades(outcome: ev.Outcome) -> list[tuple[str, str, Decimal, Decimal]]:
    """``(maker, taker, px, sz)`` of every trade of an outcome."""
    return [(t.makerAcct, t.takerAcct, t.px, t.sz) for t in events_of(outcome, ev.Traded)]


def _open_orders(h: Harness) -> set[tuple[str, str]]:
    return {(o.acct, o.cl_ord_id) for o in h.state.orders.values()}


# --- priority --------------------------------------------------------------------------------


def test_same_price_fills_in_arrival_order() -> None:
    h = _book()
    h.order("bob", "sell", "1", "100", cl_ord_id="first")
    h.order("carol", "sell", "1", "100", cl_ord_id="second")
    out = h.order("alice", "buy", "1.5", "100", ord_type="ioc")
    assert _trades(out) == [("bob", "alice", D(100), D(1)), ("carol", "alice", D(100), D("0.5"))]
    assert h.state.orders[2].remaining == D("0.5")  # carol's order keeps its place with 0.5 left
    assert _open_orders(h) == {("carol", "second")}


def test_better_price_fills_first_whatever_the_arrival() -> None:
    h = _book()
    h.order("bob", "sell", "1", "101", cl_ord_id="worse")
    h.order("carol", "sell", "1", "100.5", cl_ord_id="better")
    out = h.order("alice", "buy", "2", "101", ord_type="ioc")
    assert _trades(out) == [("carol", "alice", D("100.5"), D(1)), ("bob", "alice", D(101), D(1))]
    # Bids: the highest first.
    h.order("bob", "buy", "1", "99", cl_ord_id="low")
    h.order("carol", "buy", "1", "99.5", cl_ord_id="high")
    out = h.order("alice", "sell", "2", "99", ord_type="ioc")
    assert _trades(out) == [("carol", "alice", D("99.5"), D(1)), ("bob", "alice", D(99), D(1))]


def test_fills_are_at_the_maker_price() -> None:
    h = _book()
    h.order("bob", "sell", "1", "100", cl_ord_id="ask")
    out = h.order("alice", "buy", "1", "105")
    assert _trades(out) == [("bob", "alice", D(100), D(1))]
    # The buyer froze 105 at placement; the fill releases it all and charges 100.
    assert h.bal("alice", "USDT").frozen == 0
    assert h.bal("alice", "USDT").cash == D(1000000) - D(100)


# --- order types -----------------------------------------------------------------------------


def test_limit_rests_its_remainder() -> None:
    h = _book()
    h.order("bob", "sell", "1", "100", cl_ord_id="ask")
    out = h.order("alice", "buy", "3", "100", cl_ord_id="bid")
    assert event_types(out) == ["order_accepted", "traded", "order_rested"]
    rested = only(events_of(out, ev.OrderRested))
    assert rested.sz == D(2)
    assert h.state.instruments["BTC-USDT"].book.best_bid_ticks() == 1000
    # What rests stays frozen: 2 × 100 USDT.
    assert h.bal("alice", "USDT").frozen == D(200)


def test_post_only_rejected_when_crossing_and_rests_otherwise() -> None:
    h = _book()
    h.order("bob", "sell", "1", "100", cl_ord_id="ask")
    out = h.order("alice", "buy", "1", "100", ord_type="post_only", cl_ord_id="po")
    refused = rejection(out)
    assert (refused.reason, refused.clOrdId) == ("post_only_would_cross", "po")
    assert not h.state.accounts["alice"].orders
    out = h.order("alice", "buy", "1", "99.9", ord_type="post_only", cl_ord_id="po2")
    assert event_types(out) == ["order_accepted", "order_rested"]


def test_ioc_cancels_its_remainder() -> None:
    h = _book()
    h.order("bob", "sell", "1", "100", cl_ord_id="ask")
    out = h.order("alice", "buy", "3", "100", ord_type="ioc", cl_ord_id="ioc")
    assert event_types(out) == ["order_accepted", "traded", "order_canceled"]
    canceled = only(events_of(out, ev.OrderCanceled))
    assert (canceled.reason, canceled.remaining, canceled.clOrdId) == ("ioc", D(2), "ioc")
    assert not h.state.accounts["alice"].orders
    assert h.bal("alice", "USDT").frozen == 0


def test_fok_fills_all_or_nothing() -> None:
    h = _book()
    h.order("bob", "sell", "1", "100", cl_ord_id="a1")
    h.order("carol", "sell", "1", "100.1", cl_ord_id="a2")
    out = h.order("alice", "buy", "2.5", "100.1", ord_type="fok", cl_ord_id="fok1")
    assert event_types(out) == ["order_accepted", "order_canceled"]
    canceled = only(events_of(out, ev.OrderCanceled))
    assert (canceled.reason, canceled.remaining) == ("fok", D("2.5"))
    assert _open_orders(h) == {("bob", "a1"), ("carol", "a2")}
    assert h.bal("alice", "USDT").frozen == 0
    # The limit counts: at 100 only 1 is available, so 2 at 100 is refused too.
    out = h.order("alice", "buy", "2", "100", ord_type="fok", cl_ord_id="fok2")
    assert only(events_of(out, ev.OrderCanceled)).reason == "fok"
    out = h.order("alice", "buy", "2", "100.1", ord_type="fok", cl_ord_id="fok3")
    assert _trades(out) == [("bob", "alice", D(100), D(1)), ("carol", "alice", D("100.1"), D(1))]
    assert event_types(out) == ["order_accepted", "traded", "traded"]


def test_market_order_walks_the_book_and_cancels_the_rest() -> None:
    h = _book()
    h.order("bob", "buy", "1", "100", cl_ord_id="b1")
    h.order("carol", "buy", "1", "90", cl_ord_id="b2")
    out = h.order("alice", "sell", "3", ord_type="market", cl_ord_id="mkt")
    assert _trades(out) == [("bob", "alice", D(100), D(1)), ("carol", "alice", D(90), D(1))]
    accepted = only(events_of(out, ev.OrderAccepted))
    assert (accepted.px, accepted.frozen) == (None, D(0))
    canceled = only(events_of(out, ev.OrderCanceled))
    assert (canceled.reason, canceled.remaining) == ("ioc", D(1))
    assert not h.state.instruments["BTC-USDT"].book.bids


def test_market_order_with_a_price_is_refused() -> None:
    h = _book()
    out = h.send(
        "place_order",
        acct="alice",
        instId="BTC-USDT",
        clOrdId="m",
        side="buy",
        ordType="market",
        sz="1",
        px="100",
        tdMode="cash",
    )
    assert rejection(out).reason == "invalid_px"


# --- cancels and frozen funds -----------------------------------------------------------------


def test_cancel_releases_frozen_funds() -> None:
    h = _book()
    h.order("alice", "buy", "2", "100", cl_ord_id="bid")
    h.order("alice", "sell", "3", "200", cl_ord_id="ask")
    assert h.bal("alice", "USDT").frozen == D(200)
    assert h.bal("alice", "BTC").frozen == D(3)
    assert h.balance_view("alice", "USDT").availBal == str(D(1000000) - D(200))
    out = h.ok("cancel_order", acct="alice", instId="BTC-USDT", clOrdId="bid")
    canceled = only(events_of(out, ev.OrderCanceled))
    assert (canceled.reason, canceled.remaining, canceled.clOrdId) == ("user", D(2), "bid")
    assert h.bal("alice", "USDT").frozen == 0
    assert h.balance_view("alice", "USDT").availBal == "1000000"
    h.ok("cancel_order", acct="alice", instId="BTC-USDT", clOrdId="ask")
    assert h.bal("alice", "BTC").frozen == 0
    assert h.state.instruments["BTC-USDT"].book.best_bid_ticks() is None
    assert h.state.instruments["BTC-USDT"].book.best_ask_ticks() is None


def test_cancel_after_a_partial_fill_releases_only_the_rest() -> None:
    h = _book()
    h.order("alice", "buy", "2", "100", cl_ord_id="bid")
    h.order("bob", "sell", "0.5", "100")
    assert h.bal("alice", "USDT").frozen == D(150)
    canceled = only(events_of(h.ok("cancel_order", acct="alice", instId="BTC-USDT", clOrdId="bid"), ev.OrderCanceled))
    assert canceled.remaining == D("1.5")
    assert h.bal("alice", "USDT").frozen == 0
    assert h.bal("alice", "USDT").cash == D(1000000) - D(50)


def test_cancel_of_an_unknown_order_is_refused() -> None:
    h = _book()
    refused = rejection(h.send("cancel_order", acct="alice", instId="BTC-USDT", clOrdId="nope"))
    assert isinstance(refused, ev.CommandRejected)
    assert (refused.command, refused.reason) == ("cancel_order", "order_not_found")
    # Someone else's order cannot be canceled either.
    h.order("bob", "sell", "1", "100", cl_ord_id="bobs")
    refused = rejection(h.send("cancel_order", acct="alice", instId="BTC-USDT", clOrdId="bobs"))
    assert refused.reason == "order_not_found"
    assert _open_orders(h) == {("bob", "bobs")}


def test_a_filled_order_cannot_be_canceled() -> None:
    h = _book()
    h.order("bob", "sell", "1", "100", cl_ord_id="ask")
    h.order("alice", "buy", "1", "100")
    refused = rejection(h.send("cancel_order", acct="bob", instId="BTC-USDT", clOrdId="ask"))
    assert refused.reason == "order_not_found"


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sz", "px", "reason"),
    [
        ("1", "100.05", "px_off_tickSz"),
        ("1.00005", "100", "sz_off_lotSz"),
        ("0.0009", "100", "sz_below_min"),
        ("0", "100", "invalid_sz"),
        ("1", "0", "invalid_px"),
    ],
)
def test_tick_lot_and_min_size(sz: str, px: str, reason: str) -> None:
    h = _book()
    out = h.order("alice", "buy", sz, px, cl_ord_id="bad")
    refused = rejection(out)
    assert isinstance(refused, ev.OrderRejected)
    assert (refused.reason, refused.acct, refused.clOrdId) == (reason, "alice", "bad")
    assert not h.state.orders


def test_min_size_and_lot_multiples_are_accepted() -> None:
    h = _book()
    assert event_types(h.order("alice", "buy", "0.001", "100")) == ["order_accepted", "order_rested"]
    assert event_types(h.order("alice", "buy", "0.0011", "100.1")) == ["order_accepted", "order_rested"]


def test_duplicate_open_clordid_is_refused() -> None:
    h = _book()
    h.order("alice", "buy", "1", "100", cl_ord_id="x")
    assert rejection(h.order("alice", "buy", "1", "99", cl_ord_id="x")).reason == "duplicate_clordid"


def test_unknown_instrument_and_account() -> None:
    h = _book()
    assert rejection(h.order("alice", "buy", "1", "100", inst="ETH-USDT")).reason == "unknown_instrument"
    assert rejection(h.order("nobody", "buy", "1", "100")).reason == "unknown_account"


# --- self-trade prevention --------------------------------------------------------------------


def test_self_trade_cancels_the_resting_order_and_matching_continues() -> None:
    h = _book()
    h.order("alice", "sell", "1", "100", cl_ord_id="own")
    h.order("bob", "sell", "1", "100", cl_ord_id="bobs")
    h.order("bob", "sell", "1", "101", cl_ord_id="bobs2")
    out = h.order("alice", "buy", "2", "101", cl_ord_id="taker")
    assert event_types(out) == ["order_accepted", "order_canceled", "traded", "traded"]
    canceled = only(events_of(out, ev.OrderCanceled))
    assert (canceled.acct, canceled.clOrdId, canceled.reason, canceled.remaining) == ("alice", "own", "self_trade", 1)
    assert _trades(out) == [("bob", "alice", D(100), D(1)), ("bob", "alice", D(101), D(1))]
    assert all(t.makerAcct != t.takerAcct for t in events_of(h.outcomes, ev.Traded))
    # The canceled sell's frozen BTC is released.
    assert h.bal("alice", "BTC").frozen == 0
    assert _open_orders(h) == set()


def test_self_trade_only_order_rests_after_canceling_own() -> None:
    h = _book()
    h.order("alice", "buy", "1", "100", cl_ord_id="own-bid")
    out = h.order("alice", "sell", "1", "100", cl_ord_id="own-ask")
    assert event_types(out) == ["order_accepted", "order_canceled", "order_rested"]
    assert not events_of(out, ev.Traded)
    assert _open_orders(h) == {("alice", "own-ask")}
    assert h.bal("alice", "USDT").frozen == 0


# --- fees -------------------------------------------------------------------------------------


def _fee_book(maker_fee: str, taker_fee: str) -> Harness:
    """USDT at 2 decimals, BTC at 4, tick 1, lot 0.01: fees must round at those precisions."""
    h = Harness()
    h.list_asset("USDT", 2)
    h.list_asset("BTC", 4)
    h.list_spot("BTC-USDT", tick="1", lot="0.01", maker_fee=maker_fee, taker_fee=taker_fee)
    for acct in ("alice", "bob"):
        h.ok("deposit", acct=acct, ccy="USDT", amt="100000")
        h.ok("deposit", acct=acct, ccy="BTC", amt="10")
    return h


def test_fees_in_the_received_currency_rounded_up() -> None:
    h = _fee_book(maker_fee="0.0002", taker_fee="0.0007")
    h.order("bob", "sell", "0.37", "12345", cl_ord_id="ask")  # maker sells, receives USDT
    out = h.order("alice", "buy", "0.37", "12345")  # taker buys, receives BTC
    trade = only(events_of(out, ev.Traded))
    # notional 4,567.65 USDT: maker fee 0.91353 → 0.92 USDT; taker fee 0.000259 BTC → 0.0003 BTC.
    assert (trade.makerFee, trade.takerFee) == (D("0.92"), D("0.0003"))
    assert h.bal("bob", "USDT").cash == D(100000) + D("4567.65") - D("0.92")
    assert h.bal("bob", "BTC").cash == D(10) - D("0.37")
    assert h.bal("alice", "BTC").cash == D(10) + D("0.37") - D("0.0003")
    assert h.bal("alice", "USDT").cash == D(100000) - D("4567.65")
    assert h.state.fees == {"USDT": D("0.92"), "BTC": D("0.0003")}


def test_fees_when_the_maker_buys_and_the_taker_sells() -> None:
    h = _fee_book(maker_fee="0.0002", taker_fee="0.0007")
    h.order("bob", "buy", "0.37", "12345", cl_ord_id="bid")  # maker buys, receives BTC
    out = h.order("alice", "sell", "0.37", "12345")  # taker sells, receives USDT
    trade = only(events_of(out, ev.Traded))
    # maker: 0.37 × 0.0002 = 0.000074 → 0.0001 BTC; taker: 4,567.65 × 0.0007 = 3.197355 → 3.20 USDT.
    assert (trade.makerFee, trade.takerFee) == (D("0.0001"), D("3.20"))
    assert h.bal("bob", "BTC").cash == D(10) + D("0.37") - D("0.0001")
    assert h.bal("alice", "USDT").cash == D(100000) + D("4567.65") - D("3.20")


def test_maker_rebate_rounds_down_in_magnitude() -> None:
    h = _fee_book(maker_fee="-0.0001", taker_fee="0.0007")
    h.order("bob", "sell", "0.37", "12345", cl_ord_id="ask")
    trade = only(events_of(h.order("alice", "buy", "0.37", "12345"), ev.Traded))
    # −0.456765 USDT: the rebate paid is 0.45, never 0.46.
    assert trade.makerFee == D("-0.45")
    assert h.bal("bob", "USDT").cash == D(100000) + D("4567.65") + D("0.45")


# --- cash funds -------------------------------------------------------------------------------


def test_cash_buy_and_sell_need_free_balance() -> None:
    h = Harness()
    h.standard_listing(usdt_decimals=8, tick="0.1", lot="0.0001")
    h.ok("deposit", acct="alice", ccy="USDT", amt="1000")
    h.ok("deposit", acct="alice", ccy="BTC", amt="1")
    refused = rejection(h.order("alice", "buy", "10.0001", "100", cl_ord_id="too-big"))
    assert (refused.reason, refused.clOrdId) == ("insufficient_balance", "too-big")
    assert rejection(h.order("alice", "sell", "1.0001", "100")).reason == "insufficient_balance"
    # Exactly the balance is fine; then frozen funds are no longer free.
    assert event_types(h.order("alice", "buy", "10", "100", cl_ord_id="all-in")) == ["order_accepted", "order_rested"]
    assert rejection(h.order("alice", "buy", "0.0001", "100")).reason == "insufficient_balance"
    refused = rejection(h.send("withdraw", acct="alice", ccy="USDT", amt="1"))
    assert refused.reason == "insufficient_balance"
    # A cash market buy needs the notional it would take from the book.
    h.ok("deposit", acct="bob", ccy="BTC", amt="5")
    h.order("bob", "sell", "5", "300", cl_ord_id="ask")
    h.ok("cancel_order", acct="alice", instId="BTC-USDT", clOrdId="all-in")
    assert rejection(h.order("alice", "buy", "3.3334", ord_type="market")).reason == "insufficient_balance"
    out = h.order("alice", "buy", "3.3333", ord_type="market")
    assert _trades(out) == [("bob", "alice", D(300), D("3.3333"))]
    assert h.bal("alice", "USDT").cash == D("0.01")


# --- idempotency and decoding -----------------------------------------------------------------


def test_duplicate_command_id_is_refused_and_changes_nothing() -> None:
    h = _book()
    first = h.step_line(line(command("deposit", h.ts + 1, "dep-1", acct="alice", ccy="USDT", amt="5")))
    assert event_types(first) == ["deposited"]
    h.order("alice", "buy", "1", "100", cl_ord_id="bid")
    before = snapshot.digest(h.state)
    seq = h.state.last_seq
    for again in (
        command("deposit", h.ts + 2, "dep-1", acct="alice", ccy="USDT", amt="5"),
        command(
            "place_order",
            h.ts + 3,
            "dep-1",
            acct="bob",
            instId="BTC-USDT",
            clOrdId="z",
            side="sell",
            ordType="market",
            sz="1",
            tdMode="cash",
        ),
    ):
        out = h.step_line(line(again))
        refused = rejection(out)
        assert isinstance(refused, ev.CommandRejected)
        assert (refused.reason, refused.command) == ("duplicate_id", again["type"])
        assert out.id == "dep-1"
    # Only the sequence number advanced (every command, even a duplicate, gets the next seq).
    assert h.state.last_seq == seq + 2
    unchanged = snapshot.restore(snapshot.encode(h.state))
    unchanged.last_seq = seq
    assert snapshot.digest(unchanged) == before
    assert h.bal("alice", "USDT").cash == D(1000005)


def test_refused_command_id_is_remembered() -> None:
    h = _book()
    cmd = command("withdraw", h.ts + 1, "w-1", acct="alice", ccy="USDT", amt="2000000")
    assert rejection(h.step_line(line(cmd))).reason == "insufficient_balance"
    h.ok("deposit", acct="alice", ccy="USDT", amt="1000000")
    # The retry is a duplicate even though it would now succeed.
    assert rejection(h.step_line(line({**cmd, "ts": h.ts + 1}))).reason == "duplicate_id"
    assert h.bal("alice", "USDT").cash == D(2000000)


_DEPOSIT = {"type": "deposit", "ts": 1, "id": "d", "acct": "alice", "ccy": "USDT", "amt": "1"}


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (b"not json", "$", "malformed"),
        (json.dumps({**_DEPOSIT, "amt": 1.5}), "$.amt", "JSON strings"),
        (json.dumps({**_DEPOSIT, "amt": 1}), "$.amt", "JSON strings"),
        (json.dumps({**_DEPOSIT, "amt": "-1"}), "$.amt", "decimal string"),
        (json.dumps({**_DEPOSIT, "amt": "1e5"}), "$.amt", "decimal string"),
        (json.dumps({**_DEPOSIT, "amt": "NaN"}), "$.amt", "decimal string"),
        (json.dumps({**_DEPOSIT, "type": "depositt"}), "$.type", "unknown command type"),
        (json.dumps({k: v for k, v in _DEPOSIT.items() if k != "id"}), "$.id", "required"),
        (json.dumps({k: v for k, v in _DEPOSIT.items() if k != "acct"}), "$", "`acct`"),
        (json.dumps({**_DEPOSIT, "extra": "x"}), "$", "`extra`"),
        (json.dumps({**_DEPOSIT, "ts": -1}), "$.ts", ">= 0"),
        (json.dumps({**_DEPOSIT, "ts": "1"}), "$.ts", "int"),
        (
            json.dumps(
                {
                    "type": "place_order",
                    "ts": 1,
                    "id": "o",
                    "acct": "a",
                    "instId": "BTC-USDT",
                    "clOrdId": "c",
                    "side": "hold",
                    "ordType": "limit",
                    "sz": "1",
                    "px": "1",
                    "tdMode": "cash",
                }
            ),
            "$.side",
            "hold",
        ),
    ],
)
def test_bad_json_lines_name_the_field(raw: bytes | str, field: str, words: str) -> None:
    with pytest.raises(BadCommand) as info:
        decode_command_json(raw)
    assert info.value.field == field
    assert words in str(info.value)


def test_mark_price_and_accrue_interest_need_no_id() -> None:
    cmd = decode_command_json(json.dumps({"type": "accrue_interest", "ts": 5}))
    assert cmd.id is None
    cmd = decode_command_json(json.dumps({"type": "mark_price", "ts": 5, "instId": "BTC-USDT", "markPx": "1"}))
    assert cmd.id is None
