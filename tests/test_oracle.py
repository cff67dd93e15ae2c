"""The differential oracle: every generated log is run three ways, journals byte-identical.

1. **incremental** — ``Engine()``: risk watches (``engine.core.watch``) and cached position
   evaluations (``seen``) decide whom a mark evaluates;
2. **full sweep** — ``Engine(full_sweep=True)`` (``engine.core.sweep``): after every command
   every exposed account and position is evaluated in debtor order, no watch, no cache — slow
   and obviously right;
3. **restarted** — the incremental engine snapshotted (``snapshot.encode`` → ``restore``) at
   random points and continued on a fresh engine: every restored state has the digest of the
   uninterrupted state at that point.

Every outcome must encode (``encode_outcome_json``) to the same bytes in all three, and the
three final digests must agree; the full-sweep state must also keep ``State.debtors`` equal to
the accounts a price can move. The logs come from ``strategies.oracle_scenarios``: the ordinary
random mix plus operations that read a shadow engine to aim marks exactly at the 300 % and
100 % prices of exposed accounts and positions (the engine's own solvers), repeat marks, jump
across both thresholds, construct ratios of exactly 300 % / 100 % at round prices, and open
cross debts in tier 2 (cross partial liquidations).

Coverage is counted per category (:data:`CATEGORIES`, logs reaching each) and printed; the run
fails if a category is never reached. Running it:

* short run (part of ``./dev test``): :data:`SHORT_LOGS` logs from a fixed seed (≈ 15 s);
* long run: ``MARGINBOOK_ORACLE_LOGS=3000 .venv/bin/python -m pytest tests/test_oracle.py -s``,
  optionally with ``MARGINBOOK_ORACLE_SEED=n`` (default: the fixed seed; ``random``: a fresh one)
  and ``MARGINBOOK_ORACLE_MAX_OPS=n`` (operations per log, default 40: longer logs).

A failure is shrunk by Hypothesis and printed as the JSONL log (paste it into a file for
``marginbook run`` / ``replay --full-sweep``) with the cut points, the leg and the sequence
number where the journals part. The ``test_regression_*`` tests pin what the oracle found.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from strategies import Scenario, Target, oracle_scenarios, ratio_at, targets

from engine.core import snapshot
from engine.core.margin import LIQUIDATION_RATIO, WARNING_RATIO
from engine.core.risk import account_risk
from engine.core.state import FUTURES_SUFFIX, State
from engine.core.step import Engine
from engine.core.sweep import exposed_to_mark
from engine.io.embedded import EmbeddedEngine
from events import commands as cmd
from events import journal as ev
from events.codec import decode_command_json, encode_outcome_json
from replay.verify import replay_dir

SHORT_LOGS = 400
LOGS = int(os.environ.get("MARGINBOOK_ORACLE_LOGS", SHORT_LOGS))
#: Operations per log (``oracle_scenarios(max_ops=…)``; logs with isolated margin or perpetuals
#: get a quarter more each).
MAX_OPS = int(os.environ.get("MARGINBOOK_ORACLE_MAX_OPS", 40))
_SEED_ENV = os.environ.get("MARGINBOOK_ORACLE_SEED", "")
SEED = random.SystemRandom().randrange(2**32) if _SEED_ENV == "random" else int(_SEED_ENV or 20240610)

CATEGORIES = (
    "repeated mark",
    "mark at 300 % exactly",
    "mark at 100 % exactly",
    "repeated mark at 300 %",
    "mark across 300 % and 100 %",
    "first mark of a held currency",
    "partial liquidation: cross",
    "partial liquidation: isolated spot",
    "partial liquidation: SWAP",
    "full liquidation: cross",
    "full liquidation: isolated spot",
    "full liquidation: SWAP",
    "liquidation short of liquidity",
    "liquidation retried",
    "insurance fund covered",
    "debt written off",
    "restart with a standing margin call",
    "restart with an unfinished liquidation",
    "restart between identical marks",
    "transfer between wallets",
    "futures wallet liquidated",
    "isolated SWAP flip",
    "SWAP close order above availPos",
)


class Divergence(AssertionError):
    """Two legs of the oracle produced different bytes (or digests)."""


def _scope_kind(state: State, inst_id: str) -> str:
    if not inst_id:
        return "cross"
    return "SWAP" if state.instruments[inst_id].inst_type == "SWAP" else "isolated spot"


def _swap(state: State, inst_id: str) -> bool:
    inst = state.instruments.get(inst_id)
    return inst is not None and inst.inst_type == "SWAP"


def _partial(state: State, e: ev.LiquidationFinished) -> bool:
    """After the step the liquidated account or position is still open above 100 %."""
    if not e.instId:
        account = state.accounts[e.acct]
        ratio = account_risk(state, account).ratio if account.at_risk() else None
    else:
        kind = "iso" if state.instruments[e.instId].inst_type == "SPOT" else "perp"
        target = Target(kind, e.acct, e.instId, pos_side=e.posSide or "net")
        ratio = ratio_at(state, target, state.marks[e.instId]) if target.alive(state) else None
    return ratio is not None and ratio > LIQUIDATION_RATIO


def _standing_call(state: State) -> bool:
    """Any margin call standing, on an account or a position."""
    for account in state.accounts.values():
        if account.margin_call or any(p.margin_call for p in (*account.isolated.values(), *account.perps.values())):
            return True
    return False


class Observer:
    """What one log exercised (categories), read from the incremental leg's state and outcomes."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stuck: set[str] = set()
        self._iso_perps: dict[tuple[str, tuple[str, str]], bool] = {}

    def before(self, state: State, command: cmd.Command) -> None:
        self._stuck = set(state.stuck)
        self._iso_perps = {
            (acct, key): pos.qty > 0
            for acct, account in state.accounts.items()
            for key, pos in account.perps.items()
            if pos.mgn_mode == "isolated" and pos.qty
        }
        if not isinstance(command, cmd.MarkPrice) or command.instId not in state.instruments:
            return
        if command.instId not in state.marks:
            inst = state.instruments[command.instId]
            if any(exposed_to_mark(state, state.accounts[acct], inst) for acct in state.debtors):
                self.seen.add("first mark of a held currency")
            return
        new = Decimal(command.markPx)
        now = state.marks[command.instId]
        exposed = [t for t in targets(state) if t.inst_id == command.instId]
        if not exposed:
            return
        repeated = new == now
        if repeated:
            self.seen.add("repeated mark")
        for target in exposed:
            before, after = ratio_at(state, target, now), ratio_at(state, target, new)
            if after is None or before is None:
                continue
            if after == WARNING_RATIO:
                self.seen.add("repeated mark at 300 %" if repeated else "mark at 300 % exactly")
            if after == LIQUIDATION_RATIO:
                self.seen.add("mark at 100 % exactly")
            if before > WARNING_RATIO and after <= LIQUIDATION_RATIO:
                self.seen.add("mark across 300 % and 100 %")

    def after(self, state: State, outcome: ev.Outcome) -> None:
        seen = self.seen
        for (acct, key), long in self._iso_perps.items():
            pos = state.accounts[acct].perps.get(key)
            if pos is not None and pos.qty and (pos.qty > 0) != long:
                seen.add("isolated SWAP flip")
        for e in outcome.events:
            if isinstance(e, ev.OrderRejected) and e.reason == "exceeds_available_to_close" and _swap(state, e.instId):
                seen.add("SWAP close order above availPos")
            if isinstance(e, ev.LiquidationFinished):
                kind = "partial" if _partial(state, e) else "full"
                seen.add(f"{kind} liquidation: {_scope_kind(state, e.instId)}")
            elif isinstance(e, ev.LiquidationStarted) and e.acct in self._stuck:
                seen.add("liquidation retried")
            elif isinstance(e, ev.OrderCanceled) and e.reason == "ioc" and e.clOrdId.startswith("liq"):
                seen.add("liquidation short of liquidity")
            elif isinstance(e, ev.InsuranceFundCovered):
                seen.add("insurance fund covered")
            elif isinstance(e, ev.DebtWrittenOff):
                seen.add("debt written off")
            elif isinstance(e, ev.Transferred):
                seen.add("transfer between wallets")
            if isinstance(e, ev.LiquidationStarted) and e.acct.endswith(FUTURES_SUFFIX):
                seen.add("futures wallet liquidated")


def _events(raw: bytes) -> list[str]:
    return [json.dumps(e) for e in json.loads(raw)["events"]]


def _diverged(leg: str, seq: int, line: bytes, expected: bytes, actual: bytes) -> Divergence:
    want, got = _events(expected), _events(actual)
    first = next((i for i, (x, y) in enumerate(zip(want, got, strict=False)) if x != y), min(len(want), len(got)))
    return Divergence(
        f"the {leg} leg diverges from the incremental engine at seq {seq}, events[{first}] "
        f"({len(want)} vs {len(got)} events)\n  command:     {line.decode()}\n"
        f"  incremental: {expected.decode()}\n  {leg}: {actual.decode()}"
    )


def three_ways(
    lines: Sequence[bytes], cuts: Sequence[int] = (), observer: Observer | None = None, cut_when_stuck: bool = False
) -> int:
    """Step ``lines`` through the three legs (module doc); raise :class:`Divergence` at the
    first difference. ``cuts``: restart the third leg before these command indices;
    ``cut_when_stuck``: also right after the first command that leaves a liquidation
    unfinished (a restored engine does not know ``State.stuck``). Returns the number of
    restarts done."""
    incremental, full, restarted = Engine(), Engine(full_sweep=True), Engine()
    restarts = 0
    cut_at = set(cuts)
    for index, raw in enumerate(lines):
        if cut_when_stuck and incremental.state.stuck:
            cut_at.add(index)
            cut_when_stuck = False
        command = decode_command_json(raw)
        if index in cut_at:
            blob = snapshot.encode(restarted.state)
            state = snapshot.restore(blob)
            if snapshot.digest(state) != snapshot.digest(incremental.state):
                raise Divergence(f"the state restored before command {index} has another digest")
            if observer is not None and _standing_call(state):
                observer.seen.add("restart with a standing margin call")
            if observer is not None and restarted.state.stuck:
                observer.seen.add("restart with an unfinished liquidation")
            restarted = Engine(state)
            restarts += 1
        if observer is not None:
            observer.before(incremental.state, command)
        outcome = incremental.step(command)
        if observer is not None:
            observer.after(incremental.state, outcome)
        expected = encode_outcome_json(outcome)
        for leg, engine in (("full-sweep", full), ("restarted", restarted)):
            actual = encode_outcome_json(engine.step(command))
            if actual != expected:
                raise _diverged(leg, outcome.seq, raw, expected, actual)
        exposed = [acct for acct, account in full.state.accounts.items() if account.exposed()]
        if sorted(full.state.debtors) != sorted(exposed):
            raise Divergence(f"seq {outcome.seq}: debtors {sorted(full.state.debtors)} are not the exposed {exposed}")
    if len({snapshot.digest(e.state) for e in (incremental, full, restarted)}) != 1:
        raise Divergence("the three legs end in different states")
    return restarts


def _cuts(scenario: Scenario, data: st.DataObject) -> list[int]:
    """1–4 random restart points after the prelude, and often one between two identical marks
    (where a restored engine's dirty accounts meet a zero-width band)."""
    n = len(scenario.lines)
    first = scenario.prelude if scenario.prelude < n else 0
    cuts = set(data.draw(st.lists(st.integers(first, n - 1), min_size=1, max_size=4), label="cuts"))
    twins = [i for i in range(scenario.prelude + 1, n) if scenario.lines[i] == _same_mark(scenario.lines, i)]
    if twins and data.draw(st.booleans(), label="cut between identical marks"):
        cuts.add(data.draw(st.sampled_from(twins), label="twin cut"))
    return sorted(cuts)


def _same_mark(lines: Sequence[bytes], i: int) -> bytes | None:
    """``lines[i]`` if it is a mark with the same instrument and price as ``lines[i - 1]``."""
    a, b = decode_command_json(lines[i - 1]), decode_command_json(lines[i])
    if isinstance(a, cmd.MarkPrice) and isinstance(b, cmd.MarkPrice) and (a.instId, a.markPx) == (b.instId, b.markPx):
        return lines[i]
    return None


def test_oracle_three_ways(capsys: pytest.CaptureFixture[str]) -> None:
    """The oracle over :data:`LOGS` generated logs (module doc); prints counts and coverage and
    fails if any category of :data:`CATEGORIES` is never reached."""
    counts: Counter[str] = Counter()
    totals: Counter[str] = Counter()

    def one_log(scenario: Scenario, data: st.DataObject) -> None:
        cuts = _cuts(scenario, data)
        observer = Observer()
        restarts = three_ways(
            scenario.lines, cuts, observer, cut_when_stuck=data.draw(st.booleans(), label="stuck cut")
        )
        lines = scenario.lines
        if any(_same_mark(lines, i) for i in cuts if i > 0):
            observer.seen.add("restart between identical marks")
        totals["logs"] += 1
        totals["commands"] += len(lines)
        totals["restarts"] += restarts
        counts.update(observer.seen)

    run = settings(
        max_examples=LOGS, database=None, deadline=None, suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
    )(given(oracle_scenarios(max_ops=MAX_OPS), st.data())(one_log))  # fmt: skip
    seed(SEED)(run)()
    with capsys.disabled():
        print(
            f"\noracle (seed {SEED}): {totals['logs']} logs, {totals['commands']} commands, "
            f"{totals['restarts']} restarts, journals identical three ways"
        )
        for name in CATEGORIES:
            print(f"  {name}: {counts[name]}")
    missing = [name for name in CATEGORIES if not counts[name]]
    assert not missing, f"the oracle's generator never reached: {missing}"


# --- regressions: holes the oracle finds (each fails on the engine before its fix) ----------------

GOLDEN = Path(__file__).parent / "golden"


def _isolated_shortfall_with_line_14_twice() -> list[bytes]:
    """``isolated_shortfall`` with its line 14 (``mark_price 99000``: bob's isolated long at
    exactly 300 %) sent twice in a row (the repeat 0.5 s later)."""
    lines = [raw.strip() for raw in (GOLDEN / "isolated_shortfall.commands.jsonl").read_bytes().splitlines()]
    repeat = lines[13].replace(b'"ts":1704326413000', b'"ts":1704326413500')
    assert repeat != lines[13]
    return [*lines[:14], repeat, *lines[14:]]


def test_regression_repeated_mark_at_300_percent_keeps_isolated_liquidation_on(tmp_path: Path) -> None:
    """Hole 2 (issue 10). bob's isolated long is at exactly 300 % at 99,000: the mark leaves him
    a zero-width band, the repeated mark popped it, and the cached evaluation (``seen`` equal
    to the inputs) returned without registering it again — so the marks at 93,000 (his liqPx)
    and 75,000 (bankrupt) never evaluated him, while a run restarted from a snapshot did
    liquidate him (``marginbook replay`` then reported DIVERGED). Now: bob is liquidated at
    93,000, the three ways agree, and the log written with a restart replays identically, also
    with ``--full-sweep``."""
    lines = _isolated_shortfall_with_line_14_twice()
    engine = Engine()
    outcomes = [engine.step(decode_command_json(raw)) for raw in lines]
    at_93000 = outcomes[16]  # the 17th line: mark_price 93000
    assert isinstance(at_93000.events[0], ev.MarkPriceSet) and at_93000.events[0].markPx == Decimal(93000)
    started = [e for e in at_93000.events if isinstance(e, ev.LiquidationStarted)]
    assert [(e.acct, e.instId, e.mgnRatio) for e in started] == [("bob", "BTC-USDT", Decimal("1.00000000"))]
    folder = tmp_path / "log"
    with EmbeddedEngine(folder, snapshot_every=15) as first:
        for raw in lines[:15]:
            first.submit(decode_command_json(raw), raw)
    with EmbeddedEngine(folder, snapshot_every=15) as second:  # restarted from the snapshot at 15
        assert second.state.last_seq == 15
        for raw in lines[15:]:
            second.submit(decode_command_json(raw), raw)
    report = replay_dir(folder)
    assert report.ok, report.mismatch
    assert report.matched == len(lines)
    assert three_ways(lines, cuts=[15]) == 1
    full = replay_dir(folder, full_sweep=True)
    assert full.ok and full.matched == len(lines) and full.digest == report.digest


#: An isolated perpetual at exactly 300 % at 99,000, its liqPx exactly 97,000: bob is long 100
#: contracts (1 BTC, ctVal 0.01) at 100,000, fees 0, tier 1 mmr 1 %, 50x (initial margin 2,000)
#: plus 1,970 added: ``MR = (3,970 + P − 100,000) / (0.01·P)`` — 3 at 99,000, 1 at 97,000.
_PERP_AT_300 = [
    b'{"type":"list_asset","ts":1,"id":"p1","ccy":"USDT","decimals":8}',
    b'{"type":"list_asset","ts":2,"id":"p2","ccy":"BTC","decimals":8}',
    b'{"type":"list_instrument","ts":3,"id":"p3","instId":"BTC-USDT","instType":"SPOT","baseCcy":"BTC",'
    b'"quoteCcy":"USDT","tickSz":"0.1","lotSz":"0.0001","minSz":"0.0001","makerFee":"0","takerFee":"0",'
    b'"maxLever":"10","tiers":[{"tier":1,"maxBorrowBase":"5","maxBorrowQuote":"300000","mmr":"0.04",'
    b'"imr":"0.1","maxLever":"10"}]}',
    b'{"type":"list_instrument","ts":4,"id":"p4","instId":"BTC-USDT-SWAP","instType":"SWAP","settleCcy":"USDT",'
    b'"ctVal":"0.01","tickSz":"0.1","lotSz":"1","minSz":"1","makerFee":"0","takerFee":"0","maxLever":"75",'
    b'"tiers":[{"tier":1,"maxSz":"1000","mmr":"0.01","imr":"0.013","maxLever":"75"}]}',
    b'{"type":"mark_price","ts":5,"instId":"BTC-USDT","markPx":"100000"}',
    b'{"type":"mark_price","ts":6,"instId":"BTC-USDT-SWAP","markPx":"100000"}',
    b'{"type":"deposit","ts":7,"id":"p7","acct":"bob","ccy":"USDT","amt":"10000"}',
    b'{"type":"deposit","ts":8,"id":"p8","acct":"mm","ccy":"USDT","amt":"1000000"}',
    b'{"type":"set_leverage","ts":9,"id":"p9","acct":"bob","instId":"BTC-USDT-SWAP","mgnMode":"isolated","lever":"50"}',
    b'{"type":"place_order","ts":10,"id":"p10","acct":"mm","instId":"BTC-USDT-SWAP","clOrdId":"ask","side":"sell",'
    b'"ordType":"limit","px":"100000","sz":"100","tdMode":"cross"}',
    b'{"type":"place_order","ts":11,"id":"p11","acct":"bob","instId":"BTC-USDT-SWAP","clOrdId":"long","side":"buy",'
    b'"ordType":"limit","px":"100000","sz":"100","tdMode":"isolated"}',
    b'{"type":"adjust_margin","ts":12,"id":"p12","acct":"bob","instId":"BTC-USDT-SWAP","posSide":"net",'
    b'"action":"add","amt":"1970"}',
    b'{"type":"place_order","ts":13,"id":"p13","acct":"mm","instId":"BTC-USDT-SWAP","clOrdId":"bid","side":"buy",'
    b'"ordType":"limit","px":"97000","sz":"100","tdMode":"cross"}',
    b'{"type":"mark_price","ts":14,"instId":"BTC-USDT-SWAP","markPx":"99000"}',
    b'{"type":"mark_price","ts":15,"instId":"BTC-USDT-SWAP","markPx":"99000"}',
    b'{"type":"mark_price","ts":16,"instId":"BTC-USDT-SWAP","markPx":"97000"}',
]


def test_regression_repeated_mark_at_300_percent_keeps_perpetual_liquidation_on() -> None:
    """Hole 2's twin in ``swap_liquidation.evaluate_perp``: the same zero-width band and the
    same early return on ``seen``. bob's isolated perpetual is called at 99,000 (exactly 300 %),
    the mark is repeated, and at 97,000 (exactly 100 %) he is liquidated; the three ways agree
    with a restart between the identical marks."""
    engine = Engine()
    outcomes = [engine.step(decode_command_json(raw)) for raw in _PERP_AT_300]
    raised = [e for e in outcomes[13].events if isinstance(e, ev.MarginCallRaised)]
    assert [(e.acct, e.mgnRatio) for e in raised] == [("bob", Decimal("3.00000000"))]
    assert outcomes[14].events == [ev.MarkPriceSet(instId="BTC-USDT-SWAP", markPx=Decimal(99000))]
    started = [e for e in outcomes[15].events if isinstance(e, ev.LiquidationStarted)]
    assert [(e.acct, e.instId, e.mgnRatio) for e in started] == [("bob", "BTC-USDT-SWAP", Decimal("1.00000000"))]
    assert ("BTC-USDT-SWAP", "net") not in engine.state.accounts["bob"].perps
    assert three_ways(_PERP_AT_300, cuts=[14]) == 1


#: bob's isolated short owes 0.0062 BTC; his reduce-only buy of 0.0108 meets two asks at 25,000.
_RELEASED_MID_MATCH = [
    b'{"type":"list_asset","ts":1,"id":"k1","ccy":"USDT","decimals":8}',
    b'{"type":"list_asset","ts":2,"id":"k2","ccy":"BTC","decimals":8}',
    b'{"type":"list_instrument","ts":3,"id":"k3","instId":"BTC-USDT","instType":"SPOT","baseCcy":"BTC","quoteCcy":"USDT","tickSz":"0.1","lotSz":"0.0001","minSz":"0.0001","makerFee":"0","takerFee":"0","maxLever":"10","tiers":[{"tier":1,"maxBorrowBase":"5","maxBorrowQuote":"300000","mmr":"0.04","imr":"0.1","maxLever":"10"}]}',
    b'{"type":"mark_price","ts":4,"instId":"BTC-USDT","markPx":"50000"}',
    b'{"type":"deposit","ts":5,"id":"k5","acct":"alice","ccy":"USDT","amt":"1000"}',
    b'{"type":"deposit","ts":6,"id":"k6","acct":"bob","ccy":"USDT","amt":"1000"}',
    b'{"type":"deposit","ts":7,"id":"k7","acct":"dave","ccy":"BTC","amt":"1"}',
    b'{"type":"place_order","ts":8,"id":"k8","acct":"alice","instId":"BTC-USDT","clOrdId":"bid","side":"buy","ordType":"limit","px":"50000","sz":"0.0062","tdMode":"cash"}',
    b'{"type":"place_order","ts":9,"id":"k9","acct":"bob","instId":"BTC-USDT","clOrdId":"short","side":"sell","ordType":"market","sz":"0.0062","tdMode":"isolated","ccy":"USDT"}',
    b'{"type":"place_order","ts":10,"id":"k10","acct":"dave","instId":"BTC-USDT","clOrdId":"ask1","side":"sell","ordType":"limit","px":"25000","sz":"0.0063","tdMode":"cash"}',
    b'{"type":"place_order","ts":11,"id":"k11","acct":"dave","instId":"BTC-USDT","clOrdId":"ask2","side":"sell","ordType":"limit","px":"25000","sz":"0.0001","tdMode":"cash"}',
    b'{"type":"place_order","ts":12,"id":"k12","acct":"bob","instId":"BTC-USDT","clOrdId":"close","side":"buy","ordType":"market","sz":"0.0108","tdMode":"isolated","reduceOnly":true}',
]


def test_regression_a_closing_fill_that_releases_the_position_ends_the_match() -> None:
    """Found by the oracle's long run (seed 11): the first fill (0.0063) repays the whole debt,
    the position is released and its orders canceled — the closing order itself included — but
    the match went on to the next ask with the canceled order and the fold failed
    (``KeyError`` in ``evolve._traded``), halting every leg. Now the match ends there."""
    engine = Engine()
    outcome = [engine.step(decode_command_json(raw)) for raw in _RELEASED_MID_MATCH][-1]
    kinds = [type(e).__name__ for e in outcome.events]
    assert kinds == [
        "OrderAccepted", "Traded", "PositionRepaid", "OrderCanceled", "MarginCallCleared", "PositionReleased",
    ]  # fmt: skip
    assert "BTC-USDT" not in engine.state.accounts["bob"].isolated
    assert three_ways(_RELEASED_MID_MATCH, cuts=[11]) == 1
