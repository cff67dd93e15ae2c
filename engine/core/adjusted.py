"""Multi-currency isolated margin: adjusted equity against the held equity of pending orders.

Seed 001: *"For multi-currency isolated margin mode, the adjusted account equity must be greater
than or equal to the held equity of pending orders, and the available balance of the currency
must meet the order's requirement."* (docs/decisions.md 35). The second half is the existing
check of every isolated opening order (its cost within the free cash of its margin currency);
this module is the first half, checked at the placement of every isolated opening order (spot
and SWAP):

    adjEq   = Σ_c adjusted_value(net_c · P_c, d_c)              (margin.adjusted_value)
              net_c = cash_c − liab_c − interest_c  (+ the uPnL of cross perpetuals settled in c)
    ordFroz = Σ over resting isolated opening orders: frozen · P(margin ccy)
    refused when adjEq < ordFroz + frozen_new · P(margin ccy of the new order)

``d_c`` is the asset's ``discount`` (``list_asset``, default 1), ``P_c`` its mark value in the
valuation currency (a currency without a mark counts for nothing on both sides). The funds an
order froze are still the account's cash, so they count in ``adjEq`` too: with every discount
1 and no debt the rule always holds; it binds when discounts below 1 or cross debt make the
collateral worth less than what the orders hold. Isolated positions' posted margin is no longer
cash and counts on neither side. Exact arithmetic; the view rounds ``adjEq`` down and
``ordFroz`` up at the valuation currency's precision.
"""

from __future__ import annotations

from decimal import Decimal

from engine.core import margin
from engine.core.context import Rejected
from engine.core.money import ZERO, fmt, round_down, round_up
from engine.core.state import Account, State


def adjusted_equity(state: State, account: Account) -> Decimal:
    """``adjEq`` of the account, in the valuation currency (module doc)."""
    net: dict[str, Decimal] = {}
    for ccy, bal in account.balances.items():
        net[ccy] = bal.cash - bal.liab - bal.interest
    for (inst_id, _), pos in account.perps.items():
        if pos.mgn_mode == "cross" and pos.qty:
            inst = state.instruments[inst_id]
            mark = state.marks.get(inst_id, pos.avg_px)
            net[inst.settle] = net.get(inst.settle, ZERO) + margin.perp_upl(pos.qty, inst.ct_val, mark, pos.avg_px)
    total = ZERO
    for ccy, units in net.items():
        price = state.prices.get(ccy)
        if price is not None and units:
            total += margin.adjusted_value(units * price, state.assets[ccy].discount)
    return total


def held_equity(state: State, account: Account) -> Decimal:
    """``ordFroz``: the value of what the account's resting isolated opening orders froze."""
    total = ZERO
    for order in account.orders.values():
        if order.td_mode == "isolated" and not order.reduce and order.frozen:
            price = state.prices.get(order.mgn_ccy)
            if price is not None:
                total += order.frozen * price
    return total


def check_held_equity(state: State, account: Account, mgn_ccy: str, frozen: Decimal) -> None:
    """Refuse (``insufficient_adjusted_equity``) an isolated opening order freezing ``frozen``
    of ``mgn_ccy`` when the adjusted equity would not cover the held equity with it."""
    price = state.prices.get(mgn_ccy)
    if price is None or not frozen:
        return
    adj = adjusted_equity(state, account)
    held = held_equity(state, account) + frozen * price
    if adj < held:
        valuation = state.valuation_ccy or ""
        places = state.assets[valuation].decimals if valuation in state.assets else 8
        shown = (
            f"adjusted equity {fmt(round_down(adj, places))} {valuation} is below the held equity of pending"
            f" orders {fmt(round_up(held, places))} {valuation} with this order"
            f" (short by {fmt(round_up(held - adj, places))} {valuation})"
        )
        raise Rejected("insufficient_adjusted_equity", shown)
