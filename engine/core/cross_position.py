"""Cross spot-margin positions: margin currency and closing fills (seed 002 §2–§3, seed 000).

A cross position (``state.PositionLedger``, docs/decisions.md 19) is the account's margin
position on one SPOT instrument: a long holds base and owes quote, a short holds quote and owes
base (debt is pooled per currency, so the position's liability is the account's debt in that
currency).

**Margin currency** (seed 002 §2: "both pair tokens can serve as margin"; FAQ: "margin
currency is fixed when opening the position"): the opening order's ``ccy``, base or quote of
the pair (default: the position currency — base for a long, quote for a short, as isolated
decision 21). While a position is open, an order in its direction naming another ``ccy`` is
refused (``margin_ccy_fixed``). The currencies **match** when the margin is the position
currency (long + base, short + quote: seed 002 §3.1 — only the available asset
``(liab + interest)·(1 + b)/P`` closes, the rest of the holding is the account's) and
**mismatch** otherwise (long + quote, short + base: §3.2 — only the position's assets close,
the whole position must be sold to close, and the account's equity covers the liability left).

**Closing fills** (seed 002 §3.1 "Limit Close: allows partial closing with the remaining
liability"): a cross fill against the position repays the position's liability from that
fill's proceeds at once, interest first (``repaid`` reason ``close``) — for the closed part
``min(|qty|, moved)`` (``moved`` the base the fill moves, net of base fees): a sale's quote
proceeds net of fee, ``× closed/sz`` rounded down at the quote precision when the fill also
reverses; a buy's base received for the closed part. Capped by what is owed and the free cash.
What a fill moves beyond the position (**reduce + reverse**) opens the opposite position when
it borrows (the fold, ``evolve._ledger_fill``). Liquidation fills do not repay here (the
liquidation repays every debt itself).
"""

from __future__ import annotations

from decimal import Decimal

from engine.core.context import Ctx, Rejected
from engine.core.funds import emit_repay
from engine.core.money import DOWN, ZERO, round_down
from engine.core.state import Account, Instrument, Order, PositionLedger, State

#: A closing fill's repayment: ``(acct, ccy, amount at most)``.
Repayment = tuple[str, str, Decimal]


def check_margin_ccy(account: Account, inst: Instrument, is_buy: bool, ccy: str | None) -> str:
    """The ``mgnCcy`` a cross SPOT order carries (``""``: not given, the default applies when it
    opens); refuses a currency outside the pair or other than an open position's margin
    currency in the position's direction."""
    if ccy is None:
        return ""
    if ccy not in (inst.base, inst.quote):
        raise Rejected("invalid_ccy", f"ccy {ccy} is neither {inst.base} nor {inst.quote}")
    ledger = account.positions.get(inst.inst_id)
    if ledger is not None and ledger.qty and (ledger.qty > 0) == is_buy and ledger.mgn_ccy != ccy:
        side = "long" if is_buy else "short"
        raise Rejected("margin_ccy_fixed", f"the cross {side} on {inst.inst_id} is margined in {ledger.mgn_ccy}")
    return ccy


def matched(inst: Instrument, ledger: PositionLedger) -> bool:
    """Margin currency = position currency (base for a long, quote for a short)."""
    return ledger.mgn_ccy == (inst.base if ledger.long else inst.quote)


def closing_part(ledger: PositionLedger | None, is_buy: bool, moved: Decimal) -> Decimal:
    """Base a fill moving ``moved`` (net of base fees) closes of the position: 0 unless against it."""
    if ledger is None or not ledger.qty or (ledger.qty > 0) == is_buy:
        return ZERO
    return min(abs(ledger.qty), moved)


def closing_repayment(state: State, order: Order, inst: Instrument, sz: Decimal, px: Decimal, fee: Decimal
                      ) -> Repayment | None:  # fmt: skip
    """What the fill of ``sz`` at ``px`` (fee ``fee`` in the currency received) repays of the
    order account's cross position (module doc), decided before the fill changes the ledger."""
    ledger = state.accounts[order.acct].positions.get(inst.inst_id)
    moved = sz - fee if order.is_buy else sz
    closed = closing_part(ledger, order.is_buy, moved)
    if not closed:
        return None
    if order.is_buy:
        return order.acct, inst.base, closed
    proceeds = px * sz - fee
    if closed < sz:
        proceeds = round_down(DOWN.divide(proceeds * closed, sz), state.assets[inst.quote].decimals)
    return order.acct, inst.quote, proceeds


def repay_closing(ctx: Ctx, repayment: Repayment) -> None:
    """After the fill: repay ``min(amount, owed, free cash)``, interest first."""
    acct, ccy, amount = repayment
    account = ctx.state.accounts[acct]
    bal = account.balances.get(ccy)
    if bal is None:
        return
    pay = min(amount, bal.liab + bal.interest, bal.cash - bal.frozen)
    if pay > 0:
        emit_repay(ctx, acct, ccy, pay, "close")
