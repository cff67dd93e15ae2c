"""The gateway's client: validate commands and produce them to the right shard.

Routing (one partition of ``marginbook.commands`` per engine shard). **Only one shard runs for
now** (``engine.io.kafka.config.MAX_SHARDS``): each shard keeps its own order books, so two
would split every market. :func:`submit` refuses a commands topic with more partitions
(:class:`ShardsRefused`); the routing below is what a sharded deployment will use once shards
share books:

* commands of one account (``deposit``, ``withdraw``, ``place_order``, ``cancel_order``,
  ``borrow``, ``repay``, ``set_leverage``, ``set_position_mode``, ``adjust_margin``,
  ``close_position``) go to shard ``crc32(acct) mod shards``, keyed by ``acct`` — everything an
  account does is ordered in one log, as cross margin needs;
* market-wide commands (``list_asset``, ``list_instrument``, ``set_interest_rate``,
  ``mark_price``, ``accrue_interest``, ``settle_funding``) go to **every** shard, keyed by
  ``instId`` or ``ccy`` (or ``global``), so each shard sees every listing, rate and mark.

Idempotency: a command without ``id`` (where the contract requires one) gets
``h-`` + the first 32 hex digits of SHA-256 of its canonical JSON, so resubmitting the same file
after a failure yields the same ids and the engine refuses the repeats as duplicates.

Each line is validated with the engine's own decoder before anything is sent, and a line longer
than ``max_command_bytes`` (default ``engine.core.limits.MAX_COMMAND_BYTES``) is refused
unread; a refused line is reported with its number, field and reason and is not sent. The producer is idempotent
(``acks=all``): a retried send after a broker blip is not written twice.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from engine.core.limits import MAX_COMMAND_BYTES
from engine.io.kafka.config import MAX_SHARDS, SHARDS_REFUSED
from events.codec import BadCommand, decode_command_json

ACCOUNT_COMMANDS = frozenset(
    {
        "deposit",
        "withdraw",
        "place_order",
        "cancel_order",
        "borrow",
        "repay",
        "set_leverage",
        "set_position_mode",
        "adjust_margin",
        "close_position",
    }
)
OPTIONAL_ID = frozenset({"mark_price", "accrue_interest"})


def shard_of(acct: str, shards: int) -> int:
    """Stable shard of an account: ``crc32(acct) mod shards``."""
    return zlib.crc32(acct.encode()) % shards


def content_id(obj: dict[str, Any]) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return "h-" + hashlib.sha256(canonical).hexdigest()[:32]


@dataclass
class Prepared:
    """A validated command ready to send: its bytes, key and target partitions."""

    value: bytes
    key: bytes
    partitions: list[int]


@dataclass
class SubmitReport:
    sent: int = 0
    records: int = 0
    ids_assigned: int = 0
    refused: list[tuple[int, str, str]] = field(default_factory=list)


class ShardsRefused(RuntimeError):
    """The commands topic has more partitions than the engine can run as shards."""


def prepare(
    line: bytes, shards: int, report: SubmitReport, number: int, max_command_bytes: int = MAX_COMMAND_BYTES
) -> Prepared | None:
    """Validate one line; add a content id if needed; decide where it goes."""
    if len(line) > max_command_bytes:
        report.refused.append(
            (number, "$", f"the line is {len(line):,} bytes; a command is at most {max_command_bytes:,} bytes")
        )
        return None
    value = line
    try:
        obj = json.loads(line)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "id" not in obj and obj.get("type") not in OPTIONAL_ID:
        obj["id"] = content_id(obj)
        value = json.dumps(obj, separators=(",", ":")).encode()
        report.ids_assigned += 1
    try:
        command = decode_command_json(value)
    except BadCommand as bad:
        report.refused.append((number, bad.field, bad.message))
        return None
    tag = str(command.__struct_config__.tag)
    if tag in ACCOUNT_COMMANDS:
        acct = str(getattr(command, "acct"))  # noqa: B009 - every account command has acct
        return Prepared(value, acct.encode(), [shard_of(acct, shards)])
    key = getattr(command, "instId", None) or getattr(command, "ccy", None) or "global"
    return Prepared(value, str(key).encode(), list(range(shards)))


async def submit(
    bootstrap: str,
    topic: str,
    lines: Iterable[tuple[int, bytes]],
    linger_ms: int = 5,
    max_command_bytes: int = MAX_COMMAND_BYTES,
) -> SubmitReport:
    """Validate and produce ``(line number, bytes)`` pairs; wait until all are acknowledged.

    Raises :class:`ShardsRefused` (before sending anything) if ``topic`` has more partitions
    than ``MAX_SHARDS``."""
    report = SubmitReport()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=linger_ms, max_batch_size=1 << 20
    )
    await producer.start()
    try:
        shards = len(await producer.partitions_for(topic))
        if shards > MAX_SHARDS:
            raise ShardsRefused(f"{topic} has {shards} partitions: refused: {SHARDS_REFUSED}")
        pending = []
        for number, line in lines:
            prepared = prepare(line, shards, report, number, max_command_bytes)
            if prepared is None:
                continue
            for partition in prepared.partitions:
                pending.append(await producer.send(topic, value=prepared.value, key=prepared.key, partition=partition))
                report.records += 1
            report.sent += 1
            if len(pending) >= 10_000:
                for future in pending:
                    await future
                pending.clear()
        for future in pending:
            await future
    finally:
        await producer.stop()
    return report
