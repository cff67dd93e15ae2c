"""The margin of an isolated opening order: what it freezes and what each of its fills posts.

Spec §1.2 (Binance's order cost): an opening order costs its **initial margin at the assumed
price** plus its **open loss** against the mark, ``OL = |q|·max(0, s·(px − P))``. The formulas
are :func:`engine.core.margin.opening_cost` / :func:`~engine.core.margin.order_cost`; this
module applies them to orders (isolated spot with either margin currency, isolated SWAP):

* at placement the order **freezes** its whole cost — at its limit price, or for a market order
  level by level along the book walk, with the mark of that moment (:func:`order_frozen`);
* each opening fill **posts** ``cost(fills so far + this one) − cost(fills so far)`` at the
  fill's price and the mark of that moment (:func:`fill_posting`); the order's
  ``filled_value``/``filled_loss`` keep the sums (the fold adds each fill's part, with the same
  function), so splitting a fill never changes what is posted;
* what is posted comes from the order's frozen funds; if the mark moved against a resting order
  since it was placed, its fill may need more: the rest comes from the account's free cash in
  the margin currency (``position_margin_changed`` reason ``top_up``), and if that is not
  enough the fill is not made (``engine.core.fill_guard``).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING

from engine.core import margin
from engine.core.money import UP, ZERO, fmt
from engine.core.state import Instrument, Order, State
from events import journal as ev

if TYPE_CHECKING:  # the fold imports this module; ``Ctx`` imports the fold
    from engine.core.context import Ctx


def base_margined(inst: Instrument, mgn_ccy: str) -> bool:
    """Isolated spot margin in the base currency (margin in base units, not value)."""
    return inst.inst_type == "SPOT" and mgn_ccy == inst.base


class Cost:
    """An opening order's cost: ``frozen`` = ``im`` + ``loss`` (``loss``: what the open loss
    against the mark adds, 0 without one), in the margin currency; ``mark`` it was valued at."""

    __slots__ = ("frozen", "im", "loss", "mark")

    def __init__(self, frozen: Decimal, im: Decimal, mark: Decimal | None) -> None:
        self.frozen = frozen
        self.im = im
        self.loss = frozen - im
        self.mark = mark


def order_frozen(
    state: State,
    inst: Instrument,
    mgn_ccy: str,
    is_buy: bool,
    sz: Decimal,
    px: Decimal | None,
    levels: Iterable[tuple[Decimal, Decimal]],
    lever: Decimal,
) -> Cost:
    """What an isolated opening order of ``sz`` (base units; SWAP: contracts) freezes: its order
    cost at its limit price ``px``, or — a market order (``px`` ``None``) — along ``levels``
    (the book walk) as far as they fill it. Base margin keeps spec §1.2's ``sz / L`` on the
    whole size (a market order too); quote margin and SWAP value what fills."""
    mark = state.marks.get(inst.inst_id)
    base = base_margined(inst, mgn_ccy)
    unit = inst.ct_val if inst.inst_type == "SWAP" else Decimal(1)
    places = state.assets[mgn_ccy].decimals
    if px is not None:
        value, loss = margin.opening_cost(sz * unit, px, px, mark, is_buy, base, lever)
        plain = sz if base else sz * unit * px
    else:
        _, notional, value, raw = margin.book_walk_cost(levels, sz, unit, mark, is_buy)
        plain = notional * unit
        # each level is its own basis and fill price: ``opening_cost``'s loss summed over them
        loss = UP.multiply(lever + 1 if base and is_buy else lever, raw)
        if base:
            value = plain = sz
    frozen = margin.order_cost(value, loss, mark, base, lever, places)
    return Cost(frozen, margin.order_cost(plain, ZERO, mark, base, lever, places), mark)


def fill_posting(state: State, order: Order, inst: Instrument, qty: Decimal, px: Decimal) -> tuple[Decimal, Decimal]:
    """``(from frozen, from free cash)``: the margin an opening fill of ``qty`` base units at
    ``px`` posts — ``order_cost(sums + this fill) − order_cost(sums)`` at the current mark, never
    negative — taken from the order's frozen funds first."""
    mark = state.marks.get(inst.inst_id)
    base = base_margined(inst, order.mgn_ccy)
    basis = order.px if order.px is not None else px
    value, loss = margin.opening_cost(qty, basis, px, mark, order.is_buy, base, order.lever)
    places = state.assets[order.mgn_ccy].decimals
    lever = order.lever
    before = margin.order_cost(order.filled_value, order.filled_loss, mark, base, lever, places)
    after = margin.order_cost(order.filled_value + value, UP.add(order.filled_loss, loss), mark, base, lever, places)
    posted = max(ZERO, after - before)
    frozen = min(posted, order.frozen)
    return frozen, posted - frozen


def add_fill(state: State, order: Order, inst: Instrument, qty: Decimal, px: Decimal) -> None:
    """The fold's part: add an opening fill of ``qty`` base units at ``px`` to the order's sums
    (the same :func:`~engine.core.margin.opening_cost` as :func:`fill_posting`, at the same mark)."""
    basis = order.px if order.px is not None else px
    base = base_margined(inst, order.mgn_ccy)
    mark = state.marks.get(inst.inst_id)
    value, loss = margin.opening_cost(qty, basis, px, mark, order.is_buy, base, order.lever)
    order.filled_value += value
    if loss:
        order.filled_loss = UP.add(order.filled_loss, loss)


def post_margin(ctx: Ctx, order: Order, inst: Instrument, pos_side: str, qty: Decimal, px: Decimal) -> None:
    """Post an opening fill's margin (:func:`fill_posting`): ``position_margin_changed``
    ``open`` from the order's frozen funds, then ``top_up`` from the account's free cash for
    what they do not cover (the fill guard made sure the cash is there)."""
    from_frozen, from_free = fill_posting(ctx.state, order, inst, qty, px)
    for amt, reason in ((from_frozen, "open"), (from_free, "top_up")):
        if amt > 0:
            ctx.emit(
                ev.PositionMarginChanged(
                    acct=order.acct, instId=inst.inst_id, posSide=pos_side, ccy=order.mgn_ccy, amt=amt, reason=reason,
                    orderId=order.order_id,
                )
            )  # fmt: skip


def shortfall_message(cost: Cost, ccy: str, free: Decimal, is_buy: bool, px: Decimal | None) -> str:
    """Why an opening order's cost does not fit the free cash, naming the numbers: the
    initial margin alone as before, or with what the open loss against the mark adds."""
    if not cost.loss:
        return f"initial margin {fmt(cost.im)} {ccy}, {fmt(free)} available"
    where = f"{'buy' if is_buy else 'sell'} at {fmt(px)}" if px is not None else f"market {'buy' if is_buy else 'sell'}"
    return (
        f"order cost {fmt(cost.frozen)} {ccy}: initial margin {fmt(cost.im)} + {fmt(cost.loss)} for the open loss"
        f" ({where} against the mark {fmt(cost.mark)}), {fmt(free)} available"
    )
