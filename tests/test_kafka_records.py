"""Records the Kafka engine writes, without a broker: events records packed by count and bytes,
outcomes split into fragments and reassembled, dead letters that fit one record (issue 10,
hole 3: records above the broker's limit were silently lost)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from aiokafka import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.io.kafka.deadletter import dead_letter
from engine.io.kafka.framing import EventsRecord, FragmentError, Packer, Reassembler, header
from events.codec import BadCommand


def pack(lines: list[bytes], max_bytes: int, max_count: int = 256) -> list[EventsRecord]:
    packer = Packer(max_bytes, max_count)
    records: list[EventsRecord] = []
    for seq, line in enumerate(lines, start=1):
        records += packer.add(line, seq, 100 + seq)
    return records + packer.flush()


def unpack(records: list[EventsRecord]) -> list[bytes]:
    fragments = Reassembler()
    lines: list[bytes] = []
    for offset, record in enumerate(records):
        value = fragments.feed(record.value, record.headers, f"@{offset}")
        if value is not None:
            lines += value.split(b"\n")
    assert not fragments.pending
    return lines


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=300).map(lambda b: b.replace(b"\n", b" ")), min_size=1, max_size=60),
    st.integers(min_value=16, max_value=400),
    st.integers(min_value=1, max_value=8),
)
def test_records_never_exceed_the_limits_and_reassemble_to_the_same_lines(
    lines: list[bytes], max_bytes: int, max_count: int
) -> None:
    records = pack(lines, max_bytes, max_count)
    assert all(len(r.value) <= max_bytes for r in records)
    assert unpack(records) == lines
    expected_seq = 1
    for record in records:
        first, last = int(header(record.headers, "first-seq") or 0), int(header(record.headers, "last-seq") or 0)
        fragment = header(record.headers, "fragment")
        if fragment is None:
            assert first == expected_seq and last - first + 1 == record.value.count(b"\n") + 1 <= max_count
            expected_seq = last + 1
        else:
            index, count = map(int, fragment.split("/"))
            assert first == last == expected_seq and count >= 2
            assert header(record.headers, "input-offsets") == f"{100 + first}-{100 + first}"
            if index == count:
                expected_seq += 1
    assert expected_seq == len(lines) + 1


def test_an_outcome_of_2_5_mb_is_cut_into_three_fragments_of_at_most_1_mb() -> None:
    big = b'{"seq":2,' + b"x" * 2_500_000 + b"}"
    records = pack([b'{"seq":1}', big, b'{"seq":3}'], 1_000_000)
    assert [header(r.headers, "fragment") for r in records] == [None, "1/3", "2/3", "3/3", None]
    assert [r.first_seq for r in records] == [1, 2, 2, 2, 3]
    assert unpack(records) == [b'{"seq":1}', big, b'{"seq":3}']


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ([0, 2, 3], "fragment 2/3 of seq 2 without fragments 1..1"),  # fragment 1 missing
        ([0, 1, 3, 4], "fragment 3/3 of seq 2 where fragment 2/3 of seq 2 was expected"),
        ([0, 1, 2, 4], "a whole record where fragments were expected (outcome of seq 2"),
        ([0, 1, 1, 2, 3], "fragment 1/3 of seq 2 where fragment 2/3 of seq 2 was expected"),
    ],
)
def test_a_missing_repeated_or_displaced_fragment_is_detected(order: list[int], message: str) -> None:
    big = b"y" * 2_500
    records = pack([b"a", big, b"c"], 1_000)
    fragments = Reassembler()
    with pytest.raises(FragmentError, match=message.replace("(", r"\(")):
        for i in order:
            fragments.feed(records[i].value, records[i].headers, f"@{i}")


def test_a_journal_that_ends_inside_an_outcome_is_pending() -> None:
    records = pack([b"z" * 2_500], 1_000)
    fragments = Reassembler()
    for i, record in enumerate(records[:-1]):
        assert fragments.feed(record.value, record.headers, f"@{i}") is None
    assert fragments.pending and "2 of 3 fragments" in fragments.describe_pending()


def _record(value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="p.commands",
        partition=0,
        offset=41,
        timestamp=1_700_000_000_000,
        timestamp_type=0,
        key=b"k",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value),
        headers=(),
    )


def test_a_dead_letter_that_would_not_fit_carries_a_prefix_with_the_originals_size_and_hash() -> None:
    """Issue 10 hole 3: the dead letter of a 600 KB garbage record was ~1.4 MB and was lost."""
    raw = bytes(range(256)) * 2_400  # 614,400 bytes, control characters and invalid UTF-8
    value, headers = dead_letter(_record(raw), BadCommand("$", "JSON is malformed"), max_bytes=1_000_000)
    assert len(value) <= 1_000_000 - 2_048
    letter = json.loads(value)
    sha = hashlib.sha256(raw).hexdigest()
    assert (letter["truncated"], letter["size"], letter["sha256"]) == (True, len(raw), sha)
    kept = base64.b64decode(letter["valueBase64"])
    assert raw.startswith(kept) and 50_000 < len(kept) < len(raw)
    assert dict(headers) == {
        "original-size": str(len(raw)).encode(),
        "original-sha256": sha.encode(),
        "truncated": b"1",
    }
    assert (letter["offset"], letter["field"], letter["reason"]) == (41, "$", "JSON is malformed")


def test_a_dead_letter_that_fits_is_whole() -> None:
    raw = b'{"type":"deposit"' + b" " * 100_000
    value, headers = dead_letter(_record(raw), BadCommand("$", "JSON is malformed"), max_bytes=1_000_000)
    letter = json.loads(value)
    assert base64.b64decode(letter["valueBase64"]) == raw and "truncated" not in letter
    assert header(headers, "original-size") == str(len(raw)) and header(headers, "truncated") is None
