"""Exact money: ``Decimal`` with explicit contexts and explicit rounding at every division.

Rules (``spec/domain.md`` §0.5):

* amounts the user **owes** (liabilities, interest, fees, required margin) round **up**
  (toward +∞) at the asset's precision;
* amounts the user **receives** round **down** (toward −∞);
* prices are integer multiples of the instrument's tick and sizes of its lot (validated at the
  door, never rounded).

Products and sums are computed in :data:`EXACT`, which traps ``Inexact``: an accidental rounding
would halt rather than drift. Its precision (:data:`EXACT_PRECISION`, 200 digits) is far above
what any chain of the engine's products needs — a wire decimal has at most 36 significant
digits (18 + 18), a directed quotient 50, and the longest chains (a risk band: a quotient times
a tier rate times a price and a size) stay below 160 — so a valid command is never halted for
want of digits (fuzz finding: a 36-digit mark times a borrow overflowed 50 digits and halted the
engine on every restart). Raising it changes no result: a product exact at 50 digits has the
same value at 200. Divisions use the directed
contexts :data:`UP` / :data:`DOWN`; a directed rounding at 50 digits followed by a directed
quantize in the same direction equals the exact directed rounding (ceil∘ceil = ceil), so the
two-step rounding below is exact.
"""

from __future__ import annotations

from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from typing import Final

PRECISION: Final = 50
#: Digits of :data:`EXACT` (products and sums; see the module doc).
EXACT_PRECISION: Final = 200

#: Products and sums that must be exact: any rounding raises ``decimal.Inexact``.
EXACT: Final = Context(
    prec=EXACT_PRECISION, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact]
)
#: Divisions for amounts owed.
UP: Final = Context(prec=PRECISION, rounding=ROUND_CEILING, traps=[InvalidOperation, DivisionByZero, Overflow])
#: Divisions for amounts received and for display values.
DOWN: Final = Context(prec=PRECISION, rounding=ROUND_FLOOR, traps=[InvalidOperation, DivisionByZero, Overflow])
#: Ratios shown to people (margin ratios): 50 significant digits, half-even.
NEAR: Final = Context(prec=PRECISION, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow])

ZERO: Final = Decimal(0)
ONE: Final = Decimal(1)

_QUANTA: Final = tuple(Decimal(1).scaleb(-d) for d in range(0, PRECISION + 1))


def quantum(decimals: int) -> Decimal:
    """``10**-decimals`` as a Decimal (``quantum(2) == Decimal("0.01")``)."""
    return _QUANTA[decimals]


def round_up(value: Decimal, decimals: int) -> Decimal:
    """Round toward +∞ at ``decimals`` places (amounts owed). Zero is always plain ``0``."""
    result = value.quantize(_QUANTA[decimals], rounding=ROUND_CEILING, context=UP)
    return result if result else ZERO


def round_down(value: Decimal, decimals: int) -> Decimal:
    """Round toward −∞ at ``decimals`` places (amounts received). Zero is always plain ``0``."""
    result = value.quantize(_QUANTA[decimals], rounding=ROUND_FLOOR, context=DOWN)
    return result if result else ZERO


def div_up(numerator: Decimal, denominator: Decimal, decimals: int) -> Decimal:
    """``numerator / denominator`` rounded toward +∞ at ``decimals`` places (exact ceiling)."""
    return round_up(UP.divide(numerator, denominator), decimals)


def div_down(numerator: Decimal, denominator: Decimal, decimals: int) -> Decimal:
    """``numerator / denominator`` rounded toward −∞ at ``decimals`` places (exact floor)."""
    return round_down(DOWN.divide(numerator, denominator), decimals)


def exponent_places(value: Decimal) -> int:
    """Number of decimal places a value is written with (``"0.010"`` → 3, ``"100"`` → 0)."""
    exp = value.as_tuple().exponent
    assert isinstance(exp, int)
    return max(0, -exp)


def is_multiple(value: Decimal, step: Decimal) -> bool:
    """True when ``value`` is an exact integer multiple of ``step`` (> 0)."""
    return (value % step) == 0


def plain_zero(value: Decimal) -> Decimal:
    """``0`` for any zero (``0E-8`` after exact subtraction), else the value unchanged: keeps
    zero amounts readable in events."""
    return value if value else ZERO


def fmt(value: Decimal | None) -> str:
    """Wire/view string of a decimal: plain notation, never exponent form; ``None`` → ``""``."""
    if value is None:
        return ""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def use_engine_context() -> None:
    """Make :data:`EXACT` this thread's decimal context: any bare operator that would round
    (a product past 200 digits, a non-terminating ``/``) raises instead of drifting. Called by
    every entry point that folds or decides (engine, projections, replay)."""
    from decimal import setcontext

    setcontext(EXACT.copy())
