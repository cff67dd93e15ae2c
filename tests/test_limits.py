"""Valid but enormous numbers never crash the engine: they are refused as ``out_of_range``
before anything changes (a crash would halt the shard on every restart)."""

from __future__ import annotations

import pytest
from helpers import Harness, events_of, rejection

from engine.core import snapshot
from engine.core.context import InvariantBroken
from events import journal as ev

HUGE = "999999999999999999.999999999999999999"
HUGE_AMOUNT = "999999999999999999.99999999"  # BTC has 8 decimals


def test_products_beyond_exact_precision_are_refused_and_change_nothing() -> None:
    h = Harness()
    h.standard_listing()
    h.mark(HUGE)
    h.ok("deposit", acct="a1", ccy="BTC", amt=HUGE_AMOUNT)
    before = snapshot.digest(h.state)
    out = h.send("borrow", acct="a1", ccy="USDT", amt="1")
    refusal = rejection(out)
    assert (refusal.reason, type(refusal)) == ("out_of_range", ev.CommandRejected)
    after = snapshot.capture(h.state)
    assert snapshot.digest(h.state) != before  # only the sequence number and the id moved on
    assert after.accounts[0].balances[0].liab == 0
    out = h.send("deposit", acct="a2", ccy="USDT", amt="5")
    assert events_of(out, ev.Deposited)


def test_decimals_longer_than_18_digits_are_bad_commands() -> None:
    from events.codec import BadCommand, decode_command_json

    line = b'{"type":"deposit","ts":1,"id":"d","acct":"a","ccy":"USDT","amt":"1000000000000000000"}'
    try:
        decode_command_json(line)
    except BadCommand as bad:
        assert bad.field == "$.amt"
    else:
        raise AssertionError("a 19-digit amount was accepted")


def test_regression_a_price_beyond_64_bit_ticks_snapshots_and_restores() -> None:
    """Fuzz finding: a resting sell at 999,999,999,999,999,999 on a tick of 0.00001 is 10²³
    ticks; the snapshot stored that book key as a msgpack integer and ``snapshot.encode``
    raised ``OverflowError`` (no snapshot, no restart). Keys are recomputed on restore now."""
    h = Harness()
    h.list_asset("BTC", 8)
    h.list_asset("ETH", 8)
    h.list_spot("ETH-BTC", tick="0.00001", lot="0.001", min_sz="0.01")
    h.ok("deposit", acct="alice", ccy="ETH", amt="9")
    h.ok(
        "place_order",
        acct="alice",
        instId="ETH-BTC",
        clOrdId="far",
        side="sell",
        ordType="post_only",
        sz="5.013",
        px="999999999999999999",
        tdMode="cash",
    )
    blob = snapshot.encode(h.state)
    restored = snapshot.restore(blob)
    assert snapshot.encode(restored) == blob
    (order,) = restored.orders.values()
    assert order.px_key == 99_999_999_999_999_999_900_000
    assert restored.instruments["ETH-BTC"].book.best_ask_ticks() == order.px_key


def test_regression_a_tier_number_msgpack_cannot_carry_is_a_bad_command() -> None:
    """Fuzz finding: a JSON ``tier`` of 10²³ decoded, but the command could not be encoded as
    msgpack (``OverflowError``): the codec accepted on one wire what the other cannot carry."""
    from events.codec import BadCommand, decode_command_json

    row = '{"tier":100000000000000000000000,"maxSz":"1","mmr":"0.01","imr":"0.02","maxLever":"5"}'
    line = (
        '{"type":"list_instrument","ts":1,"id":"l","instId":"X-SWAP","instType":"SWAP","settleCcy":"USDT",'
        '"ctVal":"1","tickSz":"1","lotSz":"1","minSz":"1","makerFee":"0","takerFee":"0","maxLever":"5",'
        f'"tiers":[{row}]}}'
    )
    try:
        decode_command_json(line)
    except BadCommand as bad:
        assert bad.field == "$.tiers[0].tier"
    else:
        raise AssertionError("a tier number beyond 64 bits was accepted")


def test_regression_inexact_risk_evaluation_halts_instead_of_a_bare_decimal_error() -> None:
    """Fuzz finding: a 36-digit mark, then a borrow whose handler passes; the risk evaluation
    after its events (the watch band's 3 × requirement) needs more than 50 digits and raised a
    bare ``decimal.Inexact`` out of ``Engine.step`` — a traceback for ``marginbook run``, a
    restart loop for the Kafka engine. It halts as documented now (``InvariantBroken``, exit 3,
    nothing committed). Refusing such numbers at the door instead is an open decision."""
    h = Harness()
    h.standard_listing()
    h.mark("999999999999999999.899999999999999999")
    h.ok("deposit", acct="mm", ccy="BTC", amt="200")
    with pytest.raises(InvariantBroken, match="inexact arithmetic evaluating mm"):
        h.send("borrow", acct="mm", ccy="BTC", amt="0.19799999")
