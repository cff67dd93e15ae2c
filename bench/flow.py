"""Seeded generator of a realistic marginbook command flow, as JSON lines (``bytes``).

The wire format is exactly ``spec/contract.md``'s: one JSON object per line, decimals as JSON
strings, ``ts`` an integer (ms since the epoch, strictly increasing), a unique ``id`` on every
command but ``mark_price`` (a feed, no id). Everything comes from ``random.Random(seed)`` and
integer arithmetic on ticks and lots, so a seed always gives the same bytes.

The flow:

* **setup** — 4 assets (USDT, BTC, ETH, SOL, 8 decimals), 3 SPOT instruments with OKX-like
  tick/lot/min sizes, fees ``0.0008``/``0.001``, ``maxLever`` 10 and a 3-row tier table; a daily
  interest rate per asset; a mark price per instrument; deposits for a few market makers (big
  balances) and for ``accounts`` retail accounts (USDT and one or more base assets each);
  an initial quote ladder from every market maker;
* **main flow** (fractions of the main-flow commands, see :data:`MIX`):

  - ~55 % resting limit orders near the mark, both sides — market-maker quotes a few basis
    points around the mark (some ``post_only``) and retail orders (a quarter of them
    marketable, crossing up to 0.15 %); ~80 % of retail orders and all quotes are ``cross``
    (margin with auto-borrow), the rest ``cash``;
  - ~15 % ``ioc`` orders priced through the spread;
  - ~20 % cancels of the generator's own, still-likely-open orders (a market maker cancels its
    oldest quote; a retail trader cancels the one of a few sampled open orders that is furthest
    from the mark);
  - ~8 % mark-price updates (a mean-reverting random walk, ~4 bp steps);
  - ~1 % manual ``borrow`` / ``repay``; ~1 % ``market`` orders;
  - an ``accrue_interest`` at every full hour of ``ts`` (one hour ≈ 3,000 commands).

Order sizes are a small share of the account's starting equity (0.5–6 % for resting orders),
so most orders pass the initial-margin check and accounts stay far from liquidation unless the
mark walks against an accumulated position.

**Model** (``model``): ``spot`` (the default above: cash and cross spot margin) or ``full`` —
the complete margin model of issue 3 on top of the same flow: a linear perpetual
``BTC-USDT-SWAP`` (ctVal 0.01, OKX-style size tiers) quoted by the market makers in cross mode
and traded by retail (70 % cross, 30 % isolated, one-way mode), ~15 % of retail spot orders in
**isolated** margin (margin currency base or quote at random), and a ``settle_funding`` every
8 hours of ``ts``. Comparing the two models on the same seed measures what the complete model
costs per command.

Usable as a script: ``python bench/flow.py -n 10000 --seed 1 > flow.jsonl`` writes a file that
``marginbook run`` folds.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import heapq
import itertools
import math
import random
import sys
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

#: ts of the first command: 2024-01-01T00:00:00Z.
START_TS = 1_704_067_200_000
HOUR_MS = 3_600_000
#: Mean gap between commands (ms): 1,200 ms, so an hour of ``ts`` is ~3,000 commands.
MEAN_GAP_MS = 1_200

#: Main-flow mix: (kind, weight). Weights are percentages of the main-flow commands.
MIX: tuple[tuple[str, float], ...] = (
    ("limit", 55.0),
    ("ioc", 15.0),
    ("cancel", 20.0),
    ("mark", 8.0),
    ("borrow_repay", 1.0),
    ("market", 1.0),
)

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class AssetSpec:
    ccy: str
    decimals: int
    daily_rate: str


@dataclass(frozen=True, slots=True)
class InstSpec:
    inst_id: str
    base: str
    quote: str
    tick_dec: int  # tickSz = 10**-tick_dec
    lot_dec: int  # lotSz = 10**-lot_dec
    min_lots: int  # minSz in lots
    start_px: int  # initial mark, in ticks
    weight: float  # share of the order flow
    #: (maxBorrowBase, maxBorrowQuote, mmr, imr, maxLever) per tier
    tiers: tuple[tuple[str, str, str, str, str], ...]
    #: market-maker quote size range, base units
    mm_size: tuple[float, float]
    #: resting orders the flow steers the book towards (see ``FlowGenerator._limit``)
    target_depth: int
    #: SWAP: contract value in base units (sizes are contracts: ``lot_dec`` 0); 0 for SPOT
    ct_val: float = 0.0


ASSETS: tuple[AssetSpec, ...] = (
    AssetSpec("USDT", 8, "0.0003"),
    AssetSpec("BTC", 8, "0.00005"),
    AssetSpec("ETH", 8, "0.0001"),
    AssetSpec("SOL", 8, "0.0003"),
)

INSTRUMENTS: tuple[InstSpec, ...] = (
    InstSpec(
        "BTC-USDT",
        "BTC",
        "USDT",
        tick_dec=1,
        lot_dec=6,
        min_lots=10,
        start_px=650_000,
        weight=0.5,
        tiers=(
            ("20", "1000000", "0.04", "0.1", "10"),
            ("60", "3000000", "0.05", "0.2", "5"),
            ("150", "8000000", "0.08", "0.34", "3"),
        ),
        mm_size=(0.02, 0.6),
        target_depth=2_000,
    ),
    InstSpec(
        "ETH-USDT",
        "ETH",
        "USDT",
        tick_dec=2,
        lot_dec=6,
        min_lots=1_000,
        start_px=340_000,
        weight=0.3,
        tiers=(
            ("300", "600000", "0.04", "0.1", "10"),
            ("900", "1800000", "0.05", "0.2", "5"),
            ("2500", "5000000", "0.08", "0.34", "3"),
        ),
        mm_size=(0.3, 10.0),
        target_depth=1_200,
    ),
    InstSpec(
        "SOL-USDT",
        "SOL",
        "USDT",
        tick_dec=2,
        lot_dec=4,
        min_lots=100,
        start_px=15_000,
        weight=0.2,
        tiers=(
            ("5000", "400000", "0.05", "0.1", "10"),
            ("15000", "1200000", "0.06", "0.2", "5"),
            ("40000", "3000000", "0.1", "0.34", "3"),
        ),
        mm_size=(5.0, 150.0),
        target_depth=800,
    ),
)

#: The perpetual of the ``full`` model; its tier rows are (maxSz, mmr, imr, maxLever).
SWAP = InstSpec(
    "BTC-USDT-SWAP",
    "BTC",
    "USDT",
    tick_dec=1,
    lot_dec=0,
    min_lots=1,
    start_px=650_000,
    weight=0.35,
    tiers=(
        ("2000", "0.004", "0.01", "100", ""),
        ("10000", "0.006", "0.02", "50", ""),
        ("40000", "0.01", "0.05", "20", ""),
    ),
    mm_size=(2.0, 60.0),
    target_depth=1_500,
    ct_val=0.01,
)
FUNDING_MS = 8 * HOUR_MS
#: ``full`` model: share of retail spot orders in isolated margin; of SWAP orders in isolated.
ISOLATED_SPOT_SHARE = 0.15
ISOLATED_SWAP_SHARE = 0.3

MAKER_FEE = "0.0008"
TAKER_FEE = "0.001"
MAX_LEVER = "10"
MARKET_MAKERS = 4
#: Quote ladder depth per market maker, instrument and side at setup; quotes sit 1..12 steps
#: of 1.5 bp from the mark.
MM_LEVELS = 4
MM_STEP = 0.00015
#: Share of retail accounts that trade 8× bigger and mostly one way: they run up leverage and
#: are the ones that get margin calls (and, on a bad walk of the mark, liquidated).
AGGRESSIVE_SHARE = 0.03
#: Mark walk per update: N(0, MARK_VOL) relative step, pulled back to the start price at
#: MARK_PULL per update (stationary spread ~ MARK_VOL / sqrt(2 MARK_PULL) ≈ 1.9 %).
MARK_VOL = 0.0006
MARK_PULL = 0.0005
#: Rare jumps: with this probability an update moves the mark by 2-5 % (either way), which
#: is what pushes leveraged accounts into margin calls and, sometimes, liquidation.
JUMP_PROB = 0.002


def units(n: int, decimals: int) -> str:
    """``n × 10**-decimals`` as a contract decimal string (``units(123, 2) == "1.23"``)."""
    if n < 0:
        raise ValueError(f"negative amount {n}")
    if decimals == 0:
        return str(n)
    text = str(n).rjust(decimals + 1, "0")
    whole, frac = text[:-decimals], text[-decimals:].rstrip("0")
    return f"{whole}.{frac}" if frac else whole


@dataclass(slots=True)
class _Account:
    name: str
    equity: float  # starting equity in USDT at the start marks
    bases: dict[str, float] = field(default_factory=dict)  # base deposits, units
    scale: float = 1.0  # order size multiplier (aggressive traders: 8)
    bias: str | None = None  # side an aggressive trader favours (70 % of its orders)

    def side(self, rng: random.Random) -> str:
        if self.bias is not None and rng.random() < 0.7:
            return self.bias
        return "buy" if rng.random() < 0.5 else "sell"


@dataclass(slots=True)
class _Open:
    """An order the generator believes is resting (see :class:`_ShadowBook`)."""

    acct: str
    inst: InstSpec
    cl_ord_id: str
    is_buy: bool
    px: int  # ticks
    lots: int  # believed remaining
    seq: int
    alive: bool = True


class _ShadowBook:
    """The generator's own, approximate view of one instrument's book, to cancel orders that
    are still likely open: price-time matching by size, ignoring margin refusals, self-trade
    prevention and liquidations. Dead entries are dropped lazily from the heaps."""

    __slots__ = ("asks", "bids", "live")

    def __init__(self) -> None:
        self.bids: list[tuple[int, int, _Open]] = []  # (-px, seq, order)
        self.asks: list[tuple[int, int, _Open]] = []  # (px, seq, order)
        self.live = 0  # orders believed resting

    def crosses(self, is_buy: bool, px: int) -> bool:
        side = self.asks if is_buy else self.bids
        while side and not side[0][2].alive:
            heapq.heappop(side)
        if not side:
            return False
        best = side[0][2].px
        return best <= px if is_buy else best >= px

    def take(self, is_buy: bool, px: int | None, lots: int) -> int:
        """Match an incoming order; return the lots left unfilled."""
        side = self.asks if is_buy else self.bids
        while lots and side:
            maker = side[0][2]
            if not maker.alive:
                heapq.heappop(side)
                continue
            if px is not None and (maker.px > px if is_buy else maker.px < px):
                break
            fill = min(lots, maker.lots)
            lots -= fill
            maker.lots -= fill
            if not maker.lots:
                maker.alive = False
                self.live -= 1
                heapq.heappop(side)
        return lots

    def rest(self, order: _Open) -> None:
        self.live += 1
        if order.is_buy:
            heapq.heappush(self.bids, (-order.px, order.seq, order))
        else:
            heapq.heappush(self.asks, (order.px, order.seq, order))

    def cancel(self, order: _Open) -> None:
        order.alive = False
        self.live -= 1

    def __len__(self) -> int:
        return self.live


@dataclass
class FlowStats:
    """What the generator wrote, by kind (setup and main flow)."""

    setup: int = 0
    main: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


class FlowGenerator:
    """Builds the flow command by command; see the module docstring."""

    def __init__(self, seed: int = 1, accounts: int = 1_000, model: str = "spot") -> None:
        if accounts < 1:
            raise ValueError("need at least one account")
        if model not in ("spot", "full"):
            raise ValueError(f"model must be spot or full, got {model}")
        self.full = model == "full"
        self.insts: tuple[InstSpec, ...] = (*INSTRUMENTS, SWAP) if self.full else INSTRUMENTS
        self.next_funding = (START_TS // FUNDING_MS + 1) * FUNDING_MS
        self.rng = random.Random(seed)
        self.ts = START_TS
        self.next_hour = (START_TS // HOUR_MS + 1) * HOUR_MS
        self._ids = itertools.count(1)
        self._ords = itertools.count(1)
        self.marks = {inst.inst_id: inst.start_px for inst in self.insts}
        self.mm_names = [f"mm{i + 1}" for i in range(MARKET_MAKERS)]
        self.accounts: list[_Account] = []
        self.n_accounts = accounts
        self.books = {inst.inst_id: _ShadowBook() for inst in self.insts}
        self.retail_open: list[_Open] = []
        self.mm_ladders: dict[tuple[str, str], deque[_Open]] = {
            (mm, inst.inst_id): deque() for mm in self.mm_names for inst in self.insts
        }
        self.borrowed: list[tuple[str, str, str]] = []  # (acct, ccy, amt) of manual borrows
        self.stats = FlowStats()
        self._inst_cum = list(itertools.accumulate(inst.weight for inst in self.insts))
        self._acct_cum: list[float] = []
        kinds, weights = zip(*MIX, strict=True)
        self._kinds: tuple[str, ...] = kinds
        self._kind_cum = list(itertools.accumulate(weights))

    # --- plumbing ------------------------------------------------------------------------

    def _next_ts(self) -> int:
        self.ts += self.rng.randint(1, 2 * MEAN_GAP_MS - 1)
        return self.ts

    def _cmd(self, kind: str, body: dict[str, Any], with_id: bool = True) -> bytes:
        obj: dict[str, Any] = {"type": body.pop("type"), "ts": self._next_ts()}
        if with_id:
            obj["id"] = f"{kind[0]}{next(self._ids)}"
        obj.update(body)
        self.stats.count(kind)
        return _encode(obj)

    def _px(self, inst: InstSpec, rel: float) -> int:
        """Mark × (1 + rel), in ticks (at least one tick)."""
        return max(1, round(self.marks[inst.inst_id] * (1.0 + rel)))

    def _lots(self, inst: InstSpec, notional: float, px: int) -> int:
        """Lots (SWAP: contracts) worth ``notional`` USDT at ``px`` ticks, at least ``minSz``."""
        price = px / 10**inst.tick_dec * (inst.ct_val or 1.0)
        return max(inst.min_lots, int(notional / price * 10**inst.lot_dec))

    def _pick_inst(self) -> InstSpec:
        return self.insts[bisect.bisect(self._inst_cum, self.rng.random() * self._inst_cum[-1])]

    def _pick_account(self) -> _Account:
        return self.accounts[bisect.bisect(self._acct_cum, self.rng.random() * self._acct_cum[-1])]

    def _order(
        self,
        acct: str,
        inst: InstSpec,
        side: str,
        ord_type: str,
        lots: int,
        px: int | None,
        td_mode: str,
    ) -> tuple[bytes, _Open | None]:
        """A ``place_order`` line, matched against the shadow book; returns the order when it
        is expected to rest (limit / post_only with a remainder)."""
        seq = next(self._ords)
        cl = f"o{seq}"
        body: dict[str, Any] = {
            "type": "place_order",
            "acct": acct,
            "instId": inst.inst_id,
            "clOrdId": cl,
            "side": side,
            "ordType": ord_type,
            "sz": units(lots, inst.lot_dec),
        }
        if px is not None:
            body["px"] = units(px, inst.tick_dec)
        body["tdMode"] = td_mode
        if td_mode == "isolated" and not inst.ct_val:
            body["ccy"] = inst.base if self.rng.random() < 0.5 else inst.quote
        line = self._cmd("place_" + ord_type, body)
        book = self.books[inst.inst_id]
        is_buy = side == "buy"
        if ord_type == "post_only" and px is not None and book.crosses(is_buy, px):
            return line, None  # the engine refuses it (post_only_would_cross)
        left = book.take(is_buy, px, lots)
        if not left or px is None or ord_type not in ("limit", "post_only"):
            return line, None
        order = _Open(acct, inst, cl, is_buy, px, left, seq)
        book.rest(order)
        return line, order

    # --- setup ---------------------------------------------------------------------------

    def setup(self) -> Iterator[bytes]:
        rng = self.rng
        for asset in ASSETS:
            yield self._cmd("list_asset", {"type": "list_asset", "ccy": asset.ccy, "decimals": asset.decimals})
        for inst in INSTRUMENTS:  # SWAP, if any, after the SPOT instruments (see below)
            yield self._cmd(
                "list_instrument",
                {
                    "type": "list_instrument",
                    "instId": inst.inst_id,
                    "instType": "SPOT",
                    "baseCcy": inst.base,
                    "quoteCcy": inst.quote,
                    "tickSz": units(1, inst.tick_dec),
                    "lotSz": units(1, inst.lot_dec),
                    "minSz": units(inst.min_lots, inst.lot_dec),
                    "makerFee": MAKER_FEE,
                    "takerFee": TAKER_FEE,
                    "maxLever": MAX_LEVER,
                    "tiers": [
                        {
                            "tier": i,
                            "maxBorrowBase": base,
                            "maxBorrowQuote": quote,
                            "mmr": mmr,
                            "imr": imr,
                            "maxLever": lever,
                        }
                        for i, (base, quote, mmr, imr, lever) in enumerate(inst.tiers, start=1)
                    ],
                },
            )
        if self.full:
            yield self._cmd(
                "list_instrument",
                {
                    "type": "list_instrument",
                    "instId": SWAP.inst_id,
                    "instType": "SWAP",
                    "settleCcy": SWAP.quote,
                    "ctVal": "0.01",
                    "tickSz": units(1, SWAP.tick_dec),
                    "lotSz": "1",
                    "minSz": "1",
                    "makerFee": "0.0002",
                    "takerFee": "0.0005",
                    "maxLever": "100",
                    "tiers": [
                        {"tier": i, "maxSz": size, "mmr": mmr, "imr": imr, "maxLever": lever}
                        for i, (size, mmr, imr, lever, _) in enumerate(SWAP.tiers, start=1)
                    ],
                },
            )
        for asset in ASSETS:
            yield self._cmd(
                "set_interest_rate", {"type": "set_interest_rate", "ccy": asset.ccy, "dailyRate": asset.daily_rate}
            )
        for inst in self.insts:
            yield self._mark(inst)
        # Market makers: deep pockets in every asset.
        for mm in self.mm_names:
            yield self._deposit(mm, "USDT", 50_000_000 * 100, 2)
            for inst in INSTRUMENTS:
                value = 25_000_000 / (inst.start_px / 10**inst.tick_dec)
                yield self._deposit(mm, inst.base, int(value * 10**4), 4)
        # Retail: USDT from 2k to 200k (log-uniform) and 5-50 % of that in one or more base assets
        # (each with probability 1/2, at least one).
        for i in range(self.n_accounts):
            name = f"u{i + 1:05d}"
            usdt = math.exp(rng.uniform(math.log(2_000), math.log(200_000)))
            account = _Account(name, usdt)
            if rng.random() < AGGRESSIVE_SHARE:
                account.scale = 8.0
                account.bias = "buy" if rng.random() < 0.5 else "sell"
            yield self._deposit(name, "USDT", int(usdt * 100), 2)
            held = [inst for inst in INSTRUMENTS if rng.random() < 0.5] or [rng.choice(INSTRUMENTS)]
            for inst in held:
                price = inst.start_px / 10**inst.tick_dec
                qty = usdt * rng.uniform(0.05, 0.5) / price
                yield self._deposit(name, inst.base, max(1, int(qty * 10**6)), 6)
                account.bases[inst.base] = qty
                account.equity += qty * price
            self.accounts.append(account)
        # Activity is skewed (Pareto weights) but capped: no account sends more than ~1 % of the flow.
        self._acct_cum = list(itertools.accumulate(min(rng.paretovariate(1.3), 30.0) for _ in self.accounts))
        # Initial ladders: every market maker quotes MM_LEVELS levels per side per instrument.
        for mm in self.mm_names:
            for inst in self.insts:
                for level in range(1, MM_LEVELS + 1):
                    for side in ("buy", "sell"):
                        yield self._quote(mm, inst, side, level, "limit")

    def _deposit(self, acct: str, ccy: str, amount: int, decimals: int) -> bytes:
        return self._cmd("deposit", {"type": "deposit", "acct": acct, "ccy": ccy, "amt": units(amount, decimals)})

    def _mark(self, inst: InstSpec) -> bytes:
        body = {"type": "mark_price", "instId": inst.inst_id, "markPx": units(self.marks[inst.inst_id], inst.tick_dec)}
        return self._cmd("mark_price", body, with_id=False)

    # --- main flow -----------------------------------------------------------------------

    def main(self) -> Iterator[bytes]:
        rng = self.rng
        handlers = {
            "limit": self._limit,
            "ioc": self._ioc,
            "cancel": self._cancel,
            "mark": self._mark_move,
            "borrow_repay": self._borrow_repay,
            "market": self._market,
        }
        while True:
            if self.ts >= self.next_hour:
                self.next_hour += HOUR_MS
                body = {"type": "accrue_interest"}
                yield self._cmd("accrue_interest", body | {"id": f"accrue-{self.next_hour // HOUR_MS - 1}"}, False)
                continue
            if self.full and self.ts >= self.next_funding:
                self.next_funding += FUNDING_MS
                rate = f"{rng.uniform(-0.0003, 0.0003):.6f}"
                yield self._cmd(
                    "settle_funding", {"type": "settle_funding", "instId": SWAP.inst_id, "fundingRate": rate}
                )
                continue
            kind = self._kinds[bisect.bisect(self._kind_cum, rng.random() * self._kind_cum[-1])]
            yield handlers[kind]()

    def _quote(self, mm: str, inst: InstSpec, side: str, level: int, ord_type: str) -> bytes:
        rel = level * MM_STEP
        px = self._px(inst, -rel if side == "buy" else rel)
        if ord_type == "post_only" and self.books[inst.inst_id].crosses(side == "buy", px) and self.rng.random() < 0.9:
            ord_type = "limit"  # the maker sees it would cross; a few race and are refused
        lo, hi = inst.mm_size
        lots = max(inst.min_lots, int(self.rng.uniform(lo, hi) * 10**inst.lot_dec))
        line, order = self._order(mm, inst, side, ord_type, lots, px, "cross")
        if order is not None:
            self.mm_ladders[(mm, inst.inst_id)].append(order)
        return line

    def _limit(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.45:  # a market maker refreshes its quotes
            mm = rng.choice(self.mm_names)
            side = "buy" if rng.random() < 0.5 else "sell"
            ord_type = "post_only" if rng.random() < 0.3 else "limit"
            return self._quote(mm, self._pick_inst(), side, rng.randint(1, 12), ord_type)
        account = self._pick_account()
        inst = self._pick_inst()
        side = account.side(rng)
        # Marketable (crossing the mark by up to 15 bp): a quarter of the orders, more when the
        # book is deeper than its target depth, so that resting depth reaches a steady state.
        deep = len(self.books[inst.inst_id]) > inst.target_depth
        if rng.random() < (0.6 if deep else 0.25):
            rel = rng.uniform(0.0, 0.0015)
            rel = rel if side == "buy" else -rel
        else:  # passive: 3 bp + an exponential tail (mean 30 bp) away from the mark
            rel = 0.0003 + rng.expovariate(1 / 0.003)
            rel = -rel if side == "buy" else rel
        px = self._px(inst, rel)
        lots = self._lots(inst, account.equity * account.scale * rng.uniform(0.005, 0.06), px)
        td_mode = self._td_mode(account, inst, side, lots, 0.8)
        line, order = self._order(account.name, inst, side, "limit", lots, px, td_mode)
        if order is not None:
            self.retail_open.append(order)
        return line

    def _td_mode(self, account: _Account, inst: InstSpec, side: str, lots: int, p_cross: float) -> str:
        """``cross`` with probability ``p_cross``; ``cash`` otherwise, if the account can pay
        (a cash sell needs the base asset deposited). ``full`` model: SWAP orders are cross or
        isolated; a share of spot margin orders is isolated."""
        if inst.ct_val:  # each account keeps one margin mode on the perpetual (it is fixed per position)
            return "isolated" if zlib.crc32(account.name.encode()) % 100 < ISOLATED_SWAP_SHARE * 100 else "cross"
        if self.full and self.rng.random() < ISOLATED_SPOT_SHARE:
            return "isolated"
        if self.rng.random() < p_cross:
            return "cross"
        if side == "sell" and account.bases.get(inst.base, 0.0) * 0.3 < lots / 10**inst.lot_dec:
            return "cross"
        return "cash"

    def _ioc(self) -> bytes:
        rng = self.rng
        account = self._pick_account()
        inst = self._pick_inst()
        side = account.side(rng)
        rel = rng.uniform(0.0005, 0.004)
        px = self._px(inst, rel if side == "buy" else -rel)
        lots = self._lots(inst, account.equity * account.scale * rng.uniform(0.005, 0.04), px)
        td_mode = self._td_mode(account, inst, side, lots, 0.85)
        return self._order(account.name, inst, side, "ioc", lots, px, td_mode)[0]

    def _market(self) -> bytes:
        rng = self.rng
        account = self._pick_account()
        inst = self._pick_inst()
        side = account.side(rng)
        lots = self._lots(inst, account.equity * account.scale * rng.uniform(0.002, 0.02), self.marks[inst.inst_id])
        td_mode = self._td_mode(account, inst, side, lots, 0.7)
        return self._order(account.name, inst, side, "market", lots, None, td_mode)[0]

    def _cancel(self) -> bytes:
        rng = self.rng
        target: _Open | None = None
        if rng.random() < 0.5:  # a market maker pulls its oldest live quote
            ladder = self.mm_ladders[(rng.choice(self.mm_names), self._pick_inst().inst_id)]
            while ladder and target is None:
                order = ladder.popleft()
                target = order if order.alive else None
        book = self.retail_open
        tries = 0
        while target is None and book and tries < 16:
            # Of a few sampled open orders, cancel the one furthest from its mark (stale).
            tries += 1
            index = max(
                (rng.randrange(len(book)) for _ in range(4)),
                key=lambda i: (book[i].alive, abs(book[i].px / self.marks[book[i].inst.inst_id] - 1.0)),
            )
            order = book[index]
            book[index] = book[-1]
            book.pop()
            target = order if order.alive else None
        if target is None:
            return self._limit()
        self.books[target.inst.inst_id].cancel(target)
        body = {"type": "cancel_order", "acct": target.acct, "instId": target.inst.inst_id, "clOrdId": target.cl_ord_id}
        return self._cmd("cancel_order", body)

    def _mark_move(self) -> bytes:
        inst = self.insts[self.rng.randrange(len(self.insts))]
        mark = self.marks[inst.inst_id]
        pull = MARK_PULL * (inst.start_px / mark - 1.0)  # mean reversion keeps the walk in range
        step = self.rng.gauss(0.0, MARK_VOL) + pull
        if self.rng.random() < JUMP_PROB:
            step += self.rng.choice((-1.0, 1.0)) * self.rng.uniform(0.02, 0.05)
        self.marks[inst.inst_id] = max(1, round(mark * (1.0 + step)))
        return self._mark(inst)

    def _borrow_repay(self) -> bytes:
        rng = self.rng
        if self.borrowed and rng.random() < 0.5:
            acct, ccy, amt = self.borrowed.pop(rng.randrange(len(self.borrowed)))
            return self._cmd("repay", {"type": "repay", "acct": acct, "ccy": ccy, "amt": amt})
        account = self._pick_account()
        value = account.equity * rng.uniform(0.01, 0.1)
        if rng.random() < 0.6:
            ccy, amt = "USDT", units(int(value * 100), 2)
        else:
            inst = self._pick_inst()
            ccy = inst.base
            amt = units(max(1, int(value / (self.marks[inst.inst_id] / 10**inst.tick_dec) * 10**6)), 6)
        self.borrowed.append((account.name, ccy, amt))
        return self._cmd("borrow", {"type": "borrow", "acct": account.name, "ccy": ccy, "amt": amt})


def generate(
    n_commands: int, seed: int = 1, accounts: int = 1_000, model: str = "spot"
) -> tuple[list[bytes], FlowStats]:
    """The first ``n_commands`` lines of the flow for ``seed`` (setup first, then the main flow)."""
    gen = FlowGenerator(seed, accounts, model)
    lines = list(itertools.islice(gen.setup(), n_commands))
    gen.stats.setup = len(lines)
    lines.extend(itertools.islice(gen.main(), n_commands - len(lines)))
    gen.stats.main = len(lines) - gen.stats.setup
    return lines, gen.stats


def digest(lines: list[bytes]) -> str:
    """SHA-256 of the flow as a JSONL file (each line + ``\\n``)."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line)
        h.update(b"\n")
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a seeded marginbook command flow as JSONL on stdout.")
    parser.add_argument("-n", "--commands", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--model", choices=("spot", "full"), default="spot")
    args = parser.parse_args(argv)
    lines, _ = generate(args.commands, args.seed, args.accounts, args.model)
    out = sys.stdout.buffer
    for line in lines:
        out.write(line + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
