"""Funds: deposits, withdrawals, manual borrow and repay, hourly interest.

Interest (spec §4 decision 2) is one mechanism with two per-asset options (``set_interest_rate``):
each ``accrue_interest`` command charges one hour, ``base × dailyRate / 24`` rounded **up** at the
asset's precision, into ``interest``, where ``base`` is the principal ``liab`` (``simple``, the
default) or ``liab + interest`` (``capitalise``: accrued interest bears interest, E6). Under the
default ``hourly`` accrual (OKX) a loan repaid between two accruals pays nothing; under
``at_borrow_and_hourly`` (Binance) every loan also pays one hour when taken (E5, E6). Accounts are
swept in order of first borrowing, currencies in order of first touch. Repayment pays interest
first, then principal. At most one accrual per clock hour of ``ts`` is applied: a repeated
scheduler write (with or without an id) is refused as ``interest_already_accrued``, so an hour is
never charged twice.
"""

from __future__ import annotations

from decimal import Decimal

from engine.core import margin
from engine.core.context import Ctx, Rejected
from engine.core.money import ZERO, exponent_places
from engine.core.risk import check_initial_margin
from engine.core.state import Account, State
from events import journal as ev
from events.commands import AccrueInterest, Borrow, Deposit, Repay, Withdraw


def amount(state: State, ccy: str, raw: str) -> Decimal:
    """A positive amount of a listed asset, at most at the asset's precision."""
    asset = state.assets.get(ccy)
    if asset is None:
        raise Rejected("unknown_asset", f"ccy {ccy} is not listed")
    value = Decimal(raw)
    if value <= 0:
        raise Rejected("invalid_amt", f"amt must be positive, got {raw}")
    if exponent_places(value.normalize()) > asset.decimals:
        raise Rejected("amt_precision", f"amt {raw} has more than {asset.decimals} decimals for {ccy}")
    return value


def known_account(state: State, acct: str) -> Account:
    """The account ``acct``, or the refusal ``unknown_account``."""
    account = state.accounts.get(acct)
    if account is None:
        raise Rejected("unknown_account", f"acct {acct} has never deposited")
    return account


def deposit(ctx: Ctx, cmd: Deposit) -> None:
    amt = amount(ctx.state, cmd.ccy, cmd.amt)
    ctx.emit(ev.Deposited(acct=cmd.acct, ccy=cmd.ccy, amt=amt))
    ctx.touch(cmd.acct)


def withdraw(ctx: Ctx, cmd: Withdraw) -> None:
    state = ctx.state
    amt = amount(state, cmd.ccy, cmd.amt)
    account = known_account(state, cmd.acct)
    bal = account.balances.get(cmd.ccy)
    free = bal.cash - bal.frozen if bal else ZERO
    if free < amt:
        raise Rejected("insufficient_balance", f"withdraw {amt} {cmd.ccy}: {free} available")
    if account.at_risk() or account.cross_out:  # cross debt or cross perpetuals (their uPnL counts)
        failure = check_initial_margin(state, account, out={cmd.ccy: amt})
        if failure is not None:
            raise Rejected(*failure)
    ctx.emit(ev.Withdrawn(acct=cmd.acct, ccy=cmd.ccy, amt=amt))
    ctx.touch(cmd.acct)


def borrow(ctx: Ctx, cmd: Borrow) -> None:
    state = ctx.state
    amt = amount(state, cmd.ccy, cmd.amt)
    account = known_account(state, cmd.acct)
    failure = check_initial_margin(state, account, borrow={cmd.ccy: amt})
    if failure is not None:
        raise Rejected(*failure)
    emit_borrow(ctx, cmd.acct, cmd.ccy, amt, auto=False)


def emit_borrow(ctx: Ctx, acct: str, ccy: str, amt: Decimal, auto: bool) -> None:
    """Record a loan; under the ``at_borrow_and_hourly`` policy it pays one hour at once."""
    ctx.emit(ev.Borrowed(acct=acct, ccy=ccy, amt=amt, auto=auto))
    asset = ctx.state.assets[ccy]
    if asset.accrual == "at_borrow_and_hourly":
        charge = margin.hourly_interest(amt, asset.daily_rate, asset.decimals)
        if charge:
            ctx.emit(ev.InterestAccrued(acct=acct, ccy=ccy, liab=amt, hourlyRate=asset.hourly_rate, amt=charge))
    ctx.touch(acct)


def repay(ctx: Ctx, cmd: Repay) -> None:
    state = ctx.state
    amt = amount(state, cmd.ccy, cmd.amt)
    account = known_account(state, cmd.acct)
    bal = account.balances.get(cmd.ccy)
    owed = bal.liab + bal.interest if bal else ZERO
    if bal is None or owed == 0:
        raise Rejected("nothing_to_repay", f"{cmd.acct} owes no {cmd.ccy}")
    pay = min(amt, owed)
    free = bal.cash - bal.frozen
    if free < pay:
        raise Rejected("insufficient_balance", f"repay {pay} {cmd.ccy}: {free} available")
    emit_repay(ctx, cmd.acct, cmd.ccy, pay, "manual")


def emit_repay(ctx: Ctx, acct: str, ccy: str, pay: Decimal, reason: str) -> None:
    """Repay ``pay`` of the account's ``ccy`` debt: interest first, then principal."""
    bal = ctx.state.accounts[acct].balances[ccy]
    interest = min(pay, bal.interest) if bal.interest else ZERO
    ctx.emit(ev.Repaid(acct=acct, ccy=ccy, interest=interest, principal=pay - interest, reason=reason))
    ctx.touch(acct)


HOUR_MS = 3_600_000


def accrue_interest(ctx: Ctx, cmd: AccrueInterest) -> None:
    state = ctx.state
    hour = cmd.ts // HOUR_MS
    if hour <= state.last_interest_hour:
        raise Rejected(
            "interest_already_accrued",
            f"ts {cmd.ts} falls in hour {hour}; interest was already accrued for hour {state.last_interest_hour}",
        )
    ctx.emit(ev.InterestHourClosed(hour=hour))
    for acct in list(state.debtors):
        account = state.accounts[acct]
        for ccy, bal in account.balances.items():
            if bal.liab:
                _accrue(ctx, acct, ccy, bal.liab, bal.interest, "")
        for inst_id, pos in account.isolated.items():  # decision 10: charged to the position
            if pos.liab:
                inst = state.instruments[inst_id]
                _accrue(ctx, acct, inst.quote if pos.long else inst.base, pos.liab, pos.interest, inst_id)


def _accrue(ctx: Ctx, acct: str, ccy: str, liab: Decimal, interest: Decimal, inst_id: str) -> None:
    asset = ctx.state.assets[ccy]
    base = liab + interest if asset.compounding == "capitalise" else liab
    amt = margin.hourly_interest(base, asset.daily_rate, asset.decimals)
    if amt:
        ctx.emit(
            ev.InterestAccrued(acct=acct, ccy=ccy, liab=base, hourlyRate=asset.hourly_rate, amt=amt, instId=inst_id)
        )
        ctx.touch(acct)
