"""Render the contract's risk view from a state (the engine's, or one folded from events).

All figures come from ``engine.core.risk`` and ``engine.core.margin``; nothing is computed here
but rounding for display:

* account ``totalEq`` rounds down, ``imr``/``mmr`` round up, at the valuation currency's
  precision; ``mmr`` includes the closing-fee reserve, so ``mgnRatio = totalEq / mmr``;
* ratios show 8 decimals rounded down; liquidation prices 8 decimals, rounded up for a long
  and down for a short (``margin.display_price``);
* ``upl`` (quote units) rounds down at the quote precision.

Cross spot-margin positions: debt is pooled per currency, so a position shows the account's
whole debt in its liability currency; ``mgnRatio`` is the account's; ``liqPx`` is the mark of
the instrument at which the account's ratio reaches 100 % with other marks held. ``pos`` is the
position's one quantity (a long's base net of fees, a short's quote proceeds), ``upl`` is
``qty·(P − avgPx)`` on that quantity (0 at quantity 0), ``mgnCcy`` the position's margin
currency; ``availPos`` follows §1.9 with the buffer of decision 8 when margin and position
currency match (seed 002 §3.1), else it is the position's assets (§3.2). Positions are listed
by account (in order of first appearance) then instrument (in order of first trade).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from engine.core import adjusted, cross_position, margin, position_risk, risk, wallets
from engine.core.money import NEAR, ZERO, fmt, round_down, round_up
from engine.core.state import FUTURES_SUFFIX, Account, State
from engine.core.swap import available_to_close
from projections.views import AccountView, BalanceView, PositionView, RiskView


def _ratio(value: Decimal | None) -> str:
    return fmt(margin.display_ratio(value))


def account_view(state: State, account: Account) -> AccountView:
    valuation = state.valuation_ccy
    places = state.assets[valuation].decimals if valuation in state.assets else 8
    balances = [
        BalanceView(
            ccy=ccy,
            cashBal=fmt(bal.cash),
            availBal=fmt(bal.cash - bal.frozen),
            liab=fmt(bal.liab) if bal.liab else "",
            interest=fmt(bal.interest) if bal.liab or bal.interest else "",
        )
        for ccy, bal in account.balances.items()
    ]
    mode, wallet = _wallet_of(state, account)
    if wallet == "futures":
        balances = [msgspec.structs.replace(b, maxTransfer=fmt(wallets.transferable(state, account, b.ccy)))
                    if b.ccy in state.assets else b for b in balances]  # fmt: skip
    try:
        figures = risk.account_risk(state, account, with_imr=True)
    except AssertionError:
        figures = None
    if figures is None:
        return AccountView(
            acct=account.acct, totalEq="", imr="", mmr="", mgnRatio="", balances=balances, acctMode=mode,
            wallet=wallet,
        )  # fmt: skip
    has_debt = figures.required > 0
    return AccountView(
        acct=account.acct,
        totalEq=fmt(round_down(figures.equity, places)),
        imr=fmt(round_up(figures.imr, places)) if has_debt else "",
        mmr=fmt(round_up(figures.required, places)) if has_debt else "",
        mgnRatio=_ratio(figures.ratio),
        balances=balances,
        acctMode=mode,
        wallet=wallet,
        adjEq=fmt(round_down(adjusted.adjusted_equity(state, account), places)),
        ordFroz=fmt(round_up(adjusted.held_equity(state, account), places)),
    )


def _wallet_of(state: State, account: Account) -> tuple[str, str]:
    """``(acctMode, wallet)`` of an account view (``engine.core.wallets``)."""
    if account.acct.endswith(FUTURES_SUFFIX):
        owner = state.accounts.get(account.acct[: -len(FUTURES_SUFFIX)])
        return (owner.acct_mode if owner is not None else "futures_wallet"), "futures"
    if account.acct_mode == "futures_wallet":
        return account.acct_mode, "spot"
    return account.acct_mode, ""


def cross_positions(state: State, account: Account) -> list[PositionView]:
    views: list[PositionView] = []
    figures = risk.account_risk(state, account)
    for inst_id, ledger in account.positions.items():
        inst = state.instruments[inst_id]
        long = ledger.long
        pos_ccy, liab_ccy = (inst.base, inst.quote) if long else (inst.quote, inst.base)
        assets = ledger.qty if long else ledger.assets  # the one quantity (long: base, net of fees)
        mark = state.marks.get(inst_id)
        bal = account.balances.get(liab_ccy)
        debt = bal.liab + bal.interest if bal else ZERO
        quote_dec = state.assets[inst.quote].decimals
        imr = mmr = upl = liq_px = avail = None
        if mark is not None:
            upl = round_down(ledger.qty * (mark - ledger.avg_px), quote_dec)
            liq_px = margin.display_price(risk.cross_liquidation_price(state, account, inst.base), long)
            held = account.balances.get(pos_ccy)
            holding = held.cash - held.frozen if held else ZERO
            matched = cross_position.matched(inst, ledger)
            avail = holding if matched else min(holding, assets)
            if debt:
                _, row, lever = risk.debt_terms(state, account, liab_ccy, debt)
                price = risk.price_of(state, liab_ccy)
                if price is not None:
                    value = debt * price
                    imr = margin.initial_requirement(value, lever, row)
                    mmr = margin.debt_maintenance(value, row.mmr) + margin.debt_closing_fee(
                        value, row.mmr, inst.taker_fee
                    )
                if matched:  # seed 002 §3.1: (liab + interest)·(1 + b) / P of the holding
                    buffer = risk.close_buffer(state, account, liab_ccy, debt)
                    avail = margin.cross_available_to_close(holding, debt, buffer, mark, long)
        places = state.assets[pos_ccy].decimals
        views.append(
            PositionView(
                acct=account.acct,
                instId=inst_id,
                mgnMode="cross",
                posSide="net",
                posCcy=pos_ccy,
                pos=fmt(assets),
                availPos=fmt(round_down(max(avail, ZERO), places)) if avail is not None else "",
                avgPx=fmt(round_down(ledger.avg_px, 8)),
                liab=fmt(bal.liab) if bal and bal.liab else "",
                liabCcy=liab_ccy if debt else "",
                interest=fmt(bal.interest) if bal and debt else "",
                margin="",
                mgnCcy=ledger.mgn_ccy,
                imr=fmt(round_up(imr, quote_dec)) if imr is not None else "",
                mmr=fmt(round_up(mmr, quote_dec)) if mmr is not None else "",
                mgnRatio=_ratio(figures.ratio),
                liqPx=fmt(liq_px),
                upl=fmt(upl),
                uplRatio=_ratio(NEAR.divide(upl, imr)) if upl is not None and imr else "",
                markPx=fmt(mark),
                lever=fmt(account.leverage.get(inst_id, inst.max_lever)),
            )
        )
    return views


def isolated_positions(state: State, account: Account) -> list[PositionView]:
    """Isolated spot positions (§1.1 new mode): ``pos`` excludes the margin; ``upl``, ``imr``,
    ``mmr`` (MM + closing fee) in the margin currency; ``mgnRatio`` and ``liqPx`` from
    ``engine.core.position_risk``; ``lever`` the isolated leverage set.

    ``imr`` is the initial margin the opening fills posted (their order cost: IM plus open loss,
    ``open`` and ``top_up``), scaled down by each closing fill to the size that remains
    (``base_margin``); ``adjust_margin`` changes ``margin``, never ``imr``. ``upl`` is the P&L of
    that remaining position (what earlier closing fills realised stays in the position but is
    not floating: docs/decisions.md 32b), so ``uplRatio = upl / imr`` (computed before ``upl`` is
    rounded for display) is the remaining position's own."""
    views: list[PositionView] = []
    for inst_id, pos in account.isolated.items():
        inst = state.instruments[inst_id]
        pos_ccy, liab_ccy = (inst.base, inst.quote) if pos.long else (inst.quote, inst.base)
        held = pos.base if pos.long else pos.quote
        mark = state.marks.get(inst_id)
        mgn_places = state.assets[pos.mgn_ccy].decimals
        figures = position_risk.isolated_spot(inst, pos, mark) if mark is not None else None
        upl = round_down(figures.upl, mgn_places) if figures is not None else None
        views.append(
            PositionView(
                acct=account.acct,
                instId=inst_id,
                mgnMode="isolated",
                posSide="net",
                posCcy=pos_ccy,
                pos=fmt(held),
                availPos=fmt(held - pos.frozen),
                avgPx=fmt(round_down(pos.avg_px, 8)),
                liab=fmt(pos.liab) if pos.liab else "",
                liabCcy=liab_ccy,
                interest=fmt(pos.interest),
                margin=fmt(pos.margin),
                mgnCcy=pos.mgn_ccy,
                imr=fmt(pos.base_margin),
                mmr=fmt(round_up(figures.required, mgn_places)) if figures is not None else "",
                mgnRatio=_ratio(figures.ratio) if figures is not None else "",
                liqPx=fmt(margin.display_price(figures.liq_px, pos.long)) if figures is not None else "",
                upl=fmt(upl),
                uplRatio=_ratio(NEAR.divide(figures.upl, pos.base_margin))
                if figures is not None and pos.base_margin
                else "",
                markPx=fmt(mark),
                lever=fmt(account.iso_leverage.get(inst_id, inst.max_lever)),
            )
        )
    return views


def perp_positions(state: State, account: Account) -> list[PositionView]:
    """Perpetual positions: ``pos`` in contracts (signed in net mode), figures in the settlement
    currency; a cross position shows the account's ``mgnRatio`` and the instrument mark at which
    the account reaches 100 %; an isolated one its own (§1.4(g), §1.5). ``availPos`` (seed 001:
    "Total − Pending Close Orders") is the size less what resting close orders will close
    (``swap.available_to_close``; hedge mode's closing side, net mode's reduce-only orders)."""
    views: list[PositionView] = []
    account_ratio = None
    for (inst_id, pos_side), pos in account.perps.items():
        inst = state.instruments[inst_id]
        mark = state.marks.get(inst_id)
        places = state.assets[inst.settle].decimals
        lever = (account.iso_leverage if pos.mgn_mode == "isolated" else account.leverage).get(inst_id, inst.max_lever)
        figures = position_risk.perpetual(inst, pos, mark) if mark is not None else None
        entry_im = abs(pos.qty) * inst.ct_val * pos.avg_px
        if pos.mgn_mode == "isolated":
            imr = margin.initial_margin(entry_im, lever, places)
            ratio = figures.ratio if figures is not None else None
            liq = figures.liq_px if figures is not None else None
        else:
            imr = margin.initial_margin(abs(pos.qty) * inst.ct_val * (mark or pos.avg_px), lever, places)
            if account_ratio is None:
                account_ratio = risk.account_risk(state, account).ratio
            ratio = account_ratio
            liq = risk.cross_liquidation_price(state, account, "@" + inst_id) if mark is not None else None
        upl = round_down(figures.upl, places) if figures is not None else None
        views.append(
            PositionView(
                acct=account.acct,
                instId=inst_id,
                mgnMode=pos.mgn_mode,
                posSide=pos_side,
                posCcy="",
                pos=fmt(pos.qty),
                availPos=fmt(available_to_close(account, pos)),
                avgPx=fmt(round_down(pos.avg_px, 8)),
                liab="",
                liabCcy="",
                interest="",
                margin=fmt(pos.margin) if pos.mgn_mode == "isolated" else "",
                mgnCcy=inst.settle,
                imr=fmt(imr),
                mmr=fmt(round_up(figures.required, places)) if figures is not None else "",
                mgnRatio=_ratio(ratio),
                liqPx=fmt(margin.display_price(liq, pos.qty > 0)),
                upl=fmt(upl),
                uplRatio=_ratio(NEAR.divide(upl, imr)) if upl is not None and imr else "",
                markPx=fmt(mark),
                lever=fmt(lever),
            )
        )
    return views


def position_views(state: State, account: Account) -> list[PositionView]:
    """Every open position of an account: cross spot, isolated spot, perpetuals, in that order."""
    views = cross_positions(state, account)
    if account.isolated:
        views += isolated_positions(state, account)
    if account.perps:
        views += perp_positions(state, account)
    return views


def build_view(state: State) -> RiskView:
    """The whole risk view: every account with a balance, every open margin position."""
    accounts = [account_view(state, account) for account in state.accounts.values() if account.balances]
    positions = [view for account in state.accounts.values() for view in position_views(state, account)]
    return RiskView(accounts=accounts, positions=positions)
