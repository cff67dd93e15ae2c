"""The risk view of ``spec/contract.md``: what projections publish and ``run --json`` prints.

Every number is a decimal string; a value that does not apply (no liability, no mark yet) is
``""``. Field names are the contract's (OKX API v5).
"""

from __future__ import annotations

import msgspec


class BalanceView(msgspec.Struct, frozen=True):
    ccy: str
    cashBal: str
    availBal: str
    liab: str
    interest: str
    #: A futures wallet's balance: the most a ``transfer`` to the spot wallet accepts now
    #: (``engine.core.wallets.transferable``); ``""`` elsewhere (docs/decisions.md 35c).
    maxTransfer: str = ""


class AccountView(msgspec.Struct, frozen=True):
    acct: str
    totalEq: str
    imr: str
    mmr: str
    mgnRatio: str
    balances: list[BalanceView]
    #: ``unified`` or ``futures_wallet`` (``set_account_mode``, docs/decisions.md 35b); a futures
    #: wallet shows its owner's mode.
    acctMode: str = "unified"
    #: ``""`` in unified mode; ``spot`` (the account itself) or ``futures`` (``acct:futures``).
    wallet: str = ""
    #: Adjusted equity and the held equity of pending isolated orders, in the valuation
    #: currency (seed 001, ``engine.core.adjusted``; docs/decisions.md 35): adjEq rounded down,
    #: ordFroz up; ``""`` without prices.
    adjEq: str = ""
    ordFroz: str = ""


class PositionView(msgspec.Struct, frozen=True):
    acct: str
    instId: str
    mgnMode: str
    posSide: str
    posCcy: str
    pos: str
    availPos: str
    avgPx: str
    liab: str
    liabCcy: str
    interest: str
    margin: str
    mgnCcy: str
    imr: str
    mmr: str
    mgnRatio: str
    liqPx: str
    upl: str
    uplRatio: str
    markPx: str
    lever: str


class RiskView(msgspec.Struct, frozen=True):
    accounts: list[AccountView]
    positions: list[PositionView]
