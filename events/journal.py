"""Output events: the journal of everything the engine decided.

Each event is a past-tense fact with an explicit, stable wire tag (``"type"``). Events carry the
exact amounts the engine decided (already rounded), so folding them (``engine.core.evolve``) needs
no arithmetic choice of its own: the projections and the engine share that fold.

The engine writes one :class:`Outcome` per input command: the command's dense sequence number
``seq``, its ``ts`` and ``id``, and the events it produced in order. An event's identity is
``(seq, index in events)``. ``docs/events.md`` lists every event, its fields and when it is
emitted; keep the two in step.

Amounts are :class:`~decimal.Decimal` and encode as JSON strings.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from events.commands import ListInstrument


class _Event(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=True):
    pass


# --- reference data ------------------------------------------------------------------------


class AssetListed(_Event, frozen=True, tag="asset_listed"):
    ccy: str
    decimals: int


class InstrumentListed(_Event, frozen=True, tag="instrument_listed"):
    """The instrument as listed; the command's fields were validated before this was emitted."""

    spec: ListInstrument


class InterestRateSet(_Event, frozen=True, tag="interest_rate_set", omit_defaults=True):
    """``accrual``/``compounding`` are written only when not the OKX defaults."""

    ccy: str
    dailyRate: Decimal
    accrual: str = "hourly"
    compounding: str = "simple"


class LeverageSet(_Event, frozen=True, tag="leverage_set"):
    acct: str
    instId: str
    mgnMode: str
    lever: Decimal


class MarkPriceSet(_Event, frozen=True, tag="mark_price_set"):
    instId: str
    markPx: Decimal


# --- funds ---------------------------------------------------------------------------------


class Deposited(_Event, frozen=True, tag="deposited"):
    acct: str
    ccy: str
    amt: Decimal


class Withdrawn(_Event, frozen=True, tag="withdrawn"):
    acct: str
    ccy: str
    amt: Decimal


class Borrowed(_Event, frozen=True, tag="borrowed"):
    """Cross-margin liability increased by ``amt``; ``auto`` when a margin order's fill needed it."""

    acct: str
    ccy: str
    amt: Decimal
    auto: bool


class Repaid(_Event, frozen=True, tag="repaid"):
    """Debt paid from the account's cash: ``interest`` first, then ``principal``.

    ``reason``: ``manual`` (a ``repay`` command), ``close`` (``close_position``) or
    ``liquidation``.
    """

    acct: str
    ccy: str
    interest: Decimal
    principal: Decimal
    reason: str


class InterestHourClosed(_Event, frozen=True, tag="interest_hour_closed"):
    """An ``accrue_interest`` was applied for clock hour ``hour`` (``ts // 3,600,000``); a
    second one in the same hour is refused (``interest_already_accrued``)."""

    hour: int


class InterestAccrued(_Event, frozen=True, tag="interest_accrued"):
    """One hour of interest on ``liab`` at ``hourlyRate``, rounded up at the asset's precision."""

    acct: str
    ccy: str
    liab: Decimal
    hourlyRate: Decimal
    amt: Decimal


# --- orders and trades ---------------------------------------------------------------------


class OrderAccepted(_Event, frozen=True, tag="order_accepted"):
    """An order passed validation and margin checks; it now matches (and may then rest)."""

    orderId: int
    acct: str
    instId: str
    clOrdId: str
    side: str
    ordType: str
    tdMode: str
    px: Decimal | None
    sz: Decimal
    #: Quote (buy) or base (sell) frozen for a cash-mode limit order; 0 otherwise.
    frozen: Decimal


class OrderRejected(_Event, frozen=True, tag="order_rejected"):
    acct: str
    instId: str
    clOrdId: str
    reason: str
    message: str


class Traded(_Event, frozen=True, tag="traded"):
    """One fill between a resting maker and an incoming taker, at the maker's price.

    Fees are charged in the currency each side receives (buyer: base, seller: quote); a negative
    fee is a rebate. ``liquidation`` marks a fill of a liquidation order.
    """

    tradeId: int
    instId: str
    px: Decimal
    sz: Decimal
    takerSide: str
    makerOrderId: int
    takerOrderId: int
    makerAcct: str
    takerAcct: str
    makerFee: Decimal
    takerFee: Decimal
    liquidation: bool = False


class OrderRested(_Event, frozen=True, tag="order_rested"):
    """The unfilled remainder of an accepted order now rests on the book."""

    orderId: int
    sz: Decimal


class OrderCanceled(_Event, frozen=True, tag="order_canceled"):
    """An order's remaining size left the book or was never placed on it.

    ``reason``: ``user``, ``ioc`` (unfilled remainder of ioc/market), ``fok`` (could not fill
    in full), ``self_trade`` (resting order canceled by self-trade prevention), ``liquidation``.
    """

    orderId: int
    acct: str
    instId: str
    clOrdId: str
    remaining: Decimal
    reason: str


# --- risk ----------------------------------------------------------------------------------


class PositionClosed(_Event, frozen=True, tag="position_closed"):
    """``close_position`` left no debt in the position's liability currency: the cross position
    on ``instId`` is closed and what remains is plain cash."""

    acct: str
    instId: str


class MarginCallRaised(_Event, frozen=True, tag="margin_call_raised"):
    """The account margin ratio fell to ≤ 300 % (first time, or again after recovering)."""

    acct: str
    mgnRatio: Decimal


class MarginCallCleared(_Event, frozen=True, tag="margin_call_cleared"):
    """The account margin ratio is back above 300 % (or the account has no debt left)."""

    acct: str
    mgnRatio: Decimal | None


class LiquidationStarted(_Event, frozen=True, tag="liquidation_started"):
    acct: str
    mgnRatio: Decimal


class LiquidationFeeCharged(_Event, frozen=True, tag="liquidation_fee_charged"):
    """The instrument's ``liqFee`` on a liquidation fill, in the currency the liquidated account
    received (sell: quote on the notional; buy: base on the size), paid to the insurance fund."""

    acct: str
    ccy: str
    amt: Decimal


class InsuranceFundCovered(_Event, frozen=True, tag="insurance_fund_covered"):
    """The insurance fund of ``ccy`` paid ``amt`` of a liquidated account's remaining debt."""

    acct: str
    ccy: str
    amt: Decimal


class AssetsTakenOver(_Event, frozen=True, tag="assets_taken_over"):
    """Holdings the book could not absorb move to the insurance fund with the debt they back."""

    acct: str
    ccy: str
    amt: Decimal


class LiquidationFinished(_Event, frozen=True, tag="liquidation_finished"):
    acct: str


# --- refusals ------------------------------------------------------------------------------


class CommandRejected(_Event, frozen=True, tag="command_rejected"):
    """A command other than an order was refused; the state did not change.

    ``reason`` is a stable code (``duplicate_id``, ``insufficient_balance``, ``unknown_asset`` …);
    ``message`` says what was wrong in words, naming the field.
    """

    command: str
    reason: str
    message: str


Event = (
    AssetListed
    | InstrumentListed
    | InterestRateSet
    | LeverageSet
    | MarkPriceSet
    | Deposited
    | Withdrawn
    | Borrowed
    | Repaid
    | InterestHourClosed
    | InterestAccrued
    | OrderAccepted
    | OrderRejected
    | Traded
    | OrderRested
    | OrderCanceled
    | PositionClosed
    | MarginCallRaised
    | MarginCallCleared
    | LiquidationStarted
    | LiquidationFeeCharged
    | InsuranceFundCovered
    | AssetsTakenOver
    | LiquidationFinished
    | CommandRejected
)


class Outcome(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one input command produced: the journal record written per command."""

    seq: int
    ts: int
    id: str | None
    events: list[Event]
