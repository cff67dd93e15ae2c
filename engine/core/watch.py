"""Risk watch: which debtors a mark price can move across a margin threshold.

Evaluating every debtor on every mark price costs O(debtors) full risk computations. Instead,
after each exact evaluation the account registers, for each currency it is exposed to, a price
band inside which its zone (healthy above 300 %, warned in (100 %, 300 %]) cannot change. A mark
price then evaluates only the accounts whose band it leaves.

Why a band is safe (exact in outcome): for a threshold ``T`` let ``f_T = equity − T·required``.
Both terms are linear in every price, so ``f_T(P) = f_T(P₀) + Σ_c a_{T,c}·(P_c − P₀_c)`` with
``a_{T,c} = units_c − T·required_per_price_c``. The zone holds while the worst-case drift
``Σ_c |a_c|·|ΔP_c|`` stays below the slack ``s`` (``f_3`` when healthy; ``min(f_1, −f_3)`` when
warned). Splitting ``s`` equally over the ``n`` exposed currencies gives each currency the
half-width ``s / (n·|a_c|)`` (rounded down); while every price stays strictly inside its band the
drift is below ``s``. Leaving a band triggers an exact evaluation, which is the only thing that
emits events — so the journal is the same as if every exposed debtor were evaluated on every
mark. Candidates are evaluated in debtor order (order of first borrowing), the order a full sweep
would use.

This index is a cache of a pure function of the state: it is not part of snapshots or the
digest. A restored state starts with every debtor ``unbanded`` (evaluated at the next mark).
"""

from __future__ import annotations

from decimal import Decimal

from sortedcontainers import SortedList

Band = tuple[str, Decimal, Decimal]
_AFTER_ANY_RANK = 1 << 62


class RiskWatch:
    __slots__ = ("_entries", "_lower", "_upper", "unbanded")

    def __init__(self) -> None:
        #: ccy → entries ``(bound, rank, acct)``: evaluate when the price falls to ``bound``.
        self._lower: dict[str, SortedList] = {}
        #: ccy → entries ``(bound, rank, acct)``: evaluate when the price rises to ``bound``.
        self._upper: dict[str, SortedList] = {}
        self._entries: dict[str, list[tuple[str, tuple[Decimal, int, str], tuple[Decimal, int, str]]]] = {}
        #: Debtors without bands (restored from a snapshot): evaluated at the next mark.
        self.unbanded: dict[str, None] = {}

    def forget(self, acct: str) -> None:
        self.unbanded.pop(acct, None)
        for ccy, low, high in self._entries.pop(acct, ()):
            self._lower[ccy].remove(low)
            self._upper[ccy].remove(high)

    def watch(self, acct: str, rank: int, bands: list[Band]) -> None:
        """Replace the account's bands."""
        self.forget(acct)
        entries = []
        for ccy, low_px, high_px in bands:
            low, high = (low_px, rank, acct), (high_px, rank, acct)
            self._lower.setdefault(ccy, SortedList()).add(low)
            self._upper.setdefault(ccy, SortedList()).add(high)
            entries.append((ccy, low, high))
        self._entries[acct] = entries

    def crossed(self, ccy: str, price: Decimal) -> dict[str, None]:
        """Accounts whose band for ``ccy`` does not strictly contain ``price`` (and the
        unbanded); their bands are dropped — the evaluation that follows sets new ones."""
        found: dict[str, None] = dict(self.unbanded)
        self.unbanded.clear()
        lower = self._lower.get(ccy)
        if lower:
            for _, _, acct in lower.irange((price,), None):
                found[acct] = None
        upper = self._upper.get(ccy)
        if upper:
            for _, _, acct in upper.irange(None, (price, _AFTER_ANY_RANK)):
                found[acct] = None
        for acct in found:
            self.forget(acct)
        return found
