"""Dead-letter records: inputs that never reached the fold, with the reason.

Value (JSON): ``{"topic", "partition", "offset", "timestamp", "key", "field", "reason",
"value"}`` — ``value`` is the original bytes as text (invalid UTF-8 replaced) and
``valueBase64`` the exact bytes, so an operator can fix and resubmit the command.
"""

from __future__ import annotations

import base64

import msgspec
from aiokafka import ConsumerRecord

from events.codec import BadCommand


class DeadLetter(msgspec.Struct, frozen=True):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: str | None
    field: str
    reason: str
    value: str
    valueBase64: str


_encoder = msgspec.json.Encoder()


def dead_letter(record: ConsumerRecord[bytes, bytes], bad: BadCommand) -> bytes:
    raw = record.value or b""
    return _encoder.encode(
        DeadLetter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            key=record.key.decode("utf-8", "replace") if record.key is not None else None,
            field=bad.field,
            reason=bad.message,
            value=raw.decode("utf-8", "replace"),
            valueBase64=base64.b64encode(raw).decode(),
        )
    )
