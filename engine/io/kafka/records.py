"""Record formats the engine writes to Kafka besides outcomes."""

from __future__ import annotations

import msgspec


class SnapshotRecord(msgspec.Struct, frozen=True):
    """A snapshot on ``marginbook.snapshots`` (compacted, key = shard): the engine state after
    sequence number ``seq`` and the input offset to resume consuming from."""

    shard: int
    next_offset: int
    seq: int
    state: bytes


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SnapshotRecord)


def encode_snapshot_record(record: SnapshotRecord) -> bytes:
    return _encoder.encode(record)


def decode_snapshot_record(data: bytes) -> SnapshotRecord:
    return _decoder.decode(data)
