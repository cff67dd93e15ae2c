"""Input commands: the wire contract of ``spec/contract.md``, one msgspec struct per ``type``.

Every struct carries an explicit, stable wire tag (the contract's ``type``), never one derived
from a module path. Decimal quantities travel as JSON strings: the fields typed :data:`DecStr`
accept only a plain non-negative decimal string (``"62961.4"``); a JSON number, ``"1e5"``,
``"NaN"`` or ``"-1"`` is refused by the decoder, with the field's path in the message.
Conversion to :class:`decimal.Decimal` happens once, in ``engine.core.validate``.

Field names are the contract's (OKX API v5 names where one exists), hence camelCase.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

#: A non-negative decimal written as a string: digits, optionally a dot and more digits; at
#: most 18 digits before the point and 18 after (sizes, prices and amounts below 10¹⁸).
DecStr = Annotated[str, msgspec.Meta(pattern=r"^(0|[1-9][0-9]{0,17})(\.[0-9]{1,18})?$")]
#: Idempotency key written by the command's producer.
CommandId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
#: Account, asset, instrument and client order identifiers.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
#: Milliseconds since the Unix epoch (UTC), set by the writer; the engine's only clock.
#: Bounded to the year 9999 so every encoding (msgpack included) can carry it.
TimestampMs = Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799_999)]

Side = Literal["buy", "sell"]
OrdType = Literal["limit", "market", "post_only", "ioc", "fok"]
TdMode = Literal["cash", "cross", "isolated"]
MgnMode = Literal["cross", "isolated"]
PosSide = Literal["net", "long", "short"]
InstType = Literal["SPOT", "SWAP"]


class _Command(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    ts: TimestampMs
    #: Required on every command but ``mark_price`` and ``accrue_interest`` (checked in
    #: ``engine.core.validate``, which names the field).
    id: CommandId | None = None


class Tier(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One row of an instrument's tier table.

    SPOT rows carry ``maxBorrowBase``/``maxBorrowQuote`` (OKX spot tiers by borrowed amount);
    SWAP rows carry ``maxSz`` in contracts (OKX derivatives tiers by position size). Which
    fields are required is checked against ``instType`` by ``engine.core.validate``.
    """

    #: Bounded so that msgpack (64-bit integers) can carry every command JSON can (fuzz finding).
    tier: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    mmr: DecStr
    imr: DecStr
    maxLever: DecStr
    maxBorrowBase: DecStr | None = None
    maxBorrowQuote: DecStr | None = None
    maxSz: DecStr | None = None


class ListAsset(_Command, frozen=True, tag="list_asset"):
    ccy: Name
    decimals: Annotated[int, msgspec.Meta(ge=0, le=18)]
    #: Contract extension (docs/decisions.md 35): the collateral discount of the currency in
    #: the adjusted equity, a fraction within [0, 1]. Absent (``UNSET``, the default) means 1,
    #: and the field is then not written, so logs listing without it encode exactly as before.
    discount: DecStr | msgspec.UnsetType = msgspec.UNSET


class ListInstrument(_Command, frozen=True, tag="list_instrument"):
    instId: Name
    instType: InstType
    tickSz: DecStr
    lotSz: DecStr
    minSz: DecStr
    makerFee: Annotated[str, msgspec.Meta(pattern=r"^-?(0|[1-9][0-9]{0,5})(\.[0-9]{1,18})?$")]
    takerFee: DecStr
    maxLever: DecStr
    tiers: list[Tier]
    baseCcy: Name | None = None
    quoteCcy: Name | None = None
    settleCcy: Name | None = None
    ctVal: DecStr | None = None
    liqFee: DecStr | None = None
    reduceMarginRatio: DecStr | None = None
    #: Contract extension (docs/decisions.md 31c): the price band, a fraction; orders priced
    #: beyond ``mark·(1 ± pxBand)`` are refused and fills beyond it are not made. Absent (the
    #: default) means no band, and the field is then not written (``UNSET``), so logs listing
    #: without it encode exactly as before.
    pxBand: DecStr | msgspec.UnsetType = msgspec.UNSET


class SetInterestRate(_Command, frozen=True, tag="set_interest_rate"):
    """Borrowing rate of an asset. ``accrual`` and ``compounding`` extend the contract (optional,
    OKX defaults; docs/decisions.md): ``at_borrow_and_hourly`` also charges one hour when a loan is
    taken (Binance), ``capitalise`` makes accrued interest bear interest."""

    ccy: Name
    dailyRate: DecStr
    accrual: Literal["hourly", "at_borrow_and_hourly"] = "hourly"
    compounding: Literal["simple", "capitalise"] = "simple"


class Deposit(_Command, frozen=True, tag="deposit"):
    acct: Name
    ccy: Name
    amt: DecStr


class Withdraw(_Command, frozen=True, tag="withdraw"):
    acct: Name
    ccy: Name
    amt: DecStr


class SetLeverage(_Command, frozen=True, tag="set_leverage"):
    acct: Name
    instId: Name
    mgnMode: MgnMode
    lever: DecStr
    ccy: Name | None = None
    posSide: PosSide | None = None


class SetPositionMode(_Command, frozen=True, tag="set_position_mode"):
    acct: Name
    posMode: Literal["net_mode", "long_short_mode"]


class SetAccountMode(_Command, frozen=True, tag="set_account_mode"):
    """Contract extension (docs/decisions.md 35b): ``unified`` (the default: perpetuals margin
    from the account's one balance) or ``futures_wallet`` (perpetual margin, fees, funding and
    P&L live in a futures wallet apart from the spot wallet; money moves by ``transfer``)."""

    acct: Name
    acctMode: Literal["unified", "futures_wallet"]


class Transfer(_Command, frozen=True, tag="transfer"):
    """Contract extension (docs/decisions.md 35c): move ``amt`` of ``ccy`` between the spot and
    the futures wallet of an account in ``futures_wallet`` mode (``from``/``to`` on the wire)."""

    acct: Name
    ccy: Name
    amt: DecStr
    source: Literal["spot", "futures"] = msgspec.field(name="from")
    target: Literal["spot", "futures"] = msgspec.field(name="to")


class PlaceOrder(_Command, frozen=True, tag="place_order"):
    acct: Name
    instId: Name
    clOrdId: Name
    side: Side
    ordType: OrdType
    sz: DecStr
    tdMode: TdMode
    px: DecStr | None = None
    ccy: Name | None = None
    reduceOnly: bool = False
    posSide: PosSide | None = None


class CancelOrder(_Command, frozen=True, tag="cancel_order"):
    acct: Name
    instId: Name
    clOrdId: Name


class Borrow(_Command, frozen=True, tag="borrow"):
    acct: Name
    ccy: Name
    amt: DecStr


class Repay(_Command, frozen=True, tag="repay"):
    acct: Name
    ccy: Name
    amt: DecStr


class AdjustMargin(_Command, frozen=True, tag="adjust_margin"):
    acct: Name
    instId: Name
    posSide: PosSide
    #: The contract names this field ``type``, which collides with the command tag ``type``;
    #: it is ``action`` on the wire (docs/contract-notes.md).
    action: Literal["add", "reduce"]
    amt: DecStr
    ccy: Name | None = None


class ClosePosition(_Command, frozen=True, tag="close_position"):
    acct: Name
    instId: Name
    mgnMode: MgnMode
    posSide: PosSide | None = None
    ccy: Name | None = None


class MarkPrice(_Command, frozen=True, tag="mark_price"):
    instId: Name
    markPx: DecStr


class AccrueInterest(_Command, frozen=True, tag="accrue_interest"):
    pass


class SettleFunding(_Command, frozen=True, tag="settle_funding"):
    instId: Name
    fundingRate: Annotated[str, msgspec.Meta(pattern=r"^-?(0|[1-9][0-9]{0,5})(\.[0-9]{1,18})?$")]


Command = (
    ListAsset
    | ListInstrument
    | SetInterestRate
    | Deposit
    | Withdraw
    | SetLeverage
    | SetPositionMode
    | PlaceOrder
    | CancelOrder
    | Borrow
    | Repay
    | AdjustMargin
    | ClosePosition
    | MarkPrice
    | AccrueInterest
    | SettleFunding
    | SetAccountMode
    | Transfer
)

COMMAND_TYPES: tuple[type[_Command], ...] = (
    ListAsset,
    ListInstrument,
    SetInterestRate,
    Deposit,
    Withdraw,
    SetLeverage,
    SetPositionMode,
    PlaceOrder,
    CancelOrder,
    Borrow,
    Repay,
    AdjustMargin,
    ClosePosition,
    MarkPrice,
    AccrueInterest,
    SettleFunding,
    SetAccountMode,
    Transfer,
)
