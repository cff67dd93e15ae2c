"""The structured fuzz target's grammar: fuzzer bytes → a realistic command log (JSON lines).

An input is ``PREFIX \\0 GRAMMAR`` (no ``\\0``: all of it is ``GRAMMAR``):

* ``PREFIX`` is JSON lines stepped in order (the seeds put a golden scenario or a piece of
  ``bench/flow.py``'s flow there, so the grammar starts from positions near liquidation);
  after each, the grammar may insert one drawn command — most often the same line again, so a
  golden scenario's marks get sent twice;
* ``GRAMMAR`` is read by :class:`atheris.FuzzedDataProvider` (integers come from the *end* of
  the bytes): each draw picks the next command and its fields. With no instrument known yet (an
  empty prefix), a listing prelude comes first — assets, SPOT and SWAP instruments with tier
  tables, rates, marks, deposits, a market maker — every field at its realistic default unless
  the listing is drawn "edgy".

The grammar keeps a rough model of the market (listed assets and instruments, last marks,
accounts, ``clOrdId`` s, position modes), learnt from the prefix and from what it wrote, only to
make draws plausible: prices in ticks around the mark, sizes in lots worth a share of a typical
deposit. It never asks the engine, so the same bytes always give the same lines.

Numbers are drawn near the boundaries the engine must get right (:meth:`Grammar.number`): exact
multiples of the tick or lot and one step off them, one digit finer than the grid, zero, the
smallest and the largest decimal the wire carries (18 digits each side), a few "negative" or
malformed strings (the codec must refuse those with ``BadCommand``). Marks jump (×0.5 … ×10),
step by ticks, and repeat exactly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Context, Decimal, localcontext
from typing import Any, TypeVar

import atheris
import msgspec

from events.codec import BadCommand, decode_command_json

Json = dict[str, Any]
T = TypeVar("T")

#: The generator's own arithmetic (the engine installs a trapping context for its thread).
_CTX = Context(prec=80)
T0 = 1_700_000_000_000
HOUR_MS = 3_600_000
#: Commands the grammar draws per input at most (the prefix comes on top).
MAX_OPS = 160
ACCOUNTS = ("alice", "bob", "carol", "dave")
#: The account that quotes both sides (``Grammar.op_quote``), funded by the prelude.
MAKER = "mm"


def dec_str(value: Decimal) -> str:
    """Plain decimal string: no exponent, no trailing zeros ("0" for zero)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def line(obj: Json) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def split_input(data: bytes) -> tuple[list[bytes], bytes]:
    """``(prefix lines, grammar bytes)`` of one input (module doc)."""
    head, sep, tail = data.partition(b"\0")
    if not sep:
        return [], data
    return [raw for raw in head.split(b"\n") if raw.strip()], tail


@dataclass
class Inst:
    inst_id: str
    swap: bool
    base: str
    quote: str  # the settlement currency of a SWAP
    tick: Decimal
    lot: Decimal
    ct_val: Decimal = Decimal(1)


#: What orders go to when no instrument could be learnt (the engine refuses them).
_UNLISTED = Inst("NOPE-USDT", False, "NOPE", "USDT", Decimal("0.1"), Decimal("0.001"))

# Realistic listings (the defaults of the prelude), after tests/strategies.py.
_SPOT_TIERS = (
    ("5", "300000", "0.04", "0.1", "10"),
    ("20", "1000000", "0.08", "0.2", "5"),
    ("60", "3000000", "0.15", "0.34", "3"),
)
_SWAP_TIERS = (
    ("2000", "0.01", "0.05", "20"),
    ("6000", "0.02", "0.1", "10"),
    ("15000", "0.08", "0.2", "5"),
    ("40000", "0.12", "0.34", "3"),
)
#: (instId, base, quote, tick, lot, minSz, mark); a SWAP's quote is its settlement currency.
_SPOTS = (
    ("BTC-USDT", "BTC", "USDT", "0.1", "0.0001", "0.0001", "60000"),
    ("ETH-USDT", "ETH", "USDT", "0.01", "0.001", "0.001", "3000"),
    ("ETH-BTC", "ETH", "BTC", "0.00001", "0.001", "0.01", "0.05"),
)
_SWAP = ("BTC-USDT-SWAP", "BTC", "USDT", "0.1", "1", "1", "60000", "0.001")
#: Typical deposit of each default asset (sizes are drawn as shares of it).
_TYPICAL = {"USDT": Decimal(10000), "BTC": Decimal("0.2"), "ETH": Decimal(3)}

_TICKS = ("1", "0.5", "0.01", "0.00000001", "10", "0.3", "0")
_DECIMALS = (0, 2, 6, 16, 18)
_FEES = ("0", "0.0002", "0.001", "0.01", "0.5", "0.9999")
_MAKER_FEES = ("0", "-0.0001", "-0.001", "0.0008", "0.01", "-0.9999", "-1")
_LEVERS = ("1", "2", "3", "5", "10", "20", "50", "100", "125", "1.5", "0.5", "0", "1000")
_RATES = ("0", "0.0001", "-0.0001", "0.0003", "-0.00375", "0.01", "-0.05", "0.75", "-0.999999", "999999")
_DAILY = ("0.0001", "0.0005", "0.001", "0.01", "0.1", "0", "0.999999", "1")
_FACTORS = tuple(
    Decimal(f)
    for f in ("1", "0.5", "0.8", "0.9", "0.95", "0.99", "0.999", "1.001", "1.01", "1.05", "1.1", "1.25", "2", "10")
)
#: Order values as shares of a typical deposit (leverage up to 20×).
_SHARES = tuple(Decimal(f) for f in ("0.1", "0.01", "0.3", "0.05", "1", "0.5", "2", "3", "10", "20"))
_BAD = ("-1", "1e3", "", "0.1234567890123456789", "1" * 19, "NaN", " 1")


@dataclass
class Grammar:
    """Draws commands from ``fdp``; ``lines`` holds what was written (module doc)."""

    fdp: Any
    lines: list[bytes] = field(default_factory=list)
    assets: dict[str, int] = field(default_factory=dict)
    insts: dict[str, Inst] = field(default_factory=dict)
    marks: dict[str, Decimal] = field(default_factory=dict)
    typical: dict[str, Decimal] = field(default_factory=dict)
    accounts: list[str] = field(default_factory=lambda: list(ACCOUNTS))
    hedged: set[str] = field(default_factory=set)
    orders: list[tuple[str, str, str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    ts: int = T0
    n: int = 0
    #: Draw odd reference data (:meth:`odd`) for the listing being written.
    edgy: bool = False

    # --- bytes → choices ------------------------------------------------------------------

    def draw(self, lo: int, hi: int) -> int:
        return int(self.fdp.ConsumeIntInRange(lo, hi))

    def pick(self, options: Sequence[T]) -> T:
        return options[self.draw(0, len(options) - 1)]

    def chance(self, eighths: int) -> bool:
        """True with probability ``eighths``/8 (on random bytes); False when out of bytes."""
        return self.draw(0, 7) >= 8 - eighths

    def vary(self, normal: T, edges: Sequence[T]) -> T:
        """``normal`` for most bytes (and 0), else one of ``edges``."""
        return self.pick(edges) if self.chance(1) else normal

    def odd(self, normal: T, edges: Sequence[T]) -> T:
        """Like :meth:`vary`, for reference data: ``normal`` unless the listing being drawn is
        an edgy one (``self.edgy``), so that most listings are accepted and a few probe the
        listing rules."""
        return self.pick(edges) if self.edgy and self.chance(2) else normal

    def number(self, unit: Decimal, ref: Decimal) -> str:
        """A decimal string near the interesting boundaries for a quantity on a grid of ``unit``
        (tick, lot, asset quantum) whose typical value is ``ref``. Kinds (weights of 64): on the
        grid at ``ref`` × a factor ± 2 steps (48), 0–3 steps (3), one digit finer than the grid
        (3), the smallest decimal 10⁻ᵈ (1), the largest the wire carries (2), a power of ten or
        one step below it (1), zero (1), raw digits at a raw scale (2), negative (1), malformed
        (2)."""
        kind = self.draw(0, 63)
        with localcontext(_CTX):
            if kind < 48:
                target = ref * (self.pick(_FACTORS) if kind >= 24 else 1)
                steps = (target / unit).to_integral_value(ROUND_FLOOR) + self.draw(-2, 2)
                return dec_str(max(steps, Decimal(0)) * unit)
            if kind < 51:
                return dec_str(self.draw(0, 3) * unit)
            if kind < 54:
                steps = (ref / unit).to_integral_value(ROUND_FLOOR)
                return dec_str(max(steps * unit + self.pick((1, -1)) * unit / 10, Decimal(0)))
            if kind == 54:
                return dec_str(Decimal(1).scaleb(-self.draw(0, 18)))
            if kind < 57:
                return self.pick(("999999999999999999", "100000000000000000", "999999999999999999.999999999999999999"))
            if kind == 57:
                return dec_str(Decimal(10) ** self.draw(6, 17) - (unit if self.chance(4) else 0))
            if kind == 58:
                return "0"
            if kind < 61:
                return dec_str(Decimal(self.draw(0, 2**40)).scaleb(-self.draw(0, 18)))
            if kind == 61:
                return "-" + dec_str(ref)
            return self.pick(_BAD)

    # --- the model ------------------------------------------------------------------------

    def observe(self, obj: Json) -> None:
        """Learn from a command (prefix or written) what later draws need."""
        kind = obj.get("type")
        self.ts = max(self.ts, int(obj.get("ts", 0)))
        if isinstance(obj.get("id"), str):
            self.ids.append(obj["id"])
        if kind == "list_asset":
            self.assets.setdefault(obj["ccy"], obj["decimals"])
        elif kind == "list_instrument":
            self._learn_instrument(obj)
        elif kind == "mark_price":
            mark = _dec(obj["markPx"], None)
            if mark is not None and mark > 0:
                self.marks[obj["instId"]] = mark
        elif kind == "deposit":
            if obj["acct"] not in self.accounts:
                self.accounts.append(obj["acct"])
            amt = _dec(obj["amt"], None)
            if amt is not None and amt > 0:  # the first deposit of a currency is typical
                self.typical.setdefault(obj["ccy"], amt)
        elif kind == "set_position_mode":
            (self.hedged.add if obj["posMode"] == "long_short_mode" else self.hedged.discard)(obj["acct"])
        elif kind == "place_order":
            self.orders.append((obj["acct"], obj["instId"], obj["clOrdId"]))

    def _learn_instrument(self, obj: Json) -> None:
        tick, lot = _dec(obj.get("tickSz"), None), _dec(obj.get("lotSz"), None)
        if obj["instId"] in self.insts or not tick or not lot:
            return
        swap = obj.get("instType") == "SWAP"
        base = obj.get("baseCcy") or obj["instId"].split("-")[0]
        quote = (obj.get("settleCcy") if swap else obj.get("quoteCcy")) or "USDT"
        ct_val = _dec(obj.get("ctVal"), None) or Decimal(1)
        self.insts[obj["instId"]] = Inst(obj["instId"], swap, base, quote, tick, lot, ct_val)

    def emit(self, kind: str, *, with_id: bool = True, at: int | None = None, **fields: Any) -> None:
        """Write one command: ``ts`` mostly a second later (sometimes the same ms, a minute or
        an hour later, or a second earlier) unless ``at`` is given."""
        if at is None:
            at = max(self.ts + self.pick((1000, 1000, 1000, 1000, 1, 0, 60_000, 3_600_000, -1000)), 0)
        self.ts = at
        obj: Json = {"type": kind, "ts": self.ts}
        if with_id:
            self.n += 1
            obj["id"] = f"fz{self.n}"
        obj.update({k: v for k, v in fields.items() if v is not None})
        self.lines.append(line(obj))
        self.observe(obj)

    # --- drawing the log ------------------------------------------------------------------

    def build(self, prefix: Sequence[bytes] = ()) -> list[bytes]:
        """The prefix lines in order, each possibly followed by one drawn command — most often
        an exact repeat of it (a mark sent twice) — then, after a listing prelude if nothing is
        listed yet, drawn commands until the bytes run out or :data:`MAX_OPS` were drawn."""
        drawn = 0
        for raw in prefix:
            self.lines.append(raw)
            try:  # the model learns only from lines the codec accepts
                self.observe(msgspec.to_builtins(decode_command_json(raw)))
            except BadCommand:
                continue
            if self.insts and self.fdp.remaining_bytes() and self.chance(1):
                getattr(self, "op_" + ("repeat" if self.chance(4) else self.pick(_OPS)))()
                drawn += 1
        if not self.insts:
            self.prelude()
        while self.fdp.remaining_bytes() and drawn < MAX_OPS:
            getattr(self, "op_" + self.pick(_OPS))()
            drawn += 1
        return self.lines

    def prelude(self) -> None:
        self.edgy = self.draw(0, 15) == 15
        for ccy in ("USDT", "BTC", "ETH"):
            discount = self.odd(None, ("0.9", "0.5", "0", "1", "1.5"))  # decision 35
            self.emit("list_asset", ccy=ccy, decimals=self.odd(8, _DECIMALS), discount=discount)
            self.typical.setdefault(ccy, _TYPICAL[ccy])
        for inst_id, base, quote, tick, lot, min_sz, mark in _SPOTS:
            if inst_id != "BTC-USDT" and self.chance(2):
                continue
            self.list_spot(inst_id, base, quote, tick, lot, min_sz)
            self.emit("mark_price", with_id=False, instId=inst_id, markPx=self.odd(mark, ("1", "0.1", "1000000")))
        if not self.chance(1):
            inst_id, base, settle, tick, lot, min_sz, mark, ct_val = _SWAP
            self.list_swap(inst_id, base, settle, tick, lot, min_sz, ct_val)
            self.emit("mark_price", with_id=False, instId=inst_id, markPx=self.odd(mark, ("1", "0.1")))
        for ccy in ("USDT", "BTC"):
            if self.chance(5):
                self.emit("set_interest_rate", ccy=ccy, dailyRate=self.odd("0.0005", _DAILY))
        for ccy in ("USDT", "BTC", "ETH"):  # the market maker (``op_quote``)
            self.emit("deposit", acct=MAKER, ccy=ccy, amt=dec_str(self.typical[ccy] * 1000))
        for acct in self.accounts:
            for ccy in ("USDT", "BTC", "ETH"):
                if ccy == "USDT" or self.chance(3):
                    typical = self.typical[ccy]
                    self.emit("deposit", acct=acct, ccy=ccy, amt=dec_str(typical * self.pick((10, 1, 3, 100))))

    def list_spot(self, inst_id: str, base: str, quote: str, tick: str, lot: str, min_sz: str) -> None:
        self.edgy = self.chance(1)
        rows = [
            {
                "tier": i + 1,
                "maxBorrowBase": self.odd(b, ("0", b + "0")),
                "maxBorrowQuote": q,
                "mmr": self.odd(m, ("0", "1", "0.5")),
                "imr": self.odd(i_, ("0.04", "1", "0.05")),
                "maxLever": self.odd(lv, _LEVERS),
            }
            for i, (b, q, m, i_, lv) in enumerate(_SPOT_TIERS[: self.odd(3, (1, 2))])
        ]
        self.emit(
            "list_instrument",
            instId=inst_id,
            instType="SPOT",
            baseCcy=base,
            quoteCcy=quote,
            tickSz=self.odd(tick, _TICKS),
            lotSz=self.odd(lot, _TICKS),
            minSz=self.odd(min_sz, _TICKS),
            makerFee=self.odd("0.0008", _MAKER_FEES),
            takerFee=self.odd("0.001", _FEES),
            maxLever=self.odd("10", _LEVERS),
            liqFee=self.odd(None, ("0", "0.01", "0.05")),
            tiers=rows,
        )

    def list_swap(self, inst_id: str, base: str, settle: str, tick: str, lot: str, min_sz: str, ct: str) -> None:
        self.edgy = self.chance(1)
        rows = [
            {
                "tier": i + 1,
                "maxSz": self.odd(sz, ("1", "0")),
                "mmr": self.odd(m, ("0.001", "0.5")),
                "imr": self.odd(i_, ("0.011", "1")),
                "maxLever": self.odd(lv, _LEVERS),
            }
            for i, (sz, m, i_, lv) in enumerate(_SWAP_TIERS[: self.odd(4, (1, 2, 3))])
        ]
        self.emit(
            "list_instrument",
            instId=inst_id,
            instType="SWAP",
            settleCcy=settle,
            ctVal=self.odd(ct, ("0.01", "1", "100", "0.00000001")),
            tickSz=self.odd(tick, _TICKS),
            lotSz=self.odd(lot, _TICKS),
            minSz=self.odd(min_sz, _TICKS),
            makerFee=self.odd("0.0002", _MAKER_FEES),
            takerFee=self.odd("0.0005", _FEES),
            maxLever=self.odd("20", _LEVERS),
            liqFee=self.odd(None, ("0", "0.01")),
            tiers=rows,
        )

    # --- helpers for the ops --------------------------------------------------------------

    def inst(self) -> Inst:
        """Mostly one of the first three instruments listed (the prelude's or the prefix's,
        which are accepted), sometimes any (late listings may have been refused)."""
        known = list(self.insts.values()) or [_UNLISTED]
        return self.pick(known[:3] if self.chance(6) else known)

    def acct(self) -> str:
        return self.pick(self.accounts)

    def ccy(self) -> str:
        known = list(self.assets) or ["USDT"]
        return self.vary(self.pick(known), ("NOPE",))

    def quantum(self, ccy: str) -> Decimal:
        return Decimal(1).scaleb(-min(self.assets.get(ccy, 8), 18))

    def amount(self, ccy: str) -> str:
        return self.number(self.quantum(ccy), self.typical.get(ccy, Decimal(1000)))

    def mark_of(self, inst: Inst) -> Decimal:
        return self.marks.get(inst.inst_id) or inst.tick * 1000

    def size(self, inst: Inst) -> str:
        """Lots worth a share (1 % … 20×) of a typical deposit of the quote/settle currency."""
        with localcontext(_CTX):
            value = self.typical.get(inst.quote, Decimal(1000)) * self.pick(_SHARES)
            per_unit = self.mark_of(inst) * (inst.ct_val if inst.swap else 1)
            return self.number(inst.lot, value / per_unit if per_unit else inst.lot)

    def pos_side(self, acct: str, inst: Inst) -> str | None:
        if inst.swap and acct in self.hedged:
            return self.vary(self.pick(("long", "short")), ("net", None))
        return self.vary(None, ("net", "long", "short"))

    def mgn_mode(self) -> str:
        return self.pick(("cross", "isolated"))

    # --- the ops (one command each; ``_OPS`` weighs them) ---------------------------------

    def op_order(self) -> None:
        inst, acct = self.inst(), self.acct()
        ord_type = self.pick(("limit", "limit", "limit", "market", "post_only", "ioc", "fok"))
        modes = ("cross", "isolated", "cross") if inst.swap else ("cash", "cross", "isolated", "cash")
        td_mode = self.vary(self.pick(modes), ("cash", "cross", "isolated"))
        px = self.number(inst.tick, self.mark_of(inst)) if ord_type != "market" or self.chance(1) else None
        ccy = None
        if td_mode == "isolated" and not inst.swap:
            ccy = self.pick((inst.base, inst.quote, None))
        elif td_mode == "cross" and not inst.swap and self.chance(3):  # a cross margin currency
            ccy = self.vary(self.pick((inst.base, inst.quote)), ("USDT", "BTC", "ETH"))
        elif self.chance(1):
            ccy = self.pick((inst.base, inst.quote))
        cl_ord_id = self.pick(self.orders)[2] if self.orders and self.chance(1) else f"k{self.n + 1}"
        self.emit(
            "place_order",
            acct=acct,
            instId=inst.inst_id,
            clOrdId=cl_ord_id,
            side=self.pick(("buy", "sell")),
            ordType=ord_type,
            sz=self.size(inst),
            px=px,
            tdMode=td_mode,
            ccy=ccy,
            reduceOnly=True if self.draw(0, 15) == 15 else None,
            posSide=self.pos_side(acct, inst),
        )

    def op_quote(self) -> None:
        """The market maker quotes both sides a few ticks around the mark (liquidity for market
        orders, closes and liquidations)."""
        inst = self.inst()
        mark = self.mark_of(inst)
        for side, sign in (("buy", -1), ("sell", 1)):
            with localcontext(_CTX):
                px = max(mark + sign * self.draw(0, 6) * inst.tick, inst.tick)
            self.emit(
                "place_order",
                acct=MAKER,
                instId=inst.inst_id,
                clOrdId=f"k{self.n + 1}",
                side=side,
                ordType="limit",
                sz=self.size(inst),
                px=dec_str(px),
                tdMode="cross",
                posSide=self.pick(("long", "short")) if inst.swap and MAKER in self.hedged else None,
            )

    def op_cancel(self) -> None:
        if self.orders and not self.chance(1):
            acct, inst_id, cl_ord_id = self.pick(self.orders)
        else:
            acct, inst_id, cl_ord_id = self.acct(), self.inst().inst_id, "nope"
        self.emit("cancel_order", acct=acct, instId=inst_id, clOrdId=cl_ord_id)

    def op_mark(self) -> None:
        inst = self.inst()
        mark = self.mark_of(inst)
        how = self.draw(0, 5)
        if how == 0:  # repeat exactly
            px = dec_str(mark)
        elif how <= 2:  # jump by a factor
            with localcontext(_CTX):
                steps = (mark * self.pick(_FACTORS[1:]) / inst.tick).to_integral_value(ROUND_FLOOR)
                px = dec_str(max(steps, Decimal(1)) * inst.tick)
        elif how <= 4:  # a few ticks
            with localcontext(_CTX):
                px = dec_str(max(mark + self.draw(-5, 5) * inst.tick, inst.tick))
        else:
            px = self.number(inst.tick, mark)
        self.emit("mark_price", with_id=self.chance(1), instId=inst.inst_id, markPx=px)

    def op_deposit(self) -> None:
        ccy = self.ccy()
        self.emit("deposit", acct=self.vary(self.acct(), ("newcomer",)), ccy=ccy, amt=self.amount(ccy))

    def op_withdraw(self) -> None:
        ccy = self.ccy()
        self.emit("withdraw", acct=self.acct(), ccy=ccy, amt=self.amount(ccy))

    def op_borrow(self) -> None:
        ccy = self.ccy()
        self.emit("borrow", acct=self.acct(), ccy=ccy, amt=self.amount(ccy))

    def op_repay(self) -> None:
        ccy = self.ccy()
        self.emit("repay", acct=self.acct(), ccy=ccy, amt=self.amount(ccy))

    def op_adjust_margin(self) -> None:
        inst, acct = self.inst(), self.acct()
        ccy = inst.quote if inst.swap else self.pick((inst.base, inst.quote))
        self.emit(
            "adjust_margin",
            acct=acct,
            instId=inst.inst_id,
            posSide=self.pos_side(acct, inst) or "net",
            action=self.pick(("add", "reduce")),
            amt=self.amount(ccy),
            ccy=self.vary(None, (inst.base, inst.quote)),
        )

    def op_close(self) -> None:
        inst, acct = self.inst(), self.acct()
        self.emit(
            "close_position",
            acct=acct,
            instId=inst.inst_id,
            mgnMode=self.mgn_mode(),
            posSide=self.pos_side(acct, inst),
            ccy=self.vary(None, (inst.base, inst.quote)),
        )

    def op_leverage(self) -> None:
        inst, acct = self.inst(), self.acct()
        self.emit(
            "set_leverage",
            acct=acct,
            instId=inst.inst_id,
            mgnMode=self.mgn_mode(),
            lever=self.pick(_LEVERS),
            ccy=self.vary(None, (inst.base, inst.quote)),
            posSide=self.pos_side(acct, inst),
        )

    def op_position_mode(self) -> None:
        self.emit("set_position_mode", acct=self.acct(), posMode=self.pick(("long_short_mode", "net_mode")))

    def op_account_mode(self) -> None:
        """``set_account_mode`` (decision 35b): refused while SWAP positions or orders are open."""
        self.emit("set_account_mode", acct=self.acct(), acctMode=self.pick(("futures_wallet", "unified")))

    def op_transfer(self) -> None:
        """``transfer`` between the spot and futures wallets (decision 35c), mostly USDT."""
        ccy = self.vary("USDT", ("BTC", "ETH"))
        way = self.pick((("spot", "futures"), ("futures", "spot"), ("spot", "spot")))
        amt = self.amount(ccy)
        self.emit(
            "transfer",
            acct=self.vary(self.acct(), ("alice:futures",)),
            ccy=ccy,
            amt=amt,
            **{"from": way[0], "to": way[1]},
        )

    def op_accrue(self) -> None:
        hours = self.pick((1, 1, 0, 2, 24))
        self.emit("accrue_interest", with_id=self.chance(2), at=(self.ts // HOUR_MS + hours) * HOUR_MS)

    def op_rate(self) -> None:
        self.emit(
            "set_interest_rate",
            ccy=self.ccy(),
            dailyRate=self.pick(_DAILY),
            accrual=self.vary(None, ("hourly", "at_borrow_and_hourly")),
            compounding=self.vary(None, ("simple", "capitalise")),
        )

    def op_funding(self) -> None:
        swaps = [i for i in self.insts.values() if i.swap] or [self.inst()]
        self.emit("settle_funding", instId=self.pick(swaps).inst_id, fundingRate=self.pick(_RATES))

    def op_repeat(self) -> None:
        """Send the last line again: a mark or an accrual without id is a repeat, anything with
        an id a duplicate."""
        if self.lines:
            self.lines.append(self.lines[-1])

    def op_duplicate(self) -> None:
        """Send an earlier line again (same id: refused as a duplicate)."""
        if self.lines:
            self.lines.append(self.pick(self.lines))

    def op_listing(self) -> None:
        """A late listing: an asset, or an instrument on listed assets with odd parameters."""
        if self.chance(3):
            ccy = self.pick(("SOL", "USDC", "BTC"))
            self.emit("list_asset", ccy=ccy, decimals=self.pick(_DECIMALS))
            self.typical.setdefault(ccy, Decimal(100))
            return
        known = list(self.assets) or ["USDT"]
        base, quote = self.pick(known), self.pick(known)
        tick, lot = self.pick(_TICKS), self.pick(_TICKS)
        if self.chance(4):
            self.list_swap(f"{base}-{quote}-SWAP", base, quote, tick, lot, lot, self.pick(("1", "0.01", "10")))
        else:
            self.list_spot(f"{base}-{quote}", base, quote, tick, lot, lot)


_OPS: tuple[str, ...] = (
    *["order"] * 12,
    *["quote"] * 3,
    *["cancel"] * 2,
    *["mark"] * 5,
    *["deposit"] * 2,
    "withdraw",
    "borrow",
    "repay",
    "adjust_margin",
    "close",
    "leverage",
    "position_mode",
    "account_mode",
    *["transfer"] * 2,
    "accrue",
    "rate",
    "funding",
    "duplicate",
    "repeat",
    "listing",
)


def _dec(raw: Any, default: Decimal | None) -> Decimal | None:
    """``raw`` as a finite Decimal, else ``default`` (the model reads what it wrote, bad strings too)."""
    try:
        value = Decimal(raw) if isinstance(raw, str) else None
    except ArithmeticError:
        return default
    return value if value is not None and value.is_finite() else default


def build_lines(data: bytes) -> tuple[list[bytes], int]:
    """``(JSON command lines, cut)`` for one structured input: the prefix lines, then the
    grammar's; ``cut`` (0…255: the first draw, which ``FuzzedDataProvider`` takes from the
    *last* byte) says where to snapshot, as a share of the log."""
    prefix, rest = split_input(data)
    fdp = atheris.FuzzedDataProvider(rest)
    cut = int(fdp.ConsumeIntInRange(0, 255))
    return Grammar(fdp).build(prefix), cut
