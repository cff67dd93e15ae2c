"""Futures and spot wallets (seed 003; docs/decisions.md 35b, 35c), through commands and the
risk view. The seed's sentences, each shown by a test:

* "When you open a position, the system locks a portion of your Futures account balance as
  margin." — :func:`test_margin_is_locked_in_the_futures_wallet_and_closing_returns_it_there`
* "When you close, the locked margin is released and settled together with the profit or loss
  from that trade" / "After closing a position, funds remain in the Futures account. To move
  them to your Spot account, you will need to perform a manual transfer." — same test
* "the margin you just recovered from position A may be offset by the floating loss on
  position B" — :func:`test_transfer_refused_when_it_would_take_margin_a_position_needs`
* "Liquidation only occurs at the moment the account's total assets fall below the minimum
  maintenance margin requirement" (of the futures account: the spot wallet does not hold the
  position up) — :func:`test_a_futures_wallet_is_liquidated_on_its_own`

Listing (``_listed``): USDT (8 decimals, valuation), BTC, SPOT BTC-USDT, ``BTC-USDT-SWAP``
(ctVal 0.01 BTC, lot 1, maker fee 0, taker fee 0.05 %, maxLever 75, tier 1 mmr 1 % to 1,000
contracts); marks 60,000. ``mm`` is a unified market maker with 1,000,000 USDT.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from helpers import Harness, dec, events_of, only, rejection
from test_perpetuals import SWAP_TIERS
from test_properties import check_conservation

from engine.core import snapshot
from engine.core.state import State
from engine.core.step import fold
from events import journal as ev

D = Decimal
SWAP = "BTC-USDT-SWAP"
FUT = "alice:futures"


def _listed() -> Harness:
    h = Harness()
    h.list_asset("USDT", 8)
    h.list_asset("BTC", 8)
    h.list_spot("BTC-USDT")
    h.ok(
        "list_instrument", instId=SWAP, instType="SWAP", settleCcy="USDT", ctVal="0.01", tickSz="0.1", lotSz="1",
        minSz="1", makerFee="0", takerFee="0.0005", maxLever="75", tiers=SWAP_TIERS,
    )  # fmt: skip
    h.mark("60000")
    h.mark("60000", inst=SWAP)
    h.ok("deposit", acct="mm", ccy="USDT", amt="1000000")
    return h


def _split(h: Harness, acct: str, deposit: str, to_futures: str) -> None:
    h.ok("deposit", acct=acct, ccy="USDT", amt=deposit)
    out = h.ok("set_account_mode", acct=acct, acctMode="futures_wallet")
    assert only(events_of(out, ev.AccountModeSet)).acctMode == "futures_wallet"
    moved = only(events_of(h.ok("transfer", acct=acct, ccy="USDT", amt=to_futures, **_way("spot", "futures")),
                           ev.Transferred))  # fmt: skip
    assert (moved.acct, moved.amt, moved.source, moved.target) == (acct, D(to_futures), "spot", "futures")


def _way(source: str, target: str) -> dict[str, Any]:
    return {"from": source, "to": target}


def _flows(h: Harness) -> dict[str, Decimal]:
    return {"USDT": sum((e.amt for e in h.all_events() if isinstance(e, ev.Deposited)), D(0))}


def test_margin_is_locked_in_the_futures_wallet_and_closing_returns_it_there() -> None:
    """alice deposits 10,000 USDT, switches to futures_wallet, moves 7,000 to futures.

    Opening (isolated, 10×, maker at 60,000, 100 contracts = 1 BTC): the order freezes
    1·60,000/10 = 6,000 of the *futures* wallet (availBal 7,000 − 6,000 = 1,000); the fill
    posts it as the position's margin (futures cash 1,000); the spot wallet stays 3,000.
    Closing at 61,000 (close_position, taker): P&L 1·(61,000 − 60,000) = +1,000, fee
    1·61,000·0.0005 = 30.5; the margin released is 6,000 + 1,000 − 30.5 = 6,969.5, back to the
    futures wallet (1,000 + 6,969.5 = 7,969.5); spot still 3,000 until a transfer moves it:
    then 3,000 + 7,969.5 = 10,969.5 = 10,000 + 1,000 − 30.5."""
    h = _listed()
    _split(h, "alice", "10000", "7000")
    assert (h.account("alice").wallet, h.account("alice").acctMode) == ("spot", "futures_wallet")
    assert (h.account(FUT).wallet, h.account(FUT).acctMode) == ("futures", "futures_wallet")
    assert dec(h.balance_view("alice", "USDT").cashBal) == D(3000)
    futures = h.balance_view(FUT, "USDT")
    assert (dec(futures.cashBal), dec(futures.maxTransfer)) == (D(7000), D(7000))
    assert h.balance_view("alice", "USDT").maxTransfer == ""

    lever = h.ok("set_leverage", acct="alice", instId=SWAP, mgnMode="isolated", lever="10")
    assert only(events_of(lever, ev.LeverageSet)).acct == FUT  # SWAP settings are the futures wallet's
    rested = h.order("alice", "buy", "100", "60000", inst=SWAP, td_mode="isolated")
    accepted = only(events_of(rested, ev.OrderAccepted))
    assert (accepted.acct, accepted.frozen) == (FUT, D(6000))
    futures = h.balance_view(FUT, "USDT")
    assert (dec(futures.cashBal), dec(futures.availBal), dec(futures.maxTransfer)) == (D(7000), D(1000), D(1000))
    assert dec(h.balance_view("alice", "USDT").availBal) == D(3000)

    h.order("mm", "sell", "100", "60000", inst=SWAP, td_mode="cross")
    pos = h.position(FUT, SWAP)
    assert (dec(pos.pos), dec(pos.margin), pos.mgnMode) == (D(100), D(6000), "isolated")
    assert dec(h.balance_view(FUT, "USDT").cashBal) == D(1000)
    assert h.positions("alice") == []  # the position lives in the futures wallet
    assert rejection(h.send("transfer", acct="alice", ccy="USDT", amt="1000.01", **_way("futures", "spot"))).reason == (
        "insufficient_balance"
    )  # the position's margin cannot leave

    h.mark("61000", inst=SWAP)
    h.order("mm", "buy", "100", "61000", inst=SWAP, td_mode="cross")
    closed = h.ok("close_position", acct="alice", instId=SWAP, mgnMode="isolated")
    assert only([e for e in events_of(closed, ev.PnlRealised) if e.acct == FUT]).amt == D(1000)
    trade = only(events_of(closed, ev.Traded))
    assert (trade.takerAcct, trade.takerFee) == (FUT, D("30.5"))
    assert only([e for e in events_of(closed, ev.PositionReleased) if e.acct == FUT]).quote == D("6969.5")
    assert dec(h.balance_view(FUT, "USDT").cashBal) == D("7969.5")
    assert dec(h.balance_view("alice", "USDT").cashBal) == D(3000)
    check_conservation(h.state, _flows(h))

    h.ok("transfer", acct="alice", ccy="USDT", amt="7969.5", **_way("futures", "spot"))
    assert dec(h.balance_view("alice", "USDT").cashBal) == D("10969.5")
    assert dec(h.balance_view(FUT, "USDT").maxTransfer) == D(0)
    check_conservation(h.state, _flows(h))


def test_transfer_refused_when_it_would_take_margin_a_position_needs() -> None:
    """alice: 10,000 USDT, 2,000 moved to futures; cross 10×, long 10 contracts (0.1 BTC) at
    60,000 as maker (fee 0). Initial margin 0.1·60,000/10 = 600, equity 2,000: at most
    2,000 − 600 = 1,400 can move (maxTransfer); 1,400.01 is refused, naming the 600 needed.

    Mark 59,000: floating loss 0.1·(59,000 − 60,000) = −100, equity 1,900, initial margin
    0.1·59,000/10 = 590: at most 1,900 − 590 = 1,310 — the loss holds 90 of it down (seed 003:
    the recovered funds "held down by another open position"). 1,310 moves; the futures wallet
    keeps 690 = 590 + 100, and the spot wallet has 8,000 + 1,310 = 9,310."""
    h = _listed()
    _split(h, "alice", "10000", "2000")
    h.ok("set_leverage", acct="alice", instId=SWAP, mgnMode="cross", lever="10")
    h.order("alice", "buy", "10", "60000", inst=SWAP, td_mode="cross")
    h.order("mm", "sell", "10", "60000", inst=SWAP, td_mode="cross")
    assert dec(h.position(FUT, SWAP).pos) == D(10)
    assert dec(h.balance_view(FUT, "USDT").maxTransfer) == D(1400)
    refused = rejection(h.send("transfer", acct="alice", ccy="USDT", amt="1400.01", **_way("futures", "spot")))
    assert refused.reason == "insufficient_margin"
    assert "need 600 USDT of initial margin (equity 2000 USDT); at most 1400 USDT can move" in refused.message

    h.mark("59000", inst=SWAP)
    assert dec(h.balance_view(FUT, "USDT").maxTransfer) == D(1310)
    refused = rejection(h.send("transfer", acct="alice", ccy="USDT", amt="1310.01", **_way("futures", "spot")))
    assert "need 590 USDT of initial margin (equity 1900 USDT); at most 1310 USDT can move" in refused.message
    h.ok("transfer", acct="alice", ccy="USDT", amt="1310", **_way("futures", "spot"))
    assert dec(h.balance_view(FUT, "USDT").cashBal) == D(690)
    assert dec(h.balance_view(FUT, "USDT").maxTransfer) == D(0)
    assert dec(h.balance_view("alice", "USDT").cashBal) == D(9310)
    check_conservation(h.state, _flows(h))


def test_funding_and_fees_settle_in_the_futures_wallet() -> None:
    """alice (futures wallet 2,000) is the taker of a cross long of 10 contracts at 60,000: fee
    0.1·60,000·0.0005 = 3 from the futures wallet (1,997). Funding at +0.01 %: she pays
    0.1·60,000·0.0001 = 0.6 (1,996.4). Her spot wallet stays 8,000 throughout."""
    h = _listed()
    _split(h, "alice", "10000", "2000")
    h.order("mm", "sell", "10", "60000", inst=SWAP, td_mode="cross")
    h.order("alice", "buy", "10", "60000", inst=SWAP, td_mode="cross")
    assert dec(h.balance_view(FUT, "USDT").cashBal) == D(1997)
    out = h.ok("settle_funding", instId=SWAP, fundingRate="0.0001")
    paid = only([e for e in events_of(out, ev.FundingSettled) if e.acct == FUT])
    assert paid.amt == D("-0.6")
    assert dec(h.balance_view(FUT, "USDT").cashBal) == D("1996.4")
    assert dec(h.balance_view("alice", "USDT").cashBal) == D(8000)
    check_conservation(h.state, _flows(h))


def test_a_futures_wallet_is_liquidated_on_its_own() -> None:
    """alice (futures_wallet: 1,000 in futures, 50,000 in spot) and bob (unified: 51,000) each
    go long 100 contracts (1 BTC) at 60,000 cross, 75× (IM 60,000/75 = 800), makers.
    Mark 59,300: loss 1·700. alice's futures wallet: equity 1,000 − 700 = 300 against the
    maintenance 1·59,300·(1 % + 0.05 %) = 622.65 — ratio 0.48, liquidated, though her spot
    wallet holds 50,000. bob's one account: (51,000 − 700)/622.65 = 80.7837…, untouched. The
    liquidation sells at mm's bid 59,300: realised −700, taker fee 59,300·0.0005 = 29.65;
    alice's futures wallet keeps 1,000 − 700 − 29.65 = 270.35; her spot wallet 50,000."""
    h = _listed()
    _split(h, "alice", "51000", "1000")
    h.ok("deposit", acct="bob", ccy="USDT", amt="51000")
    for acct in ("alice", "bob"):
        h.order(acct, "buy", "100", "60000", inst=SWAP, td_mode="cross")
        h.order("mm", "sell", "100", "60000", inst=SWAP, td_mode="cross")
    h.order("mm", "buy", "100", "59300", inst=SWAP, td_mode="cross")
    out = h.send("mark_price", cid=None, instId=SWAP, markPx="59300")
    started = only(events_of(out, ev.LiquidationStarted))
    assert started.acct == FUT and started.mgnRatio < 1
    assert only([e for e in events_of(out, ev.PnlRealised) if e.acct == FUT]).amt == D(-700)
    assert dec(h.balance_view(FUT, "USDT").cashBal) == D("270.35")
    assert dec(h.balance_view("alice", "USDT").cashBal) == D(50000)
    assert dec(h.position("bob", SWAP).pos) == D(100)
    assert D("80.78") < dec(h.account("bob").mgnRatio) < D("80.79")
    check_conservation(h.state, _flows(h))


def test_account_mode_switches_only_when_safe() -> None:
    """Unified → futures_wallet is refused while the account has a SWAP position (it would have
    to move between wallets); futures_wallet → unified while the futures wallet holds one; once
    flat, switching back moves the futures cash to spot and SWAP orders go to the account again."""
    h = _listed()
    h.ok("deposit", acct="bob", ccy="USDT", amt="5000")
    h.order("bob", "buy", "10", "60000", inst=SWAP, td_mode="cross")
    h.order("mm", "sell", "10", "60000", inst=SWAP, td_mode="cross")
    refused = rejection(h.send("set_account_mode", acct="bob", acctMode="futures_wallet"))
    assert refused.reason == "positions_open" and "1 perpetual position(s)" in refused.message

    _split(h, "alice", "5000", "3000")
    h.order("alice", "buy", "10", "60000", inst=SWAP, td_mode="cross")  # maker, fee 0
    h.order("mm", "sell", "10", "60000", inst=SWAP, td_mode="cross")
    refused = rejection(h.send("set_account_mode", acct="alice", acctMode="unified"))
    assert refused.reason == "positions_open"
    h.order("mm", "buy", "10", "60000", inst=SWAP, td_mode="cross")
    h.ok("close_position", acct="alice", instId=SWAP, mgnMode="cross")  # taker: fee 0.1·60,000·0.0005 = 3
    back = h.ok("set_account_mode", acct="alice", acctMode="unified")
    moved = only(events_of(back, ev.Transferred))
    assert (moved.amt, moved.source, moved.target) == (D(2997), "futures", "spot")
    assert dec(h.balance_view("alice", "USDT").cashBal) == D(4997)  # 2,000 + 2,997
    assert (h.account("alice").acctMode, h.account("alice").wallet) == ("unified", "")
    accepted = only(events_of(h.order("alice", "buy", "1", "50000", inst=SWAP, td_mode="cross"), ev.OrderAccepted))
    assert accepted.acct == "alice"
    check_conservation(h.state, _flows(h))


def test_transfer_and_futures_names_are_checked() -> None:
    h = _listed()
    h.ok("deposit", acct="alice", ccy="USDT", amt="100")
    assert rejection(h.send("transfer", acct="alice", ccy="USDT", amt="1", **_way("spot", "futures"))).reason == (
        "invalid_acctMode"
    )
    refused = rejection(h.send("deposit", acct=FUT, ccy="USDT", amt="1"))
    assert refused.reason == "invalid_acct" and "names a futures wallet" in refused.message
    h.ok("set_account_mode", acct="alice", acctMode="futures_wallet")
    assert rejection(h.send("set_account_mode", acct="alice", acctMode="futures_wallet")).reason == "invalid_acctMode"
    assert rejection(h.send("transfer", acct="alice", ccy="BTC", amt="1", **_way("spot", "futures"))).reason == (
        "invalid_ccy"
    )
    assert rejection(h.send("transfer", acct="alice", ccy="USDT", amt="1", **_way("spot", "spot"))).reason == (
        "invalid_to"
    )
    assert rejection(h.send("transfer", acct="alice", ccy="USDT", amt="100.01", **_way("spot", "futures"))).reason == (
        "insufficient_balance"
    )
    assert rejection(h.send("set_account_mode", acct="carol", acctMode="futures_wallet")).reason == "unknown_account"


def test_a_futures_debt_is_repaid_by_the_next_transfer_in() -> None:
    """alice's futures wallet (1,000 USDT) is long 100 contracts at 60,000 cross 75× (maker, fee
    0). Mark 70,000: floating profit 1·10,000; equity 11,000, initial margin 70,000/75 =
    933.33…: all 1,000 of cash may move out (maxTransfer = min(free 1,000, 11,000 − 933.33…)),
    and does. Funding +0.01 %: 1·70,000·0.0001 = 7 is owed with no cash: the futures wallet
    borrows 7 USDT (decision 21a). Closed at 70,000 (P&L +10,000, taker fee 35: cash 9,965),
    it still owes 7, so it cannot switch back to unified; a transfer of 100 in repays it first
    (cash 9,965 + 100 − 7 = 10,058)."""
    h = _listed()
    _split(h, "alice", "5000", "1000")
    h.order("alice", "buy", "100", "60000", inst=SWAP, td_mode="cross")
    h.order("mm", "sell", "100", "60000", inst=SWAP, td_mode="cross")
    h.mark("70000", inst=SWAP)
    assert dec(h.balance_view(FUT, "USDT").maxTransfer) == D(1000)
    h.ok("transfer", acct="alice", ccy="USDT", amt="1000", **_way("futures", "spot"))
    h.ok("settle_funding", instId=SWAP, fundingRate="0.0001")
    owed = h.bal(FUT, "USDT")
    assert (owed.cash, owed.liab + owed.interest) == (D(0), D(7))
    refused = rejection(h.send("set_account_mode", acct="alice", acctMode="unified"))
    assert refused.reason == "positions_open"  # the position is still open, and it owes
    h.order("mm", "buy", "100", "70000", inst=SWAP, td_mode="cross")
    h.ok("close_position", acct="alice", instId=SWAP, mgnMode="cross")  # +10,000, fee 70,000·0.0005 = 35
    assert h.bal(FUT, "USDT").cash == D(9965)
    refused = rejection(h.send("set_account_mode", acct="alice", acctMode="unified"))
    assert refused.reason == "futures_wallet_owes" and "owes 7 USDT" in refused.message
    out = h.ok("transfer", acct="alice", ccy="USDT", amt="100", **_way("spot", "futures"))
    repaid = only(events_of(out, ev.Repaid))
    assert (repaid.acct, repaid.principal, repaid.reason) == (FUT, D(7), "transfer")
    assert dec(h.balance_view(FUT, "USDT").cashBal) == D(10058)  # 9,965 + 100 − 7
    assert dec(h.balance_view("alice", "USDT").cashBal) == D(4900)  # 4,000 + 1,000 − 100
    check_conservation(h.state, _flows(h))


def test_snapshots_and_the_journal_carry_both_wallets() -> None:
    """A snapshot restores the mode and the futures wallet (same digest); folding the journal
    into a fresh state gives the engine's state."""
    h = _listed()
    _split(h, "alice", "10000", "2000")
    h.order("alice", "buy", "10", "60000", inst=SWAP, td_mode="cross")
    h.order("mm", "sell", "10", "60000", inst=SWAP, td_mode="cross")
    restored = snapshot.restore(snapshot.encode(h.state))
    assert restored.accounts["alice"].acct_mode == "futures_wallet"
    assert restored.accounts[FUT].perps
    assert snapshot.digest(restored) == snapshot.digest(h.state)
    folded = State()
    for outcome in h.outcomes:
        fold(folded, outcome)
    assert snapshot.digest(folded) == snapshot.digest(h.state)


def test_recovered_margin_is_held_down_by_another_positions_floating_loss() -> None:
    """Seed 003: "the margin you just recovered from position A may be offset by the floating
    loss on position B … The funds have come back — they are just being held down by another
    open position."

    alice's futures wallet: 3,000 USDT, cross 10× (makers, fee 0). A: BTC long 10 contracts
    (0.1 BTC) at 60,000, IM 600; B: ETH long 10 contracts (ctVal 0.1: 1 ETH) at 3,000, IM 300:
    maxTransfer 3,000 − 900 = 2,100. ETH marks 2,500: B's loss 500, its IM 250: 2,500 − 850 =
    1,650. A is closed at 60,000 (taker fee 0.1·60,000·0.0005 = 3): cash 2,997 — the margin
    has come back — but maxTransfer is 2,997 − 500 (B's loss) − 250 (B's IM) = 2,247, not
    2,747: B holds 500 of it down."""
    h = _listed()
    h.list_asset("ETH", 8)
    h.ok(
        "list_instrument", instId="ETH-USDT-SWAP", instType="SWAP", settleCcy="USDT", ctVal="0.1", tickSz="0.01",
        lotSz="1", minSz="1", makerFee="0", takerFee="0.0005", maxLever="75", tiers=SWAP_TIERS,
    )  # fmt: skip
    h.mark("3000", inst="ETH-USDT-SWAP")
    _split(h, "alice", "3000", "3000")
    for inst, px in ((SWAP, "60000"), ("ETH-USDT-SWAP", "3000")):
        h.ok("set_leverage", acct="alice", instId=inst, mgnMode="cross", lever="10")
        h.order("alice", "buy", "10", px, inst=inst, td_mode="cross")
        h.order("mm", "sell", "10", px, inst=inst, td_mode="cross")
    assert dec(h.balance_view(FUT, "USDT").maxTransfer) == D(2100)
    h.mark("2500", inst="ETH-USDT-SWAP")
    assert dec(h.balance_view(FUT, "USDT").maxTransfer) == D(1650)
    h.order("mm", "buy", "10", "60000", inst=SWAP, td_mode="cross")
    h.ok("close_position", acct="alice", instId=SWAP, mgnMode="cross")
    futures = h.balance_view(FUT, "USDT")
    assert (dec(futures.cashBal), dec(futures.maxTransfer)) == (D(2997), D(2247))
    refused = rejection(h.send("transfer", acct="alice", ccy="USDT", amt="2247.01", **_way("futures", "spot")))
    assert "need 250 USDT of initial margin (equity 2497 USDT); at most 2247 USDT can move" in refused.message
    check_conservation(h.state, _flows(h))
