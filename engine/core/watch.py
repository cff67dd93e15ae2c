"""Risk watch: which debtors a mark price can move across a margin threshold.

Evaluating every debtor on every mark price costs O(debtors) full risk computations. Instead,
after every exact evaluation (a debtor is evaluated whenever its balances change, and when a mark
leaves its band) the account registers, for each currency it is exposed to, a price band inside
which its zone (healthy above 300 %, warned in (100 %, 300 %]) cannot change. A mark price then
evaluates only the accounts whose band it leaves, plus the **dirty** accounts exposed to that
currency — debtors without a band, which happens only after a restore from a snapshot.

Why a band is safe (exact in outcome): for a threshold ``T`` let ``f_T = equity − T·required``.
Both terms are linear in every price, so ``f_T(P) = f_T(P₀) + Σ_c a_{T,c}·(P_c − P₀_c)`` with
``a_{T,c} = units_c − T·required_per_price_c``. The zone holds while the worst-case drift
``Σ_c |a_c|·|ΔP_c|`` stays below the slack ``s`` (``f_3`` when healthy; ``min(f_1, −f_3)`` when
warned). Splitting ``s`` equally over the ``n`` exposed currencies gives each currency the
half-width ``s / (n·|a_c|)`` (rounded down); while every price stays strictly inside its band the
drift is below ``s``. Leaving a band triggers an exact evaluation, which is the only thing that
emits events — so the journal is the same as if every exposed debtor were evaluated on every
mark. Candidates are evaluated in debtor order, one at a time (``engine.core.sweep``), the order
a full sweep uses; the full-sweep engine and the differential oracle check it.

A band that does not *strictly* contain the mark is left: at exactly a threshold the band has
zero width, so every mark re-evaluates the account, the same price again included. A cached
evaluation may stand in for a new one only while its band is still registered (:meth:`holds`).

Bounds are kept as integers in units of 10⁻¹² (a lower bound rounded up, an upper bound rounded
down, the mark rounded outward — every rounding can only narrow a band), in two binary heaps per
currency: a max-heap of lower bounds and a min-heap of upper bounds. Deletion is lazy: forgetting
an account bumps its version (O(1)); its entries stay in the heaps as stale until a mark pops them
or a compaction drops them.

This index is a cache of a pure function of the state: it is not part of snapshots or the
digest. A restored state starts with every debtor dirty.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

Band = tuple[str, Decimal, Decimal]
#: Separator of position keys in ``State.pos_watch``: a control character (a name containing
#: it could at worst cause an extra evaluation, which emits nothing when no zone changed).
SEP = "\x1f"


def watch_key(acct: str, inst_id: str, pos_side: str) -> str:
    """Key of a position in ``State.pos_watch``: ``acct␟instId␟posSide``."""
    return f"{acct}{SEP}{inst_id}{SEP}{pos_side}"


_SCALE = Decimal(10) ** 12
_COMPACT_SLACK = 4096


def _up(value: Decimal) -> int:
    return int((value * _SCALE).to_integral_value(rounding=ROUND_CEILING))


def _down(value: Decimal) -> int:
    return int((value * _SCALE).to_integral_value(rounding=ROUND_FLOOR))


class RiskWatch:
    __slots__ = ("_banded", "_bands", "_live", "_lower", "_size", "_upper", "_version", "dirty")

    def __init__(self) -> None:
        #: ccy → max-heap of ``(−lower bound, acct, version)``: evaluate when the price falls to it.
        self._lower: dict[str, list[tuple[int, str, int]]] = {}
        #: ccy → min-heap of ``(upper bound, acct, version)``: evaluate when the price rises to it.
        self._upper: dict[str, list[tuple[int, str, int]]] = {}
        self._version: dict[str, int] = {}
        #: Banded account → number of its live entries, and the bands themselves (an unchanged
        #: band is not pushed again).
        self._banded: dict[str, int] = {}
        self._bands: dict[str, list[Band]] = {}
        self._live = 0
        #: Entries held in the heaps, live or stale.
        self._size = 0
        #: Debtors without a band whose balances changed (or restored from a snapshot).
        self.dirty: dict[str, None] = {}

    def holds(self, acct: str) -> bool:
        """Is a band of ``acct`` registered (not dropped by :meth:`crossed` or :meth:`forget`)?
        A cached evaluation may stand in for a new one only while its band is still here."""
        return acct in self._banded

    def forget(self, acct: str) -> None:
        """Drop the account's band and dirt (it has no debt, or will be re-banded)."""
        self.dirty.pop(acct, None)
        self._bands.pop(acct, None)
        entries = self._banded.pop(acct, 0)
        if entries:
            self._live -= entries
            self._version[acct] = self._version.get(acct, 0) + 1

    def watch(self, acct: str, bands: list[Band]) -> None:
        """Set the account's bands (replacing any; the same bands again change nothing)."""
        if acct in self._banded and self._bands.get(acct) == bands:
            self.dirty.pop(acct, None)
            return
        self.forget(acct)
        version = self._version.get(acct, 0)
        push = heapq.heappush
        for ccy, low, high in bands:
            lower = self._lower.get(ccy)
            if lower is None:
                lower = self._lower[ccy] = []
                self._upper[ccy] = []
            push(lower, (-_up(low), acct, version))
            push(self._upper[ccy], (_down(high), acct, version))
        count = 2 * len(bands)
        self._banded[acct] = count
        self._bands[acct] = bands
        self._live += count
        self._size += count
        if self._size > 2 * self._live + _COMPACT_SLACK:
            self._compact()

    def crossed(self, ccy: str, price: Decimal, exposed: Callable[[str], bool]) -> list[str]:
        """Accounts a mark of ``ccy`` at ``price`` must evaluate: bands that do not strictly
        contain ``price``, and dirty accounts exposed to ``ccy``. Their bands are dropped."""
        found: dict[str, None] = {}
        for acct in list(self.dirty):
            if exposed(acct):
                found[acct] = None
                del self.dirty[acct]
        version, banded, pop = self._version, self._banded, heapq.heappop
        lower = self._lower.get(ccy)
        if lower:
            floor = -_down(price)
            while lower and lower[0][0] <= floor:
                _, acct, entry_version = pop(lower)
                self._size -= 1
                if acct in banded and version.get(acct, 0) == entry_version:
                    found[acct] = None
        upper = self._upper.get(ccy)
        if upper:
            ceiling = _up(price)
            while upper and upper[0][0] <= ceiling:
                _, acct, entry_version = pop(upper)
                self._size -= 1
                if acct in banded and version.get(acct, 0) == entry_version:
                    found[acct] = None
        for acct in found:
            self.forget(acct)
        return list(found)

    def _compact(self) -> None:
        version, banded = self._version, self._banded
        size = 0
        for heaps in (self._lower, self._upper):
            for ccy, entries in heaps.items():
                live = [e for e in entries if e[1] in banded and version.get(e[1], 0) == e[2]]
                heapq.heapify(live)
                heaps[ccy] = live
                size += len(live)
        self._size = size
