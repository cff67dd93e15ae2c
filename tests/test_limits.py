"""Valid but enormous numbers never crash the engine: they are refused as ``out_of_range``
before anything changes (a crash would halt the shard on every restart)."""

from __future__ import annotations

from helpers import Harness, events_of, rejection

from engine.core import snapshot
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
