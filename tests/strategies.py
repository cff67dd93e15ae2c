"""Hypothesis strategies for marginbook: realistic command sequences on the JSON wire format.

A :class:`Scenario` is a list of JSON command lines (bytes, one object each, exactly what a
gateway would write to ``commands.log``): a fixed listing prelude (assets, SPOT instruments with
tier tables, interest rates, mark prices), deposits for a handful of accounts, then a random mix
of orders of every ``ordType`` in ``cash`` and ``cross`` mode, cancels, borrows, repays,
withdrawals, mark moves (including crashes and spikes that raise margin calls and liquidate),
interest accruals, leverage changes, duplicate ids and commands the engine must refuse (off tick,
off lot, unknown instrument or asset, too many decimals, ...).

The generator keeps a rough model of the market (current marks, what each account deposited,
which ``clOrdId``s were used) only to make the draws *plausible*: prices a few ticks around the
mark, sizes on the lot, cancels of orders that probably rest, leveraged positions big enough to
be liquidated by a crash. It never predicts the engine's answer.

Lines decode with :func:`events.codec.decode_command_json`, so every property that steps them
also exercises the wire format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Context, Decimal, localcontext
from typing import Any

import msgspec
from hypothesis import strategies as st

from events.codec import decode_command_json
from events.commands import COMMAND_TYPES, Command

T0 = 1_700_000_000_000
ACCOUNTS = ("alice", "bob", "carol", "dave", "erin", "frank")

Json = dict[str, Any]


def dec_str(value: Decimal) -> str:
    """Plain decimal string for the wire: no exponent, no trailing zeros ("0" for zero)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def line(obj: Json) -> bytes:
    """One JSONL command line (compact; key order as given, ``type`` first by convention)."""
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True)
class InstSpec:
    inst_id: str
    base: str
    quote: str
    tick: Decimal
    lot: Decimal
    min_lots: int
    mark: Decimal
    tiers: tuple[tuple[str, str, str, str, str], ...]  # maxBorrowBase, maxBorrowQuote, mmr, imr, maxLever
    max_lever: str


_BTC_TIERS = (
    ("5", "300000", "0.04", "0.1", "10"),
    ("20", "1000000", "0.08", "0.2", "5"),
    ("60", "3000000", "0.15", "0.34", "3"),
)
_ETH_TIERS = (
    ("100", "300000", "0.04", "0.1", "10"),
    ("400", "1000000", "0.1", "0.25", "4"),
)
_ETH_BTC = (
    ("100", "5", "0.05", "0.2", "5"),
    ("300", "15", "0.1", "0.34", "3"),
)

INSTRUMENTS = {
    spec.inst_id: spec
    for spec in (
        InstSpec("BTC-USDT", "BTC", "USDT", Decimal("0.1"), Decimal("0.0001"), 1, Decimal(60000), _BTC_TIERS, "10"),
        InstSpec("ETH-USDT", "ETH", "USDT", Decimal("0.01"), Decimal("0.001"), 1, Decimal(3000), _ETH_TIERS, "10"),
        InstSpec("ETH-BTC", "ETH", "BTC", Decimal("0.00001"), Decimal("0.001"), 10, Decimal("0.05"), _ETH_BTC, "5"),
    )
}


class Scenario:
    """A command log: ``lines[:prelude]`` list and fund things, the rest is the random mix.

    (A plain class, not a dataclass, so that Hypothesis prints a falsifying example through
    :meth:`__repr__`: the JSONL lines, ready to paste into a file for ``marginbook run``.)
    """

    __slots__ = ("lines", "prelude")

    def __init__(self, lines: tuple[bytes, ...], prelude: int) -> None:
        self.lines = lines
        self.prelude = prelude

    def commands(self) -> list[Command]:
        return [decode_command_json(raw) for raw in self.lines]

    def __repr__(self) -> str:  # the falsifying example, ready to paste into a .jsonl file
        body = "\n".join(raw.decode() for raw in self.lines)
        return f"Scenario(prelude={self.prelude}, lines=<<<\n{body}\n>>>)"


@dataclass
class _Model:
    """What the generator remembers to make plausible draws."""

    draw: st.DrawFn
    insts: list[InstSpec]
    accounts: list[str]
    maker_fee: str
    taker_fee: str
    ts: int = T0
    n_ids: int = 0
    n_orders: int = 0
    marks: dict[str, Decimal] = field(default_factory=dict)
    #: Rough worth of each account's deposits, in USDT at the first marks (sizes leverage).
    usdt: dict[str, Decimal] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    emitted: list[Json] = field(default_factory=list)
    cl_ord_ids: list[tuple[str, str, str]] = field(default_factory=list)
    #: Instruments (``X-USDT``) whose base the generator's leveraged longs / shorts are exposed to.
    longs: list[str] = field(default_factory=list)
    shorts: list[str] = field(default_factory=list)

    # --- plumbing ---------------------------------------------------------------------------

    def emit(self, obj: Json, with_id: bool = True) -> None:
        self.ts += self.draw(st.integers(0, 5_000))
        head: Json = {"type": obj.pop("type"), "ts": self.ts}
        if with_id:
            self.n_ids += 1
            head["id"] = f"c{self.n_ids}"
            self.ids.append(head["id"])
        head.update(obj)
        self.emitted.append(head)

    def acct(self) -> str:
        return self.draw(st.sampled_from(self.accounts))

    def inst(self) -> InstSpec:
        return self.draw(st.sampled_from(self.insts))

    def ccy(self) -> str:
        return self.draw(st.sampled_from(sorted({c for i in self.insts for c in (i.base, i.quote)})))

    def px_near(self, inst: InstSpec, max_bps: int = 150) -> Decimal:
        """A price on the tick within ``max_bps`` basis points of the current mark."""
        bps = self.draw(st.integers(-max_bps, max_bps))
        raw = self.marks[inst.inst_id] * (1 + Decimal(bps) / 10_000)
        px = (raw / inst.tick).to_integral_value(rounding=ROUND_FLOOR) * inst.tick
        return max(px, inst.tick)

    def sz_lots(self, inst: InstSpec, lots: int) -> Decimal:
        return max(lots, inst.min_lots) * inst.lot

    def small_sz(self, inst: InstSpec) -> Decimal:
        # ~ 30 .. 30 000 USDT of notional, skewed to small
        value = self.draw(st.sampled_from([30, 100, 300, 1_000, 3_000, 10_000, 30_000]))
        lots = int(Decimal(value) / self._usdt_px(inst) / inst.lot)
        lots = self.draw(st.integers(1, max(1, lots)))
        return self.sz_lots(inst, lots)

    def _usdt_px(self, inst: InstSpec) -> Decimal:
        if inst.quote == "USDT":
            return self.marks[inst.inst_id]
        return self.marks[inst.inst_id] * self.marks.get(f"{inst.quote}-USDT", Decimal(60000))

    def new_cl_ord_id(self, acct: str, inst: InstSpec) -> str:
        if self.cl_ord_ids and self.draw(st.integers(0, 19)) == 0:  # reuse: duplicate_clordid if it rests
            return self.draw(st.sampled_from(self.cl_ord_ids))[2]
        self.n_orders += 1
        cl = f"{acct[0]}{self.n_orders}"
        self.cl_ord_ids.append((acct, inst.inst_id, cl))
        return cl

    def order(
        self, acct: str, inst: InstSpec, side: str, ord_type: str, td_mode: str, sz: Decimal, px: Decimal | None
    ) -> None:
        obj: Json = {
            "type": "place_order",
            "acct": acct,
            "instId": inst.inst_id,
            "clOrdId": self.new_cl_ord_id(acct, inst),
            "side": side,
            "ordType": ord_type,
            "sz": dec_str(sz),
            "tdMode": td_mode,
        }
        if px is not None:
            obj["px"] = dec_str(px)
        self.emit(obj)

    # --- the prelude ------------------------------------------------------------------------

    def prelude(self) -> None:
        ccys: list[str] = []
        for inst in self.insts:
            for c in (inst.quote, inst.base):
                if c not in ccys:
                    ccys.append(c)
        for c in ccys:
            self.emit({"type": "list_asset", "ccy": c, "decimals": 8})
        for inst in self.insts:
            self.emit(
                {
                    "type": "list_instrument",
                    "instId": inst.inst_id,
                    "instType": "SPOT",
                    "baseCcy": inst.base,
                    "quoteCcy": inst.quote,
                    "tickSz": dec_str(inst.tick),
                    "lotSz": dec_str(inst.lot),
                    "minSz": dec_str(inst.lot * inst.min_lots),
                    "makerFee": self.maker_fee,
                    "takerFee": self.taker_fee,
                    "maxLever": inst.max_lever,
                    "liqFee": self.draw(st.sampled_from(["0", "0.005", "0.02"])),
                    "tiers": [
                        {"tier": n, "maxBorrowBase": b, "maxBorrowQuote": q, "mmr": m, "imr": i, "maxLever": lv}
                        for n, (b, q, m, i, lv) in enumerate(inst.tiers, start=1)
                    ],
                }
            )
        for c in ccys:
            rate = self.draw(st.sampled_from(["0", "0.0001", "0.0005", "0.002", "0.01"]))
            policy = {
                "accrual": self.draw(st.sampled_from(["hourly", "hourly", "at_borrow_and_hourly"])),
                "compounding": self.draw(st.sampled_from(["simple", "simple", "capitalise"])),
            }
            self.emit({"type": "set_interest_rate", "ccy": c, "dailyRate": rate, **policy})
        for inst in self.insts:
            pct = self.draw(st.integers(80, 120))
            mark = (inst.mark * pct / 100 / inst.tick).to_integral_value() * inst.tick
            self.marks[inst.inst_id] = mark
            self.emit({"type": "mark_price", "instId": inst.inst_id, "markPx": dec_str(mark)}, with_id=False)
        for acct in self.accounts:
            usdt = Decimal(self.draw(st.sampled_from([1_000, 5_000, 20_000, 100_000, 500_000])))
            self.usdt[acct] = usdt
            self.emit({"type": "deposit", "acct": acct, "ccy": "USDT", "amt": dec_str(usdt)})
            for c in ccys[1:]:
                if self.draw(st.booleans()):
                    value = Decimal(self.draw(st.sampled_from([500, 3_000, 15_000, 60_000])))
                    amt = (value / self.marks[f"{c}-USDT"]).quantize(Decimal("1e-8"), rounding=ROUND_FLOOR)
                    self.usdt[acct] += value
                    self.emit({"type": "deposit", "acct": acct, "ccy": c, "amt": dec_str(amt)})

    # --- the random mix ---------------------------------------------------------------------

    def op_order(self) -> None:
        inst = self.inst()
        ord_type = self.draw(st.sampled_from(["limit", "limit", "market", "post_only", "ioc", "fok"]))
        px = None if ord_type == "market" else self.px_near(inst)
        self.order(
            self.acct(),
            inst,
            self.draw(st.sampled_from(["buy", "sell"])),
            ord_type,
            self.draw(st.sampled_from(["cash", "cash", "cross"])),
            self.small_sz(inst),
            px,
        )

    def op_quote(self) -> None:
        """A market maker: resting limit bids and asks a few ticks around the mark."""
        acct, inst = self.acct(), self.inst()
        td_mode = self.draw(st.sampled_from(["cash", "cash", "cross"]))
        for _ in range(self.draw(st.integers(1, 3))):
            for side in ("buy", "sell"):
                bps = self.draw(st.integers(1, 80))
                offset = self.marks[inst.inst_id] * Decimal(bps) / 10_000
                raw = self.marks[inst.inst_id] + (-offset if side == "buy" else offset)
                px = max(inst.tick, (raw / inst.tick).to_integral_value(rounding=ROUND_FLOOR) * inst.tick)
                self.order(acct, inst, side, "limit", td_mode, self.small_sz(inst), px)

    def op_leveraged(self) -> None:
        """A counterparty funds and rests liquidity near the mark, then an account takes it with a
        cross order several times its USDT: a leveraged long (buy, borrows quote) or short (sell,
        borrows base). Crashes and spikes later put these positions into margin call."""
        acct, inst = self.acct(), self.inst()
        others = [a for a in self.accounts if a != acct]
        maker = self.draw(st.sampled_from(others))
        factor = Decimal(self.draw(st.sampled_from([2, 3, 5, 7, 9, 12])))
        notional = min(self.usdt.get(acct, Decimal(1000)) * factor, Decimal(280_000))
        sz = self.sz_lots(inst, int(notional / self._usdt_px(inst) / inst.lot))
        side = self.draw(st.sampled_from(["buy", "buy", "sell"]))
        maker_px = self.px_near(inst, 20)
        if side == "buy":
            self.emit({"type": "deposit", "acct": maker, "ccy": inst.base, "amt": dec_str(sz)})
            self.order(maker, inst, "sell", "limit", "cash", sz, maker_px)
        else:
            amt = (sz * maker_px).quantize(Decimal("1e-8"))
            self.emit({"type": "deposit", "acct": maker, "ccy": inst.quote, "amt": dec_str(amt)})
            self.order(maker, inst, "buy", "limit", "cash", sz, maker_px)
        ord_type = self.draw(st.sampled_from(["market", "ioc", "limit", "fok"]))
        slip = inst.tick * self.draw(st.integers(0, 5))
        px = None if ord_type == "market" else (maker_px + slip if side == "buy" else max(inst.tick, maker_px - slip))
        if self.draw(st.integers(0, 3)) == 0:  # sometimes more than the liquidity on offer
            sz += self.sz_lots(inst, self.draw(st.integers(1, 1000)))
        self.order(acct, inst, side, ord_type, "cross", sz, px)
        exposed = f"{inst.base}-USDT"
        (self.longs if side == "buy" else self.shorts).append(exposed)
        if self.draw(st.integers(0, 2)) == 0:  # the market turns against it right away
            mild = self.draw(st.booleans())
            moves = ((880, 990), (1010, 1120)) if mild else ((500, 880), (1120, 1500))
            self.op_mark(*moves[0 if side == "buy" else 1], exposed=[exposed])

    def op_cancel(self) -> None:
        if self.cl_ord_ids and self.draw(st.integers(0, 9)) > 0:
            acct, inst_id, cl = self.draw(st.sampled_from(self.cl_ord_ids))
        else:
            acct, inst_id, cl = self.acct(), self.inst().inst_id, "nope"
        self.emit({"type": "cancel_order", "acct": acct, "instId": inst_id, "clOrdId": cl})

    def _amount(self, ccy: str) -> str:
        if ccy == "USDT":
            return str(self.draw(st.sampled_from(["10", "250.5", "1000", "5000", "40000", "250000"])))
        return str(self.draw(st.sampled_from(["0.001", "0.05", "0.3", "1", "4.5", "30"])))

    def op_funds(self, kind: str) -> None:
        ccy = self.ccy()
        self.emit({"type": kind, "acct": self.acct(), "ccy": ccy, "amt": self._amount(ccy)})

    def op_mark(self, lo: int, hi: int, exposed: list[str] | None = None) -> None:
        """Move one mark by ``lo..hi`` per mille; crashes and spikes mostly hit exposed assets."""
        inst = self.inst()
        if exposed and self.draw(st.integers(0, 4)):
            inst = INSTRUMENTS[self.draw(st.sampled_from(exposed))]
        pct = Decimal(self.draw(st.integers(lo, hi)))
        mark = max(inst.tick, (self.marks[inst.inst_id] * pct / 1000 / inst.tick).to_integral_value() * inst.tick)
        self.marks[inst.inst_id] = mark
        self.emit(
            {"type": "mark_price", "instId": inst.inst_id, "markPx": dec_str(mark)}, with_id=self.draw(st.booleans())
        )

    def op_accrue(self) -> None:
        self.emit({"type": "accrue_interest"}, with_id=self.draw(st.booleans()))

    def op_leverage(self) -> None:
        inst = self.inst()
        lever = self.draw(st.sampled_from(["1", "2", "3", "5", inst.max_lever]))
        acct = self.acct()
        self.emit({"type": "set_leverage", "acct": acct, "instId": inst.inst_id, "mgnMode": "cross", "lever": lever})

    def op_duplicate(self) -> None:
        """Re-send an earlier command with its id (a retry), or a new command under an old id."""
        with_ids = [c for c in self.emitted if "id" in c]
        old = self.draw(st.sampled_from(with_ids))
        if self.draw(st.booleans()):
            self.ts += 1
            self.emitted.append({**old, "ts": self.ts})
        else:
            ccy = self.ccy()
            self.ts += 1
            self.emitted.append(
                {"type": "deposit", "ts": self.ts, "id": old["id"], "acct": self.acct(), "ccy": ccy, "amt": "1"}
            )

    def op_invalid(self) -> None:
        """A command that decodes but that the engine must refuse."""
        inst = self.inst()
        acct = self.acct()
        kind = self.draw(
            st.sampled_from(
                ["off_tick", "off_lot", "unknown_inst", "unknown_asset", "precision", "zero_sz", "market_px", "no_px"]
            )
        )
        px = self.px_near(inst)
        sz = self.small_sz(inst)
        base: Json = {
            "type": "place_order",
            "acct": acct,
            "instId": inst.inst_id,
            "clOrdId": self.new_cl_ord_id(acct, inst),
            "side": self.draw(st.sampled_from(["buy", "sell"])),
            "ordType": "limit",
            "sz": dec_str(sz),
            "tdMode": self.draw(st.sampled_from(["cash", "cross"])),
            "px": dec_str(px),
        }
        if kind == "off_tick":
            base["px"] = dec_str(px + inst.tick / 2)
        elif kind == "off_lot":
            base["sz"] = dec_str(sz + inst.lot / 2)
        elif kind == "unknown_inst":
            base["instId"] = "DOGE-USDT"
        elif kind == "zero_sz":
            base["sz"] = "0"
        elif kind == "market_px":
            base["ordType"] = "market"
        elif kind == "no_px":
            del base["px"]
        elif kind == "unknown_asset":
            base = {"type": self.draw(st.sampled_from(["deposit", "withdraw", "borrow"])), "acct": acct}
            base.update({"ccy": "XRP", "amt": "1"})
        else:  # precision: 9 decimals for an 8-decimal asset
            base = {"type": self.draw(st.sampled_from(["deposit", "withdraw", "borrow", "repay"])), "acct": acct}
            base.update({"ccy": self.ccy(), "amt": "1.000000001"})
        self.emit(base)

    def op_reduce(self) -> None:
        """A reduce-only cross order (the engine refuses it unless it shrinks a position)."""
        acct, inst = self.acct(), self.inst()
        side = self.draw(st.sampled_from(["buy", "sell"]))
        obj: Json = {
            "type": "place_order",
            "acct": acct,
            "instId": inst.inst_id,
            "clOrdId": self.new_cl_ord_id(acct, inst),
            "side": side,
            "ordType": self.draw(st.sampled_from(["market", "ioc", "limit"])),
            "sz": dec_str(self.small_sz(inst)),
            "tdMode": "cross",
            "reduceOnly": True,
        }
        if obj["ordType"] != "market":
            obj["px"] = dec_str(self.px_near(inst))
        self.emit(obj)

    def op(self) -> None:
        kind = self.draw(_OPS)
        if kind == "order":
            self.op_order()
        elif kind == "quote":
            self.op_quote()
        elif kind == "leveraged":
            self.op_leveraged()
        elif kind == "cancel":
            self.op_cancel()
        elif kind in ("borrow", "repay", "withdraw", "deposit"):
            self.op_funds(kind)
        elif kind == "mark":
            self.op_mark(970, 1030)
        elif kind == "dip":
            self.op_mark(880, 990, self.longs)
        elif kind == "pop":
            self.op_mark(1010, 1120, self.shorts)
        elif kind == "crash":
            self.op_mark(300, 900, self.longs)
        elif kind == "spike":
            self.op_mark(1100, 2000, self.shorts)
        elif kind == "accrue":
            self.op_accrue()
        elif kind == "leverage":
            self.op_leverage()
        elif kind == "duplicate":
            self.op_duplicate()
        elif kind == "close":
            inst = self.inst()
            self.emit({"type": "close_position", "acct": self.acct(), "instId": inst.inst_id, "mgnMode": "cross"})
        elif kind == "reduce":
            self.op_reduce()
        else:
            self.op_invalid()


_WEIGHTS = {
    "order": 20,
    "quote": 10,
    "leveraged": 14,
    "cancel": 8,
    "mark": 8,
    "dip": 4,
    "pop": 2,
    "crash": 5,
    "spike": 3,
    "borrow": 4,
    "repay": 4,
    "withdraw": 3,
    "deposit": 2,
    "accrue": 4,
    "leverage": 2,
    "duplicate": 3,
    "invalid": 4,
    "close": 3,
    "reduce": 3,
}
_OPS = st.sampled_from([k for k, w in _WEIGHTS.items() for _ in range(w)])


@st.composite
def scenarios(draw: st.DrawFn, min_ops: int = 1, max_ops: int = 40) -> Scenario:
    """A realistic command log: prelude, deposits, then ``min_ops..max_ops`` random operations
    (an operation is one command, or a few for a market maker's quotes)."""
    with_eth_btc = draw(st.booleans())
    names = ["BTC-USDT", "ETH-USDT", *(["ETH-BTC"] if with_eth_btc else [])]
    if not with_eth_btc and draw(st.booleans()):
        names = ["BTC-USDT"]  # two assets only
    maker_fee, taker_fee = draw(st.sampled_from([("0.0008", "0.001"), ("-0.0002", "0.0005"), ("0", "0")]))
    n_accounts = draw(st.integers(3, 6))
    model = _Model(
        draw=draw,
        insts=[INSTRUMENTS[n] for n in names],
        accounts=list(ACCOUNTS[:n_accounts]),
        maker_fee=maker_fee,
        taker_fee=taker_fee,
    )
    # The engine makes an ``Inexact``-trapping context current; the generator rounds freely.
    with localcontext(Context(prec=50)):
        model.prelude()
        prelude = len(model.emitted)
        for _ in range(draw(st.integers(min_ops, max_ops))):
            model.op()
    return Scenario(tuple(line(obj) for obj in model.emitted), prelude)


# --- single commands and mutations (codec properties) -----------------------------------------


def required_fields(cmd: Command) -> list[str]:
    """Wire fields a command of this type cannot omit (``id`` too, except where optional)."""
    tag = cmd.__struct_config__.tag
    names = [f.encode_name for f in msgspec.structs.fields(type(cmd)) if f.required]
    if tag not in ("mark_price", "accrue_interest"):
        names.append("id")
    return names


COMMAND_TAGS = tuple(str(t.__struct_config__.tag) for t in COMMAND_TYPES)


def command_lines(max_ops: int = 12) -> st.SearchStrategy[bytes]:
    """One valid command line taken from a realistic scenario (any command type it contains)."""
    return scenarios(max_ops=max_ops).flatmap(lambda s: st.sampled_from(s.lines))


#: Field names whose values are identifiers or enumerations, not decimal strings.
_NON_DECIMAL = frozenset(
    {"type", "id", "acct", "ccy", "instId", "clOrdId", "side", "ordType", "tdMode", "instType"}
    | {"baseCcy", "quoteCcy", "settleCcy", "mgnMode", "posSide", "posMode", "action", "accrual", "compounding"}
)
#: Decimal fields whose pattern allows a minus sign.
_SIGNED = frozenset({"makerFee", "fundingRate"})
_NAMES = frozenset({"id", "acct", "ccy", "instId", "clOrdId", "baseCcy", "quoteCcy"})


def _fields(obj: Json, path: str = "$") -> list[tuple[str, tuple[Any, ...], str]]:
    """``(json path, key path, key)`` of every scalar field of a JSON command (tiers included)."""
    found: list[tuple[str, tuple[Any, ...], str]] = []
    for key, value in obj.items():
        if isinstance(value, list):
            for i, row in enumerate(value):
                if isinstance(row, dict):
                    found += [(p, (key, i, *k), name) for p, k, name in _fields(row, f"{path}.{key}[{i}]")]
        else:
            found.append((f"{path}.{key}", (key,), key))
    return found


def _set(obj: Json, keys: tuple[Any, ...], value: Any) -> None:
    target: Any = obj
    for k in keys[:-1]:
        target = target[k]
    target[keys[-1]] = value


def _delete(obj: Json, keys: tuple[Any, ...]) -> None:
    target: Any = obj
    for k in keys[:-1]:
        target = target[k]
    del target[keys[-1]]


@dataclass(frozen=True)
class Mutation:
    """A broken command: ``data`` must raise ``BadCommand``; ``field`` is the exact path it must
    name when the mutation targets one field (``None``: any ``$...`` path); ``obj`` is the mutated
    JSON object when there is one (then the same mutation is also sent as msgpack)."""

    kind: str
    original: bytes
    data: bytes
    field: str | None
    obj: Any = None


_BAD_DECIMALS = ["1e5", "1E-3", "NaN", "Infinity", "", " 1", "1 ", "1.", ".5", "0x10", "1,5", "+1", "01", "٣", "1" * 31]


@st.composite
def mutations(draw: st.DrawFn) -> Mutation:
    """A valid command line broken in one way (see :class:`Mutation`)."""
    raw = draw(command_lines())
    obj = json.loads(raw)
    cmd = decode_command_json(raw)
    kinds = ["number", "bad_decimal", "negative", "name", "ts", "missing", "unknown", "tag"]
    kinds += ["garbage", "truncated", "trailing", "not_object"]
    kind = draw(st.sampled_from(kinds))
    fields = [f for f in _fields(obj) if f[2] != "type"]
    decimals = [f for f in fields if isinstance(_get(obj, f[1]), str) and f[2] not in _NON_DECIMAL]
    if kind == "number":  # a decimal (or any string field) written as a JSON number
        path, keys, name = draw(st.sampled_from(decimals or fields))
        value = _get(obj, keys)
        number: Any
        if isinstance(value, str) and name not in _NON_DECIMAL:
            number = draw(st.sampled_from([float(value), int(Decimal(value))]))
        elif isinstance(value, str):
            number = draw(st.integers(-5, 10**6))
        else:  # ints and bools: a string instead
            number = str(value)
        _set(obj, keys, number)
        return Mutation(kind, raw, line(obj), path, obj)
    if kind == "bad_decimal" and decimals:
        path, keys, _ = draw(st.sampled_from(decimals))
        _set(obj, keys, draw(st.sampled_from(_BAD_DECIMALS)))
        return Mutation(kind, raw, line(obj), path, obj)
    unsigned = [f for f in decimals if f[2] not in _SIGNED]
    if kind == "negative" and unsigned:
        path, keys, _ = draw(st.sampled_from(unsigned))
        _set(obj, keys, "-" + _get(obj, keys))
        return Mutation(kind, raw, line(obj), path, obj)
    names = [f for f in fields if f[2] in _NAMES]
    if kind == "name" and names:  # empty or longer than 64 characters
        path, keys, _ = draw(st.sampled_from(names))
        _set(obj, keys, draw(st.sampled_from(["", "x" * 65])))
        return Mutation(kind, raw, line(obj), path, obj)
    if kind == "ts":
        obj["ts"] = draw(st.sampled_from([-1, 1.5, "1700000000000", True, None, [1], 2**64, 253_402_300_800_000]))
        return Mutation(kind, raw, line(obj), "$.ts", obj)
    if kind == "missing":
        name = draw(st.sampled_from(["type", *required_fields(cmd)]))
        del obj[name]
        return Mutation(kind, raw, line(obj), "$.id" if name == "id" else "$", obj)
    if kind == "unknown":
        known = {"type", *(f.encode_name for f in msgspec.structs.fields(type(cmd)))}
        name = draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in known))
        obj[name] = draw(st.sampled_from(["1", 1, None, [], {}]))
        return Mutation(kind, raw, line(obj), "$", obj)
    if kind == "tag":
        obj["type"] = draw(st.one_of(st.text(max_size=12).filter(lambda t: t not in COMMAND_TAGS), st.integers()))
        return Mutation(kind, raw, line(obj), "$.type", obj)
    if kind == "truncated":
        return Mutation(kind, raw, raw[: draw(st.integers(0, len(raw) - 1))], None)
    if kind == "trailing":
        return Mutation(kind, raw, raw + draw(st.sampled_from([b"x", b",", b"}", b"{}", b"\x00", b"\xff"])), None)
    if kind == "not_object":
        value = draw(st.sampled_from([[obj], "deposit", 1, None, True, []]))
        return Mutation(kind, raw, json.dumps(value).encode(), "$", value)
    return Mutation("garbage", raw, draw(st.binary(max_size=80)), None)


def _get(obj: Json, keys: tuple[Any, ...]) -> Any:
    target: Any = obj
    for k in keys:
        target = target[k]
    return target
