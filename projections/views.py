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


class AccountView(msgspec.Struct, frozen=True):
    acct: str
    totalEq: str
    imr: str
    mmr: str
    mgnRatio: str
    balances: list[BalanceView]


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
