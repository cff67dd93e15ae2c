"""The reader's side: current risk views and recent alerts, kept in memory from Kafka.

:class:`RiskStore` holds the latest value of every key of ``<prefix>.risk`` (tombstones remove
keys) and the most recent alerts of ``<prefix>.alerts``; :func:`tail` keeps it up to date by
consuming every partition of both topics with ``read_committed`` (only what the projections
committed), from the beginning, by ``assign()`` (a reader has no offsets to commit and no
group to join). The HTTP API (``projections.http_api``) and the terminal monitor
(``projections.monitor``) both read from it; they run the tail on their own event loop, so the
store needs no locking.

The store is a cache of the topics: a reader that restarts rebuilds it by reading them again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sortedcontainers import SortedKeyList, SortedList

log = logging.getLogger("marginbook.reader")

_decode = msgspec.json.Decoder(dict[str, Any]).decode

#: Ranking of an account, riskiest first: a ratio sorts before no ratio, lower ratios first.
Rank = tuple[int, Decimal, str]
_NO_RATIO = Decimal(0)


def ratio_of(view: dict[str, Any]) -> Decimal | None:
    """The account's ``mgnRatio`` as a Decimal (``None`` when it has none: no debt)."""
    text = view.get("mgnRatio") or ""
    try:
        return Decimal(text) if text else None
    except InvalidOperation:
        return None


def rank_of(acct: str, view: dict[str, Any]) -> Rank:
    ratio = ratio_of(view)
    return (0, ratio, acct) if ratio is not None else (1, _NO_RATIO, acct)


def _alert_order(alert: dict[str, Any]) -> tuple[int, int, int, int]:
    return (
        int(alert.get("ts", 0)),
        int(alert.get("_partition", 0)),
        int(alert.get("seq", 0)),
        int(alert.get("event", 0)),
    )


@dataclass
class RiskStore:
    """Latest risk views per key and the most recent alerts (``max_alerts`` at most)."""

    max_alerts: int = 10_000
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    positions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Account → its position keys.
    by_account: dict[str, dict[str, None]] = field(default_factory=dict)
    #: Key → ``seq`` header of its latest record (the outcome position the view reflects).
    seqs: dict[str, int] = field(default_factory=dict)
    #: Highest ``seq`` header seen per partition of the risk topic.
    last_seq: dict[int, int] = field(default_factory=dict)
    records: int = 0
    #: True once the topics were read up to their end as of when the tail started.
    ready: bool = False
    #: Records the tail could not decode (kept out of the store, counted).
    bad_records: int = 0
    _ranking: SortedList = field(default_factory=SortedList)
    _ranks: dict[str, Rank] = field(default_factory=dict)
    _alerts: SortedKeyList = field(default_factory=lambda: SortedKeyList(key=_alert_order))

    # --- writes (the tail) --------------------------------------------------------------------

    def apply_risk(self, key: str, value: bytes | None, seq: int, partition: int = 0) -> None:
        self.records += 1
        self.last_seq[partition] = max(seq, self.last_seq.get(partition, 0))
        if value is None:
            self._remove(key)
            return
        try:
            view = _decode(value)
        except msgspec.DecodeError:
            self.bad_records += 1
            return
        self.seqs[key] = seq
        if "instId" in view:
            self.positions[key] = view
            self.by_account.setdefault(str(view.get("acct", "")), {})[key] = None
        else:
            self.accounts[key] = view
            self._rerank(key, rank_of(key, view))

    def _remove(self, key: str) -> None:
        self.seqs.pop(key, None)
        if self.accounts.pop(key, None) is not None:
            self._rerank(key, None)
        view = self.positions.pop(key, None)
        if view is not None:
            keys = self.by_account.get(str(view.get("acct", "")), {})
            keys.pop(key, None)
            if not keys:
                self.by_account.pop(str(view.get("acct", "")), None)

    def _rerank(self, acct: str, rank: Rank | None) -> None:
        old = self._ranks.pop(acct, None)
        if old is not None:
            self._ranking.remove(old)
        if rank is not None:
            self._ranks[acct] = rank
            self._ranking.add(rank)

    def apply_alert(self, value: bytes | None, partition: int = 0) -> None:
        if value is None:
            return
        try:
            alert = _decode(value)
        except msgspec.DecodeError:
            self.bad_records += 1
            return
        alert["_partition"] = partition
        self._alerts.add(alert)
        if len(self._alerts) > self.max_alerts:
            self._alerts.pop(0)

    # --- reads --------------------------------------------------------------------------------

    def riskiest(self, limit: int) -> list[dict[str, Any]]:
        """Accounts by margin ratio, lowest first; accounts without a ratio last (by name)."""
        return [self.accounts[acct] for _, _, acct in self._ranking[:limit]]

    def by_name(self, limit: int) -> list[dict[str, Any]]:
        return [self.accounts[acct] for acct in sorted(self.accounts)[:limit]]

    def account_positions(self, acct: str) -> list[dict[str, Any]]:
        return [self.positions[key] for key in self.by_account.get(acct, {})]

    def recent_alerts(self, limit: int) -> list[dict[str, Any]]:
        """The newest alerts first (by ``ts``, then position in the journal)."""
        count = len(self._alerts)
        newest = [self._alerts[i] for i in range(count - 1, max(count - 1 - limit, -1), -1)]
        return [{k: v for k, v in alert.items() if k != "_partition"} for alert in newest]

    @property
    def alert_count(self) -> int:
        return len(self._alerts)


async def topic_partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` (from the cluster's metadata); raises if it does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    found = sorted(
        int(p["partition"]) for t in described if t.get("error_code", 0) == 0 for p in t.get("partitions", [])
    )
    if not found:
        raise RuntimeError(f"topic {topic} does not exist (create it with: marginbook topics)")
    return [TopicPartition(topic, p) for p in found]


def _seq_header(headers: Any) -> int:
    for name, value in headers or ():
        if name == "seq":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


async def tail(
    store: RiskStore, bootstrap: str, risk_topic: str, alerts_topic: str, stop: asyncio.Event | None = None
) -> None:
    """Keep ``store`` up to date until cancelled (or ``stop`` is set). Crash-only: a failed
    consumer is replaced and resumes from the positions already applied."""
    positions: dict[TopicPartition, int] = {}
    backoff = 0.2
    while stop is None or not stop.is_set():
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 << 20,
        )
        try:
            risk = await topic_partitions(bootstrap, risk_topic)
            alerts = await topic_partitions(bootstrap, alerts_topic)
            await consumer.start()
            consumer.assign(risk + alerts)
            for tp in risk + alerts:
                if tp in positions:
                    consumer.seek(tp, positions[tp])
                else:
                    await consumer.seek_to_beginning(tp)
            ends = await consumer.end_offsets(risk + alerts) if not store.ready else {}
            backoff = 0.2
            while stop is None or not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=5_000)
                for tp, records in batch.items():
                    for record in records:
                        key = record.key.decode() if record.key is not None else ""
                        if tp.topic == risk_topic:
                            store.apply_risk(key, record.value, _seq_header(record.headers), tp.partition)
                        else:
                            store.apply_alert(record.value, tp.partition)
                    if records:
                        positions[tp] = records[-1].offset + 1
                if not store.ready:
                    # A transactional partition may end with a marker the position stays before.
                    behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end - 1]
                    if not behind and not batch:
                        store.ready = True
                        log.info("caught up: %d accounts, %d positions", len(store.accounts), len(store.positions))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("tailing %s and %s failed; reconnecting", risk_topic, alerts_topic)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        finally:
            try:
                await consumer.stop()
            except Exception:
                log.warning("error while closing the consumer", exc_info=True)
