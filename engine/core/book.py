"""Price-time priority order book for one instrument.

Each side is a ``SortedDict`` from a price key to a level; a level is a ``dict`` of orders in
arrival order (FIFO by insertion, O(1) removal by id). Price keys are integers in ticks; bids
are stored under the negated tick count so that, on both sides, the first key is the best price.

Invariant (checked by :meth:`OrderBook.check`): the book is never crossed after a step —
best bid < best ask — and no level is empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr
from sortedcontainers import SortedDict

if TYPE_CHECKING:
    from engine.core.state import Order


def price_key(px: Decimal | None, tick: Decimal, is_buy: bool) -> int:
    """The book key of an order at ``px`` on a grid of ``tick``: ``px // tick`` ticks, negated
    for bids (0 for an order without a price, which never rests). Unbounded: a price of 10¹⁸
    at a tick of 10⁻¹⁸ is 10³⁶ ticks (snapshots therefore store the price, not the key)."""
    if px is None:
        return 0
    ticks = int(px // tick)
    return -ticks if is_buy else ticks


@mypyc_attr(native_class=False)  # mypyc cannot compile a native subclass of RuntimeError
class BookInvariantError(RuntimeError):
    """The book broke an invariant: the engine must halt without committing."""


class OrderBook:
    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()  # -ticks -> {order_id: Order}
        self.asks: SortedDict = SortedDict()  # ticks -> {order_id: Order}

    def side(self, is_buy: bool) -> SortedDict:
        """The side an order of direction ``is_buy`` rests on."""
        return self.bids if is_buy else self.asks

    def add(self, order: Order) -> None:
        levels = self.bids if order.is_buy else self.asks
        level = levels.get(order.px_key)
        if level is None:
            levels[order.px_key] = {order.order_id: order}
        else:
            level[order.order_id] = order

    def remove(self, order: Order) -> None:
        levels = self.bids if order.is_buy else self.asks
        level = levels[order.px_key]
        del level[order.order_id]
        if not level:
            del levels[order.px_key]

    def best_bid_ticks(self) -> int | None:
        """Best bid in ticks, or ``None`` when there are no bids."""
        return -self.bids.peekitem(0)[0] if self.bids else None

    def best_ask_ticks(self) -> int | None:
        return self.asks.peekitem(0)[0] if self.asks else None

    def opposite_levels(self, is_buy: bool) -> Iterator[tuple[int, dict[int, Order]]]:
        """Levels an incoming order of direction ``is_buy`` matches against, best first,
        as ``(price in ticks, level)``. Do not mutate the book while iterating this."""
        if is_buy:
            for key, level in self.asks.items():
                yield key, level
        else:
            for key, level in self.bids.items():
                yield -key, level

    def check(self) -> None:
        """O(1) check run after every order: the book is not crossed."""
        bid = self.best_bid_ticks()
        ask = self.best_ask_ticks()
        if bid is not None and ask is not None and bid >= ask:
            raise BookInvariantError(f"crossed book: best bid {bid} ticks >= best ask {ask} ticks")

    def check_deep(self) -> None:
        """O(levels) check for tests and audits: not crossed and no empty level."""
        self.check()
        for levels in (self.bids, self.asks):
            for key, level in levels.items():
                if not level:
                    raise BookInvariantError(f"empty level at key {key}")

    def __len__(self) -> int:
        return sum(len(level) for level in self.bids.values()) + sum(len(lv) for lv in self.asks.values())
