"""``marginbook monitor``: a live terminal view of the riskiest accounts and recent alerts.

It tails the risk and alerts topics (``projections.reader``) and redraws a ``rich.live`` screen
a few times a second: the accounts with the lowest margin ratios first, those at or below 300 %
highlighted (``MARGIN CALL``; ``LIQUIDATION`` at or below 100 %), and a pane of the newest
alerts — margin calls and liquidations as they happen. Ctrl-C or SIGTERM quits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from projections.reader import RiskStore, ratio_of, tail

_WARNING = Decimal(3)
_LIQUIDATION = Decimal(1)
_ALERT_STYLE = {
    "margin_call": ("MARGIN CALL", "bold yellow"),
    "margin_call_cleared": ("call cleared", "green"),
    "liquidation_started": ("LIQUIDATION STARTED", "bold white on red"),
    "liquidation_finished": ("liquidation finished", "bold red"),
}


def percent(text: str) -> str:
    """A ratio string as a percentage (``"2.5"`` → ``"250.00 %"``); ``""`` → ``"-"``."""
    if not text:
        return "-"
    return f"{Decimal(text) * 100:,.2f} %"


def clock(ts: object) -> str:
    """The alert's ``ts`` (ms since the epoch, from the journal) as a UTC date and time."""
    if not isinstance(ts, int):
        return ""
    return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def status_of(view: dict[str, Any]) -> tuple[str, str]:
    """``(label, style)`` of an account by its margin ratio."""
    ratio = ratio_of(view)
    if ratio is None:
        return "no debt", "dim"
    if ratio <= _LIQUIDATION:
        return "LIQUIDATION", "bold white on red"
    if ratio <= _WARNING:
        return "MARGIN CALL", "bold red"
    return "ok", "green"


def debts(view: dict[str, Any]) -> str:
    owed = [f"{b['liab']} {b['ccy']}" for b in view.get("balances", []) if b.get("liab")]
    return ", ".join(owed) or "-"


def accounts_table(store: RiskStore, rows: int) -> Table:
    table = Table(title="riskiest accounts (lowest margin ratio first)", title_justify="left", expand=True)
    for name, justify in (
        ("acct", "left"),
        ("mgnRatio", "right"),
        ("status", "left"),
        ("totalEq", "right"),
        ("mmr", "right"),
        ("imr", "right"),
        ("debt", "right"),
        ("seq", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for view in store.riskiest(rows):
        acct = str(view.get("acct", ""))
        label, style = status_of(view)
        table.add_row(
            acct,
            percent(str(view.get("mgnRatio", ""))),
            label,
            str(view.get("totalEq", "")),
            str(view.get("mmr", "")) or "-",
            str(view.get("imr", "")) or "-",
            debts(view),
            str(store.seqs.get(acct, "")),
            style=style if label in ("MARGIN CALL", "LIQUIDATION") else None,
        )
    return table


def alerts_table(store: RiskStore, rows: int) -> Table:
    table = Table(title="recent alerts (newest first)", title_justify="left", expand=True)
    for name in ("time (UTC, ts)", "seq", "acct", "alert", "mgnRatio"):
        table.add_column(name, no_wrap=True)
    for alert in store.recent_alerts(rows):
        label, style = _ALERT_STYLE.get(str(alert.get("type")), (str(alert.get("type")), ""))
        table.add_row(
            clock(alert.get("ts")),
            str(alert.get("seq", "")),
            str(alert.get("acct", "")),
            Text(label, style=style),
            percent(str(alert.get("mgnRatio", ""))),
        )
    return table


def render(store: RiskStore, prefix: str, rows: int = 15, alert_rows: int = 8) -> Panel:
    called = sum(1 for v in store.accounts.values() if (r := ratio_of(v)) is not None and r <= _WARNING)
    last = max(store.last_seq.values(), default=0)
    state = "live" if store.ready else "catching up…"
    header = Text.assemble(
        (f"{prefix}", "bold"),
        f"  {len(store.accounts)} accounts, {len(store.positions)} positions, ",
        (f"{called} at or below 300 %", "bold red" if called else "green"),
        f", seq {last}, {state}",
    )
    body = Group(header, accounts_table(store, rows), alerts_table(store, alert_rows))
    return Panel(body, title="marginbook monitor", subtitle="Ctrl-C quits")


async def run_monitor(
    bootstrap: str, prefix: str, risk: str, alerts: str, rows: int = 15, refresh_per_second: float = 4.0
) -> int:
    store = RiskStore()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tailing = asyncio.create_task(tail(store, bootstrap, risk, alerts, stop))
    console = Console()
    try:
        with Live(render(store, prefix, rows), console=console, screen=True, auto_refresh=False) as live:
            while not stop.is_set():
                live.update(render(store, prefix, rows), refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1 / refresh_per_second)
    finally:
        tailing.cancel()
        await asyncio.gather(tailing, return_exceptions=True)
    return 0
