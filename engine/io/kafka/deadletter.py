"""Dead-letter records: inputs that never reached the fold, with the reason.

Value (JSON): ``{"topic", "partition", "offset", "timestamp", "key", "field", "reason",
"value", "valueBase64"}`` — ``value`` is the original bytes as text (invalid UTF-8 replaced) and
``valueBase64`` the exact bytes, so an operator can fix and resubmit the command.

Headers, on every dead letter: ``original-size`` (bytes of the input's value) and
``original-sha256`` (hex SHA-256 of those bytes).

A dead letter must fit one record (``max_bytes``, the engine's ``--record-max-bytes``): text and
base64 together take up to about 8 bytes per input byte (6 for a control character escaped in
JSON, plus 4/3 in base64), so a large input would not. Then ``value`` and ``valueBase64`` hold
only a prefix of the input — the longest that fits — and the record says so: the JSON gets
``"truncated": true``, ``"size"`` and ``"sha256"`` of the whole input, and the header
``truncated: 1``. The input itself stays on the commands topic at ``offset``.
"""

from __future__ import annotations

import base64
import hashlib

import msgspec
from aiokafka import ConsumerRecord

from events.codec import BadCommand

Headers = list[tuple[str, bytes]]


class DeadLetter(msgspec.Struct, frozen=True, omit_defaults=True):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: str | None
    field: str
    reason: str
    value: str
    valueBase64: str
    #: Only on a truncated dead letter: ``value``/``valueBase64`` are a prefix of the input.
    truncated: bool = False
    size: int | None = None
    sha256: str | None = None


_encoder = msgspec.json.Encoder()
#: Room left for the record's key and headers within ``max_bytes``.
_RESERVE = 2_048


def dead_letter(
    record: ConsumerRecord[bytes, bytes], bad: BadCommand, max_bytes: int = 1 << 62
) -> tuple[bytes, Headers]:
    """The dead letter of ``record`` (value, headers), at most ``max_bytes`` bytes of value."""
    raw = record.value or b""
    digest = hashlib.sha256(raw).hexdigest()
    headers: Headers = [("original-size", str(len(raw)).encode()), ("original-sha256", digest.encode())]
    key = record.key.decode("utf-8", "replace") if record.key is not None else None

    def encode(prefix: bytes, truncated: bool) -> bytes:
        return _encoder.encode(
            DeadLetter(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                timestamp=record.timestamp,
                key=key,
                field=bad.field,
                reason=bad.message,
                value=prefix.decode("utf-8", "replace"),
                valueBase64=base64.b64encode(prefix).decode(),
                truncated=truncated,
                size=len(raw) if truncated else None,
                sha256=digest if truncated else None,
            )
        )

    budget = max(0, max_bytes - _RESERVE)
    value = encode(raw, False)
    if len(value) <= budget:
        return value, headers
    headers.append(("truncated", b"1"))
    empty = len(encode(b"", True))
    keep = min(len(raw), max(0, budget - empty) * 3 // 7)  # ~1 text + 4/3 base64 per byte
    value = encode(raw[:keep], True)
    while len(value) > budget and keep > 0:  # escapes made the text longer: shrink until it fits
        keep //= 2
        value = encode(raw[:keep], True)
    return value, headers
