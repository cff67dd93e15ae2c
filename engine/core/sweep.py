"""Which accounts a command evaluates beyond those it touched: the incremental rule and the
full sweep it must be indistinguishable from.

**The rule** (``docs/decisions.md`` 17, 18b, 18c). After every command, every account exposed to
a price (``State.debtors``: cross debt, cross perpetuals, isolated spot and perpetual positions)
is as good as evaluated: its margin call is raised or cleared and its liquidation run exactly
when its figures say so. An *unfinished* liquidation (the book could not absorb it,
``State.stuck``) waits for a trigger: a command touching the account, or a mark of a price the
account is exposed to (:func:`exposed_to_mark`).

**Order.** First the accounts the command itself touched, in order of first touch; each
evaluation that changes other accounts (a liquidation's counterparties) queues them behind.
Then the sweep: accounts in debtor order (order of becoming exposed), **one at a time** — each
evaluated, then everything its evaluation touched, before the next.

**Incremental** (``Engine()``, :func:`mark_candidates`): only a mark sweeps, and only over the
accounts whose risk band it leaves (``engine.core.watch``), dirty ones (restored from a
snapshot) exposed to it, and stuck ones exposed to it; every other account would evaluate to
nothing, so skipping it changes no event. Cost per mark: the crossed bands, not O(accounts).

**Full sweep** (``Engine(full_sweep=True)``, :func:`everyone`): after every command, every
exposed account and every account with a standing margin call, in debtor order, with the
risk watches and the ``seen`` shortcut bypassed; swept again while a sweep emits anything (a
command refused as a duplicate id changes nothing and is not swept).
Slow (O(accounts) per command) and obviously right: the differential oracle
(``tests/test_oracle.py``) and ``marginbook replay --full-sweep`` require its journal to be
byte-identical to the incremental engine's.
"""

from __future__ import annotations

from decimal import Decimal

from engine.core.state import Account, Instrument, State
from engine.core.watch import SEP


def holds_position(account: Account, inst_id: str) -> bool:
    """An isolated spot or a perpetual (cross or isolated) position on ``inst_id``."""
    if inst_id in account.isolated:
        return True
    return any(key[0] == inst_id for key in account.perps)


def prices_currency(state: State, inst: Instrument) -> bool:
    """Does the mark of ``inst`` value a currency (a SPOT instrument quoting its base in the
    valuation currency, ``State.price_inst``)?"""
    return inst.inst_type == "SPOT" and state.price_inst.get(inst.base) == inst.inst_id


def exposed_to_mark(state: State, account: Account, inst: Instrument) -> bool:
    """Can a mark of ``inst`` move this account's figures: a position on it, or a holding of
    the currency it prices?"""
    return holds_position(account, inst.inst_id) or (prices_currency(state, inst) and inst.base in account.balances)


def mark_candidates(state: State, inst: Instrument, mark: Decimal, first: bool) -> list[str]:
    """The incremental engine's sweep for a mark of ``inst`` at ``mark`` (already applied), in
    debtor order: cross accounts whose band on the priced currency (or on ``@instId``, cross
    perpetuals) it leaves, positions on the instrument whose band it leaves — or, on the
    instrument's first mark (``first``), every debtor exposed to it — plus stuck debtors
    exposed to it. A band left behind by a position since closed (its account no longer
    exposed) is dropped without an evaluation."""
    inst_id = inst.inst_id
    base = inst.base
    debtors = state.debtors
    accounts = state.accounts
    found: dict[str, None] = {}
    pricing = prices_currency(state, inst)
    if first:
        found.update((acct, None) for acct in debtors if exposed_to_mark(state, accounts[acct], inst))
    else:
        if pricing:
            found.update(dict.fromkeys(state.watch.crossed(base, mark, lambda acct: base in accounts[acct].balances)))
        key = "@" + inst_id
        if inst.inst_type == "SWAP":
            found.update(dict.fromkeys(state.watch.crossed(key, mark, lambda a: holds_position(accounts[a], inst_id))))
        for pos_key in state.pos_watch.crossed(key, mark, lambda k: k.split(SEP)[1] == inst_id):
            found[pos_key.split(SEP)[0]] = None
    for acct in state.stuck:  # an unfinished liquidation is retried by every mark it is exposed to
        if exposed_to_mark(state, accounts[acct], inst):
            found[acct] = None
    return sorted((a for a in found if a in debtors), key=debtors.__getitem__)


def everyone(state: State, marked: Instrument | None) -> list[str]:
    """The full sweep: every exposed account in debtor order (``State.debtors`` iterates in
    rank order), then every other account with a standing margin call (account order) — except
    stuck accounts, unless the command was a mark of ``marked`` they are exposed to."""
    accounts = state.accounts
    stuck = state.stuck
    found = [
        acct
        for acct in state.debtors
        if acct not in stuck or (marked is not None and exposed_to_mark(state, accounts[acct], marked))
    ]
    found += [acct for acct, account in accounts.items() if account.margin_call and acct not in state.debtors]
    return found
