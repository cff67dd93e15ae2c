"""Engine state: reference data, accounts, orders and books.

Only ``engine.core.evolve`` mutates these objects (one door into state); the command handlers
read them to decide and change them only by emitting events. Plain ``__slots__`` classes keep
attribute access cheap on the hot path.

Iteration order is part of determinism: every dict is iterated in insertion order, which the
log fixes (accounts in order of first appearance, balances in order of first touch). No sets are
iterated.
"""

from __future__ import annotations

from decimal import Decimal

from engine.core.book import OrderBook
from engine.core.money import ONE, ZERO
from engine.core.watch import RiskWatch

#: The futures wallet of account ``A`` in ``futures_wallet`` mode is the account ``A:futures``
#: (docs/decisions.md 35b); commands may not name such an account themselves.
FUTURES_SUFFIX = ":futures"


class Asset:
    __slots__ = ("accrual", "ccy", "compounding", "daily_rate", "decimals", "discount", "hourly_rate")

    def __init__(self, ccy: str, decimals: int) -> None:
        self.ccy = ccy
        self.decimals = decimals
        #: Interest policy (§1.7, decision 2): ``hourly`` (OKX) or ``at_borrow_and_hourly``
        #: (Binance); ``simple`` or ``capitalise`` (accrued interest bears interest).
        self.accrual = "hourly"
        self.compounding = "simple"
        self.daily_rate = ZERO
        #: ``daily_rate / 24``, exact to 50 significant digits (a daily rate has few digits,
        #: so the quotient is either exact or repeats; interest rounds the product up).
        self.hourly_rate = ZERO
        #: Collateral discount in the adjusted equity (docs/decisions.md 35): 1 unless listed.
        self.discount = ONE


class TierRow:
    """One tier: ``limit`` is the max borrow (SPOT, in the currency the row is read for) or
    the max size in contracts (SWAP)."""

    __slots__ = ("imr", "max_borrow_base", "max_borrow_quote", "max_lever", "max_sz", "mmr", "tier")

    def __init__(
        self,
        tier: int,
        mmr: Decimal,
        imr: Decimal,
        max_lever: Decimal,
        max_borrow_base: Decimal | None,
        max_borrow_quote: Decimal | None,
        max_sz: Decimal | None,
    ) -> None:
        self.tier = tier
        self.mmr = mmr
        self.imr = imr
        self.max_lever = max_lever
        self.max_borrow_base = max_borrow_base
        self.max_borrow_quote = max_borrow_quote
        self.max_sz = max_sz


class Instrument:
    __slots__ = (
        "base",
        "book",
        "ct_val",
        "inst_id",
        "inst_type",
        "liq_fee",
        "lot",
        "maker_fee",
        "max_lever",
        "min_sz",
        "px_band",
        "quote",
        "reduce_margin_ratio",
        "settle",
        "spec",
        "taker_fee",
        "tick",
        "tiers",
    )

    def __init__(
        self,
        inst_id: str,
        inst_type: str,
        base: str,
        quote: str,
        settle: str,
        ct_val: Decimal,
        tick: Decimal,
        lot: Decimal,
        min_sz: Decimal,
        maker_fee: Decimal,
        taker_fee: Decimal,
        max_lever: Decimal,
        tiers: tuple[TierRow, ...],
        liq_fee: Decimal,
        reduce_margin_ratio: Decimal,
        px_band: Decimal | None = None,
    ) -> None:
        self.inst_id = inst_id
        self.inst_type = inst_type
        self.base = base
        self.quote = quote
        self.settle = settle
        self.ct_val = ct_val
        self.tick = tick
        self.lot = lot
        self.min_sz = min_sz
        self.maker_fee = maker_fee
        self.taker_fee = taker_fee
        self.max_lever = max_lever
        self.tiers = tiers
        self.liq_fee = liq_fee
        self.reduce_margin_ratio = reduce_margin_ratio
        #: Price band (``pxBand``): orders and fills beyond ``mark·(1 ± band)`` are refused;
        #: ``None``: no band (docs/decisions.md 31c).
        self.px_band = px_band
        self.book = OrderBook()
        #: The validated ``list_instrument`` command this instrument was built from (snapshots).
        self.spec: object = None


class Balance:
    """One currency of one account.

    ``cash`` ≥ 0 is what the account holds (borrowed funds included); ``frozen`` ≤ ``cash`` is
    reserved by resting cash-mode orders; ``liab`` is borrowed principal and ``interest`` accrued
    unpaid interest (both owed, both ≥ 0). Net worth in this currency: ``cash − liab − interest``.
    """

    __slots__ = ("cash", "frozen", "interest", "liab")

    def __init__(self) -> None:
        self.cash = ZERO
        self.frozen = ZERO
        self.liab = ZERO
        self.interest = ZERO


class Order:
    __slots__ = (
        "acct",
        "cl_ord_id",
        "filled_loss",
        "filled_value",
        "frozen",
        "inst_id",
        "is_buy",
        "lever",
        "mgn_ccy",
        "ord_type",
        "order_id",
        "pos_side",
        "px",
        "px_key",
        "reduce",
        "remaining",
        "sz",
        "td_mode",
    )

    def __init__(
        self,
        order_id: int,
        acct: str,
        inst_id: str,
        cl_ord_id: str,
        is_buy: bool,
        ord_type: str,
        td_mode: str,
        px: Decimal | None,
        px_key: int,
        sz: Decimal,
        frozen: Decimal,
    ) -> None:
        self.order_id = order_id
        self.acct = acct
        self.inst_id = inst_id
        self.cl_ord_id = cl_ord_id
        self.is_buy = is_buy
        self.ord_type = ord_type
        self.td_mode = td_mode
        self.px = px
        #: Book key: price in ticks, negated for bids so that ascending order is best first.
        self.px_key = px_key
        self.sz = sz
        self.remaining = sz
        #: Funds still frozen for this order: cash mode — quote for buys, base for sells;
        #: isolated opening orders — initial margin (and, SWAP, the fee reserve) in ``mgn_ccy``;
        #: isolated SPOT closing orders — the position's assets (``IsoPosition.frozen``).
        self.frozen = frozen
        #: Position side (``net``/``long``/``short``) of isolated and SWAP orders, else ``""``.
        self.pos_side = ""
        #: Margin currency (isolated) and leverage fixed at placement (isolated, SWAP).
        self.mgn_ccy = ""
        self.lever = ZERO
        #: True when the order closes (reduces) a position instead of opening one.
        self.reduce = False
        #: Isolated opening orders: Σ over fills of the margin base — the quantity (base margin)
        #: or ``qty·A`` at the assumed price (``margin.assumed_price``) — and of the open-loss
        #: part ``L·OL`` (+ the base debt surplus, base margin) in quote units; the margin
        #: posted so far is ``margin.order_cost`` of both (see ``margin.opening_cost``).
        self.filled_value = ZERO
        self.filled_loss = ZERO


class PositionLedger:
    """A cross spot-margin position of one account on one instrument (docs/decisions.md 19).

    ``qty`` is the signed **base quantity of the position, net of the fees paid in base** (+
    long, − short): a long adds what its buys received (``sz − fee``) and loses what its sells
    sold; a short loses what its sells sold and gains what its buys received. It is the one
    quantity of the risk view's ``pos`` (long), ``upl``, the reduce-only check and the
    statements. ``avg_px`` re-averages on increases only (``(q_old·E_old + q_new·px)/(q_old +
    q_new)``, spec E23, weights net of base fees) and is the fill price of a reversal.
    ``assets`` is the short's quote proceeds net of fees (a long's assets are ``qty``).
    ``long`` keeps the side when ``qty`` reaches 0 with liability left (seed 000: "you can't
    fully close the position"). ``mgn_ccy`` is the margin currency fixed at open (the opening
    order's ``ccy``; default base for a long, quote for a short: position and margin currency
    match, seed 002 §3.1).

    A cross fill opens a position only when the account then owes the position's liability
    currency (quote for a buy, base for a sell): a cross sell of coins the account owns is a
    plain spot sale, not a short.
    """

    __slots__ = ("assets", "avg_px", "long", "mgn_ccy", "qty")

    def __init__(self, long: bool = True, mgn_ccy: str = "") -> None:
        self.qty = ZERO
        self.avg_px = ZERO
        self.assets = ZERO
        self.long = long
        self.mgn_ccy = mgn_ccy


class IsoPosition:
    """An isolated spot-margin position (spec §1.1, new mode): one per account and instrument.

    Long (``long``): holds base bought net of fees, owes quote. Short: holds quote proceeds net
    of fees, owes base. ``base``/``quote`` are the position's own holdings, **margin excluded**;
    ``margin`` (in ``mgn_ccy``, base or quote of the pair, fixed at open) is kept apart, so
    ``pos`` = the holding in the position currency and the risk formulas use
    ``BA = base (+ margin if base)``, ``QA = quote (+ margin if quote)`` (§1.4(d)).
    ``liab`` is borrowed principal and ``interest`` accrued unpaid interest, in the liability
    currency. ``base_margin`` is the initial margin posted by opening fills (scaled down by
    closing fills): the seed's "base margin" of the margin-reduction rule. ``qty`` is the base
    quantity opened and not yet closed (avgPx weights); ``frozen`` is what pending close orders
    hold of the position currency (``availPos = pos − frozen``). ``kept_quote``/``kept_base``
    are the part of the holdings that is not the **remaining** position's: what its closing
    fills realised (their share of the floating P&L at the fill price, net of their fees, in
    quote), liquidation fees paid (−), insurance-fund cover and write-offs received, margin
    moved into the holdings (``use``). It stays in the position (it repaid debt) until the
    position is released; ``upl`` of the remaining position excludes it
    (``engine.core.position_risk``).
    """

    __slots__ = (
        "avg_px",
        "base",
        "base_margin",
        "frozen",
        "inst_id",
        "interest",
        "kept_base",
        "kept_quote",
        "liab",
        "liquidating",
        "long",
        "margin",
        "margin_call",
        "mgn_ccy",
        "qty",
        "quote",
        "seen",
    )

    def __init__(self, inst_id: str, long: bool, mgn_ccy: str) -> None:
        self.inst_id = inst_id
        self.long = long
        self.mgn_ccy = mgn_ccy
        self.base = ZERO
        self.quote = ZERO
        self.margin = ZERO
        self.base_margin = ZERO
        self.liab = ZERO
        self.interest = ZERO
        self.qty = ZERO
        self.avg_px = ZERO
        self.frozen = ZERO
        self.kept_quote = ZERO
        self.kept_base = ZERO
        self.margin_call = False
        self.liquidating = False
        #: The inputs of its last risk evaluation (a cache, not state: same inputs, same zone).
        self.seen: tuple[Decimal, ...] | None = None


class PerpPosition:
    """A linear perpetual position on one SWAP instrument and position side.

    ``qty`` is signed contracts (+ long, − short; in hedge mode the ``long`` side is ≥ 0 and the
    ``short`` side ≤ 0). ``avg_px`` re-averages on increases only. ``margin`` is the isolated
    margin in the settlement currency (0 for cross). ``mgn_mode`` is fixed while the position is
    open.
    """

    __slots__ = ("avg_px", "inst_id", "liquidating", "margin", "margin_call", "mgn_mode", "pos_side", "qty", "seen")

    def __init__(self, inst_id: str, pos_side: str, mgn_mode: str) -> None:
        self.inst_id = inst_id
        self.pos_side = pos_side
        self.mgn_mode = mgn_mode
        self.qty = ZERO
        self.avg_px = ZERO
        self.margin = ZERO
        self.margin_call = False
        self.liquidating = False
        #: The inputs of its last risk evaluation (a cache, not state).
        self.seen: tuple[Decimal, ...] | None = None


class Account:
    __slots__ = (
        "acct",
        "acct_mode",
        "balances",
        "cross_in",
        "cross_out",
        "iso_leverage",
        "isolated",
        "leverage",
        "liquidating",
        "margin_call",
        "orders",
        "perps",
        "pos_mode",
        "positions",
        "swap_im",
    )

    def __init__(self, acct: str) -> None:
        self.acct = acct
        self.balances: dict[str, Balance] = {}
        #: Open orders keyed by (instId, clOrdId).
        self.orders: dict[tuple[str, str], Order] = {}
        #: Leverage chosen per instrument (cross); default is the instrument's maxLever.
        self.leverage: dict[str, Decimal] = {}
        #: Worst-case flows of resting cross orders if all filled at their limit price:
        #: what would leave (``cross_out``) and arrive (``cross_in``), per currency.
        self.cross_out: dict[str, Decimal] = {}
        self.cross_in: dict[str, Decimal] = {}
        self.positions: dict[str, PositionLedger] = {}
        #: Isolated spot-margin positions by instId, and the isolated leverage per instId.
        self.isolated: dict[str, IsoPosition] = {}
        self.iso_leverage: dict[str, Decimal] = {}
        #: Perpetual positions by (instId, posSide); ``pos_mode`` ``net_mode``/``long_short_mode``.
        self.perps: dict[tuple[str, str], PerpPosition] = {}
        self.pos_mode = "net_mode"
        #: ``unified`` (default) or ``futures_wallet``: perpetuals then live in the account
        #: ``acct:futures`` (``engine.core.wallets``, docs/decisions.md 35b).
        self.acct_mode = "unified"
        #: Σ initial margin of the resting cross SWAP orders at their limit price for their
        #: remaining size (``margin.perp_order_im``), as if all of them opened — a cache of the
        #: open orders kept by the fold (rebuilt on restore).
        self.swap_im = ZERO
        self.margin_call = False
        self.liquidating = False

    def balance(self, ccy: str) -> Balance:
        bal = self.balances.get(ccy)
        if bal is None:
            bal = self.balances[ccy] = Balance()
        return bal

    def free(self, ccy: str) -> Decimal:
        """Cash in ``ccy`` not frozen by orders (0 for a currency never held)."""
        bal = self.balances.get(ccy)
        return bal.cash - bal.frozen if bal is not None else ZERO

    def has_debt(self) -> bool:
        """Cross debt in any currency."""
        return any(b.liab or b.interest for b in self.balances.values())

    def cross_perps(self) -> bool:
        """Any open cross perpetual position (they count in the cross margin ratio)."""
        return any(p.mgn_mode == "cross" for p in self.perps.values())

    def at_risk(self) -> bool:
        """The cross account has a margin ratio: cross debt or a cross perpetual position."""
        return self.has_debt() or self.cross_perps()

    def exposed(self) -> bool:
        """Anything a mark price can move across a threshold: cross risk or any position."""
        return bool(self.isolated) or bool(self.perps) or self.has_debt()


class State:
    __slots__ = (
        "accounts",
        "assets",
        "clearing",
        "debtors",
        "fees",
        "instruments",
        "insurance",
        "interest_income",
        "last_interest_hour",
        "last_seq",
        "margin_inst",
        "marks",
        "next_debtor_rank",
        "next_order_id",
        "next_trade_id",
        "orders",
        "pos_watch",
        "price_inst",
        "prices",
        "seen_ids",
        "stuck",
        "valuation_ccy",
        "watch",
        "written_off",
    )

    def __init__(self) -> None:
        self.assets: dict[str, Asset] = {}
        self.instruments: dict[str, Instrument] = {}
        self.accounts: dict[str, Account] = {}
        self.orders: dict[int, Order] = {}
        self.marks: dict[str, Decimal] = {}
        #: Accounts exposed to prices (cross debt, isolated or perpetual positions; see
        #: ``Account.exposed``) → rank; ranks increase in order of (re)becoming exposed,
        #: the order risk sweeps use. Only the order is state (snapshots keep the order).
        self.debtors: dict[str, int] = {}
        self.next_debtor_rank = 0
        #: Cache of which debtors a mark can move across a threshold (not in snapshots).
        self.watch = RiskWatch()
        #: Fee income (negative after net rebates), insurance funds and interest income per ccy.
        self.fees: dict[str, Decimal] = {}
        self.insurance: dict[str, Decimal] = {}
        self.interest_income: dict[str, Decimal] = {}
        #: Losses no insurance fund could cover, per ccy (≥ 0): the platform wrote them off.
        self.written_off: dict[str, Decimal] = {}
        #: Perpetual clearing balance per settlement ccy: realised P&L is paid out of it and
        #: realised losses paid into it. With every open contract matched by an opposite one,
        #: it equals ``−Σ open q·ctVal·E`` up to the rounding of P&L (toward −∞) and of
        #: average entries — the money the open positions will settle among themselves.
        self.clearing: dict[str, Decimal] = {}
        #: Like ``watch`` for isolated and SWAP positions: key ``acct␟instId␟posSide``, band key
        #: ``@instId`` (cache, not in snapshots).
        self.pos_watch = RiskWatch()
        #: Accounts whose last evaluation left a liquidation the book could not complete (a
        #: perpetual with no bids, …): every mark the account is exposed to re-evaluates them,
        #: as evaluating every exposed debtor would (cache, not in snapshots: a restored state
        #: evaluates every debtor on its first mark anyway).
        self.stuck: dict[str, None] = {}
        #: Idempotency keys already applied (membership only; never iterated unsorted).
        self.seen_ids: set[str] = set()
        self.last_seq = 0
        #: Clock hour (``ts // 3,600,000``) of the last ``accrue_interest`` applied; −1: none.
        self.last_interest_hour = -1
        self.next_order_id = 1
        self.next_trade_id = 1
        #: Currency every risk figure is valued in: the quote of the first listed instrument.
        self.valuation_ccy: str | None = None
        #: ccy → SPOT instrument quoting it in the valuation currency (its mark values the ccy).
        self.price_inst: dict[str, str] = {}
        #: ccy → its mark value in the valuation currency (1 for the valuation currency itself);
        #: derived from ``marks`` and ``price_inst``, kept by the fold.
        self.prices: dict[str, Decimal] = {}
        #: ccy → SPOT instrument whose tier table and taker fee apply to cross debt in ccy:
        #: the first listed instrument with ccy as base, else the first with ccy as quote.
        self.margin_inst: dict[str, str] = {}

    def account(self, acct: str) -> Account:
        account = self.accounts.get(acct)
        if account is None:
            account = self.accounts[acct] = Account(acct)
        return account
