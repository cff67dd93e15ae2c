"""Property tests of the engine on realistic random command logs (``tests/strategies.py``).

Every log is a list of JSON command lines decoded by the production codec, so the wire format is
exercised by every property. The properties:

1. money is conserved per currency after every step (positions, funding, fees, insurance
   funds, the perpetual clearing balance and written-off debt included); open contracts net to
   zero and the clearing balance is what open perpetuals owe each other (plus P&L rounding);
2. no balance is ever negative, frozen funds are exactly what open orders reserve (cash orders
   what they spend, isolated opening orders their margin, isolated spot closing orders the
   position's assets), isolated spot holdings, margin and debt and perpetual margins are never
   negative, every open order rests on its book and no book is ever crossed; every cross
   position owes its liability currency (decision 19: no "short" of owned coins) and its
   quantity is on its side;
3. stepping the same log twice gives byte-identical outcomes and the same digest;
4. a snapshot at any point, restored, then stepped through the tail, gives the same outcomes and
   digest as the uninterrupted run;
5. folding the journal (round-tripped through JSON and msgpack) rebuilds the engine's state;
6. commands and outcomes round-trip through both codecs;
7. broken command lines raise ``BadCommand`` naming a ``$...`` path, never anything else;
8. a duplicate command id changes nothing and is answered by one ``duplicate_id`` rejection;
9. the embedded log recovers from any crash point to exactly the uninterrupted run;
10. the risk watch (``engine.core.watch``) and the cached position evaluations are invisible:
    superseded by the differential oracle (``tests/test_oracle.py``), which compares every
    generated log with the full-sweep engine (every exposed account evaluated after every
    command, no cache) and with restarts from snapshots;
11. splitting an isolated opening fill (spot or SWAP) among several makers at the same price
    changes nothing of the position (margin, liability, liquidation price, the whole view);
12. a liquidation never leaves negative equity unaccounted for: every shortfall is paid by
    ``insurance_fund_covered``/``debt_written_off`` events summing to exactly the deficit (fund
    first, never below zero), and after every step no account or position that owes anything
    has equity ≤ 0 (except perpetuals the book could not absorb, retried later by design).

The generator (``tests/strategies.py``) mixes cash, cross, isolated spot and perpetual (cross
and isolated, net and hedge mode, funding) trading; ``test_generator_coverage`` checks on a
fixed seeded sample that it really reaches funding, position liquidations (full and partial) and
written-off debt. Every step is bounded (``MAX_EVENTS_PER_STEP``): an endless evaluation loop
fails the property instead of hanging it.

Run more examples with ``HYPOTHESIS_PROFILE=slow`` (10× every budget). The ``test_regression_*``
tests at the end pin the bugs these properties found (minimal reproductions).
"""

from __future__ import annotations

import decimal
import hashlib
import os
import struct
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, event, given, note, seed, settings
from hypothesis import strategies as st
from strategies import INSTRUMENTS, SWAP, Mutation, Scenario, dec_str, line, mutations, scenarios

from engine.core import holdings, position_risk, risk, snapshot
from engine.core.context import Ctx
from engine.core.evolve import apply
from engine.core.money import use_engine_context
from engine.core.state import Account, Order, State
from engine.core.step import Engine, fold, record
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
from projections.risk_view import build_view
from projections.views import PositionView

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

#: No step of a generated log (≤ ~150 commands, a few hundred orders) comes near this many
#: events; more means the engine loops (e.g. re-evaluating an account forever).
MAX_EVENTS_PER_STEP = 20_000
_EMIT = Ctx.emit


class EndlessStep(AssertionError):
    """A step emitted more than :data:`MAX_EVENTS_PER_STEP` events: an endless loop."""


def _bounded_emit(self: Ctx, event: ev.Event) -> None:
    if len(self.events) >= MAX_EVENTS_PER_STEP:
        tail = ", ".join(type(e).__name__ for e in self.events[-8:])
        raise EndlessStep(f"seq {self.seq}: more than {MAX_EVENTS_PER_STEP} events (endless loop?); last: {tail}")
    _EMIT(self, event)


@pytest.fixture(autouse=True, scope="module")
def _bounded_steps() -> Iterator[None]:
    """Turn an endless step into a failure Hypothesis can shrink, instead of a hung test run."""
    with mock.patch.object(Ctx, "emit", _bounded_emit):
        yield


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


def check_clearing(state: State, realised: dict[str, int]) -> None:
    """Every open contract is matched by an opposite one (Σ q = 0 per instrument), and the
    perpetual clearing balance is what the open positions will settle among themselves,
    ``−ctVal·Σ q·entry``, plus what rounding realised P&L toward −∞ kept: at most one unit of
    the last decimal per ``pnl_realised`` (``realised[ccy]`` events so far); average entries
    are rounded at 16 decimals, hence the 1e-9 of slack."""
    with localcontext(WIDE):
        open_value: dict[str, Decimal] = defaultdict(Decimal)
        contracts: dict[str, Decimal] = defaultdict(Decimal)
        for account in state.accounts.values():
            for (inst_id, _), perp in account.perps.items():
                inst = state.instruments[inst_id]
                open_value[inst.settle] += perp.qty * inst.ct_val * perp.avg_px
                contracts[inst_id] += perp.qty
        unbalanced = {inst_id: qty for inst_id, qty in contracts.items() if qty}
        assert not unbalanced, f"seq {state.last_seq}: open contracts do not net to zero: {unbalanced}"
        for ccy in sorted(set(open_value) | set(state.clearing)):
            kept = state.clearing.get(ccy, Decimal(0)) + open_value[ccy]
            most = realised.get(ccy, 0) * Decimal(1).scaleb(-state.assets[ccy].decimals)
            slack = Decimal("1e-9")
            assert -slack <= kept <= most + slack, (
                f"seq {state.last_seq}: {ccy} clearing {state.clearing.get(ccy, Decimal(0))} but open entries"
                f" {open_value[ccy]}: rounding kept {kept}, expected within [0, {most}]"
            )


def check_conservation(state: State, flows: dict[str, Decimal]) -> None:
    """Σ deposits − Σ withdrawals = Σ accounts (assets − liab − interest, positions included) +
    fees + insurance + interest income + perpetual clearing − written off, per currency."""
    with localcontext(WIDE):
        held: dict[str, Decimal] = defaultdict(Decimal)
        for account in state.accounts.values():
            for ccy in holdings.currencies(state, account):
                assets, liab, interest = holdings.held(state, account, ccy)
                held[ccy] += assets - liab - interest
        for pool in (state.fees, state.insurance, state.interest_income, state.clearing):
            for ccy, amt in pool.items():
                held[ccy] += amt
        for ccy, amt in state.written_off.items():
            held[ccy] -= amt
        for ccy in sorted(set(held) | set(flows)):
            came_in = flows.get(ccy, Decimal(0))
            assert came_in == held[ccy], (
                f"seq {state.last_seq}: {ccy} deposited − withdrawn = {came_in}, but accounts + fees + insurance"
                f" + interest income + clearing − written off = {held[ccy]} (difference {held[ccy] - came_in})"
            )


@budget(200)
@given(scenarios())
def test_money_is_conserved(scenario: Scenario) -> None:
    """Conservation per currency after every step — positions, funding, liquidation fees, the
    insurance funds and written-off debt included (``engine.core.holdings``)."""
    flows: dict[str, Decimal] = {}
    realised: Counter[str] = Counter()
    coverage = Coverage()

    def check(engine: Engine, command: cmd.Command, outcome: ev.Outcome) -> None:
        external_flows(flows, command, outcome)
        check_conservation(engine.state, flows)
        realised.update(e.ccy for e in outcome.events if isinstance(e, ev.PnlRealised))
        check_clearing(engine.state, realised)
        coverage.observe(engine.state, outcome)

    run(scenario.commands(), check)
    coverage.report()


def _scope_kind(state: State, inst_id: str) -> str:
    if not inst_id:
        return "cross"
    return "SWAP" if state.instruments[inst_id].inst_type == "SWAP" else "isolated spot"


def _still_open_and_safe(state: State, e: ev.LiquidationFinished) -> bool:
    """After the step: the liquidated account/position still owes or holds something and its
    ratio is above 100 % — the liquidation was partial."""
    account = state.accounts[e.acct]
    if not e.instId:
        if not account.at_risk():
            return False
        ratio = risk.account_risk(state, account).ratio
    elif state.instruments[e.instId].inst_type == "SPOT":
        pos = account.isolated.get(e.instId)
        if pos is None:
            return False
        ratio = position_risk.isolated_spot(state.instruments[e.instId], pos, state.marks[e.instId]).ratio
    else:
        perp = account.perps.get((e.instId, e.posSide))
        if perp is None or perp.mgn_mode != "isolated":
            return False
        ratio = position_risk.perpetual(state.instruments[e.instId], perp, state.marks[e.instId]).ratio
    return ratio is not None and ratio > 1


class Coverage:
    """What a log exercised, read from each outcome and the state after it. :meth:`report`
    labels the example (``pytest --hypothesis-show-statistics``); ``seen`` feeds
    ``test_generator_coverage``."""

    LABELS = (
        "Traded",
        "Borrowed",
        "MarginCallRaised",
        "LiquidationStarted",
        "liquidation fill",
        "isolated spot position",
        "SWAP cross position",
        "SWAP isolated position",
        "hedge-mode position",
        "margin adjusted",
        "SWAP P&L realised",
        "funding",
        "liquidation: cross",
        "liquidation: isolated spot",
        "liquidation: SWAP",
        "partial liquidation: cross",
        "partial liquidation: isolated spot",
        "partial liquidation: SWAP",
        "insurance fund covered",
        "debt written off",
        "cross closing fill repaid",
        "isolated reverse",
    )

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def observe(self, state: State, outcome: ev.Outcome) -> None:
        seen = self.seen
        accepted = [e for e in outcome.events if isinstance(e, ev.OrderAccepted)]
        first, second = (accepted[0], accepted[1]) if len(accepted) > 1 else (None, None)
        if first and second and first.reduce and not second.reduce and first.clOrdId == second.clOrdId:
            seen.add("isolated reverse")
        for before, e in zip(outcome.events, outcome.events[1:], strict=False):
            if isinstance(before, ev.Traded) and isinstance(e, ev.Repaid) and e.reason == "close":
                seen.add("cross closing fill repaid")
        for e in outcome.events:
            name = type(e).__name__
            if name in ("Traded", "Borrowed", "MarginCallRaised", "LiquidationStarted"):
                seen.add(name)
            if isinstance(e, ev.Traded) and e.liquidation:
                seen.add("liquidation fill")
            elif isinstance(e, ev.PositionOpened):
                spot = state.instruments[e.instId].inst_type == "SPOT"
                seen.add("isolated spot position" if spot else f"SWAP {e.mgnMode} position")
                if e.posSide in ("long", "short"):
                    seen.add("hedge-mode position")
            elif isinstance(e, ev.PositionMarginChanged) and e.reason in ("add", "reduce"):
                seen.add("margin adjusted")
            elif isinstance(e, ev.PnlRealised):
                seen.add("SWAP P&L realised")
            elif isinstance(e, ev.FundingSettled):
                seen.add("funding")
            elif isinstance(e, ev.LiquidationStarted):
                seen.add(f"liquidation: {_scope_kind(state, e.instId)}")
            elif isinstance(e, ev.LiquidationFinished) and _still_open_and_safe(state, e):
                seen.add(f"partial liquidation: {_scope_kind(state, e.instId)}")
            elif isinstance(e, ev.InsuranceFundCovered):
                seen.add("insurance fund covered")
            elif isinstance(e, ev.DebtWrittenOff):
                seen.add("debt written off")

    def report(self) -> None:
        for name in self.LABELS:
            event(f"{name}: {'yes' if name in self.seen else 'no'}")


# --- 2. balances and books ------------------------------------------------------------------------


def check_positions(state: State, acct: str, account: Account) -> None:
    """Isolated spot holdings, margin, debt and frozen close amounts are never negative, a
    closing order never freezes more than the position holds, a position owing nothing is
    released; a perpetual has a size of its side's sign and never a negative margin (cross: none)."""
    for inst_id, pos in account.isolated.items():
        where = f"seq {state.last_seq}: {acct} isolated {inst_id}"
        for name in ("base", "quote", "margin", "base_margin", "liab", "interest", "frozen", "qty"):
            assert getattr(pos, name) >= 0, f"{where}: {name} {getattr(pos, name)}"
        held = pos.base if pos.long else pos.quote
        assert pos.frozen <= held, f"{where}: closing orders freeze {pos.frozen} > holding {held}"
        assert pos.liab + pos.interest > 0, f"{where}: owes nothing but was not released"
        assert not pos.liquidating, f"{where}: still liquidating after the step"
    for (inst_id, pos_side), perp in account.perps.items():
        where = f"seq {state.last_seq}: {acct} {perp.mgn_mode} {inst_id} {pos_side}"
        assert perp.qty != 0, f"{where}: zero size but not released"
        assert pos_side != "long" or perp.qty > 0, f"{where}: long side with size {perp.qty}"
        assert pos_side != "short" or perp.qty < 0, f"{where}: short side with size {perp.qty}"
        assert perp.margin >= 0, f"{where}: margin {perp.margin}"
        assert perp.mgn_mode == "isolated" or perp.margin == 0, f"{where}: cross position with margin {perp.margin}"
        assert not perp.liquidating, f"{where}: still liquidating after the step"


def _reserve_pool(state: State, order: Order) -> tuple[str, str]:
    """Where an open order's ``frozen`` funds sit (``Order.frozen``): an isolated spot closing
    order holds the position's assets (``('@', instId)``); an isolated opening order (spot or
    SWAP) the account's margin currency; a cash order the currency it spends."""
    inst = state.instruments[order.inst_id]
    if order.td_mode == "isolated":
        if inst.inst_type == "SPOT" and order.reduce:
            return "@", order.inst_id
        return "ccy", order.mgn_ccy
    return "ccy", inst.quote if order.is_buy else inst.base


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
        check_positions(state, acct, account)
    reserved: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    with localcontext(WIDE):
        for order_id, order in state.orders.items():
            inst = state.instruments[order.inst_id]
            where = f"seq {state.last_seq}: order {order_id} ({order.acct} {order.inst_id} {order.cl_ord_id})"
            assert order.remaining > 0, f"{where}: open with remaining {order.remaining}"
            assert order.frozen >= 0, f"{where}: frozen {order.frozen}"
            assert order.td_mode != "cross" or not order.frozen, f"{where}: a cross order freezes {order.frozen}"
            level = inst.book.side(order.is_buy).get(order.px_key)
            assert level is not None and level.get(order_id) is order, f"{where}: open but not on the book"
            assert state.accounts[order.acct].orders.get((order.inst_id, order.cl_ord_id)) is order, where
            if order.frozen:
                reserved[(order.acct, *_reserve_pool(state, order))] += order.frozen
        for acct, account in state.accounts.items():
            for ccy, bal in account.balances.items():
                assert bal.frozen == reserved.pop((acct, "ccy", ccy), Decimal(0)), (
                    f"seq {state.last_seq}: {acct} {ccy} frozen {bal.frozen} but open orders reserve"
                    f" {reserved.get((acct, 'ccy', ccy), Decimal(0))}"
                )
            for inst_id, pos in account.isolated.items():
                assert pos.frozen == reserved.pop((acct, "@", inst_id), Decimal(0)), (
                    f"seq {state.last_seq}: {acct} isolated {inst_id} frozen {pos.frozen} but its closing"
                    f" orders reserve {reserved.get((acct, '@', inst_id), Decimal(0))}"
                )
        assert not any(reserved.values()), f"orders reserve funds of missing balances: {dict(reserved)}"
    for acct, account in state.accounts.items():  # a cross position is a margin position (decision 19)
        for inst_id, ledger in account.positions.items():
            inst = state.instruments[inst_id]
            owed = account.balances.get(inst.quote if ledger.long else inst.base)
            assert owed is not None and (owed.liab or owed.interest), (
                f"{acct} {inst_id}: a cross position owing nothing"
            )
            assert not ledger.qty or (ledger.qty > 0) == ledger.long, (
                f"{acct} {inst_id}: qty {ledger.qty} on the wrong side"
            )
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
    # written after both logs are flushed through its seq; one after the events prefix means
    # outcomes were lost behind it (damage, not a crash): commands are the truth, recovery
    # re-derives them from an earlier snapshot or the start. One after the commands prefix is
    # removed; a torn one is skipped.
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
        behind = data.draw(st.booleans(), label="snapshots behind the lost outcomes kept")
        for seq, path in snapshot_paths(folder):
            if seq > (max if behind else min)(kept_commands, kept_events):
                path.unlink()
        if snapshot_paths(folder) and data.draw(st.booleans(), label="newest snapshot torn"):
            newest = snapshot_paths(folder)[-1][1]
            newest.write_bytes(newest.read_bytes()[: data.draw(st.integers(0, 60), label="snapshot bytes kept")])
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


# --- 10. the risk watch is invisible: ``tests/test_oracle.py`` (the full-sweep engine and restarts) -----


# --- 11. splitting a fill changes nothing of the position -------------------------------------------


class _Log:
    """Command dicts with increasing ``ts`` and fresh ids, as JSON lines."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.ts = 1_700_000_000_000

    def add(self, kind: str, with_id: bool = True, **fields: Any) -> None:
        self.ts += 1_000
        obj: dict[str, Any] = {"type": kind, "ts": self.ts}
        if with_id:
            obj["id"] = f"s{len(self.lines)}"
        obj.update({k: v for k, v in fields.items() if v is not None})
        self.lines.append(line(obj))


def _split_listing(log: _Log, maker_fee: str, taker_fee: str) -> None:
    """USDT, BTC, the generator's BTC-USDT (tick 0.1, lot 0.0001) and BTC-USDT-SWAP (tick 0.1,
    lot 1 contract of 0.001 BTC), both with the given fees; rates set (no accrual happens)."""
    spot, swap = INSTRUMENTS["BTC-USDT"], SWAP
    log.add("list_asset", ccy="USDT", decimals=8)
    log.add("list_asset", ccy="BTC", decimals=8)
    fees = {"makerFee": maker_fee, "takerFee": taker_fee}
    log.add(
        "list_instrument", instId=spot.inst_id, instType="SPOT", baseCcy="BTC", quoteCcy="USDT",
        tickSz=dec_str(spot.tick), lotSz=dec_str(spot.lot), minSz=dec_str(spot.lot), maxLever=spot.max_lever,
        tiers=[
            {"tier": n, "maxBorrowBase": b, "maxBorrowQuote": q, "mmr": m, "imr": i, "maxLever": lv}
            for n, (b, q, m, i, lv) in enumerate(spot.tiers, start=1)
        ],
        **fees,
    )  # fmt: skip
    log.add(
        "list_instrument", instId=swap.inst_id, instType="SWAP", settleCcy="USDT", ctVal=dec_str(swap.ct_val),
        tickSz=dec_str(swap.tick), lotSz=dec_str(swap.lot), minSz=dec_str(swap.lot), maxLever=swap.max_lever,
        tiers=[
            {"tier": n, "maxSz": sz, "mmr": m, "imr": i, "maxLever": lv}
            for n, (sz, m, i, lv) in enumerate(swap.tiers, start=1)
        ],
        **fees,
    )  # fmt: skip
    log.add("set_interest_rate", ccy="USDT", dailyRate="0.0005")
    log.add("set_interest_rate", ccy="BTC", dailyRate="0.002")


class SplitCase:
    """One isolated opening order (spot or SWAP) for ``lots`` lots at ``px``, filled by
    counterparties whose sizes are ``parts`` (one part: a single fill)."""

    __slots__ = ("ccy", "fees", "lever", "limit_slip", "lots", "maker", "px_ticks", "side", "swap")

    def __init__(self, **fields: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, fields[name])

    def __repr__(self) -> str:
        return "SplitCase(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"

    def lines(self, parts: list[int]) -> list[bytes]:
        swap = self.swap
        inst = SWAP if swap else INSTRUMENTS["BTC-USDT"]
        px = dec_str(self.px_ticks * inst.tick)
        log = _Log()
        _split_listing(log, *self.fees)
        for inst_id in ("BTC-USDT", SWAP.inst_id):
            log.add("mark_price", with_id=False, instId=inst_id, markPx=px)
        log.add("deposit", acct="tk", ccy="USDT", amt="10000000")
        log.add("deposit", acct="tk", ccy="BTC", amt="100")
        log.add("set_leverage", acct="tk", instId=inst.inst_id, mgnMode="isolated", lever=self.lever)
        other = "sell" if self.side == "buy" else "buy"
        names = [f"m{i}" for i in range(len(parts))]
        for name in names:
            log.add("deposit", acct=name, ccy="USDT", amt="10000000")
            log.add("deposit", acct=name, ccy="BTC", amt="100")
        mode = "cross" if swap else "cash"
        sz = dec_str(self.lots * inst.lot)
        iso = {"acct": "tk", "instId": inst.inst_id, "side": self.side, "sz": sz, "tdMode": "isolated", "ccy": self.ccy}
        if self.maker:  # the isolated order rests; each counterparty takes a part at market
            log.add("place_order", clOrdId="iso", ordType="limit", px=px, **iso)
            for name, lots in zip(names, parts, strict=True):
                log.add(
                    "place_order", acct=name, instId=inst.inst_id, clOrdId="take", side=other, ordType="market",
                    sz=dec_str(lots * inst.lot), tdMode=mode,
                )  # fmt: skip
        else:  # the counterparties rest at px; the isolated order takes them all
            for name, lots in zip(names, parts, strict=True):
                log.add(
                    "place_order", acct=name, instId=inst.inst_id, clOrdId="rest", side=other, ordType="limit",
                    px=px, sz=dec_str(lots * inst.lot), tdMode=mode,
                )  # fmt: skip
            if self.limit_slip is None:
                log.add("place_order", clOrdId="iso", ordType="market", **iso)
            else:
                slip = self.limit_slip if self.side == "buy" else -self.limit_slip
                log.add(
                    "place_order", clOrdId="iso", ordType="limit", px=dec_str((self.px_ticks + slip) * inst.tick), **iso
                )
        return log.lines


@st.composite
def split_cases(draw: st.DrawFn) -> tuple[SplitCase, list[int]]:
    swap = draw(st.booleans(), label="swap")
    lots = draw(st.integers(2, 1500 if swap else 3000), label="lots")
    k = draw(st.integers(2, min(5, lots)), label="parts")
    cuts = sorted(draw(st.lists(st.integers(1, lots - 1), min_size=k - 1, max_size=k - 1, unique=True), label="cuts"))
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, lots], strict=True)]
    case = SplitCase(
        swap=swap,
        lots=lots,
        side=draw(st.sampled_from(["buy", "sell"])),
        px_ticks=draw(st.integers(550_000, 650_000)),
        fees=draw(st.sampled_from([("0", "0"), ("0.001", "0.001"), ("-0.001", "0.002"), ("0", "0.001")])),
        lever=draw(st.sampled_from(["1", "3", "7", "10", "20"] if swap else ["1", "2", "3", "7", "10"])),
        ccy=None if swap else draw(st.sampled_from([None, "BTC", "USDT"])),
        maker=draw(st.booleans()),
        limit_slip=draw(st.one_of(st.none(), st.integers(0, 50))),
    )
    return case, parts


def _taker_after(lines: list[bytes]) -> tuple[list[PositionView], Any, int]:
    engine, outcomes = run([decode_command_json(raw) for raw in lines])
    for outcome in outcomes:
        refused = [e for e in outcome.events if isinstance(e, ev.OrderRejected | ev.CommandRejected)]
        assert not refused, refused
    fills = sum(1 for o in outcomes for e in o.events if isinstance(e, ev.Traded))
    view = build_view(engine.state)
    positions = [p for p in view.positions if p.acct == "tk"]
    account = next(a for a in view.accounts if a.acct == "tk")
    return positions, account, fills


@budget(150)
@given(split_cases())
def test_splitting_a_fill_leaves_the_position_unchanged(drawn: tuple[SplitCase, list[int]]) -> None:
    """An isolated opening order (spot with either margin currency, or SWAP) filled once by one
    counterparty, or for the same total by several at the same price (the isolated order taking
    them, or resting and being taken), ends with the same position: margin, liability and
    liquidation price — indeed the whole position view and the account's balances.

    The engine posts margin per fill as ``IM(value after) − IM(value before)`` (``value`` at the
    order's limit price, or the fill price for a market order) and borrows ``px × sz`` per fill,
    so both telescope to the single fill's amounts. Fees are rounded per fill, so the rates are
    chosen to make every fee exact at 8 decimals: ``0``, ``±0.001`` and ``0.002`` times a lot
    (0.0001 BTC: 1e-7 BTC; × a 0.1 tick: 1e-8 USDT) or a contract notional (0.1 × 0.001 BTC:
    1e-7 USDT) — a rate like 0.0005 on a spot quote amount would round, and splitting would then
    legitimately change the holdings by the rounding. No interest accrues in between."""
    case, parts = drawn
    note(repr(case))
    note(f"parts {parts}")
    whole, whole_account, whole_fills = _taker_after(case.lines([case.lots]))
    split, split_account, split_fills = _taker_after(case.lines(parts))
    assert (whole_fills, split_fills) == (1, len(parts)), "the orders did not fill as set up"
    assert len(whole) == len(split) == 1, (whole, split)
    (one,), (many,) = whole, split
    for name in ("margin", "liab", "liqPx", "imr", "pos", "avgPx"):
        assert getattr(one, name) == getattr(many, name), (
            f"{name}: one fill {getattr(one, name)!r}, {len(parts)} fills {getattr(many, name)!r}"
        )
    assert one == many
    assert whole_account == split_account


# --- 12. no negative equity left unaccounted --------------------------------------------------------

_COVERS = (ev.InsuranceFundCovered, ev.DebtWrittenOff)


def _deficit(state: State, acct: str, ccy: str, inst_id: str, pos_side: str) -> Decimal:
    """What the account (or isolated position) owes in ``ccy`` beyond what it holds of ``ccy``:
    cross — liability + interest − cash; isolated spot — debt − holding − margin in ``ccy``;
    perpetual — minus its margin (the settlement currency)."""
    account = state.accounts[acct]
    if not inst_id:
        bal = account.balances.get(ccy)
        return bal.liab + bal.interest - bal.cash if bal is not None else Decimal(0)
    inst = state.instruments[inst_id]
    if inst.inst_type == "SWAP":
        assert ccy == inst.settle, f"{ccy} cover for a {inst.settle} perpetual"
        return -account.perps[(inst_id, pos_side)].margin
    pos = account.isolated[inst_id]
    assert ccy == (inst.quote if pos.long else inst.base), f"{ccy} cover for {inst_id}'s other currency"
    own = (pos.base if ccy == inst.base else pos.quote) + (pos.margin if pos.mgn_ccy == ccy else 0)
    return pos.liab + pos.interest - own


def _cross_equity(state: State, account: Account) -> Decimal | None:
    """Σ (cash − liab − interest) × price over the account's currencies (None if a price is
    missing)."""
    total = Decimal(0)
    for ccy, bal in account.balances.items():
        price = state.prices.get(ccy)
        if price is None:
            if bal.cash or bal.liab or bal.interest:
                return None
            continue
        total += (bal.cash - bal.liab - bal.interest) * price
    return total


def _iso_equity(state: State, account: Account, inst_id: str) -> Decimal:
    """``(QA − QL) + (BA − BL)·mark`` of an isolated spot position (margin in its currency)."""
    inst, pos = state.instruments[inst_id], account.isolated[inst_id]
    qa, ql, ba, bl = position_risk.iso_assets(inst, pos)
    return qa - ql + (ba - bl) * state.marks[inst_id]


def check_no_negative_equity(state: State, acct: str, inst_id: str = "", pos_side: str = "") -> None:
    """The account (``inst_id`` empty) or the position owes nothing, or has positive equity;
    a perpetual never has a negative margin. A cross account with a perpetual is exempt from
    the equity test: contracts the book cannot absorb stay open until the next evaluation."""
    account = state.accounts[acct]
    where = f"seq {state.last_seq}: {acct} {inst_id or 'cross'} {pos_side}".rstrip()
    if not inst_id:
        if account.has_debt() and not account.cross_perps():
            equity = _cross_equity(state, account)
            assert equity is None or equity > 0, f"{where}: owes with equity {equity}"
    elif state.instruments[inst_id].inst_type == "SPOT":
        pos = account.isolated.get(inst_id)
        if pos is not None and pos.liab + pos.interest > 0:
            equity = _iso_equity(state, account, inst_id)
            assert equity > 0, f"{where}: owes {pos.liab + pos.interest} with equity {equity}"
    else:
        perp = account.perps.get((inst_id, pos_side))
        assert perp is None or perp.margin >= 0, f"{where}: margin {perp.margin if perp else None}"


def check_shortfalls(shadow: State, outcome: ev.Outcome) -> None:
    """Fold ``outcome`` into ``shadow`` event by event. Each run of cover events for one
    account/position and currency must pay exactly its deficit at that moment, from the fund
    first (``min(fund, deficit)``, the fund never below zero) and the rest written off; when a
    liquidation finishes, the account/position has no negative equity left."""
    events = outcome.events
    i = 0
    while i < len(events):
        e = events[i]
        if isinstance(e, _COVERS):
            key = (e.acct, e.ccy, e.instId, e.posSide)
            where = f"seq {outcome.seq} event {i}: {key}"
            deficit = _deficit(shadow, *key)
            fund = max(Decimal(0), shadow.insurance.get(e.ccy, Decimal(0)))
            from_fund = written = Decimal(0)
            while i < len(events) and isinstance(events[i], _COVERS):
                cover = events[i]
                if (cover.acct, cover.ccy, cover.instId, cover.posSide) != key:
                    break
                if isinstance(cover, ev.InsuranceFundCovered):
                    assert not written, f"{where}: the fund pays after a write-off"
                    from_fund += cover.amt
                else:
                    written += cover.amt
                assert cover.amt > 0, f"{where}: {cover}"
                apply(shadow, cover)
                i += 1
            assert deficit > 0, f"{where}: covered {from_fund + written} but nothing was missing ({deficit})"
            assert from_fund + written == deficit, (
                f"{where}: shortfall {deficit}, covered {from_fund} by the fund + {written} written off"
            )
            assert from_fund == min(fund, deficit), f"{where}: fund {fund} paid {from_fund} of {deficit}"
            assert shadow.insurance.get(e.ccy, Decimal(0)) >= 0, f"{where}: fund below zero"
            continue
        if isinstance(e, ev.LiquidationFinished):
            check_no_negative_equity(shadow, e.acct, e.instId, e.posSide)
        apply(shadow, e)
        i += 1
    record(shadow, outcome)


@budget(150)
@given(scenarios())
def test_liquidations_leave_no_negative_equity_unaccounted(scenario: Scenario) -> None:
    """After every step every account and position that owes something has positive equity
    (perpetuals: a margin ≥ 0), shortfalls are covered exactly (``check_shortfalls``), and no
    insurance fund or written-off total is ever negative."""
    shadow = State()

    def check(engine: Engine, _c: cmd.Command, outcome: ev.Outcome) -> None:
        use_engine_context()
        with localcontext(WIDE):
            check_shortfalls(shadow, through_the_wire(outcome))
            state = engine.state
            for ccy, amt in state.insurance.items():
                assert amt >= 0, f"seq {outcome.seq}: insurance fund {ccy} {amt}"
            for ccy, amt in state.written_off.items():
                assert amt >= 0, f"seq {outcome.seq}: written off {ccy} {amt}"
            for acct, account in state.accounts.items():
                check_no_negative_equity(state, acct)
                for inst_id in account.isolated:
                    check_no_negative_equity(state, acct, inst_id, "net")
                for inst_id, pos_side in account.perps:
                    check_no_negative_equity(state, acct, inst_id, pos_side)

    run(scenario.commands(), check)


# --- the generator reaches what the properties are about ---------------------------------------------

#: The fixed sample: ``COVERAGE_EXAMPLES`` logs from each of these seeds (several short runs:
#: Hypothesis derives a run's examples from each other, so one long run is lumpy).
COVERAGE_SEEDS = range(6)
COVERAGE_EXAMPLES = 50
#: Least number of logs of the sample that must show each label.
COVERAGE_MINIMUM = {
    "cross closing fill repaid": 10,
    "isolated reverse": 2,
    "liquidation: cross": 10,
    "liquidation: isolated spot": 6,
    "liquidation: SWAP": 6,
    "partial liquidation: isolated spot": 2,
    "partial liquidation: SWAP": 2,
    "funding": 6,
    "debt written off": 6,
    "insurance fund covered": 2,
    "isolated spot position": 20,
    "SWAP cross position": 10,
    "SWAP isolated position": 10,
    "hedge-mode position": 5,
    "margin adjusted": 5,
    "SWAP P&L realised": 5,
}


def test_generator_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    """On a fixed sample of logs (seeded runs), count the logs showing each coverage label and
    require a minimum for what the position properties are about: funding, liquidations of
    positions (full and partial) and written-off debt. A log whose stepping fails counts what
    it showed before the failure (the properties report the failure itself)."""
    counts: Counter[str] = Counter()
    failed: list[str] = []

    def sample_logs(scenario: Scenario) -> None:
        coverage = Coverage()
        engine = Engine()
        try:
            for command in scenario.commands():
                coverage.observe(engine.state, engine.step(command))
        except Exception as err:  # reported by the properties; counted here
            failed.append(type(err).__name__)
        counts.update(coverage.seen)

    for run_seed in COVERAGE_SEEDS:
        sample = settings(
            max_examples=COVERAGE_EXAMPLES, database=None, phases=[Phase.generate], deadline=None,
            suppress_health_check=list(HealthCheck),
        )(given(scenarios())(sample_logs))  # fmt: skip
        seed(run_seed)(sample)()
    total = len(COVERAGE_SEEDS) * COVERAGE_EXAMPLES
    with capsys.disabled():
        print(f"\ngenerator coverage over {total} logs ({len(failed)} stopped early: {dict(Counter(failed))}):")
        for name in Coverage.LABELS:
            print(f"  {name}: {counts[name]}")
    low = {name: counts[name] for name, least in COVERAGE_MINIMUM.items() if counts[name] < least}
    assert not low, f"the generator reaches too rarely: {low} (minimum {COVERAGE_MINIMUM})"


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
