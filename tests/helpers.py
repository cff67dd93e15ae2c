"""Test helpers: build command JSON lines, drive them through ``Engine.step``, read the results.

Everything goes through the production door: a command is a dict, encoded to a JSON line,
decoded by :func:`events.codec.decode_command_json` and stepped by :class:`engine.core.step.Engine`.
Results are read from the outcomes (events) and from the contract's risk view
(:func:`projections.risk_view.build_view`), never by calling a formula with a test's numbers.

Typical use::

    h = Harness()
    h.standard_listing()
    h.send("deposit", acct="alice", ccy="BTC", amt="0.1")
    out = h.send("place_order", acct="alice", ...)
    assert event_types(out) == [...]
    assert h.account("alice").mgnRatio.startswith("3.2227")
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any, Final

from engine.core.state import Balance, State
from engine.core.step import Engine
from events import journal as ev
from events.codec import decode_command_json, encode_outcome_json
from projections.risk_view import build_view
from projections.views import AccountView, BalanceView, PositionView, RiskView

#: 2023-11-14T22:13:20Z: the first ``ts`` of every harness (a full hour plus 3,200 s is irrelevant:
#: the engine reads no clock and accrues interest only on ``accrue_interest`` commands).
T0: Final = 1_700_000_000_000
HOUR_MS: Final = 3_600_000
MINUTE_MS: Final = 60_000

#: The BTC/USDT spot-margin tier table of ``spec/domain.md`` §1.3 (OKX, 8 Jun 2023, tiers 1–3).
BTC_USDT_TIERS: Final[list[dict[str, Any]]] = [
    {"tier": 1, "maxBorrowBase": "35", "maxBorrowQuote": "1000000", "mmr": "0.03", "imr": "0.1", "maxLever": "10"},
    {"tier": 2, "maxBorrowBase": "70", "maxBorrowQuote": "2000000", "mmr": "0.0625", "imr": "0.125", "maxLever": "8"},
    {"tier": 3, "maxBorrowBase": "105", "maxBorrowQuote": "3000000", "mmr": "0.10", "imr": "0.20", "maxLever": "5"},
]


def command(kind: str, ts: int, cid: str | None = None, **fields: Any) -> dict[str, Any]:
    """A command as a dict: ``type``, ``ts``, ``id`` (omitted when ``None``) and its fields.

    Fields whose value is ``None`` are left out (optional contract fields).
    """
    out: dict[str, Any] = {"type": kind, "ts": ts}
    if cid is not None:
        out["id"] = cid
    out.update({k: v for k, v in fields.items() if v is not None})
    return out


def line(cmd: dict[str, Any]) -> bytes:
    """One JSONL line (without the newline) for a command dict."""
    return json.dumps(cmd, separators=(",", ":")).encode()


def run_lines(lines: Iterable[bytes | str], engine: Engine | None = None) -> tuple[Engine, list[ev.Outcome]]:
    """Decode and step each line; return the engine and every outcome, in order."""
    engine = engine if engine is not None else Engine()
    outcomes = [engine.step(decode_command_json(raw)) for raw in lines]
    return engine, outcomes


def event_types(outcome: ev.Outcome) -> list[str]:
    """The wire tags of an outcome's events, in order."""
    return [str(e.__struct_config__.tag) for e in outcome.events]


def events_of(outcome: ev.Outcome | Sequence[ev.Outcome], kind: type[Any]) -> list[Any]:
    """Events of one class from one outcome or a list of outcomes, in order."""
    outcomes = [outcome] if isinstance(outcome, ev.Outcome) else list(outcome)
    return [e for o in outcomes for e in o.events if isinstance(e, kind)]


def only(items: Sequence[Any]) -> Any:
    """The single element of ``items`` (fails the test otherwise)."""
    assert len(items) == 1, f"expected exactly one, got {len(items)}: {items}"
    return items[0]


def rejection(outcome: ev.Outcome) -> ev.OrderRejected | ev.CommandRejected:
    """The outcome's single refusal event (``order_rejected`` or ``command_rejected``)."""
    assert len(outcome.events) == 1, f"expected a lone refusal, got {event_types(outcome)}"
    event = outcome.events[0]
    assert isinstance(event, ev.OrderRejected | ev.CommandRejected), event
    return event


def dec(text: str) -> Decimal:
    """A view string as a Decimal (the view writes ``""`` for 'does not apply')."""
    assert text != "", "value does not apply (empty string in the view)"
    return Decimal(text)


#: Arithmetic done by the tests themselves. The engine installs a context that traps
#: ``Inexact`` (``money.use_engine_context``), so tests divide and round in this one explicitly.
TEST_CONTEXT: Final = Context(prec=60, rounding=ROUND_HALF_UP)


def q(value: Decimal | str, places: int) -> Decimal:
    """Round half-up to ``places`` decimals — how the spec prints its expected values."""
    return Decimal(value).quantize(Decimal(1).scaleb(-places), context=TEST_CONTEXT)


def div(numerator: Decimal, denominator: Decimal) -> Decimal:
    """``numerator / denominator`` at 60 significant digits (never trapped as inexact)."""
    return TEST_CONTEXT.divide(numerator, denominator)


class Harness:
    """An engine plus a command writer with increasing ``ts`` and unique ids.

    :meth:`send` builds the command, encodes it as a JSON line, decodes and steps it, and keeps
    the line and the outcome. ``at`` sets the next command's ``ts`` explicitly (interest tests).
    """

    def __init__(self, start_ts: int = T0, id_prefix: str = "c") -> None:
        self.engine = Engine()
        self.ts = start_ts
        self.n = 0
        self.id_prefix = id_prefix
        self.lines: list[bytes] = []
        self.outcomes: list[ev.Outcome] = []

    @property
    def state(self) -> State:
        return self.engine.state

    # --- writing commands -----------------------------------------------------------------

    def cmd(self, kind: str, *, at: int | None = None, cid: str | None = "auto", **fields: Any) -> dict[str, Any]:
        """The next command dict (advances ``ts`` by 1 s unless ``at`` is given)."""
        self.ts = at if at is not None else self.ts + 1_000
        self.n += 1
        if cid == "auto":
            cid = f"{self.id_prefix}-{self.n}"
        return command(kind, self.ts, cid, **fields)

    def step_line(self, raw: bytes) -> ev.Outcome:
        outcome = self.engine.step(decode_command_json(raw))
        self.lines.append(raw)
        self.outcomes.append(outcome)
        return outcome

    def send(self, kind: str, *, at: int | None = None, cid: str | None = "auto", **fields: Any) -> ev.Outcome:
        """Build, encode, decode and step one command; return its outcome."""
        return self.step_line(line(self.cmd(kind, at=at, cid=cid, **fields)))

    def ok(self, kind: str, **fields: Any) -> ev.Outcome:
        """:meth:`send`, asserting the command was not refused."""
        outcome = self.send(kind, **fields)
        refusals = [e for e in outcome.events if isinstance(e, ev.OrderRejected | ev.CommandRejected)]
        assert not refusals, f"{kind} {fields} refused: {refusals}"
        return outcome

    # --- reference data -------------------------------------------------------------------

    def list_asset(self, ccy: str, decimals: int) -> ev.Outcome:
        return self.ok("list_asset", ccy=ccy, decimals=decimals)

    def list_spot(
        self,
        inst_id: str,
        *,
        tick: str = "0.01",
        lot: str = "0.0001",
        min_sz: str | None = None,
        maker_fee: str = "0",
        taker_fee: str = "0.001",
        max_lever: str = "10",
        tiers: list[dict[str, Any]] | None = None,
    ) -> ev.Outcome:
        base, quote = inst_id.split("-")
        return self.ok(
            "list_instrument",
            instId=inst_id,
            instType="SPOT",
            baseCcy=base,
            quoteCcy=quote,
            tickSz=tick,
            lotSz=lot,
            minSz=min_sz if min_sz is not None else lot,
            makerFee=maker_fee,
            takerFee=taker_fee,
            maxLever=max_lever,
            tiers=tiers if tiers is not None else BTC_USDT_TIERS,
        )

    def standard_listing(
        self,
        *,
        usdt_decimals: int = 16,
        btc_decimals: int = 8,
        maker_fee: str = "0",
        taker_fee: str = "0.001",
        tick: str = "0.01",
        lot: str = "0.00000001",
        min_sz: str | None = None,
        usdt_daily_rate: str | None = None,
    ) -> None:
        """USDT and BTC listed, then BTC-USDT with the §1.3 tier table (maxLever 10).

        USDT is the valuation currency (the quote of the first instrument). Defaults: maker fee 0,
        taker fee 0.1 %, tick 0.01, lot 1e-8 (so tick × lot needs USDT precision ≥ 10).
        """
        self.list_asset("USDT", usdt_decimals)
        self.list_asset("BTC", btc_decimals)
        self.list_spot(
            "BTC-USDT", tick=tick, lot=lot, min_sz=min_sz, maker_fee=maker_fee, taker_fee=taker_fee, max_lever="10"
        )
        if usdt_daily_rate is not None:
            self.ok("set_interest_rate", ccy="USDT", dailyRate=usdt_daily_rate)

    # --- orders and market data -----------------------------------------------------------

    def order(
        self,
        acct: str,
        side: str,
        sz: str,
        px: str | None = None,
        *,
        inst: str = "BTC-USDT",
        ord_type: str = "limit",
        td_mode: str = "cash",
        cl_ord_id: str | None = None,
        **extra: Any,
    ) -> ev.Outcome:
        """Place an order (``px`` omitted for market orders); ``clOrdId`` defaults to a fresh one;
        ``extra`` adds optional contract fields (``ccy``, ``posSide``, ``reduceOnly``)."""
        return self.send(
            "place_order",
            acct=acct,
            instId=inst,
            clOrdId=cl_ord_id if cl_ord_id is not None else f"o{self.n + 1}",
            side=side,
            ordType=ord_type,
            sz=sz,
            px=px,
            tdMode=td_mode,
            **extra,
        )

    def mark(self, px: str, inst: str = "BTC-USDT") -> ev.Outcome:
        return self.send("mark_price", cid=None, instId=inst, markPx=px)

    def accrue(self, at: int | None = None) -> ev.Outcome:
        """An hourly scheduler's write: by default at the next full hour after the last ts."""
        if at is None:
            at = (self.ts // 3_600_000 + 1) * 3_600_000
        return self.send("accrue_interest", cid=None, at=at)

    # --- reading results ------------------------------------------------------------------

    def view(self) -> RiskView:
        return build_view(self.state)

    def account(self, acct: str) -> AccountView:
        return only([a for a in self.view().accounts if a.acct == acct])

    def balance_view(self, acct: str, ccy: str) -> BalanceView:
        return only([b for b in self.account(acct).balances if b.ccy == ccy])

    def position(self, acct: str, inst: str = "BTC-USDT") -> PositionView:
        return only([p for p in self.view().positions if p.acct == acct and p.instId == inst])

    def positions(self, acct: str) -> list[PositionView]:
        return [p for p in self.view().positions if p.acct == acct]

    def bal(self, acct: str, ccy: str) -> Balance:
        """The engine state's balance (exact decimals)."""
        return self.state.accounts[acct].balances[ccy]

    def all_events(self) -> Iterator[ev.Event]:
        for outcome in self.outcomes:
            yield from outcome.events

    def journal_lines(self) -> list[bytes]:
        """Every outcome so far as the journal encodes it."""
        return [encode_outcome_json(o) for o in self.outcomes]
