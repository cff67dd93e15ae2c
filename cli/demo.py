"""``marginbook demo``: a built-in scenario on the embedded log, shown step by step.

A market maker quotes BTC-USDT and the BTC-USDT-SWAP perpetual around the mark; ``alice`` opens
a leveraged cross long (auto-borrowing USDT); ``bob`` opens a cross short (auto-borrowing BTC);
``carol`` an isolated 10× long margined in USDT (borrowing at fill, risk apart from her other
funds); ``dave`` an isolated 8× long on the perpetual. The mark price then falls step by step
(funding is settled once): margin ratios drop through the 300 % warning (margin calls) and below
100 % (liquidations against the book), while bob's short gains. After every step the positions,
margin ratios and liquidation prices are shown as a table.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from engine.core.money import fmt
from engine.io.embedded import EmbeddedEngine
from events.codec import decode_command_json
from events.journal import Outcome
from projections.risk_view import build_view

_TIERS = [
    {"tier": 1, "maxBorrowBase": "35", "maxBorrowQuote": "1000000", "mmr": "0.03", "imr": "0.1", "maxLever": "10"},
    {"tier": 2, "maxBorrowBase": "70", "maxBorrowQuote": "2000000", "mmr": "0.0625", "imr": "0.125", "maxLever": "8"},
    {"tier": 3, "maxBorrowBase": "105", "maxBorrowQuote": "3000000", "mmr": "0.1", "imr": "0.2", "maxLever": "5"},
]


_SWAP_TIERS = [
    {"tier": 1, "maxSz": "1000", "mmr": "0.01", "imr": "0.013", "maxLever": "75"},
    {"tier": 2, "maxSz": "2500", "mmr": "0.015", "imr": "0.02", "maxLever": "50"},
    {"tier": 3, "maxSz": "25000", "mmr": "0.02", "imr": "0.05", "maxLever": "20"},
]
_SWAP = "BTC-USDT-SWAP"


class _Script:
    """Builds the scenario's commands with increasing ``ts`` and unique ids."""

    def __init__(self) -> None:
        self.ts = 1_700_000_000_000
        self.n = 0

    def __call__(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.n += 1
        self.ts += 1_000
        return {"type": kind, "ts": self.ts, "id": f"demo-{self.n}", **fields}


def _quotes(cmd: _Script, mark: int, step: int, full: bool = True) -> Iterator[dict[str, Any]]:
    """The market maker re-quotes the books: cancel the previous step's orders (those still
    open), quote around ``mark`` (spot in cash mode, the perpetual in cross mode)."""
    books = (("BTC-USDT", "cash", 1), (_SWAP, "cross", 100)) if full else (("BTC-USDT", "cash", 1),)
    if step:
        for inst, _, _ in books:
            for name in ("b1", "b2", "a1", "a2"):
                yield cmd("cancel_order", acct="mm", instId=inst, clOrdId=f"{name}-{step - 1}")
    for inst, mode, scale in books:
        for name, side, px, sz in (
            ("b1", "buy", mark - 100, 2),
            ("b2", "buy", mark - 1_000, 5),
            ("a1", "sell", mark + 100, 2),
            ("a2", "sell", mark + 1_000, 5),
        ):
            yield cmd(
                "place_order",
                acct="mm",
                instId=inst,
                clOrdId=f"{name}-{step}",
                side=side,
                ordType="limit",
                px=str(px),
                sz=str(sz * scale),
                tdMode=mode,
            )


def _market(
    cmd: _Script, acct: str, cl_ord_id: str, side: str, sz: str, mode: str = "cross", **extra: str
) -> dict[str, Any]:
    return cmd(
        "place_order",
        acct=acct,
        instId=extra.pop("instId", "BTC-USDT"),
        clOrdId=cl_ord_id,
        side=side,
        ordType="market",
        sz=sz,
        tdMode=mode,
        **extra,
    )


def scenario(full: bool = True) -> list[tuple[str, list[dict[str, Any]]]]:
    """The demo as titled steps of commands; ``full=False`` is the cross-only scenario of the
    first version (alice and bob on BTC-USDT, marks before quotes), which the Kafka projection
    tests build on."""
    cmd = _Script()
    swap = cmd(
        "list_instrument",
        instId=_SWAP,
        instType="SWAP",
        settleCcy="USDT",
        ctVal="0.01",
        tickSz="0.1",
        lotSz="1",
        minSz="1",
        makerFee="0.0002",
        takerFee="0.0005",
        maxLever="75",
        tiers=_SWAP_TIERS,
    ) if full else None  # fmt: skip
    setup = [
        cmd("list_asset", ccy="USDT", decimals=8),
        cmd("list_asset", ccy="BTC", decimals=8),
        cmd(
            "list_instrument",
            instId="BTC-USDT",
            instType="SPOT",
            baseCcy="BTC",
            quoteCcy="USDT",
            tickSz="0.1",
            lotSz="0.0001",
            minSz="0.0001",
            makerFee="0.0008",
            takerFee="0.001",
            maxLever="10",
            tiers=_TIERS,
        ),
    ]
    if swap is not None:
        setup.append(swap)
    setup += [
        cmd("set_interest_rate", ccy="USDT", dailyRate="0.0002"),
        cmd("set_interest_rate", ccy="BTC", dailyRate="0.0001"),
        cmd("mark_price", instId="BTC-USDT", markPx="100000"),
    ]
    if full:
        setup.append(cmd("mark_price", instId=_SWAP, markPx="100000"))
    setup += [
        cmd("deposit", acct="mm", ccy="BTC", amt="100"),
        cmd("deposit", acct="mm", ccy="USDT", amt="10000000"),
        cmd("deposit", acct="alice", ccy="USDT", amt="10000"),
        cmd("deposit", acct="bob", ccy="USDT", amt="20000"),
    ]
    if full:
        setup += [
            cmd("deposit", acct="carol", ccy="USDT", amt="5000"),
            cmd("deposit", acct="dave", ccy="USDT", amt="3000"),
            cmd("set_leverage", acct="dave", instId=_SWAP, mgnMode="isolated", lever="8"),
        ]
    setup += _quotes(cmd, 100_000, 0, full)
    opening = [_market(cmd, "alice", "long-1", "buy", "0.5"), _market(cmd, "bob", "short-1", "sell", "0.2")]
    title = "alice long 0.5 BTC (cross), bob short 0.2 (cross)"
    if full:
        opening += [
            _market(cmd, "carol", "iso-1", "buy", "0.4", "isolated", ccy="USDT"),
            _market(cmd, "dave", "perp-1", "buy", "20", "isolated", instId=_SWAP),
        ]
        title += ", carol long 0.4 (isolated 10x), dave 20 perps (8x)"
    opening.append(cmd("accrue_interest"))
    steps = [("list, fund, quote at 100,000", setup), (title, opening)]
    for step, mark in enumerate((95_000, 90_000, 87_000, 84_000, 82_000), start=1):
        marks = [cmd("mark_price", instId="BTC-USDT", markPx=str(mark))]
        if full:  # the books move first, then the marks (liquidations meet the new book)
            quotes = list(_quotes(cmd, mark, step, full))
            marks.append(cmd("mark_price", instId=_SWAP, markPx=str(mark)))
            moves = [*quotes, *marks]
        else:
            moves = [*marks, *_quotes(cmd, mark, step, full)]
        if full and step == 1:
            moves.append(cmd("settle_funding", instId=_SWAP, fundingRate="0.0001"))
        steps.append((f"mark falls to {mark:,}" + (" (funding settled)" if full and step == 1 else ""), moves))
    return steps


_NOTABLE = {
    "borrowed": "borrowed",
    "margin_call_raised": "MARGIN CALL",
    "margin_call_cleared": "margin call cleared",
    "liquidation_started": "LIQUIDATION",
    "insurance_fund_covered": "insurance fund covered",
    "debt_written_off": "debt written off",
    "funding_settled": "funding",
    "position_released": "position closed",
    "liquidation_finished": "liquidation finished",
    "order_rejected": "order rejected",
}


def _notes(outcomes: list[Outcome]) -> dict[str, list[str]]:
    notes: dict[str, list[str]] = {}
    for outcome in outcomes:
        for event in outcome.events:
            tag = str(event.__struct_config__.tag)
            acct = getattr(event, "acct", None)
            if tag in _NOTABLE and acct is not None and acct != "mm":
                detail = _NOTABLE[tag]
                if tag == "borrowed":
                    detail = f"borrowed {getattr(event, 'amt', '')} {getattr(event, 'ccy', '')}"
                elif tag in ("margin_call_raised", "liquidation_started"):
                    detail = f"{detail} at {float(getattr(event, 'mgnRatio', 0)):.0%}"  # det-ok: display only
                elif tag == "funding_settled":
                    detail = f"funding {getattr(event, 'amt', '')} {getattr(event, 'ccy', '')}"
                notes.setdefault(acct, []).append(detail)
    return notes


def _pct(value: str) -> str:
    return f"{float(value):.1%}" if value else "-"  # det-ok: display formatting only


def _table(title: str, view: dict[str, Any], notes: dict[str, list[str]]) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("acct", "mode", "position", "liability", "mark", "uPnL", "margin ratio", "liq. price", "events"):
        table.add_column(column, justify="right" if column not in ("acct", "mode", "events") else "left")
    accounts = {a["acct"]: a for a in view["accounts"]}
    shown: set[str] = set()
    for pos in view["positions"]:
        if pos["acct"] == "mm":
            continue
        shown.add(pos["acct"])
        ratio = _pct(pos["mgnRatio"])
        style = "bold red" if pos["mgnRatio"] and float(pos["mgnRatio"]) <= 3 else ""  # det-ok: display only
        if pos["instId"] == _SWAP:
            held = f"{pos['pos']} contracts ({'long' if not pos['pos'].startswith('-') else 'short'})"
        else:
            held = f"{pos['pos']} {pos['posCcy']} ({'long' if pos['posCcy'] == 'BTC' else 'short'})"
        table.add_row(
            pos["acct"],
            f"{pos['instId']} {pos['mgnMode']}",
            held,
            f"{pos['liab']} {pos['liabCcy']}" if pos["liab"] else "-",
            pos["markPx"],
            pos["upl"],
            f"[{style}]{ratio}[/]" if style else ratio,
            pos["liqPx"] or "-",
            "; ".join(notes.get(pos["acct"], [])),
        )
    for acct, account in accounts.items():
        if acct in shown or acct == "mm":
            continue
        cash = ", ".join(f"{b['cashBal']} {b['ccy']}" for b in account["balances"])
        row = (acct, "", f"no position ({cash})", "-", "", "", _pct(account["mgnRatio"]), "-")
        table.add_row(*row, "; ".join(notes.get(acct, [])))
    return table


def run_demo(log_dir: str | None = None, console: Console | None = None) -> int:
    console = console or Console()
    with tempfile.TemporaryDirectory(prefix="marginbook-demo-") as scratch:
        directory = Path(log_dir) if log_dir else Path(scratch)
        with EmbeddedEngine(directory, snapshot_every=50) as engine:
            if engine.state.last_seq:
                console.print(f"[red]{directory} already holds a log; give an empty directory[/]")
                return 2
            console.print(f"[bold]marginbook demo[/] — embedded log in {directory}")
            if console.width < 140 and not console.is_terminal:
                console.width = 140
            for title, commands in scenario():
                outcomes = []
                for command in commands:
                    raw = json.dumps(command, separators=(",", ":")).encode()
                    outcomes.append(engine.submit(decode_command_json(raw), raw))
                view = json.loads(_encode_view(engine))
                console.print(_table(f"seq {engine.state.last_seq}: {title}", view, _notes(outcomes)))
            fund = engine.state.insurance.get("USDT")
            console.print(f"insurance fund USDT: {fmt(fund) if fund else 0}")
            written_off = engine.state.written_off.get("USDT")
            if written_off:
                console.print(f"written off by the platform (fund empty) USDT: {fmt(written_off)}")
            console.print(f"{engine.state.last_seq} commands journaled; verify with: marginbook replay DIR")
    return 0


def _encode_view(engine: EmbeddedEngine) -> bytes:
    from events.codec import encode_json

    return encode_json(build_view(engine.state))
