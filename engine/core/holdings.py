"""What an account holds and owes per currency, positions included (conservation checks).

``held(account, ccy)`` = ``(assets, liab, interest)``: the account's cash plus, for every
isolated spot position, its holdings and margin in ``ccy`` and, for every perpetual, its
isolated margin (settlement currency); ``liab``/``interest`` add the positions' debts. Frozen
amounts are part of cash. The conservation identity per currency is::

    deposits − withdrawals = Σ accounts (assets − liab − interest)
                             + fees + insurance funds + interest income + perpetual clearing
                             − written off

(``pools``). An account in ``futures_wallet`` mode is two accounts here, ``A`` (spot) and
``A:futures`` (docs/decisions.md 35b): the sum over accounts counts both wallets, and a
``transfer`` between them changes neither side. The perpetual clearing balance
(``State.clearing``) pays realised P&L out and takes realised losses in; it is what open
perpetual positions will settle among themselves.
"""

from __future__ import annotations

from decimal import Decimal

from engine.core.money import ZERO
from engine.core.state import Account, State


def held(state: State, account: Account, ccy: str) -> tuple[Decimal, Decimal, Decimal]:
    bal = account.balances.get(ccy)
    assets, liab, interest = (bal.cash, bal.liab, bal.interest) if bal is not None else (ZERO, ZERO, ZERO)
    for inst_id, pos in account.isolated.items():
        inst = state.instruments[inst_id]
        if ccy == inst.base:
            assets += pos.base
        elif ccy == inst.quote:
            assets += pos.quote
        else:
            continue
        if pos.mgn_ccy == ccy:
            assets += pos.margin
        if (inst.quote if pos.long else inst.base) == ccy:
            liab += pos.liab
            interest += pos.interest
    for (inst_id, _), perp in account.perps.items():
        if state.instruments[inst_id].settle == ccy:
            assets += perp.margin
    return assets, liab, interest


def currencies(state: State, account: Account) -> list[str]:
    """Every currency the account or its positions may hold, in a stable order."""
    found = dict.fromkeys(account.balances)
    for inst_id in account.isolated:
        inst = state.instruments[inst_id]
        found[inst.base] = None
        found[inst.quote] = None
    for inst_id, _ in account.perps:
        found[state.instruments[inst_id].settle] = None
    return list(found)


def pools(state: State, ccy: str) -> Decimal:
    """The platform side of the identity in ``ccy``: fees + insurance + interest income +
    perpetual clearing − written off."""
    return (
        state.fees.get(ccy, ZERO)
        + state.insurance.get(ccy, ZERO)
        + state.interest_income.get(ccy, ZERO)
        + state.clearing.get(ccy, ZERO)
        - state.written_off.get(ccy, ZERO)
    )
