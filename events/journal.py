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


class AssetListed(_Event, frozen=True, tag="asset_listed", omit_defaults=True):
    """``discount`` (the adjusted-equity collateral discount, docs/decisions.md 35) is written
    only when not 1 (absent: 1)."""

    ccy: str
    decimals: int
    discount: Decimal | None = None


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


class Transferred(_Event, frozen=True, tag="transferred"):
    """``amt`` of ``ccy`` moved between the spot wallet (account ``acct``) and its futures
    wallet (account ``acct:futures``); ``from``/``to`` are ``spot`` or ``futures``
    (docs/decisions.md 35c)."""

    acct: str
    ccy: str
    amt: Decimal
    source: str = msgspec.field(name="from")
    target: str = msgspec.field(name="to")


class AccountModeSet(_Event, frozen=True, tag="account_mode_set"):
    """A ``set_account_mode`` was accepted (docs/decisions.md 35b)."""

    acct: str
    acctMode: str


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


class InterestAccrued(_Event, frozen=True, tag="interest_accrued", omit_defaults=True):
    """One hour of interest on ``liab`` at ``hourlyRate``, rounded up at the asset's precision;
    with ``instId`` it is charged to that isolated position's ``interest`` (decision 10)."""

    acct: str
    ccy: str
    liab: Decimal
    hourlyRate: Decimal
    amt: Decimal
    instId: str = ""


# --- positions (isolated spot margin, perpetuals) --------------------------------------------


class PositionOpened(_Event, frozen=True, tag="position_opened"):
    """A fill opens a new isolated spot position (``posSide`` ``net``) or a perpetual position;
    ``mgnMode`` and ``mgnCcy`` are fixed from now until it closes. ``long``: long (spot: holds
    base, owes quote) or short."""

    acct: str
    instId: str
    posSide: str
    mgnMode: str
    mgnCcy: str
    long: bool


class PositionBorrowed(_Event, frozen=True, tag="position_borrowed"):
    """An isolated spot position borrowed ``amt`` of ``ccy`` at a fill of its opening order
    (long: the quote cost; short: the base sold); held by the position until traded."""

    acct: str
    instId: str
    ccy: str
    amt: Decimal


class PositionMarginChanged(_Event, frozen=True, tag="position_margin_changed", omit_defaults=True):
    """Isolated margin of a position moved by ``amt`` (> 0) of ``ccy``.

    ``reason``: ``open`` — from the opening order ``orderId``'s frozen funds into the margin
    (also counted as initial margin); ``top_up`` — the part of an opening fill's margin its
    order no longer has frozen (the mark moved against the resting order), from the account's
    free cash (counted as initial margin too); ``add`` — from the account's free cash; ``reduce`` — back
    to the account's cash; ``use`` — into the position's own holdings, to pay for closing or
    repaying (close, liquidation, funding).
    """

    acct: str
    instId: str
    posSide: str
    ccy: str
    amt: Decimal
    reason: str
    orderId: int | None = None


class PositionRepaid(_Event, frozen=True, tag="position_repaid"):
    """An isolated spot position repaid its debt from its own holdings: interest first."""

    acct: str
    instId: str
    ccy: str
    interest: Decimal
    principal: Decimal
    reason: str


class PositionReleased(_Event, frozen=True, tag="position_released"):
    """An isolated position with no debt (spot) or no size (SWAP) closed: its holdings and
    margin (``base``/``quote`` amounts, in the pair's currencies; SWAP: ``quote`` = margin in
    the settlement currency) return to the account's cash."""

    acct: str
    instId: str
    posSide: str
    base: Decimal
    quote: Decimal


class PositionModeSet(_Event, frozen=True, tag="position_mode_set"):
    acct: str
    posMode: str


class PnlRealised(_Event, frozen=True, tag="pnl_realised"):
    """A SWAP fill reduced a position: ``amt`` (signed, settlement currency, rounded toward
    −∞) = closed contracts × ctVal × (fill − entry) for a long (mirror for a short). Cross: to
    the account's cash; isolated: to the position's margin, then ``released`` of the margin
    (pro rata to the size closed) returns to the account's cash."""

    acct: str
    instId: str
    posSide: str
    ccy: str
    amt: Decimal
    released: Decimal


class FundingSettled(_Event, frozen=True, tag="funding_settled"):
    """Funding of one position: ``amt`` signed (< 0 paid, > 0 received), = −q·ctVal·P·rate,
    paid rounded up and received rounded down; cross from/to cash, isolated from/to margin."""

    acct: str
    instId: str
    posSide: str
    ccy: str
    amt: Decimal


class FundingResidual(_Event, frozen=True, tag="funding_residual"):
    """What payers paid beyond what receivers got (rounding; uncovered payments are covered by
    ``insurance_fund_covered`` first): goes to the insurance fund of ``ccy``; may be negative."""

    instId: str
    ccy: str
    rate: Decimal
    markPx: Decimal
    amt: Decimal


# --- orders and trades ---------------------------------------------------------------------


class OrderAccepted(_Event, frozen=True, tag="order_accepted", omit_defaults=True):
    """An order passed validation and margin checks; it now matches (and may then rest).

    Isolated and SWAP orders also carry ``posSide``, the margin currency ``mgnCcy`` (isolated),
    the leverage ``lever`` fixed for the order's margin, and ``reduce`` when the order closes a
    position instead of opening one (fields at their defaults are not written).
    """

    orderId: int
    acct: str
    instId: str
    clOrdId: str
    side: str
    ordType: str
    tdMode: str
    px: Decimal | None
    sz: Decimal
    #: Frozen for the order: cash mode — quote (buy) or base (sell) of a limit order;
    #: isolated opening orders — initial margin (+ SWAP fee reserve) in ``mgnCcy``; isolated
    #: SPOT closing orders — the position's assets they may sell or spend; 0 otherwise.
    frozen: Decimal
    posSide: str = ""
    mgnCcy: str = ""
    lever: Decimal | None = None
    reduce: bool = False


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


class OrderCanceled(_Event, frozen=True, tag="order_canceled", omit_defaults=True):
    """An order's remaining size left the book or was never placed on it.

    ``reason``: ``user``, ``ioc`` (unfilled remainder of ioc/market), ``fok`` (could not fill
    in full), ``self_trade`` (resting order canceled by self-trade prevention), ``liquidation``,
    ``insufficient_margin`` / ``price_band`` (the fill guard refused its next fill; ``message``
    names the numbers — written only for these), and the others of ``docs/events.md``.
    """

    orderId: int
    acct: str
    instId: str
    clOrdId: str
    remaining: Decimal
    reason: str
    message: str = ""


# --- risk ----------------------------------------------------------------------------------


class PositionClosed(_Event, frozen=True, tag="position_closed"):
    """``close_position`` left no debt in the position's liability currency: the cross position
    on ``instId`` is closed and what remains is plain cash."""

    acct: str
    instId: str


class MarginCallRaised(_Event, frozen=True, tag="margin_call_raised", omit_defaults=True):
    """The margin ratio fell to ≤ 300 % (first time, or again after recovering): of the cross
    account, or — with ``instId``/``posSide`` — of that isolated position."""

    acct: str
    mgnRatio: Decimal
    instId: str = ""
    posSide: str = ""


class MarginCallCleared(_Event, frozen=True, tag="margin_call_cleared", omit_defaults=True):
    """The margin ratio is back above 300 % (or nothing is at risk any more): of the cross
    account, or of the isolated position ``instId``/``posSide``."""

    acct: str
    mgnRatio: Decimal | None
    instId: str = ""
    posSide: str = ""


class LiquidationStarted(_Event, frozen=True, tag="liquidation_started", omit_defaults=True):
    """Liquidation of the cross account, or (``instId``/``posSide``) of an isolated position."""

    acct: str
    mgnRatio: Decimal
    instId: str = ""
    posSide: str = ""


class LiquidationFeeCharged(_Event, frozen=True, tag="liquidation_fee_charged", omit_defaults=True):
    """The instrument's ``liqFee`` on a liquidation fill, in the currency the liquidated account
    received (sell: quote on the notional; buy: base on the size; SWAP: settlement currency on
    the notional), paid to the insurance fund — from the isolated position ``instId`` when
    given (its holdings; SWAP: its margin), else from the account's cash."""

    acct: str
    ccy: str
    amt: Decimal
    instId: str = ""
    posSide: str = ""


class InsuranceFundCovered(_Event, frozen=True, tag="insurance_fund_covered", omit_defaults=True):
    """The insurance fund of ``ccy`` paid ``amt`` of a liquidated account's remaining debt (to
    the account's cash, or to the isolated position ``instId``: spot holdings, SWAP margin).
    It pays at most its balance; the rest is ``debt_written_off``."""

    acct: str
    ccy: str
    amt: Decimal
    instId: str = ""
    posSide: str = ""


class DebtWrittenOff(_Event, frozen=True, tag="debt_written_off", omit_defaults=True):
    """The insurance fund of ``ccy`` was empty (or short): the platform writes ``amt`` off —
    paid into the account (or isolated position) like a fund cover, and recorded in the
    platform's written-off total for ``ccy``. The fund itself never goes below zero."""

    acct: str
    ccy: str
    amt: Decimal
    instId: str = ""
    posSide: str = ""


class AssetsTakenOver(_Event, frozen=True, tag="assets_taken_over", omit_defaults=True):
    """Holdings the book could not absorb move to the insurance fund with the debt they back
    (from the isolated position ``instId`` when given)."""

    acct: str
    ccy: str
    amt: Decimal
    instId: str = ""


class LiquidationFinished(_Event, frozen=True, tag="liquidation_finished", omit_defaults=True):
    acct: str
    instId: str = ""
    posSide: str = ""


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
    | Transferred
    | AccountModeSet
    | Borrowed
    | Repaid
    | InterestHourClosed
    | InterestAccrued
    | PositionOpened
    | PositionBorrowed
    | PositionMarginChanged
    | PositionRepaid
    | PositionReleased
    | PositionModeSet
    | PnlRealised
    | FundingSettled
    | FundingResidual
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
    | DebtWrittenOff
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
