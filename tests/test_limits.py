"""Valid but enormous numbers never crash the engine: they are refused as ``out_of_range``
before anything changes (a crash would halt the shard on every restart)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from helpers import Harness, events_of, line, rejection

from engine.core import snapshot
from engine.core.context import InvariantBroken
from engine.core.limits import MAX_COMMAND_BYTES, MAX_TIER_ROWS
from events import journal as ev
from events.codec import decode_command_json, encode_command_json, encode_outcome_json

HUGE = "999999999999999999.999999999999999999"
HUGE_AMOUNT = "999999999999999999.99999999"  # BTC has 8 decimals


def test_the_largest_wire_numbers_are_decided_exactly() -> None:
    """A mark and a collateral of 36 significant digits each (the wire's maximum) and a borrow
    against them: every product is exact at ``money.EXACT_PRECISION`` digits, so the borrow is
    decided like any other (at 50 digits it was refused ``out_of_range``)."""
    h = Harness()
    h.standard_listing()
    h.mark(HUGE)
    h.ok("deposit", acct="a1", ccy="BTC", amt=HUGE_AMOUNT)
    out = h.send("borrow", acct="a1", ccy="USDT", amt="1")
    assert events_of(out, ev.Borrowed)
    assert snapshot.capture(h.state).accounts[0].balances[-1].liab == 1


def test_products_beyond_exact_precision_are_refused_and_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net: a handler whose arithmetic would round before its first event refuses the
    command ``out_of_range`` and changes nothing. Forced with a context of 50 digits (no wire
    number reaches 200)."""
    from decimal import Context, Inexact, InvalidOperation, setcontext

    import engine.core.money as money

    h = Harness()
    h.standard_listing()
    h.mark(HUGE)
    h.ok("deposit", acct="a1", ccy="BTC", amt=HUGE_AMOUNT)
    before = snapshot.digest(h.state)
    small = Context(prec=50, traps=[InvalidOperation, Inexact])
    monkeypatch.setattr(money, "EXACT", small)
    setcontext(small.copy())
    try:
        out = h.send("borrow", acct="a1", ccy="USDT", amt="1")
    finally:
        money.use_engine_context()
    refusal = rejection(out)
    assert (refusal.reason, type(refusal)) == ("out_of_range", ev.CommandRejected)
    after = snapshot.capture(h.state)
    assert snapshot.digest(h.state) != before  # only the sequence number and the id moved on
    assert all(b.liab == 0 for b in after.accounts[0].balances)
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


# --- the size rule (engine.core.limits): a command whose outcome cannot be journaled ----------


def _tiers(rows: int) -> list[dict[str, Any]]:
    """``rows`` valid SPOT tier rows (limits increase from row to row)."""
    return [
        {
            "tier": i,
            "maxBorrowBase": str(35 * i),
            "maxBorrowQuote": str(1_000_000 * i),
            "mmr": "0.03",
            "imr": "0.1",
            "maxLever": "10",
        }
        for i in range(1, rows + 1)
    ]


def test_a_listing_with_more_tier_rows_than_the_rule_allows_is_refused_too_large() -> None:
    """Issue 10 hole 3: a valid ``list_instrument`` of 9,500 tier rows (~1 MB) was accepted and
    its outcome could not be journaled. It is a ``too_large`` rejection with a seq now; the
    limit itself is accepted; nothing changes and the engine carries on."""
    h = Harness()
    h.list_asset("USDT", 8)
    h.list_asset("BTC", 8)
    raw = h.cmd("list_instrument", **_listing("BTC-USDT", _tiers(9_500)))
    assert len(line(raw)) > 900_000
    before = snapshot.capture(h.state).instruments
    out = h.step_line(line(raw))
    refusal = rejection(out)
    assert (type(refusal), refusal.reason) == (ev.CommandRejected, "too_large")
    assert "9500 rows" in refusal.message and str(MAX_TIER_ROWS) in refusal.message
    assert out.seq == 3 and len(encode_outcome_json(out)) < 300
    assert snapshot.capture(h.state).instruments == before
    out = h.send("list_instrument", **_listing("BTC-USDT", _tiers(MAX_TIER_ROWS)))
    assert events_of(out, ev.InstrumentListed)
    assert h.send("deposit", acct="a", ccy="USDT", amt="1").seq == 5


def _listing(inst_id: str, tiers: list[dict[str, Any]]) -> dict[str, Any]:
    base, quote = inst_id.split("-")
    return {
        "instId": inst_id,
        "instType": "SPOT",
        "baseCcy": base,
        "quoteCcy": quote,
        "tickSz": "0.1",
        "lotSz": "0.0001",
        "minSz": "0.0001",
        "makerFee": "0",
        "takerFee": "0.001",
        "maxLever": "10",
        "tiers": tiers,
    }


def _worst(annotation: Any) -> Any:
    """The longest JSON value a field of this type can carry (msgspec type info)."""
    info = msgspec.inspect.type_info(annotation)
    return _worst_info(info)


def _worst_info(info: msgspec.inspect.Type) -> Any:
    if isinstance(info, msgspec.inspect.UnionType):
        candidates = [_worst_info(t) for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        return max(candidates, key=lambda v: len(json.dumps(v)))
    if isinstance(info, msgspec.inspect.StrType):
        if info.pattern is not None:
            return "9" * 18 + "." + "9" * 18 if "-?" not in info.pattern else "-" + "9" * 6 + "." + "9" * 18
        return "x" * (info.max_length or 64)
    if isinstance(info, msgspec.inspect.IntType):
        return info.le if info.le is not None else 10**18
    if isinstance(info, msgspec.inspect.BoolType):
        return False
    if isinstance(info, msgspec.inspect.LiteralType):
        return max(info.values, key=lambda v: len(str(v)))
    if isinstance(info, msgspec.inspect.ListType):
        return [_worst_info(info.item_type) for _ in range(MAX_TIER_ROWS)]
    if isinstance(info, msgspec.inspect.StructType):
        return {f.encode_name: _worst_info(f.type) for f in info.fields}
    raise AssertionError(f"no worst case for {info}")


def test_every_command_the_rule_accepts_fits_the_door_limit() -> None:
    """The door (``submit``, ``run``) refuses records above MAX_COMMAND_BYTES; the engine's rule
    bounds the only unbounded field. The worst case of every command type — every string at its
    maximum length, every decimal 37 characters, MAX_TIER_ROWS full tier rows — encodes in the
    engine's canonical JSON well below the door limit, so the door never refuses a command the
    engine would accept."""
    from events.commands import COMMAND_TYPES

    largest = 0
    for kind in COMMAND_TYPES:
        info = msgspec.inspect.type_info(kind)
        assert isinstance(info, msgspec.inspect.StructType)
        fields = {f.encode_name: _worst_info(f.type) for f in info.fields}
        fields["type"] = kind.__struct_config__.tag
        command = decode_command_json(json.dumps(fields))
        size = len(encode_command_json(command))
        largest = max(largest, size)
        assert size < MAX_COMMAND_BYTES, (kind, size)
    assert largest > 30_000  # the worst listing: the bound is tight, the generator not vacuous


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


def test_regression_a_36_digit_mark_and_a_borrow_are_decided_not_halted() -> None:
    """Fuzz finding: a 36-digit mark, then a borrow whose handler passes; the risk evaluation
    after its events (the watch band's 3 × requirement) needed more than 50 digits and raised a
    bare ``decimal.Inexact`` — then, once that became a halt, the engine halted on every restart
    for a valid command. Products are exact at 200 digits now (``money.EXACT_PRECISION``): the
    borrow is decided and the account is watched like any other."""
    h = Harness()
    h.standard_listing()
    h.mark("999999999999999999.899999999999999999")
    h.ok("deposit", acct="mm", ccy="BTC", amt="200")
    out = h.send("borrow", acct="mm", ccy="BTC", amt="0.19799999")
    assert events_of(out, ev.Borrowed)


def test_inexact_arithmetic_after_the_first_event_halts_instead_of_a_bare_decimal_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The safety net behind the precision: should an evaluation after the command's events ever
    round, the engine halts (``InvariantBroken``, exit 3, nothing committed) — never a bare
    ``decimal`` exception (a traceback in ``run``, a restart loop on Kafka). Forced here with a
    context too small for the same borrow's evaluation."""
    from decimal import Context, Inexact, InvalidOperation

    import engine.core.money as money

    h = Harness()
    h.standard_listing()
    h.mark("999999999999999999.899999999999999999")
    h.ok("deposit", acct="mm", ccy="BTC", amt="200")
    small = Context(prec=50, traps=[InvalidOperation, Inexact])
    monkeypatch.setattr(money, "EXACT", small)
    from decimal import setcontext

    setcontext(small.copy())
    try:
        with pytest.raises(InvariantBroken, match="inexact arithmetic evaluating mm"):
            h.send("borrow", acct="mm", ccy="BTC", amt="0.19799999")
    finally:
        money.use_engine_context()
