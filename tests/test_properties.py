"""Property tests of the engine on realistic random command logs (``tests/strategies.py``).

Every log is a list of JSON command lines decoded by the production codec, so the wire format is
exercised by every property. The properties:

1. money is conserved per currency after every step;
2. no balance is ever negative, frozen funds are exactly what open cash orders reserve, every
   open order rests on its book and no book is ever crossed;
3. stepping the same log twice gives byte-identical outcomes and the same digest;
4. a snapshot at any point, restored, then stepped through the tail, gives the same outcomes and
   digest as the uninterrupted run;
5. folding the journal (round-tripped through JSON and msgpack) rebuilds the engine's state;
6. commands and outcomes round-trip through both codecs;
7. broken command lines raise ``BadCommand`` naming a ``$...`` path, never anything else;
8. a duplicate command id changes nothing and is answered by one ``duplicate_id`` rejection;
9. the embedded log recovers from any crash point to exactly the uninterrupted run;
10. the risk watch (``engine.core.watch``) is invisible: evaluating every debtor on every mark
    gives the same journal.

Run more examples with ``HYPOTHESIS_PROFILE=slow`` (10× every budget). The ``test_regression_*``
tests at the end pin the bugs these properties found (minimal reproductions).
"""

from __future__ import annotations

import decimal
import hashlib
import os
import struct
import tempfile
from collections import defaultdict
from collections.abc import Callable
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from strategies import Mutation, Scenario, mutations, scenarios

from engine.core import holdings, reference, snapshot
from engine.core import step as step_module
from engine.core.context import Ctx
from engine.core.money import use_engine_context
from engine.core.state import State
from engine.core.step import Engine, fold
from engine.io.embedded import COMMANDS_FILE, EVENTS_FILE, SNAPSHOT_DIR, EmbeddedEngine, snapshot_paths
from engine.io.filelog import FsyncPolicy
from events import commands as cmd
from events import journal as ev
from events.codec import (
    BadCommand,
    decode_command_json,
    decode_command_msgpack,
    decode_outcome_json,
    decode_outcome_msgpack,
    encode_command_json,
    encode_command_msgpack,
    encode_outcome_json,
    encode_outcome_msgpack,
)

settings.register_profile("slow", deadline=None, print_blob=True)
if os.environ.get("HYPOTHESIS_PROFILE") == "slow":
    settings.load_profile("slow")
SCALE = 10 if os.environ.get("HYPOTHESIS_PROFILE") == "slow" else 1


def budget(examples: int) -> settings:
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


#: Exact arithmetic for the checks: wide enough that no sum of balances ever rounds.
WIDE = Context(prec=200, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])


# --- driving the engine ---------------------------------------------------------------------------


def run(
    commands: list[cmd.Command], check: Callable[[Engine, cmd.Command, ev.Outcome], None] | None = None
) -> tuple[Engine, list[ev.Outcome]]:
    """Step ``commands`` through a fresh engine; ``check`` after each step. Returns the engine and
    the outcomes."""
    engine = Engine()
    outcomes: list[ev.Outcome] = []
    for command in commands:
        outcome = engine.step(command)
        if check is not None:
            check(engine, command, outcome)
        outcomes.append(outcome)
    return engine, outcomes


def digest_ignoring_seq(state: State) -> str:
    """The state digest with ``last_seq`` left out (a refused duplicate still takes a seq)."""
    snap = msgspec.structs.replace(snapshot.capture(state), last_seq=0)
    return hashlib.sha256(msgspec.msgpack.encode(snap)).hexdigest()


# --- 1. money is conserved ------------------------------------------------------------------------


def external_flows(flows: dict[str, Decimal], command: cmd.Command, outcome: ev.Outcome) -> None:
    """Add the deposits and withdrawals of one outcome to ``flows``; they must be the command's."""
    for fact in outcome.events:
        if isinstance(fact, ev.Deposited | ev.Withdrawn):
            kind = cmd.Deposit if isinstance(fact, ev.Deposited) else cmd.Withdraw
            assert isinstance(command, kind), f"{type(fact).__name__} from a {type(command).__name__}"
            assert (fact.acct, fact.ccy, fact.amt) == (command.acct, command.ccy, Decimal(command.amt))
            sign = 1 if isinstance(fact, ev.Deposited) else -1
            with localcontext(WIDE):
                flows[fact.ccy] = flows.get(fact.ccy, Decimal(0)) + sign * fact.amt


def check_conservation(state: State, flows: dict[str, Decimal]) -> None:
    """Σ deposits − Σ withdrawals = Σ accounts (assets − liab − interest, positions included) +
    fees + insurance + interest income − written off, per currency."""
    with localcontext(WIDE):
        held: dict[str, Decimal] = defaultdict(Decimal)
        for account in state.accounts.values():
            for ccy in holdings.currencies(state, account):
                assets, liab, interest = holdings.held(state, account, ccy)
                held[ccy] += assets - liab - interest
        for pool in (state.fees, state.insurance, state.interest_income):
            for ccy, amt in pool.items():
                held[ccy] += amt
        for ccy, amt in state.written_off.items():
            held[ccy] -= amt
        for ccy in sorted(set(held) | set(flows)):
            came_in = flows.get(ccy, Decimal(0))
            assert came_in == held[ccy], (
                f"seq {state.last_seq}: {ccy} deposited − withdrawn = {came_in}, but accounts + fees + insurance"
                f" + interest income = {held[ccy]} (difference {held[ccy] - came_in})"
            )


@budget(200)
@given(scenarios())
def test_money_is_conserved(scenario: Scenario) -> None:
    flows: dict[str, Decimal] = {}

    def check(engine: Engine, command: cmd.Command, outcome: ev.Outcome) -> None:
        external_flows(flows, command, outcome)
        check_conservation(engine.state, flows)

    _, outcomes = run(scenario.commands(), check)
    label_coverage(outcomes)


def label_coverage(outcomes: list[ev.Outcome]) -> None:
    """Report what the log exercised (``pytest --hypothesis-show-statistics``)."""
    seen = {type(e).__name__ for o in outcomes for e in o.events}
    seen |= {"liquidation fill" for o in outcomes for e in o.events if isinstance(e, ev.Traded) and e.liquidation}
    for name in ("Traded", "Borrowed", "MarginCallRaised", "LiquidationStarted", "liquidation fill"):
        event(f"{name}: {'yes' if name in seen else 'no'}")


# --- 2. balances and books ------------------------------------------------------------------------


def check_balances_and_books(state: State) -> None:
    for acct, account in state.accounts.items():
        for ccy, bal in account.balances.items():
            where = f"seq {state.last_seq}: {acct} {ccy}"
            assert bal.cash >= 0, f"{where}: cash {bal.cash}"
            assert bal.frozen >= 0, f"{where}: frozen {bal.frozen}"
            assert bal.frozen <= bal.cash, f"{where}: frozen {bal.frozen} > cash {bal.cash}"
            assert bal.liab >= 0, f"{where}: liab {bal.liab}"
            assert bal.interest >= 0, f"{where}: interest {bal.interest}"
        assert not account.liquidating, f"seq {state.last_seq}: {acct} still liquidating after the step"
    reserved: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    with localcontext(WIDE):
        for order_id, order in state.orders.items():
            inst = state.instruments[order.inst_id]
            where = f"seq {state.last_seq}: order {order_id} ({order.acct} {order.inst_id} {order.cl_ord_id})"
            assert order.remaining > 0, f"{where}: open with remaining {order.remaining}"
            level = inst.book.side(order.is_buy).get(order.px_key)
            assert level is not None and level.get(order_id) is order, f"{where}: open but not on the book"
            assert state.accounts[order.acct].orders.get((order.inst_id, order.cl_ord_id)) is order, where
            reserved[(order.acct, inst.quote if order.is_buy else inst.base)] += order.frozen
        for acct, account in state.accounts.items():
            for ccy, bal in account.balances.items():
                assert bal.frozen == reserved.pop((acct, ccy), Decimal(0)), (
                    f"seq {state.last_seq}: {acct} {ccy} frozen {bal.frozen} but open cash orders reserve"
                    f" {reserved.get((acct, ccy), Decimal(0))}"
                )
        assert not any(reserved.values()), f"orders reserve funds of missing balances: {dict(reserved)}"
    for inst_id, inst in state.instruments.items():
        bid, ask = inst.book.best_bid_ticks(), inst.book.best_ask_ticks()
        assert bid is None or ask is None or bid < ask, f"seq {state.last_seq}: {inst_id} crossed: {bid} >= {ask}"
        resting = 0
        for levels in (inst.book.bids, inst.book.asks):
            for key, level in levels.items():
                assert level, f"seq {state.last_seq}: {inst_id} empty level {key}"
                for order_id, order in level.items():
                    assert state.orders.get(order_id) is order and order.px_key == key, (inst_id, order_id)
                resting += len(level)
        assert resting == sum(1 for o in state.orders.values() if o.inst_id == inst_id), inst_id


@budget(200)
@given(scenarios())
def test_balances_never_negative_and_books_never_crossed(scenario: Scenario) -> None:
    run(scenario.commands(), lambda engine, _c, _o: check_balances_and_books(engine.state))


# --- 3. determinism -------------------------------------------------------------------------------


@budget(120)
@given(scenarios())
def test_replay_is_byte_identical(scenario: Scenario) -> None:
    first, first_outcomes = run(scenario.commands())
    second, second_outcomes = run(scenario.commands())
    assert [encode_outcome_json(o) for o in first_outcomes] == [encode_outcome_json(o) for o in second_outcomes]
    assert snapshot.digest(first.state) == snapshot.digest(second.state)


# --- 4. snapshot + tail -----------------------------------------------------------------------------


@budget(150)
@given(scenarios(), st.data())
def test_snapshot_then_tail_equals_uninterrupted_run(scenario: Scenario, data: st.DataObject) -> None:
    commands = scenario.commands()
    whole, outcomes = run(commands)
    cut = data.draw(st.integers(0, len(commands)), label="cut")
    head, _ = run(commands[:cut])
    blob = snapshot.encode(head.state)
    restored = snapshot.restore(blob)
    assert snapshot.encode(restored) == blob, "restore(encode(state)) encodes differently"
    resumed = Engine(restored)
    tail = [encode_outcome_json(resumed.step(c)) for c in commands[cut:]]
    assert tail == [encode_outcome_json(o) for o in outcomes[cut:]]
    assert snapshot.digest(resumed.state) == snapshot.digest(whole.state)


# --- 5. folding the journal -------------------------------------------------------------------------


def through_the_wire(outcome: ev.Outcome) -> ev.Outcome:
    """JSON, then msgpack, the way a projection would read the journal."""
    return decode_outcome_msgpack(encode_outcome_msgpack(decode_outcome_json(encode_outcome_json(outcome))))


@budget(150)
@given(scenarios())
def test_folding_the_journal_rebuilds_the_state(scenario: Scenario) -> None:
    folded = State()

    def check(engine: Engine, _c: cmd.Command, outcome: ev.Outcome) -> None:
        use_engine_context()
        fold(folded, through_the_wire(outcome))
        assert snapshot.digest(folded) == snapshot.digest(engine.state), f"diverged at seq {outcome.seq}"

    run(scenario.commands(), check)


# --- 6. codec round trips ---------------------------------------------------------------------------


@budget(120)
@given(scenarios())
def test_codec_round_trips(scenario: Scenario) -> None:
    commands = scenario.commands()
    for raw, command in zip(scenario.lines, commands, strict=True):
        as_json = encode_command_json(command)
        assert decode_command_json(as_json) == command, raw
        assert encode_command_json(decode_command_json(as_json)) == as_json
        as_msgpack = encode_command_msgpack(command)
        assert decode_command_msgpack(as_msgpack) == command, raw
        assert encode_command_msgpack(decode_command_msgpack(as_msgpack)) == as_msgpack
    _, outcomes = run(commands)
    for outcome in outcomes:
        as_json = encode_outcome_json(outcome)
        assert decode_outcome_json(as_json) == outcome
        assert encode_outcome_json(decode_outcome_json(as_json)) == as_json
        as_msgpack = encode_outcome_msgpack(outcome)
        assert decode_outcome_msgpack(as_msgpack) == outcome
        assert encode_outcome_json(decode_outcome_msgpack(as_msgpack)) == as_json


# --- 7. bad input -----------------------------------------------------------------------------------


def expect_bad(decode: Callable[[bytes], Any], data: bytes, field: str | None) -> BadCommand:
    try:
        decoded = decode(data)
    except BadCommand as err:
        assert err.field.startswith("$"), f"field {err.field!r} is not a JSON path"
        assert err.message, "empty message"
        if field is not None:
            assert err.field == field, f"named {err.field!r} ({err.message}), expected {field!r}"
        return err
    raise AssertionError(f"decoded without error: {decoded!r}")


@budget(600)
@given(mutations())
def test_bad_input_raises_bad_command_naming_the_field(mutation: Mutation) -> None:
    note(f"original: {mutation.original.decode()}")
    note(f"mutated ({mutation.kind}): {mutation.data!r}")
    expect_bad(decode_command_json, mutation.data, mutation.field)
    if mutation.obj is not None:  # the same object on the msgpack wire (if msgpack can carry it)
        try:
            packed = msgspec.msgpack.encode(mutation.obj)
        except OverflowError:
            return
        expect_bad(decode_command_msgpack, packed, mutation.field)


@budget(300)
@given(st.binary(max_size=200))
def test_garbage_msgpack_raises_bad_command(data: bytes) -> None:
    try:
        decode_command_msgpack(data)
    except BadCommand as err:
        assert err.field.startswith("$") and err.message
    else:
        raise AssertionError("garbage decoded as a command")


# --- 8. duplicate ids -------------------------------------------------------------------------------


def check_duplicate(engine: Engine, command: cmd.Command) -> ev.Outcome:
    """Step a command whose id was already applied: nothing changes, one duplicate_id rejection."""
    before = digest_ignoring_seq(engine.state)
    seq = engine.state.last_seq + 1
    outcome = engine.step(command)
    assert digest_ignoring_seq(engine.state) == before, f"duplicate {command.id} changed the state"
    assert outcome.seq == seq and outcome.id == command.id and engine.state.last_seq == seq
    assert len(outcome.events) == 1, outcome.events
    (event,) = outcome.events
    assert isinstance(event, ev.CommandRejected), event
    assert (event.command, event.reason) == (command.__struct_config__.tag, "duplicate_id")
    return outcome


@budget(150)
@given(scenarios(), st.data())
def test_duplicate_id_changes_nothing(scenario: Scenario, data: st.DataObject) -> None:
    commands = scenario.commands()
    engine = Engine()
    duplicates = 0
    for command in commands:
        if command.id is not None and command.id in engine.state.seen_ids:
            check_duplicate(engine, command)
            duplicates += 1
        else:
            engine.step(command)
    # and a retry of any earlier command, at the end
    with_id = [c for c in commands if c.id is not None]
    again = data.draw(st.sampled_from(with_id), label="retried")
    check_duplicate(engine, msgspec.structs.replace(again, ts=again.ts + 1))
    note(f"{duplicates} duplicates inside the log")


# --- 9. embedded log recovery ---------------------------------------------------------------------------

_RECORD = struct.Struct("<4sIIQ")


def record_ends(path: Path) -> list[int]:
    """Byte offset of the end of each record of a file log (``[0, end₁, end₂, …]``)."""
    data = path.read_bytes()
    ends = [0]
    while ends[-1] < len(data):
        _, _, length, _ = _RECORD.unpack_from(data, ends[-1])
        ends.append(ends[-1] + _RECORD.size + length)
    assert ends[-1] == len(data)
    return ends


def crash_cut(path: Path, keep: int, torn: int) -> None:
    """Keep the first ``keep`` records, plus ``torn`` bytes of the next one if there is one."""
    ends = record_ends(path)
    end = ends[keep]
    if keep + 1 < len(ends):
        end += min(torn, ends[keep + 1] - end - 1)
    with open(path, "r+b") as handle:
        handle.truncate(end)


@budget(100)
@given(scenarios(max_ops=30), st.data())
def test_embedded_log_recovers_any_crash_point(scenario: Scenario, data: st.DataObject) -> None:
    commands = scenario.commands()
    reference_engine = Engine()
    expected: list[bytes] = []
    digests = [snapshot.digest(reference_engine.state)]
    for command in commands:
        expected.append(encode_outcome_json(reference_engine.step(command)))
        digests.append(snapshot.digest(reference_engine.state))
    n = len(commands)
    snapshot_every = data.draw(st.sampled_from([0, 4, 9, 25]), label="snapshot_every")
    batch = data.draw(st.sampled_from([1, 7, 1000]), label="batch")

    def reopen(folder: Path, warn: Callable[[str], None] | None = None) -> EmbeddedEngine:
        return EmbeddedEngine(folder, snapshot_every=snapshot_every, batch=batch, fsync=FsyncPolicy.NEVER, warn=warn)

    # The crash: commands.log keeps a prefix, events.log another (either may be ahead: the two
    # files are buffered separately), each possibly with a torn record after it. A snapshot is
    # written after both logs are flushed through its seq, so only those up to both prefixes exist.
    kept_commands = data.draw(st.integers(0, n), label="commands kept")
    kept_events = data.draw(st.integers(0, n), label="events kept")
    torn_commands = data.draw(st.sampled_from([0, 0, 1, 19, 20, 21, 10_000]), label="torn command bytes")
    torn_events = data.draw(st.sampled_from([0, 0, 1, 19, 20, 21, 10_000]), label="torn event bytes")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with reopen(folder) as embedded:
            for raw, command, outcome in zip(scenario.lines, commands, expected, strict=True):
                assert encode_outcome_json(embedded.submit(command, raw)) == outcome
        crash_cut(folder / COMMANDS_FILE, kept_commands, torn_commands)
        crash_cut(folder / EVENTS_FILE, kept_events, torn_events)
        for seq, path in snapshot_paths(folder):
            if seq > min(kept_commands, kept_events):
                path.unlink()
        if data.draw(st.booleans(), label="torn snapshot file"):
            (folder / SNAPSHOT_DIR).mkdir(exist_ok=True)
            (folder / SNAPSHOT_DIR / f".{n:012d}.tmp").write_bytes(b"\x00half a snapshot")

        warnings: list[str] = []
        with reopen(folder, warnings.append) as embedded:
            assert embedded.state.last_seq == kept_commands
            assert snapshot.digest(embedded.state) == digests[kept_commands]
            assert embedded.recovered == max(0, kept_commands - kept_events)
            assert [p for _, p in embedded.events.read()] == expected[:kept_commands]
            if torn_commands and kept_commands < n:
                assert any("torn tail" in w for w in warnings), warnings
            # the writer resubmits what was never accepted
            for raw, command in zip(scenario.lines[kept_commands:], commands[kept_commands:], strict=True):
                assert encode_outcome_json(embedded.submit(command, raw)) == expected[embedded.state.last_seq - 1]
            assert snapshot.digest(embedded.state) == digests[n]
        with reopen(folder) as embedded:  # idempotent: nothing left to recover
            assert embedded.recovered == 0
            assert snapshot.digest(embedded.state) == digests[n]
            assert [p for _, p in embedded.events.read()] == expected
            assert [p for _, p in embedded.commands.read()] == list(scenario.lines)


# --- 10. the risk watch is invisible ----------------------------------------------------------------


def _mark_price_every_debtor(ctx: Ctx, command: cmd.MarkPrice) -> None:
    """Reference for ``step._mark_price``: evaluate every debtor exposed to the priced currency."""
    reference.mark_price(ctx, command)
    state = ctx.state
    base = state.instruments[command.instId].base
    if state.price_inst.get(base) != command.instId:
        return
    for acct in sorted(state.debtors, key=state.debtors.__getitem__):
        if base in state.accounts[acct].balances:
            ctx.touch(acct)


@budget(200)
@given(scenarios())
def test_risk_watch_equals_evaluating_every_debtor(scenario: Scenario) -> None:
    commands = scenario.commands()
    _, outcomes = run(commands)
    with mock.patch.dict(step_module._HANDLERS, {cmd.MarkPrice: _mark_price_every_debtor}):
        _, brute = run(commands)
    for optimized, reference_outcome in zip(outcomes, brute, strict=True):
        assert encode_outcome_json(optimized) == encode_outcome_json(reference_outcome), f"seq {optimized.seq}"


# --- regressions: bugs these properties found (minimal reproductions) ------------------------

_LISTING = [
    b'{"type":"list_asset","ts":1,"id":"a1","ccy":"USDT","decimals":8}',
    b'{"type":"list_asset","ts":2,"id":"a2","ccy":"BTC","decimals":8}',
    b'{"type":"list_instrument","ts":3,"id":"i1","instId":"BTC-USDT","instType":"SPOT","baseCcy":"BTC",'
    b'"quoteCcy":"USDT","tickSz":"0.1","lotSz":"0.0001","minSz":"0.0001","makerFee":"0","takerFee":"0",'
    b'"maxLever":"10","tiers":[{"tier":1,"maxBorrowBase":"5","maxBorrowQuote":"300000","mmr":"0.04",'
    b'"imr":"0.1","maxLever":"10"}]}',
    b'{"type":"mark_price","ts":4,"instId":"BTC-USDT","markPx":"60000"}',
    b'{"type":"deposit","ts":5,"id":"d1","acct":"alice","ccy":"USDT","amt":"1000"}',
]


def test_regression_leverage_3_borrow_is_answered() -> None:
    """Was: ``initial_margin_rate`` gave ``1/L`` at 40 significant digits, so for leverage 3
    ``debt × price × rate`` in ``check_initial_margin`` overflowed the EXACT context and the
    engine raised ``decimal.Inexact`` instead of answering (a crash loop on restart)."""
    engine = Engine()
    for raw in _LISTING:
        engine.step(decode_command_json(raw))
    lever = b'{"type":"set_leverage","ts":6,"id":"l1","acct":"alice","instId":"BTC-USDT","mgnMode":"cross","lever":"3"}'
    assert [type(e) for e in engine.step(decode_command_json(lever)).events] == [ev.LeverageSet]
    borrow = b'{"type":"borrow","ts":7,"id":"b1","acct":"alice","ccy":"USDT","amt":"400.12345679"}'
    assert ev.Borrowed in [type(e) for e in engine.step(decode_command_json(borrow)).events]


def test_regression_deeply_nested_json_is_a_bad_command() -> None:
    """Was: a line nesting objects 5,000 deep escaped as ``RecursionError``."""
    with pytest.raises(BadCommand) as info:
        decode_command_json(b'{"a":' * 5000)
    assert info.value.field.startswith("$")


@pytest.mark.parametrize("ts", [2**64, 253_402_300_800_000])
def test_regression_ts_beyond_year_9999_is_a_bad_command(ts: int) -> None:
    """Was: ``ts`` was bounded below only; ``2**64`` decoded and was stepped, but then neither
    the command nor its outcome could be encoded as msgpack (``OverflowError``)."""
    with pytest.raises(BadCommand) as info:
        decode_command_json(b'{"type":"accrue_interest","ts":%d}' % ts)
    assert info.value.field == "$.ts"
