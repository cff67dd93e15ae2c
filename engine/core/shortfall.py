"""Who pays a liquidated account's remaining debt: the insurance fund, then the platform.

Spec §4 decision 5: a shortfall below zero equity is covered by the insurance fund of that
currency. **When the fund is empty** (or holds less than the shortfall) the fund pays what it
has — it never goes below zero — and the platform writes the rest off (``debt_written_off``),
kept per currency in ``State.written_off``: the lender of a spot-margin loan is the platform,
so an unpaid loan is its loss; for perpetuals the same record stands where venues would run
auto-deleveraging, which this engine does not do (``docs/margin-model.md``). Either way the
account ends the liquidation owing nothing, and conservation holds with the written-off total
as a source of funds.
"""

from __future__ import annotations

from decimal import Decimal

from engine.core.context import Ctx
from engine.core.money import ZERO
from events import journal as ev


def cover_shortfall(ctx: Ctx, acct: str, ccy: str, amt: Decimal, inst_id: str = "", pos_side: str = "") -> None:
    """Pay ``amt`` of ``ccy`` into the account (or the isolated position ``inst_id``): from the
    fund as far as its balance goes, the rest written off."""
    if amt <= 0:
        return
    fund = max(ZERO, ctx.state.insurance.get(ccy, ZERO))
    from_fund = min(fund, amt)
    if from_fund > 0:
        ctx.emit(ev.InsuranceFundCovered(acct=acct, ccy=ccy, amt=from_fund, instId=inst_id, posSide=pos_side))
    if amt > from_fund:
        ctx.emit(ev.DebtWrittenOff(acct=acct, ccy=ccy, amt=amt - from_fund, instId=inst_id, posSide=pos_side))
