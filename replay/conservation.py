"""Conservation report: no currency is created or destroyed except by deposits and withdrawals.

For every currency, after every sequence number::

    deposits − withdrawals == Σ accounts (cash − liab − interest) + fees + insurance fund + interest income

Why this is exact, event by event (``engine/core/evolve.py``): ``deposited``/``withdrawn`` move
cash and the flows alike; ``borrowed`` adds the same amount to cash and liab, and ``repaid`` takes
``interest + principal`` from cash and the same from interest and liab (net 0); ``interest_accrued``
adds to the account's interest (−) and to the interest income (+); a ``traded`` fill moves the
notional between buyer and seller and each fee from what its payer receives into the fee pool
(a negative fee is a rebate paid out of it); ``assets_taken_over`` moves cash into the insurance
fund and ``insurance_fund_covered`` moves it back out to the account (never below zero), and
``debt_written_off`` pays the rest from the platform's written-off total (a source of funds: it is
subtracted on the held side); ``pnl_realised`` moves perpetual P&L between the account and the
clearing balance; a liquidation fee (``liquidation_fee_charged``) moves cash into the
fund. Isolated positions (holdings, margin, debt) and perpetual margins count with their account
(``engine.core.holdings``); position events name the account and currency they change; a
``transferred`` moves cash between an account and its futures wallet (``A:futures``), both named. Frozen
amounts are views of cash and do not count twice.

The report folds the recorded journal (``events.log``) with the engine's fold. The account side
is kept as running sums, updated from the balances each event names before and after it is
applied, and checked per currency after every sequence number; a difference is reported with the
seq where it first appears. Every ``full_every`` seqs and at the end the sums are recomputed from
the whole state, which also catches a change an event did not name. Starting from a snapshot, the
flows before it are unknown: the identity's two sides are taken as equal there (``opening``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow

from engine.core.holdings import currencies, held
from engine.core.money import ZERO
from engine.core.state import FUTURES_SUFFIX, State
from events import journal as ev
from replay.journal import Entry, apply_checked, read_journal, record_checked

__all__ = ["ConservationReport", "CurrencyLine", "check_outcomes", "conservation"]

#: Sums of many amounts: exact (an inexact result raises).
_SUM = Context(prec=200, traps=[Inexact, InvalidOperation, Overflow])


@dataclass
class CurrencyLine:
    ccy: str
    opening: Decimal = ZERO
    deposits: Decimal = ZERO
    withdrawals: Decimal = ZERO
    cash: Decimal = ZERO
    liab: Decimal = ZERO
    interest: Decimal = ZERO
    fees: Decimal = ZERO
    insurance: Decimal = ZERO
    interest_income: Decimal = ZERO
    #: Losses the platform wrote off when an insurance fund was empty (a source of funds).
    written_off: Decimal = ZERO
    #: Perpetual clearing balance (realised P&L paid out of it, losses into it).
    clearing: Decimal = ZERO
    #: Seq where the two sides first differed, and the difference then.
    first_seq: int | None = None
    first_difference: Decimal = ZERO

    @property
    def net_flows(self) -> Decimal:
        return _SUM.subtract(_SUM.add(self.opening, self.deposits), self.withdrawals)

    @property
    def net_balances(self) -> Decimal:
        """Σ (cash − liab − interest) over the accounts."""
        return _SUM.subtract(_SUM.subtract(self.cash, self.liab), self.interest)

    @property
    def held(self) -> Decimal:
        pools = _SUM.add(_SUM.add(_SUM.add(self.fees, self.insurance), self.interest_income), self.clearing)
        return _SUM.subtract(_SUM.add(self.net_balances, pools), self.written_off)

    @property
    def difference(self) -> Decimal:
        """held − net flows: 0 when the currency is conserved."""
        return _SUM.subtract(self.held, self.net_flows)


@dataclass
class ConservationReport:
    source: str
    start_seq: int = 1
    last_seq: int = 0
    lines: dict[str, CurrencyLine] = field(default_factory=dict)
    #: Running sums that disagreed with a full recount of the state: ``(seq, message)``.
    recount_errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.recount_errors and all(
            line.first_seq is None and line.difference == 0 for line in self.lines.values()
        )

    def line(self, ccy: str) -> CurrencyLine:
        found = self.lines.get(ccy)
        if found is None:
            found = self.lines[ccy] = CurrencyLine(ccy)
        return found


def _named(state: State, event: ev.Event) -> list[tuple[str, str]]:
    """The (account, currency) balances an event's fold can change: both sides of a trade in
    both currencies; otherwise the ``acct``/``ccy`` the event names (``evolve.py`` changes no
    balance of an event that does not name both)."""
    if isinstance(event, ev.Traded):
        inst = state.instruments[event.instId]
        return [(a, c) for a in (event.makerAcct, event.takerAcct) for c in (inst.base, inst.quote)]
    if isinstance(event, ev.PositionReleased):
        inst = state.instruments[event.instId]
        return [(event.acct, inst.base), (event.acct, inst.quote)]
    if isinstance(event, ev.Transferred):  # both wallets (docs/decisions.md 35c)
        return [(event.acct, event.ccy), (event.acct + FUTURES_SUFFIX, event.ccy)]
    acct, ccy = getattr(event, "acct", None), getattr(event, "ccy", None)
    if isinstance(acct, str) and isinstance(ccy, str):
        return [(acct, ccy)]
    return []


def _value(state: State, acct: str, ccy: str) -> tuple[Decimal, Decimal, Decimal]:
    """The account's assets (positions included), liab and interest in ``ccy``."""
    account = state.accounts.get(acct)
    return (ZERO, ZERO, ZERO) if account is None else held(state, account, ccy)


def _recount(state: State) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    sums: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
    for account in state.accounts.values():
        for ccy in currencies(state, account):
            cash, liab, interest = held(state, account, ccy)
            c, li, i = sums.get(ccy, (ZERO, ZERO, ZERO))
            sums[ccy] = (_SUM.add(c, cash), _SUM.add(li, liab), _SUM.add(i, interest))
    return sums


def _pools(report: ConservationReport, state: State, ccys: set[str] | list[str]) -> None:
    for ccy in ccys:
        line = report.line(ccy)
        line.fees = state.fees.get(ccy, ZERO)
        line.insurance = state.insurance.get(ccy, ZERO)
        line.interest_income = state.interest_income.get(ccy, ZERO)
        line.written_off = state.written_off.get(ccy, ZERO)
        line.clearing = state.clearing.get(ccy, ZERO)


def _check_recount(report: ConservationReport, state: State, seq: int) -> None:
    counted = _recount(state)
    for ccy in sorted(set(counted) | set(report.lines)):
        line = report.line(ccy)
        running = (line.cash, line.liab, line.interest)
        actual = counted.get(ccy, (ZERO, ZERO, ZERO))
        if running != actual:
            report.recount_errors.append(
                (
                    seq,
                    f"{ccy}: at seq {seq} the balances sum to cash {actual[0]} liab {actual[1]} interest {actual[2]}, "
                    f"but the events account for cash {running[0]} liab {running[1]} interest {running[2]}",
                )
            )
            line.cash, line.liab, line.interest = actual


def conservation(
    directory: str | os.PathLike[str],
    from_snapshot: int | None = None,
    full_every: int = 100_000,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ConservationReport:
    """Fold the journal of ``directory`` and check the identity after every seq (module doc)."""
    state, start, entries = read_journal(directory, from_snapshot, warn)
    return check_outcomes(state, entries, os.fspath(directory), start, full_every, progress)


def check_outcomes(
    state: State,
    outcomes: Iterable[ev.Outcome | Entry],
    source: str = "",
    start: int = 1,
    full_every: int = 100_000,
    progress: Callable[[int], None] | None = None,
) -> ConservationReport:
    """Fold ``outcomes`` (consecutive, from seq ``start``) into ``state`` — which is left holding
    the fold's result — and check the identity after every seq (module doc). The journal's
    reader in memory: :func:`conservation` calls it on a log directory, the fuzz program
    (``tests/fuzz``) on the outcomes it just stepped. Entries read from a journal carry where
    they came from, so a record no engine could have folded is reported with its offset."""
    report = ConservationReport(source=source, start_seq=start, last_seq=state.last_seq)
    for ccy, (cash, liab, interest) in _recount(state).items():
        line = report.line(ccy)
        line.cash, line.liab, line.interest = cash, liab, interest
    _pools(
        report,
        state,
        set(state.fees)
        | set(state.insurance)
        | set(state.interest_income)
        | set(state.written_off)
        | set(state.clearing),
    )
    for line in report.lines.values():
        line.opening = line.held  # flows before a snapshot are unknown: both sides equal there
    for item in outcomes:
        entry = item if isinstance(item, Entry) else Entry(item.seq, item, None)
        touched: set[str] = set()
        for event in entry.outcome.events:
            named = _named(state, event)
            if not named:
                apply_checked(state, event, entry)
                pool_ccy = getattr(event, "ccy", None)
                if isinstance(pool_ccy, str):  # a pool-only change (funding residual)
                    touched.add(pool_ccy)
                continue
            before = [_value(state, a, c) for a, c in named]
            apply_checked(state, event, entry)
            seen: set[tuple[str, str]] = set()
            for (acct, ccy), old in zip(named, before, strict=True):
                if (acct, ccy) in seen:
                    continue
                seen.add((acct, ccy))
                new = _value(state, acct, ccy)
                line = report.line(ccy)
                line.cash = _SUM.add(line.cash, _SUM.subtract(new[0], old[0]))
                line.liab = _SUM.add(line.liab, _SUM.subtract(new[1], old[1]))
                line.interest = _SUM.add(line.interest, _SUM.subtract(new[2], old[2]))
                touched.add(ccy)
            if isinstance(event, ev.Deposited):
                line = report.line(event.ccy)
                line.deposits = _SUM.add(line.deposits, event.amt)
            elif isinstance(event, ev.Withdrawn):
                line = report.line(event.ccy)
                line.withdrawals = _SUM.add(line.withdrawals, event.amt)
        record_checked(state, entry)
        seq = entry.seq
        report.last_seq = seq
        if full_every and seq % full_every == 0:
            _check_recount(report, state, seq)
            touched.update(report.lines)
        if touched:
            _pools(report, state, touched)
            for ccy in touched:
                line = report.lines[ccy]
                if line.first_seq is None and line.difference != 0:
                    line.first_seq, line.first_difference = seq, line.difference
        if progress is not None and not seq & 1023:
            progress(seq)
    _check_recount(report, state, report.last_seq)
    _pools(report, state, list(report.lines))
    for line in report.lines.values():
        if line.first_seq is None and line.difference != 0:
            line.first_seq, line.first_difference = report.last_seq, line.difference
    return report
