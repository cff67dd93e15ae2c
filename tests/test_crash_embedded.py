"""Exactly-once on the embedded log, proven by killing the process mid-stream.

``marginbook run FILE --log DIR`` is started as a real process and SIGKILLed at several points
while it journals; each time it is restarted on the same directory. The final command log, the
final event log and the state digest must equal those of one uninterrupted run: no command lost
or applied twice, no outcome missing, duplicated or different.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.io.embedded import COMMANDS_FILE, EVENTS_FILE
from engine.io.filelog import FileLog
from replay.verify import replay_dir

ROOT = Path(__file__).resolve().parent.parent
TOTAL = 40_000
TIERS = [
    {"tier": 1, "maxBorrowBase": "35", "maxBorrowQuote": "1000000", "mmr": "0.03", "imr": "0.1", "maxLever": "10"},
    {"tier": 2, "maxBorrowBase": "70", "maxBorrowQuote": "2000000", "mmr": "0.0625", "imr": "0.125", "maxLever": "8"},
]


def write_flow(path: Path, count: int, seed: int) -> None:
    """A deterministic mix: deposits, resting and crossing cross/cash orders, cancels, marks,
    borrows and interest, for 40 accounts on one BTC-USDT book."""
    rng = random.Random(seed)
    ts = 1_700_000_000_000
    lines: list[dict[str, object]] = [
        {"type": "list_asset", "ccy": "USDT", "decimals": 8},
        {"type": "list_asset", "ccy": "BTC", "decimals": 8},
        {
            "type": "list_instrument",
            "instId": "BTC-USDT",
            "instType": "SPOT",
            "baseCcy": "BTC",
            "quoteCcy": "USDT",
            "tickSz": "0.1",
            "lotSz": "0.001",
            "minSz": "0.001",
            "makerFee": "0.0008",
            "takerFee": "0.001",
            "maxLever": "10",
            "tiers": TIERS,
        },
        {"type": "set_interest_rate", "ccy": "USDT", "dailyRate": "0.0003"},
        {"type": "mark_price", "instId": "BTC-USDT", "markPx": "50000"},
    ]
    accounts = [f"a{i}" for i in range(40)]
    for acct in accounts:
        lines.append({"type": "deposit", "acct": acct, "ccy": "USDT", "amt": "100000"})
        lines.append({"type": "deposit", "acct": acct, "ccy": "BTC", "amt": "2"})
    mark = 50_000.0
    open_orders: list[tuple[str, str]] = []
    n = 0
    while len(lines) < count:
        roll = rng.random()
        acct = rng.choice(accounts)
        if roll < 0.55:
            n += 1
            side = rng.choice(["buy", "sell"])
            offset = rng.randint(-30, 60) * 10
            px = round(mark - offset if side == "buy" else mark + offset, 1)
            cl = f"c{n}"
            lines.append(
                {
                    "type": "place_order",
                    "acct": acct,
                    "instId": "BTC-USDT",
                    "clOrdId": cl,
                    "side": side,
                    "ordType": rng.choice(["limit", "limit", "limit", "ioc", "post_only"]),
                    "px": f"{px:.1f}",
                    "sz": f"{rng.randint(1, 200) / 1000:.3f}",
                    "tdMode": rng.choice(["cross", "cross", "cash"]),
                }
            )
            open_orders.append((acct, cl))
        elif roll < 0.8 and open_orders:
            owner, cl = open_orders.pop(rng.randrange(len(open_orders)))
            lines.append({"type": "cancel_order", "acct": owner, "instId": "BTC-USDT", "clOrdId": cl})
        elif roll < 0.93:
            mark = max(20_000.0, mark * (1 + rng.uniform(-0.004, 0.004)))
            lines.append({"type": "mark_price", "instId": "BTC-USDT", "markPx": f"{mark:.1f}"})
        elif roll < 0.97:
            lines.append({"type": "borrow", "acct": acct, "ccy": "USDT", "amt": str(rng.randint(1, 50) * 100)})
        else:
            lines.append({"type": "accrue_interest"})
    with open(path, "w") as handle:
        for i, line in enumerate(lines):
            ts += rng.randint(1, 50)
            stamped = {**line, "ts": ts}
            if line["type"] not in ("mark_price", "accrue_interest") or i % 2:
                stamped["id"] = f"id-{i}"
            handle.write(json.dumps(stamped, separators=(",", ":")) + "\n")


def _run(flow: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "run", str(flow), "--log", str(log), "--snapshot-every", "700"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def _records(path: Path) -> list[tuple[int, bytes]]:
    with FileLog.open(path) as log:
        return list(log.read())


@pytest.mark.slow
def test_sigkill_mid_stream_then_restart_equals_uninterrupted_run(tmp_path: Path) -> None:
    flow = tmp_path / "flow.jsonl"
    write_flow(flow, TOTAL, seed=7)
    reference = tmp_path / "reference"
    started = time.monotonic()
    done = _run(flow, reference)
    assert done.wait(timeout=300) == 0, done.stderr.read().decode() if done.stderr else ""
    duration = time.monotonic() - started

    crashed = tmp_path / "crashed"
    rng = random.Random(11)
    kills_mid_stream = 0
    for _ in range(6):
        proc = _run(flow, crashed)
        time.sleep(rng.uniform(0.25, 0.5) * duration)
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if (crashed / COMMANDS_FILE).exists():
            journaled = len(_records(crashed / COMMANDS_FILE))
            kills_mid_stream += 0 < journaled < TOTAL
    final = _run(flow, crashed)
    assert final.wait(timeout=300) == 0, final.stderr.read().decode() if final.stderr else ""
    assert kills_mid_stream >= 2, "the kills did not land mid-stream; the test proved nothing"

    assert _records(crashed / COMMANDS_FILE) == _records(reference / COMMANDS_FILE)
    assert _records(crashed / EVENTS_FILE) == _records(reference / EVENTS_FILE)
    ours, theirs = replay_dir(crashed), replay_dir(reference)
    assert ours.ok and theirs.ok
    assert ours.digest == theirs.digest


def test_run_refuses_a_log_written_from_other_input(tmp_path: Path) -> None:
    first, second = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    write_flow(first, 300, seed=1)
    write_flow(second, 300, seed=2)
    log = tmp_path / "log"
    assert _run(first, log).wait(timeout=60) == 0
    proc = _run(second, log)
    assert proc.wait(timeout=60) == 2
    assert proc.stderr is not None
    assert b"differs from command" in proc.stderr.read()
