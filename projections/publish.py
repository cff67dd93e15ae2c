"""What the projection publishes: the risk-view records and alerts of a folded journal.

:class:`Projector` is the pure part of ``marginbook project`` (no Kafka, no clock): it folds
outcomes with :func:`engine.core.step.fold` into its own :class:`~engine.core.state.State`,
notes which accounts each outcome may have changed, and at the end of a batch (:meth:`flush`)
renders each changed account once with its latest view — the formulas are those of
:mod:`projections.risk_view`, never a copy.

**Which accounts are dirty.** An outcome dirties every account one of its events names
(``acct``; a trade names its maker and taker). A ``mark_price_set`` on instrument ``I`` dirties
every account *exposed* to it: holding a balance in ``I``'s base currency (its valuation, debt
and liquidation price move with that mark) or a position on ``I`` (its ``markPx`` and ``upl``).
Reference data (``asset_listed``, ``instrument_listed``, ``interest_rate_set``) and any event
this module does not know dirty every account — they are rare and a wrong guess would leave a
stale view. Book-keeping events that change no view (``order_rested``, ``interest_hour_closed``,
refusals) dirty nothing. Exposure is computed once per batch, so a storm of marks costs one
render per exposed account per batch, not per mark.

**Records.** Risk records are keyed ``acct`` (the account view, while the account has a
balance) and ``acct/instId/posSide`` (one per open position; a position that disappeared gets a
tombstone, value ``None``). A view equal to the one last published for its key is not published
again. Each record's ``seq`` is the last outcome of the batch that dirtied its account: the
view *is* the state after that outcome. Alerts (margin calls ≤ 300 %, their clearing,
liquidations started and finished) are published one per event, in journal order, with the
seq of their outcome and the event's index in it.

Invariant after every :meth:`flush`: for every key, the last value published equals the key's
value in ``build_view(state)`` (absent keys: never published, or tombstoned). Recovery relies
on it: after a restore and a silent re-fold, :meth:`prime` rebuilds the "last published" map
from the state instead of reading the risk topic back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import msgspec

from engine.core import margin
from engine.core.money import fmt, use_engine_context
from engine.core.state import FUTURES_SUFFIX, Account, State
from engine.core.step import fold
from events import journal as ev
from events.codec import decode_outcome_json, encode_json
from projections.risk_view import account_view, position_views
from projections.views import PositionView

#: Events that change no risk view.
_INERT: Final = (ev.OrderRested, ev.InterestHourClosed, ev.CommandRejected, ev.OrderRejected, ev.FundingResidual)
#: Events after which every account is re-rendered (tier tables, margin instruments, precisions).
_REFERENCE: Final = (ev.AssetListed, ev.InstrumentListed, ev.InterestRateSet)


class AlertView(msgspec.Struct, frozen=True, omit_defaults=True):
    """One record of ``marginbook.alerts`` (key ``acct``).

    ``type``: ``margin_call`` (ratio ≤ 300 %), ``margin_call_cleared`` (back above 300 %, or no
    debt left: ``mgnRatio`` ``""``), ``liquidation_started`` (ratio ≤ 100 %),
    ``liquidation_finished`` (``mgnRatio`` after the liquidation, ``""`` without debt).
    ``mgnRatio`` is a decimal string shown like the risk view's (8 places, rounded down).
    Alerts about an isolated position carry its ``instId`` and ``posSide`` (absent for the
    cross account).
    """

    type: str
    seq: int
    ts: int
    acct: str
    mgnRatio: str
    #: Index of the event in its outcome: ``(seq, event)`` identifies an alert.
    event: int
    instId: str = ""
    posSide: str = ""


_ALERT_TYPES: Final[dict[type, str]] = {
    ev.MarginCallRaised: "margin_call",
    ev.MarginCallCleared: "margin_call_cleared",
    ev.LiquidationStarted: "liquidation_started",
    ev.LiquidationFinished: "liquidation_finished",
}


@dataclass(frozen=True, slots=True)
class Record:
    """One record to produce: ``topic`` is ``"risk"`` or ``"alerts"``; ``value`` ``None`` is a
    tombstone; ``seq`` goes in the ``seq`` header (and ``event`` in ``event``, for alerts)."""

    topic: str
    key: str
    value: bytes | None
    seq: int
    event: int = -1


def position_key(view: PositionView) -> str:
    return f"{view.acct}/{view.instId}/{view.posSide}"


def ratio_text(ratio: Decimal | None) -> str:
    return fmt(margin.display_ratio(ratio))


def view_records(state: State, account: Account) -> Iterator[tuple[str, bytes]]:
    """``(key, JSON value)`` of every live risk record of one account: its view (if it has a
    balance, as ``build_view`` lists accounts) and one per position."""
    if account.balances:
        yield account.acct, encode_json(account_view(state, account))
    for view in position_views(state, account):
        yield position_key(view), encode_json(view)


def all_view_records(state: State) -> dict[str, bytes]:
    """Every live risk record of the state: the keyed form of ``build_view(state)``."""
    return {key: value for account in state.accounts.values() for key, value in view_records(state, account)}


def outcome_lines(value: bytes | None) -> list[bytes]:
    """The outcome JSON lines of one events record (``engine.io.kafka.journal`` format)."""
    return (value or b"").split(b"\n") if value else []


class Projector:
    """Folds outcomes and says what to publish. Not thread-safe; one per shard."""

    __slots__ = ("_dirty", "_everything", "_marked", "_pending_alerts", "_positions", "published", "state")

    def __init__(self, state: State | None = None) -> None:
        use_engine_context()
        self.state = state if state is not None else State()
        #: Key → value last published (the live records of the risk topic for this shard).
        self.published: dict[str, bytes] = {}
        #: Account → keys of its positions last published.
        self._positions: dict[str, list[str]] = {}
        #: Account → last seq of this batch that dirtied it.
        self._dirty: dict[str, int] = {}
        #: Instrument → last seq of this batch that marked it.
        self._marked: dict[str, int] = {}
        #: Last seq of this batch after which every account must be re-rendered (0: none).
        self._everything = 0
        self._pending_alerts: list[Record] = []

    @property
    def last_seq(self) -> int:
        return self.state.last_seq

    # --- folding ------------------------------------------------------------------------------

    def fold_silently(self, outcome: ev.Outcome) -> None:
        """Fold without tracking anything to publish (recovery re-folds what was published)."""
        if outcome.seq <= self.state.last_seq:
            return  # already in the restored state
        fold(self.state, outcome)

    def fold(self, outcome: ev.Outcome) -> None:
        """Fold one outcome and note what it changed (published at the next :meth:`flush`).

        An outcome at or below the state's position is skipped (it is already folded); a gap
        raises :class:`engine.core.context.InvariantBroken` from ``fold``.
        """
        if outcome.seq <= self.state.last_seq:
            return
        fold(self.state, outcome)
        seq = outcome.seq
        dirty = self._dirty
        for index, event in enumerate(outcome.events):
            if isinstance(event, ev.Traded):
                dirty[event.makerAcct] = dirty[event.takerAcct] = seq
            elif isinstance(event, ev.Transferred | ev.AccountModeSet):  # both wallets' views change
                dirty[event.acct] = dirty[event.acct + FUTURES_SUFFIX] = seq
            elif isinstance(event, ev.MarkPriceSet):
                self._marked[event.instId] = seq
            elif isinstance(event, _INERT):
                continue
            elif isinstance(event, _REFERENCE):
                self._everything = seq
            else:
                acct = getattr(event, "acct", None)
                if isinstance(acct, str):
                    dirty[acct] = seq
                    kind = _ALERT_TYPES.get(type(event))
                    if kind is not None:
                        self._pending_alerts.append(self._alert(kind, outcome, index, event))
                else:  # an event this module does not know: re-render everything, to be safe
                    self._everything = seq

    def fold_record(self, value: bytes | None, publish: bool = True) -> int:
        """Fold every outcome of one events record; return how many there were."""
        lines = outcome_lines(value)
        for line in lines:
            outcome = decode_outcome_json(line)
            if publish:
                self.fold(outcome)
            else:
                self.fold_silently(outcome)
        return len(lines)

    def _alert(self, kind: str, outcome: ev.Outcome, index: int, event: ev.Event) -> Record:
        acct = getattr(event, "acct", "")
        inst_id, pos_side = getattr(event, "instId", ""), getattr(event, "posSide", "")
        if isinstance(event, ev.LiquidationFinished):
            # The event carries no ratio: the ratio after the whole outcome (the liquidation's
            # repayments are later events of the same outcome, already folded); a position
            # closed by its liquidation has none.
            account = self.state.accounts[acct]
            if inst_id:
                views = [v for v in position_views(self.state, account) if (v.instId, v.posSide) == (inst_id, pos_side)]
                ratio = views[0].mgnRatio if views else ""
            else:
                ratio = account_view(self.state, account).mgnRatio
        else:
            ratio = ratio_text(getattr(event, "mgnRatio", None))
        alert = AlertView(
            type=kind, seq=outcome.seq, ts=outcome.ts, acct=acct, mgnRatio=ratio, event=index, instId=inst_id,
            posSide=pos_side,
        )  # fmt: skip
        return Record("alerts", acct, encode_json(alert), outcome.seq, index)

    # --- publishing ---------------------------------------------------------------------------

    def dirty_accounts(self) -> dict[str, int]:
        """Account → seq of every account this batch may have changed, in state order."""
        dirty = self._dirty
        state = self.state
        exposed: dict[str, int] = {}
        for inst_id, seq in self._marked.items():
            inst = state.instruments[inst_id]
            if inst.inst_type == "SPOT":  # a SWAP mark moves only the accounts with positions on it
                exposed[inst.base] = max(seq, exposed.get(inst.base, 0))
        result: dict[str, int] = {}
        for acct, account in state.accounts.items():
            seq = max(self._everything, dirty.get(acct, 0))
            if self._marked:
                for ccy in account.balances:
                    seq = max(seq, exposed.get(ccy, 0))
                for inst_id in account.positions:
                    seq = max(seq, self._marked.get(inst_id, 0))
                for inst_id in account.isolated:
                    seq = max(seq, self._marked.get(inst_id, 0))
                for inst_id, _ in account.perps:
                    seq = max(seq, self._marked.get(inst_id, 0))
            if seq:
                result[acct] = seq
        return result

    def flush(self) -> list[Record]:
        """The records of this batch: alerts in journal order, then each changed account's
        records (its view, its positions, tombstones of positions gone) in account order."""
        records = self._pending_alerts
        state = self.state
        for acct, seq in self.dirty_accounts().items():
            records.extend(self._render(state.accounts[acct], seq))
        self._dirty, self._marked, self._everything, self._pending_alerts = {}, {}, 0, []
        return records

    def _render(self, account: Account, seq: int) -> Iterable[Record]:
        published = self.published
        live = dict(view_records(self.state, account))
        acct = account.acct
        out: list[Record] = []
        if acct not in live and acct in published:
            del published[acct]
            out.append(Record("risk", acct, None, seq))
        for key, value in live.items():
            if published.get(key) != value:
                published[key] = value
                out.append(Record("risk", key, value, seq))
        positions = [key for key in live if key != acct]
        for key in self._positions.get(acct, ()):
            if key not in live:
                del published[key]
                out.append(Record("risk", key, None, seq))
        if positions:
            self._positions[acct] = positions
        else:
            self._positions.pop(acct, None)
        return out

    def prime(self, published: dict[str, bytes] | None = None) -> None:
        """Set "what the risk topic holds": by default the views of the current state (true at
        every committed batch end, by the invariant above); or ``published`` as read back
        (rebuild). Drops anything pending."""
        self._positions = {}
        if published is None:
            self.published = {}
            for account in self.state.accounts.values():
                for key, value in view_records(self.state, account):
                    self.published[key] = value
                    if key != account.acct:
                        self._positions.setdefault(account.acct, []).append(key)
        else:
            self.published = dict(published)
            for key in self.published:
                parts = key.rsplit("/", 2)  # acct/instId/posSide (an account id may hold "/")
                if len(parts) == 3:
                    self._positions.setdefault(parts[0], []).append(key)
        self._dirty, self._marked, self._everything, self._pending_alerts = {}, {}, 0, []

    def converge(self) -> list[Record]:
        """Records that make the risk topic (``published``, as read back) equal the views of the
        state: changed and missing keys republished, keys the state does not have tombstoned;
        all with the state's seq (the position the views reflect)."""
        seq = self.state.last_seq
        target = all_view_records(self.state)
        records = [Record("risk", key, value, seq) for key, value in target.items() if self.published.get(key) != value]
        records += [Record("risk", key, None, seq) for key in self.published if key not in target]
        self.prime(target)
        return records
