"""Per-account statements: every change of an account's balances, debts, interest and positions,
with the command and the event that caused it.

The statement folds the recorded journal (``events.log``) through the engine's own fold
(:func:`engine.core.evolve.apply`), so each row is exactly what the engine did: for every event
that names the account (``acct``, or ``makerAcct``/``takerAcct`` of a trade, or the futures
wallet ``acct:futures`` of a ``transferred`` — in
``engine/core/evolve.py`` every event that changes an account names it), the account's balances
and positions are compared before and after the event, and one row is written per currency and
per instrument that changed:

* ``kind`` ``balance``: ``delta_cash``, ``delta_frozen``, ``delta_liab``, ``delta_interest``, their
  net effect ``delta`` (= Δcash − Δliab − Δinterest, the change of what the account is worth in
  that currency) and the resulting ``cash``, ``frozen``, ``liab``, ``interest``;
* ``kind`` ``position`` (cross-margin trades, ``liquidation_finished``): ``delta_qty`` and the
  resulting ``qty`` and ``avg_px`` of the instrument;
* ``kind`` ``opening`` (only when starting from a snapshot): the balances and positions held then.

Every row carries ``seq``, ``ts``, ``command_id``, ``command_type``, ``event_index`` (the event's
position in the outcome) and ``event`` (its type). Amounts are exact decimal strings.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, TextIO

import msgspec

from engine.core.money import ZERO
from engine.core.state import FUTURES_SUFFIX, Account, State
from events import journal as ev
from replay.journal import apply_checked, command_type, read_journal, record_checked

__all__ = ["COLUMNS", "Row", "build_statements", "statement_rows", "write_csv", "write_json"]

COLUMNS = (
    "acct",
    "seq",
    "ts",
    "command_id",
    "command_type",
    "event_index",
    "event",
    "kind",
    "ccy",
    "delta",
    "delta_cash",
    "delta_frozen",
    "delta_liab",
    "delta_interest",
    "cash",
    "frozen",
    "liab",
    "interest",
    "instrument",
    "delta_qty",
    "qty",
    "avg_px",
)


@dataclass(frozen=True, slots=True)
class Row:
    acct: str
    seq: int
    ts: int
    command_id: str
    command_type: str
    event_index: int | None
    event: str
    kind: str
    ccy: str = ""
    delta: str = ""
    delta_cash: str = ""
    delta_frozen: str = ""
    delta_liab: str = ""
    delta_interest: str = ""
    cash: str = ""
    frozen: str = ""
    liab: str = ""
    interest: str = ""
    instrument: str = ""
    delta_qty: str = ""
    qty: str = ""
    avg_px: str = ""


def fmt(value: Decimal) -> str:
    """Exact, never in exponent notation; ``-0`` shown as ``0``."""
    text = format(value, "f")
    return "0" if value == 0 and text.startswith("-") else text


_Bal = tuple[Decimal, Decimal, Decimal, Decimal]  # cash, frozen, liab, interest
_Pos = tuple[Decimal, Decimal]  # qty, avg_px
_NO_BAL: _Bal = (ZERO, ZERO, ZERO, ZERO)
_NO_POS: _Pos = (ZERO, ZERO)


def _holdings(account: Account | None) -> tuple[dict[str, _Bal], dict[str, _Pos]]:
    if account is None:
        return {}, {}
    balances = {c: (b.cash, b.frozen, b.liab, b.interest) for c, b in account.balances.items()}
    positions = {i: (p.qty, p.avg_px) for i, p in account.positions.items()}
    return balances, positions


def event_accounts(event: ev.Event) -> tuple[str, ...]:
    """The accounts an event names (the only ones its fold can change)."""
    if isinstance(event, ev.Traded):
        return (event.makerAcct, event.takerAcct)
    if isinstance(event, ev.Transferred):  # the account and its futures wallet (decision 35c)
        return (event.acct, event.acct + FUTURES_SUFFIX)
    acct = getattr(event, "acct", None)
    return (acct,) if isinstance(acct, str) else ()


def _changes(
    base: dict[str, Any],
    acct: str,
    before: tuple[dict[str, _Bal], dict[str, _Pos]],
    after: tuple[dict[str, _Bal], dict[str, _Pos]],
) -> Iterator[Row]:
    for ccy in list(after[0]) + [c for c in before[0] if c not in after[0]]:
        old, new = before[0].get(ccy, _NO_BAL), after[0].get(ccy, _NO_BAL)
        if old == new:
            continue
        d = [n - o for n, o in zip(new, old, strict=True)]
        yield Row(
            acct=acct,
            kind="balance",
            ccy=ccy,
            delta=fmt(d[0] - d[2] - d[3]),
            delta_cash=fmt(d[0]),
            delta_frozen=fmt(d[1]),
            delta_liab=fmt(d[2]),
            delta_interest=fmt(d[3]),
            cash=fmt(new[0]),
            frozen=fmt(new[1]),
            liab=fmt(new[2]),
            interest=fmt(new[3]),
            **base,
        )
    for inst in list(after[1]) + [i for i in before[1] if i not in after[1]]:
        old_p, new_p = before[1].get(inst, _NO_POS), after[1].get(inst, _NO_POS)
        if old_p == new_p:
            continue
        yield Row(
            acct=acct,
            kind="position",
            instrument=inst,
            delta_qty=fmt(new_p[0] - old_p[0]),
            qty=fmt(new_p[0]),
            avg_px=fmt(new_p[1]),
            **base,
        )


def _opening(state: State, acct: str) -> Iterator[Row]:
    base: dict[str, Any] = dict(
        seq=state.last_seq, ts=0, command_id="", command_type="", event_index=None, event="opening"
    )
    balances, positions = _holdings(state.accounts.get(acct))
    for ccy, (cash, frozen, liab, interest) in balances.items():
        yield Row(
            acct=acct,
            kind="opening",
            ccy=ccy,
            cash=fmt(cash),
            frozen=fmt(frozen),
            liab=fmt(liab),
            interest=fmt(interest),
            **base,
        )
    for inst, (qty, avg_px) in positions.items():
        yield Row(acct=acct, kind="opening", instrument=inst, qty=fmt(qty), avg_px=fmt(avg_px), **base)


def statement_rows(
    directory: str | os.PathLike[str],
    accounts: Iterable[str],
    from_snapshot: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> Iterator[Row]:
    """Rows for ``accounts`` in journal order (see module doc). Raises
    :class:`replay.journal.IncompleteLog` if ``events.log`` cannot be folded through."""
    wanted = set(accounts)
    state, _start, entries = read_journal(directory, from_snapshot, warn)
    if state.last_seq:
        for acct in sorted(wanted):
            yield from _opening(state, acct)
    for entry in entries:
        outcome = entry.outcome
        base: dict[str, Any] | None = None
        for index, event in enumerate(outcome.events):
            named = [a for a in dict.fromkeys(event_accounts(event)) if a in wanted]
            if not named:
                apply_checked(state, event, entry)
                continue
            before = {a: _holdings(state.accounts.get(a)) for a in named}
            apply_checked(state, event, entry)
            if base is None:
                base = dict(
                    seq=outcome.seq,
                    ts=outcome.ts,
                    command_id=outcome.id or "",
                    command_type=command_type(entry.command),
                )
            for acct in named:
                yield from _changes(
                    {**base, "event_index": index, "event": str(event.__struct_config__.tag)},
                    acct,
                    before[acct],
                    _holdings(state.accounts.get(acct)),
                )
        record_checked(state, entry)


@dataclass
class Statement:
    acct: str
    opening: list[Row]
    entries: list[Row]
    closing: dict[str, Any]


def build_statements(rows: Iterable[Row], accounts: Iterable[str]) -> list[Statement]:
    """Group rows per account; ``closing`` is the last value of every currency and instrument."""
    out = {a: Statement(a, [], [], {"balances": {}, "positions": {}}) for a in accounts}
    for row in rows:
        statement = out[row.acct]
        (statement.opening if row.kind == "opening" else statement.entries).append(row)
        if row.ccy:
            statement.closing["balances"][row.ccy] = {
                "cash": row.cash,
                "frozen": row.frozen,
                "liab": row.liab,
                "interest": row.interest,
            }
        elif row.instrument:
            if row.qty in ("0", ""):
                statement.closing["positions"].pop(row.instrument, None)
            else:
                statement.closing["positions"][row.instrument] = {"qty": row.qty, "avg_px": row.avg_px}
    return list(out.values())


def write_csv(rows: Iterable[Row], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in rows:
        writer.writerow(["" if v is None else v for v in (getattr(row, c) for c in COLUMNS)])
        count += 1
    return count


def _row_json(row: Row) -> dict[str, Any]:
    data = asdict(row)
    del data["acct"]
    return {k: v for k, v in data.items() if v != "" and v is not None}


def write_json(statements: list[Statement], out: TextIO, source: str) -> None:
    doc = {
        "source": source,
        "statements": [
            {
                "acct": s.acct,
                "opening": [_row_json(r) for r in s.opening],
                "entries": [_row_json(r) for r in s.entries],
                "closing": s.closing,
            }
            for s in statements
        ],
    }
    out.write(msgspec.json.format(msgspec.json.encode(doc), indent=2).decode() + "\n")


def statement_csv(directory: str | os.PathLike[str], acct: str) -> str:
    """The CSV statement of one account as text (convenience for tests and scripts)."""
    buffer = io.StringIO()
    write_csv(statement_rows(directory, [acct]), buffer)
    return buffer.getvalue()
