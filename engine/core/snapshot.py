"""Snapshots and the state digest.

A snapshot is the whole engine state in a deterministic encoding (msgpack; struct fields in
declaration order, decimals as their exact strings, every collection in the state's own
iteration order — which the log fixed — except the set of seen ids, which is sorted). The
**digest** is the SHA-256 of that encoding, so two states have the same digest exactly when
they would behave identically on every future command. ``restore(encode(state))`` rebuilds a
state with the same digest.

What the state derives is not stored: book keys (price in ticks) are recomputed from each
order's price and the instrument's tick on restore — a key can exceed msgpack's 64-bit
integers (a price of 10¹⁸ at a tick of 10⁻⁵; found by the fuzz program, version 4).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

import msgspec

from engine.core.book import price_key
from engine.core.evolve import instrument_from_spec
from engine.core.margin import perp_order_im
from engine.core.state import Account, Asset, Balance, IsoPosition, Order, PerpPosition, PositionLedger, State
from engine.core.watch import watch_key
from events.commands import ListInstrument

SNAPSHOT_VERSION = 4


class _Asset(msgspec.Struct, array_like=True):
    ccy: str
    decimals: int
    daily_rate: Decimal
    hourly_rate: Decimal
    accrual: str
    compounding: str
    #: Added in version 4 (docs/decisions.md 35): trailing, with a default, so earlier
    #: version-4 snapshots still restore.
    discount: Decimal = Decimal(1)


class _Order(msgspec.Struct, array_like=True):
    order_id: int
    acct: str
    inst_id: str
    cl_ord_id: str
    is_buy: bool
    ord_type: str
    td_mode: str
    px: Decimal | None
    sz: Decimal
    remaining: Decimal
    frozen: Decimal
    pos_side: str
    mgn_ccy: str
    lever: Decimal
    reduce: bool
    filled_value: Decimal
    #: Added after version 3 was written: a trailing field with a default, so version-3
    #: snapshots (no open-loss tracking: 0) still restore.
    filled_loss: Decimal = Decimal(0)


class _Balance(msgspec.Struct, array_like=True):
    ccy: str
    cash: Decimal
    frozen: Decimal
    liab: Decimal
    interest: Decimal


class _Position(msgspec.Struct, array_like=True):
    inst_id: str
    qty: Decimal
    avg_px: Decimal
    assets: Decimal
    long: bool
    mgn_ccy: str


class _Isolated(msgspec.Struct, array_like=True):
    inst_id: str
    long: bool
    mgn_ccy: str
    base: Decimal
    quote: Decimal
    margin: Decimal
    base_margin: Decimal
    liab: Decimal
    interest: Decimal
    qty: Decimal
    avg_px: Decimal
    frozen: Decimal
    margin_call: bool
    liquidating: bool
    #: Added after version 4 was written (issue 11): trailing fields with defaults, so older
    #: snapshots (no realised part kept apart: 0) still restore.
    kept_quote: Decimal = Decimal(0)
    kept_base: Decimal = Decimal(0)


class _Perp(msgspec.Struct, array_like=True):
    inst_id: str
    pos_side: str
    mgn_mode: str
    qty: Decimal
    avg_px: Decimal
    margin: Decimal
    margin_call: bool
    liquidating: bool


class _Account(msgspec.Struct, array_like=True):
    acct: str
    balances: list[_Balance]
    leverage: list[tuple[str, Decimal]]
    cross_out: list[tuple[str, Decimal]]
    cross_in: list[tuple[str, Decimal]]
    positions: list[_Position]
    margin_call: bool
    liquidating: bool
    iso_leverage: list[tuple[str, Decimal]]
    isolated: list[_Isolated]
    perps: list[_Perp]
    pos_mode: str
    #: Added in version 4 (docs/decisions.md 35b): trailing, with a default.
    acct_mode: str = "unified"


class _Book(msgspec.Struct, array_like=True):
    inst_id: str
    bids: list[int]
    asks: list[int]


class Snapshot(msgspec.Struct):
    version: int
    last_seq: int
    next_order_id: int
    next_trade_id: int
    valuation_ccy: str | None
    assets: list[_Asset]
    instruments: list[ListInstrument]
    price_inst: list[tuple[str, str]]
    margin_inst: list[tuple[str, str]]
    marks: list[tuple[str, Decimal]]
    accounts: list[_Account]
    orders: list[_Order]
    books: list[_Book]
    debtors: list[str]
    fees: list[tuple[str, Decimal]]
    insurance: list[tuple[str, Decimal]]
    interest_income: list[tuple[str, Decimal]]
    seen_ids: list[str]
    last_interest_hour: int
    written_off: list[tuple[str, Decimal]]
    clearing: list[tuple[str, Decimal]]


_encoder = msgspec.msgpack.Encoder(decimal_format="string")
_decoder = msgspec.msgpack.Decoder(Snapshot)


def _pairs(mapping: dict[str, Decimal]) -> list[tuple[str, Decimal]]:
    return list(mapping.items())


def capture(state: State) -> Snapshot:
    accounts = [
        _Account(
            acct=a.acct,
            balances=[_Balance(c, b.cash, b.frozen, b.liab, b.interest) for c, b in a.balances.items()],
            leverage=_pairs(a.leverage),
            cross_out=_pairs(a.cross_out),
            cross_in=_pairs(a.cross_in),
            positions=[_Position(i, p.qty, p.avg_px, p.assets, p.long, p.mgn_ccy) for i, p in a.positions.items()],
            margin_call=a.margin_call,
            liquidating=a.liquidating,
            iso_leverage=_pairs(a.iso_leverage),
            isolated=[
                _Isolated(
                    i,
                    p.long,
                    p.mgn_ccy,
                    p.base,
                    p.quote,
                    p.margin,
                    p.base_margin,
                    p.liab,
                    p.interest,
                    p.qty,
                    p.avg_px,
                    p.frozen,
                    p.margin_call,
                    p.liquidating,
                    p.kept_quote,
                    p.kept_base,
                )
                for i, p in a.isolated.items()
            ],
            perps=[
                _Perp(k[0], k[1], p.mgn_mode, p.qty, p.avg_px, p.margin, p.margin_call, p.liquidating)
                for k, p in a.perps.items()
            ],
            pos_mode=a.pos_mode,
            acct_mode=a.acct_mode,
        )
        for a in state.accounts.values()
    ]
    orders = [
        _Order(
            o.order_id,
            o.acct,
            o.inst_id,
            o.cl_ord_id,
            o.is_buy,
            o.ord_type,
            o.td_mode,
            o.px,
            o.sz,
            o.remaining,
            o.frozen,
            o.pos_side,
            o.mgn_ccy,
            o.lever,
            o.reduce,
            o.filled_value,
            o.filled_loss,
        )
        for o in state.orders.values()
    ]
    books = [
        _Book(
            inst_id,
            [oid for level in inst.book.bids.values() for oid in level],
            [oid for level in inst.book.asks.values() for oid in level],
        )
        for inst_id, inst in state.instruments.items()
    ]
    specs: list[ListInstrument] = []
    for inst in state.instruments.values():
        assert isinstance(inst.spec, ListInstrument)
        specs.append(inst.spec)
    return Snapshot(
        version=SNAPSHOT_VERSION,
        last_seq=state.last_seq,
        next_order_id=state.next_order_id,
        next_trade_id=state.next_trade_id,
        valuation_ccy=state.valuation_ccy,
        assets=[
            _Asset(a.ccy, a.decimals, a.daily_rate, a.hourly_rate, a.accrual, a.compounding, a.discount)
            for a in state.assets.values()
        ],
        instruments=specs,
        price_inst=list(state.price_inst.items()),
        margin_inst=list(state.margin_inst.items()),
        marks=_pairs(state.marks),
        accounts=accounts,
        orders=orders,
        books=books,
        debtors=list(state.debtors),
        fees=_pairs(state.fees),
        insurance=_pairs(state.insurance),
        interest_income=_pairs(state.interest_income),
        seen_ids=sorted(state.seen_ids),
        last_interest_hour=state.last_interest_hour,
        written_off=_pairs(state.written_off),
        clearing=_pairs(state.clearing),
    )


def encode(state: State) -> bytes:
    """Deterministic bytes of the whole state."""
    return _encoder.encode(capture(state))


def digest(state: State) -> str:
    """SHA-256 (hex) of :func:`encode`."""
    return hashlib.sha256(encode(state)).hexdigest()


def restore(data: bytes) -> State:
    """Rebuild a state from :func:`encode` output."""
    snap = _decoder.decode(data)
    if snap.version != SNAPSHOT_VERSION:
        raise ValueError(f"snapshot version {snap.version} is not {SNAPSHOT_VERSION}")
    state = State()
    state.last_seq = snap.last_seq
    state.next_order_id = snap.next_order_id
    state.next_trade_id = snap.next_trade_id
    state.valuation_ccy = snap.valuation_ccy
    for a in snap.assets:
        asset = state.assets[a.ccy] = Asset(a.ccy, a.decimals)
        asset.daily_rate, asset.hourly_rate = a.daily_rate, a.hourly_rate
        asset.accrual, asset.compounding = a.accrual, a.compounding
        asset.discount = a.discount
    for spec in snap.instruments:
        inst = instrument_from_spec(spec)
        inst.spec = spec
        state.instruments[inst.inst_id] = inst
    state.price_inst = dict(snap.price_inst)
    state.margin_inst = dict(snap.margin_inst)
    state.marks = dict(snap.marks)
    if state.valuation_ccy is not None:
        state.prices[state.valuation_ccy] = Decimal(1)
    for ccy, inst_id in state.price_inst.items():
        if inst_id in state.marks:
            state.prices[ccy] = state.marks[inst_id]
    for sa in snap.accounts:
        account = state.accounts[sa.acct] = Account(sa.acct)
        for sb in sa.balances:
            bal = account.balances[sb.ccy] = Balance()
            bal.cash, bal.frozen, bal.liab, bal.interest = sb.cash, sb.frozen, sb.liab, sb.interest
        account.leverage = dict(sa.leverage)
        account.cross_out = dict(sa.cross_out)
        account.cross_in = dict(sa.cross_in)
        for sp in sa.positions:
            ledger = account.positions[sp.inst_id] = PositionLedger(sp.long, sp.mgn_ccy)
            ledger.qty, ledger.avg_px, ledger.assets = sp.qty, sp.avg_px, sp.assets
        account.margin_call = sa.margin_call
        account.liquidating = sa.liquidating
        account.iso_leverage = dict(sa.iso_leverage)
        for si in sa.isolated:
            iso = account.isolated[si.inst_id] = IsoPosition(si.inst_id, si.long, si.mgn_ccy)
            iso.base, iso.quote, iso.margin, iso.base_margin = si.base, si.quote, si.margin, si.base_margin
            iso.liab, iso.interest, iso.qty, iso.avg_px, iso.frozen = si.liab, si.interest, si.qty, si.avg_px, si.frozen
            iso.margin_call, iso.liquidating = si.margin_call, si.liquidating
            iso.kept_quote, iso.kept_base = si.kept_quote, si.kept_base
            state.pos_watch.dirty[watch_key(sa.acct, si.inst_id, "net")] = None
        for sp2 in sa.perps:
            perp = account.perps[(sp2.inst_id, sp2.pos_side)] = PerpPosition(sp2.inst_id, sp2.pos_side, sp2.mgn_mode)
            perp.qty, perp.avg_px, perp.margin = sp2.qty, sp2.avg_px, sp2.margin
            perp.margin_call, perp.liquidating = sp2.margin_call, sp2.liquidating
            state.pos_watch.dirty[watch_key(sa.acct, sp2.inst_id, sp2.pos_side)] = None
        account.pos_mode = sa.pos_mode
        account.acct_mode = sa.acct_mode
    for so in snap.orders:
        order = Order(
            so.order_id,
            so.acct,
            so.inst_id,
            so.cl_ord_id,
            so.is_buy,
            so.ord_type,
            so.td_mode,
            so.px,
            price_key(so.px, state.instruments[so.inst_id].tick, so.is_buy),
            so.sz,
            so.frozen,
        )
        order.remaining = so.remaining
        order.pos_side, order.mgn_ccy, order.lever = so.pos_side, so.mgn_ccy, so.lever
        order.reduce, order.filled_value, order.filled_loss = so.reduce, so.filled_value, so.filled_loss
        state.orders[order.order_id] = order
        owner = state.accounts[order.acct]
        owner.orders[(order.inst_id, order.cl_ord_id)] = order
        inst = state.instruments[order.inst_id]
        if inst.inst_type == "SWAP" and order.td_mode == "cross" and order.px is not None and not order.reduce:
            owner.swap_im += perp_order_im(order.remaining, inst.ct_val, order.px, order.lever)
    for book in snap.books:
        inst = state.instruments[book.inst_id]
        for oid in (*book.bids, *book.asks):
            inst.book.add(state.orders[oid])
    state.debtors = {acct: rank for rank, acct in enumerate(snap.debtors)}
    state.next_debtor_rank = len(snap.debtors)
    state.watch.dirty.update(dict.fromkeys(snap.debtors))
    state.fees = dict(snap.fees)
    state.insurance = dict(snap.insurance)
    state.interest_income = dict(snap.interest_income)
    state.seen_ids = set(snap.seen_ids)
    state.last_interest_hour = snap.last_interest_hour
    state.written_off = dict(snap.written_off)
    state.clearing = dict(snap.clearing)
    return state
