"""Futures and spot wallets (seed 003; docs/decisions.md 35b, 35c).

*"Your Futures account and Spot account are separate. After closing a position, funds remain
in the Futures account. To move them to your Spot account, you will need to perform a manual
transfer."*

**Account mode** (``set_account_mode``): ``unified`` (the default, as before: perpetuals are
margined from the account's one balance and count in its cross ratio) or ``futures_wallet``.
In ``futures_wallet`` mode the account ``A`` is its **spot wallet** and the engine keeps its
**futures wallet** as the account ``A:futures`` (``futures_of``): every command about a SWAP
instrument that names ``A`` (``place_order``, ``cancel_order``, ``set_leverage``,
``adjust_margin``, ``close_position``) and every ``set_position_mode`` is applied to
``A:futures`` (:func:`route`), so perpetual margin is frozen from and posted out of the futures
wallet, isolated margin returns to it when a position closes, and fees, funding and realised
P&L settle in it; its cross perpetuals are margined by the futures wallet alone (its own cross
ratio: a loss there never reaches the spot wallet, and spot debt never reaches the futures
positions). Deposits, withdrawals, borrowing, repaying and spot orders stay with ``A``. No
command may name an account ending in ``:futures`` itself (``invalid_acct``).

Switching to ``futures_wallet`` is refused while ``A`` holds a SWAP position or order (they
would have to move between wallets: ``positions_open``); switching back to ``unified`` is
refused while the futures wallet holds a position or an order or owes anything, and otherwise
moves its cash back to the spot wallet (``transferred`` events) before ``account_mode_set``.

**Transfer** (``transfer``: ``ccy``, ``amt``, ``from``, ``to`` ∈ {``spot``, ``futures``}):
only in ``futures_wallet`` mode, only a settlement currency of a listed SWAP (the valuation
currency, decision 21a: its mark value is 1). The source wallet must have ``amt`` free (not
frozen by orders) and, if it has cross risk (cross debt, cross perpetuals, resting cross
orders), must still meet its initial margin afterwards — the check of a withdrawal
(``risk.check_initial_margin``); a refusal names the initial margin the positions need and
the most that can move (:func:`transferable`). Money arriving in a futures wallet that owes
its currency (a cross loss beyond its cash was borrowed, decision 21a) repays that debt first,
interest first (``repaid``, reason ``transfer``).

**Conservation**: both wallets are accounts, so ``engine.core.holdings`` counts both (the
identity sums every account); snapshots carry the futures wallet as an account and the mode
on ``A``.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from engine.core.context import Ctx, Rejected
from engine.core.funds import amount, emit_repay, known_account
from engine.core.money import ZERO, fmt, round_down, round_up
from engine.core.risk import check_initial_margin, margin_excess
from engine.core.state import FUTURES_SUFFIX, Account, State
from events import commands as cmd
from events import journal as ev

#: Commands about an instrument that go to the futures wallet when the instrument is a SWAP.
_BY_INSTRUMENT = (cmd.PlaceOrder, cmd.CancelOrder, cmd.SetLeverage, cmd.AdjustMargin, cmd.ClosePosition)


def futures_of(acct: str) -> str:
    """The account id of ``acct``'s futures wallet."""
    return acct + FUTURES_SUFFIX


def route(state: State, command: cmd.Command) -> cmd.Command:
    """The command as the engine applies it: addressed to the futures wallet when it concerns
    perpetuals of an account in ``futures_wallet`` mode (module doc); refused
    (``invalid_acct``) when it names a futures wallet itself."""
    acct = getattr(command, "acct", None)
    if not isinstance(acct, str):
        return command
    if acct.endswith(FUTURES_SUFFIX):
        owner = acct[: -len(FUTURES_SUFFIX)]
        raise Rejected(
            "invalid_acct",
            f"acct {acct} names a futures wallet: commands name the account ({owner}); SWAP commands"
            " of an account in futures_wallet mode go to its futures wallet",
        )
    account = state.accounts.get(acct)
    if account is None or account.acct_mode != "futures_wallet":
        return command
    if isinstance(command, cmd.SetPositionMode):
        return msgspec.structs.replace(command, acct=futures_of(acct))
    if isinstance(command, _BY_INSTRUMENT):
        inst = state.instruments.get(command.instId)
        if inst is not None and inst.inst_type == "SWAP":
            return msgspec.structs.replace(command, acct=futures_of(acct))
    return command


def set_account_mode(ctx: Ctx, command: cmd.SetAccountMode) -> None:
    state = ctx.state
    account = known_account(state, command.acct)
    mode = command.acctMode
    if mode == account.acct_mode:
        raise Rejected("invalid_acctMode", f"acct {command.acct} is already in {mode} mode")
    if mode == "futures_wallet":
        swaps = [o for o in account.orders.values() if state.instruments[o.inst_id].inst_type == "SWAP"]
        if account.perps or swaps:
            raise Rejected(
                "positions_open",
                f"acct {command.acct} holds {len(account.perps)} perpetual position(s) and {len(swaps)} SWAP"
                " order(s): close and cancel them before moving perpetuals to a futures wallet",
            )
        ctx.emit(ev.AccountModeSet(acct=command.acct, acctMode=mode))
        return
    futures = state.accounts[futures_of(command.acct)]
    if futures.perps or futures.orders:
        raise Rejected(
            "positions_open",
            f"the futures wallet of {command.acct} holds {len(futures.perps)} position(s) and"
            f" {len(futures.orders)} order(s): close and cancel them before switching to unified",
        )
    for ccy, bal in futures.balances.items():
        if bal.liab or bal.interest:
            owed = fmt(bal.liab + bal.interest)
            raise Rejected(
                "futures_wallet_owes",
                f"the futures wallet of {command.acct} owes {owed} {ccy}: transfer it there first (it repays)",
            )
    for ccy, bal in futures.balances.items():
        if bal.cash:
            ctx.emit(ev.Transferred(acct=command.acct, ccy=ccy, amt=bal.cash, source="futures", target="spot"))
    ctx.emit(ev.AccountModeSet(acct=command.acct, acctMode=mode))
    ctx.touch(command.acct)
    ctx.touch(futures.acct)


def _settlement_ccys(state: State) -> list[str]:
    return list(dict.fromkeys(i.settle for i in state.instruments.values() if i.inst_type == "SWAP"))


def _has_cross_risk(account: Account) -> bool:
    return account.at_risk() or bool(account.cross_out) or account.swap_im > 0


def transferable(state: State, wallet: Account, ccy: str) -> Decimal:
    """The most ``transfer`` accepts out of ``wallet`` in ``ccy`` (a settlement currency, mark
    value 1) now: ``min(free, equity − initial margin)`` with the resting orders counted (the
    hypothesis of ``risk.check_initial_margin``; nothing beyond the free cash is ever moved, so
    nothing is borrowed and the excess falls 1:1 with the amount), ``free`` alone without cross
    risk; never below 0; rounded down at the currency's precision."""
    free = wallet.free(ccy)
    most = free
    if _has_cross_risk(wallet):
        perps = bool(wallet.perps) or wallet.swap_im > 0
        result = margin_excess(state, wallet, perps=perps, resting=True)
        most = ZERO if isinstance(result, tuple) else min(free, result.excess)
    return max(ZERO, round_down(most, state.assets[ccy].decimals))


def transfer(ctx: Ctx, command: cmd.Transfer) -> None:
    state = ctx.state
    account = known_account(state, command.acct)
    if account.acct_mode != "futures_wallet":
        raise Rejected(
            "invalid_acctMode", f"transfer needs acctMode futures_wallet: acct {command.acct} is {account.acct_mode}"
        )
    if command.source == command.target:
        raise Rejected("invalid_to", f"from and to are both {command.source}")
    settles = _settlement_ccys(state)
    if command.ccy not in settles:
        held = ", ".join(settles)
        raise Rejected("invalid_ccy", f"a futures wallet holds SWAP settlement currencies ({held}), not {command.ccy}")
    amt = amount(state, command.ccy, command.amt)
    futures = state.accounts[futures_of(command.acct)]
    source = account if command.source == "spot" else futures
    where = f"transfer {fmt(amt)} {command.ccy} from the {command.source} wallet of {command.acct}"
    free = source.free(command.ccy)
    if free < amt:
        shown = f"{where}: {fmt(free)} {command.ccy} is free (what orders froze or positions posted cannot move)"
        raise Rejected("insufficient_balance", shown)
    if _has_cross_risk(source):
        failure = check_initial_margin(state, source, out={command.ccy: amt})
        if failure is not None:
            reason, message = failure
            if reason == "insufficient_margin":
                message = _needs(state, source, command.ccy)
            raise Rejected(reason, f"{where}: {message}")
    ctx.emit(ev.Transferred(acct=command.acct, ccy=command.ccy, amt=amt, source=command.source, target=command.target))
    if command.target == "futures":
        bal = futures.balances[command.ccy]
        pay = min(bal.liab + bal.interest, bal.cash - bal.frozen)
        if pay > 0:
            emit_repay(ctx, futures.acct, command.ccy, pay, "transfer")
    ctx.touch(account.acct)
    ctx.touch(futures.acct)


def _needs(state: State, wallet: Account, ccy: str) -> str:
    """What the wallet's positions need: ``its positions need R of initial margin (equity E);
    at most T can move``."""
    perps = bool(wallet.perps) or wallet.swap_im > 0
    result = margin_excess(state, wallet, perps=perps, resting=True)
    most = transferable(state, wallet, ccy)
    places = state.assets[ccy].decimals
    if isinstance(result, tuple):
        return result[1]
    return (
        f"its positions and orders need {fmt(round_up(result.required, places))} {ccy} of initial margin"
        f" (equity {fmt(round_down(result.equity, places))} {ccy}); at most {fmt(most)} {ccy} can move"
    )
