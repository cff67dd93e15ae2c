"""Tests for engine.io.filelog: round trips, torn-tail recovery, corruption detection, scan."""

from __future__ import annotations

import itertools
import os
import random
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.io import filelog
from engine.io.filelog import (
    HEADER_SIZE,
    INDEX_STRIDE,
    FileLog,
    FsyncPolicy,
    LogCorruptError,
    LogError,
    scan,
)

# The on-disk format, written out independently of the implementation (module docstring).
MAGIC = b"\x89MBL"
HDR = struct.Struct("<4sIIQ")


def encode(seq: int, payload: bytes, *, magic: bytes = MAGIC) -> bytes:
    crc = zlib.crc32(struct.pack("<IQ", len(payload), seq) + payload)
    return HDR.pack(magic, crc, len(payload), seq) + payload


def offsets(payloads: Sequence[bytes]) -> list[int]:
    """Byte offset of each record, plus the end of the file as the last element."""
    out = [0]
    for p in payloads:
        out.append(out[-1] + HEADER_SIZE + len(p))
    return out


def make_log(path: Path, payloads: Sequence[bytes]) -> list[int]:
    with FileLog.open(path, fsync=FsyncPolicy.NEVER) as log:
        for p in payloads:
            log.append(p)
    return offsets(payloads)


def open_log(path: Path, **kw: Any) -> tuple[FileLog, list[str]]:
    warnings: list[str] = []
    log = FileLog.open(path, warn=warnings.append, **kw)
    return log, warnings


def read_all(log: FileLog, from_seq: int = 1) -> list[tuple[int, bytes]]:
    return list(log.read(from_seq))


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


PAYLOADS = [b"alpha", b"", b"x" * 300, bytes(range(256)), b"omega"]


# --------------------------------------------------------------------------- round trips


def test_open_creates_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "sub.log"
    log, warnings = open_log(path)
    assert path.exists() and path.stat().st_size == 0
    assert log.last_seq == 0
    assert read_all(log) == []
    log.close()
    assert warnings == []


def test_round_trip_dense_seqs(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    with FileLog.open(path) as log:
        seqs = [log.append(p) for p in PAYLOADS]
        assert seqs == [1, 2, 3, 4, 5]
        assert log.append_many([b"m1", b"m2", b"m3"]) == 8
        assert log.last_seq == 8
        log.flush()
        got = read_all(log)
    expected = list(enumerate([*PAYLOADS, b"m1", b"m2", b"m3"], start=1))
    assert got == expected
    assert all(type(p) is bytes for _, p in got)


def test_on_disk_layout_matches_documented_format(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    with FileLog.open(path) as log:
        log.append(b"hello")
        log.append_many([b"", b"world"])
    assert path.read_bytes() == encode(1, b"hello") + encode(2, b"") + encode(3, b"world")
    assert HEADER_SIZE == 20


def test_reopen_continues_at_last_seq_plus_one(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    with FileLog.open(path) as log:
        log.append_many([b"a", b"b", b"c"])
    log, warnings = open_log(path)
    with log:
        assert log.last_seq == 3
        assert log.append(b"d") == 4
        assert log.append_many([b"e", b"f"]) == 6
    with FileLog.open(path) as log:
        assert read_all(log) == list(enumerate([b"a", b"b", b"c", b"d", b"e", b"f"], start=1))
    assert warnings == []


def test_large_payload_spanning_read_chunks(tmp_path: Path) -> None:
    big = os.urandom(3 * (1 << 20) + 7)  # bigger than the reader's chunk size
    payloads = [b"small", big, b"after", big[:1000]]
    path = tmp_path / "a.log"
    with FileLog.open(path) as log:
        log.append_many(payloads)
    with FileLog.open(path) as log:
        assert [p for _, p in log.read()] == payloads
    assert scan(path).ok


def test_read_sees_appends_while_open(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    with FileLog.open(path) as log:
        log.append(b"one")
        log.flush()
        assert read_all(log) == [(1, b"one")]
        log.append(b"two")  # not flushed yet: read() hands the buffer to the OS itself
        it = log.read()
        log.append(b"three")  # appended after read() was called: not part of that iterator
        assert list(it) == [(1, b"one"), (2, b"two")]
        assert read_all(log, 3) == [(3, b"three")]


def test_empty_append_many_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    with FileLog.open(path) as log:
        assert log.append_many([]) == 0
        log.append(b"x")
        assert log.append_many(iter(())) == 1
    assert path.read_bytes() == encode(1, b"x")


class CountingWriter:
    """Wraps the log's write handle and counts write() calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        return int(self.inner.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_append_many_issues_one_write(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = FileLog.open(path)
    counter = CountingWriter(log._file)
    log._file = counter  # type: ignore[assignment]
    log.append_many([b"p%d" % i for i in range(500)])
    assert counter.writes == 1
    log.close()
    with FileLog.open(path) as log:
        assert log.last_seq == 500


def test_append_many_rejects_bad_payload_without_writing(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(filelog, "MAX_PAYLOAD", 10)
    path = tmp_path / "a.log"
    with FileLog.open(path) as log:
        log.append(b"ok")
        with pytest.raises(ValueError, match="MAX_PAYLOAD"):
            log.append_many([b"fine", b"x" * 11])
        with pytest.raises(ValueError, match="MAX_PAYLOAD"):
            log.append(b"x" * 11)
        assert log.last_seq == 1
        assert log.append(b"next") == 2
    with FileLog.open(path) as log:
        assert read_all(log) == [(1, b"ok"), (2, b"next")]


def test_closed_log_refuses_operations(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = FileLog.open(path)
    with log:
        log.append(b"x")
    assert log.closed
    log.close()  # idempotent
    for op in (lambda: log.append(b"y"), lambda: log.append_many([b"y"]), log.flush, log.read):
        with pytest.raises(ValueError, match="closed"):
            op()
    assert path.read_bytes() == encode(1, b"x")


def test_read_rejects_from_seq_below_one(tmp_path: Path) -> None:
    with FileLog.open(tmp_path / "a.log") as log:
        log.append(b"x")
        with pytest.raises(ValueError):
            log.read(0)


# --------------------------------------------------------------------------- read(from_seq)

N_INDEXED = 3 * INDEX_STRIDE + 17


@pytest.fixture(scope="module")
def indexed_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FileLog, list[bytes]]]:
    path = tmp_path_factory.mktemp("idx") / "a.log"
    payloads = [b"payload-%d" % i for i in range(1, N_INDEXED + 1)]
    with FileLog.open(path, fsync=FsyncPolicy.NEVER) as log:
        log.append_many(payloads[:5000])
        for p in payloads[5000:]:
            log.append(p)
    log = FileLog.open(path)  # the index is rebuilt by the recovery scan
    yield log, payloads
    log.close()


@pytest.mark.parametrize(
    "from_seq",
    [
        1,
        2,
        INDEX_STRIDE - 1,
        INDEX_STRIDE,
        INDEX_STRIDE + 1,
        INDEX_STRIDE + 2,
        2 * INDEX_STRIDE + 1,
        N_INDEXED - 1,
        N_INDEXED,
        N_INDEXED + 1,
        N_INDEXED + 1000,
    ],
)
def test_read_from_seq(indexed_log: tuple[FileLog, list[bytes]], from_seq: int) -> None:
    log, payloads = indexed_log
    got = read_all(log, from_seq)
    expected = list(enumerate(payloads, start=1))[from_seq - 1 :]
    assert got == expected


def test_read_from_seq_on_live_log_with_index(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    with FileLog.open(path, fsync=FsyncPolicy.NEVER) as log:
        for i in range(1, 2 * INDEX_STRIDE + 10):
            log.append(b"%d" % i)
        for from_seq in (1, INDEX_STRIDE + 1, INDEX_STRIDE + 5, 2 * INDEX_STRIDE + 9, 2 * INDEX_STRIDE + 10):
            got = read_all(log, from_seq)
            assert got == [(s, b"%d" % s) for s in range(from_seq, 2 * INDEX_STRIDE + 10)]


def test_read_from_seq_skips_via_index(tmp_path: Path) -> None:
    """Damage in record 1 does not affect read(from_seq) past the first index stride."""
    path = tmp_path / "a.log"
    payloads = [b"r%06d" % i for i in range(1, 2 * INDEX_STRIDE + 1)]
    with FileLog.open(path, fsync=FsyncPolicy.NEVER) as log:
        log.append_many(payloads)
        log.flush()
        flip(path, HEADER_SIZE + 2)  # payload of record 1
        tail = read_all(log, INDEX_STRIDE + 1)
        assert tail == list(enumerate(payloads, start=1))[INDEX_STRIDE:]
        with pytest.raises(LogCorruptError):
            read_all(log, 1)


# --------------------------------------------------------------------------- torn tails


def _torn_cases() -> list[int]:
    # Cut positions relative to the start of the last record (payload of 50 bytes).
    return [1, 3, 4, 8, 12, 19, HEADER_SIZE, HEADER_SIZE + 1, HEADER_SIZE + 25, HEADER_SIZE + 49]


@pytest.mark.parametrize("cut", _torn_cases())
def test_torn_tail_is_cut_with_warning(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "torn.log"
    payloads = [b"first", b"second", b"z" * 50]
    offs = make_log(path, payloads)
    last_start = offs[2]
    os.truncate(path, last_start + cut)

    log, warnings = open_log(path)
    with log:
        assert len(warnings) == 1
        msg = warnings[0]
        assert str(path) in msg
        assert f"byte offset {last_start}" in msg
        assert f"truncated {cut} bytes" in msg
        assert path.stat().st_size == last_start
        assert log.last_seq == 2
        assert read_all(log) == [(1, b"first"), (2, b"second")]
        assert log.append(b"third") == 3
    with FileLog.open(path) as log:
        assert read_all(log) == [(1, b"first"), (2, b"second"), (3, b"third")]


def test_cut_on_record_boundary_is_not_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    offs = make_log(path, PAYLOADS)
    os.truncate(path, offs[3])
    log, warnings = open_log(path)
    with log:
        assert warnings == []
        assert log.last_seq == 3
        assert read_all(log) == list(enumerate(PAYLOADS[:3], start=1))


def test_torn_single_record_leaves_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    make_log(path, [b"only"])
    os.truncate(path, 7)
    log, warnings = open_log(path)
    with log:
        assert len(warnings) == 1 and "truncated 7 bytes" in warnings[0]
        assert log.last_seq == 0
        assert log.append(b"new") == 1
    assert path.read_bytes() == encode(1, b"new")


def test_default_warn_goes_to_logging(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "a.log"
    make_log(path, [b"a", b"b"])
    with path.open("ab") as f:
        f.write(b"\x00" * 5)
    with caplog.at_level("WARNING", logger="engine.io.filelog"), FileLog.open(path) as log:
        assert log.last_seq == 2
    assert any("torn tail" in r.getMessage() and "truncated 5 bytes" in r.getMessage() for r in caplog.records)


# Byte positions inside a record: magic, crc, length, seq, payload.
FIELD_POSITIONS = {
    "magic": 0,
    "crc": 5,
    "length": 9,
    "length_high": 11,
    "seq": 12,
    "payload": HEADER_SIZE + 3,
}


@pytest.mark.parametrize("field", sorted(FIELD_POSITIONS))
def test_flipped_byte_in_last_record_is_a_torn_tail(tmp_path: Path, field: str) -> None:
    path = tmp_path / "a.log"
    payloads = [b"a" * 10, b"b" * 10, b"c" * 10]
    offs = make_log(path, payloads)
    flip(path, offs[2] + FIELD_POSITIONS[field], 0x80)
    log, warnings = open_log(path)
    with log:
        assert len(warnings) == 1
        assert f"byte offset {offs[2]}" in warnings[0]
        assert f"truncated {offs[3] - offs[2]} bytes" in warnings[0]
        assert read_all(log) == [(1, b"a" * 10), (2, b"b" * 10)]
        assert log.append(b"d") == 3


@pytest.mark.parametrize("garbage_len", [1, 5, 19, 20, 21, 1000, 70_000])
def test_garbage_after_valid_records_is_cut(tmp_path: Path, garbage_len: int) -> None:
    path = tmp_path / "a.log"
    offs = make_log(path, PAYLOADS)
    rng = random.Random(garbage_len)
    garbage = bytes(rng.randrange(256) for _ in range(garbage_len)).replace(MAGIC, b"xxxx")
    with path.open("ab") as f:
        f.write(garbage)
    report = scan(path)
    assert report.torn_tail_bytes == garbage_len
    assert report.records == len(PAYLOADS)
    log, warnings = open_log(path)
    with log:
        assert len(warnings) == 1
        assert f"byte offset {offs[-1]}" in warnings[0]
        assert f"truncated {garbage_len} bytes" in warnings[0]
        assert read_all(log) == list(enumerate(PAYLOADS, start=1))
        assert log.append(b"next") == len(PAYLOADS) + 1


def test_zero_filled_tail_is_cut(tmp_path: Path) -> None:
    """Power loss on some filesystems leaves the file extended with zeros."""
    path = tmp_path / "a.log"
    offs = make_log(path, PAYLOADS)
    with path.open("ab") as f:
        f.write(b"\x00" * 8192)
    log, warnings = open_log(path)
    with log:
        assert len(warnings) == 1 and "truncated 8192 bytes" in warnings[0]
        assert path.stat().st_size == offs[-1]
        assert log.last_seq == len(PAYLOADS)


def test_torn_batch_keeps_a_prefix(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    batch = [b"b%03d" % i for i in range(100)]
    with FileLog.open(path) as log:
        log.append_many(batch)
    offs = offsets(batch)
    os.truncate(path, offs[60] + 7)
    log, warnings = open_log(path)
    with log:
        assert len(warnings) == 1
        assert [p for _, p in log.read()] == batch[:60]


# --------------------------------------------------------------------------- mid-log corruption


@pytest.mark.parametrize("field", sorted(FIELD_POSITIONS))
def test_flipped_byte_in_middle_record_raises_on_open(tmp_path: Path, field: str) -> None:
    path = tmp_path / "a.log"
    payloads = [b"a" * 10, b"b" * 10, b"c" * 10, b"d" * 10]
    offs = make_log(path, payloads)
    flip(path, offs[1] + FIELD_POSITIONS[field], 0x80)
    before = path.read_bytes()
    warnings: list[str] = []
    with pytest.raises(LogCorruptError) as info:
        FileLog.open(path, warn=warnings.append)
    err = info.value
    assert err.offset == offs[1]
    assert err.expected_seq == 2
    assert err.path == str(path)
    assert str(path) in str(err) and f"byte offset {offs[1]}" in str(err) and "expected seq 2" in str(err)
    assert warnings == []
    assert path.read_bytes() == before  # never truncated

    report = scan(path)
    assert report.records == 3
    assert report.last_seq == 4
    assert report.torn_tail_bytes == 0
    assert len(report.errors) == 1
    assert f"byte offset {offs[1]}" in report.errors[0]
    assert "expected seq 2" in report.errors[0]
    assert report.good_bytes == report.total_bytes - (offs[2] - offs[1])
    assert path.read_bytes() == before


def test_corrupt_middle_record_raises_on_read(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    payloads = [b"p%d" % i for i in range(1, 11)]
    offs = offsets(payloads)
    with FileLog.open(path) as log:
        log.append_many(payloads)
        log.flush()
        flip(path, offs[4] + HEADER_SIZE)  # payload of seq 5
        got: list[tuple[int, bytes]] = []
        with pytest.raises(LogCorruptError) as info:
            for item in log.read():
                got.append(item)
        assert got == list(enumerate(payloads[:4], start=1))  # nothing corrupt is ever yielded
        assert info.value.offset == offs[4]
        assert info.value.expected_seq == 5
        with pytest.raises(LogCorruptError):
            read_all(log, 3)


def test_read_from_seq_still_verifies_records_before_it(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    payloads = [b"p%d" % i for i in range(1, 11)]
    offs = offsets(payloads)
    with FileLog.open(path) as log:
        log.append_many(payloads)
        log.flush()
        flip(path, offs[4] + HEADER_SIZE)
        with pytest.raises(LogCorruptError):
            read_all(log, 6)


def test_corrupt_length_in_middle_record_is_not_mistaken_for_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    payloads = [b"a" * 10] * 5
    offs = make_log(path, payloads)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, offs[1] + 8, 0x7FFF_FFFF)  # length claims far past EOF
    path.write_bytes(bytes(data))
    with pytest.raises(LogCorruptError) as info:
        FileLog.open(path, warn=pytest.fail)
    assert info.value.offset == offs[1]
    assert path.read_bytes() == bytes(data)


def test_implausible_length_is_rejected_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    payloads = [b"a" * 10] * 3
    offs = make_log(path, payloads)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, offs[1] + 8, filelog.MAX_PAYLOAD + 1)
    path.write_bytes(bytes(data))
    with pytest.raises(LogCorruptError, match="implausible payload length"):
        FileLog.open(path, warn=pytest.fail)
    report = scan(path)
    assert len(report.errors) == 1 and "implausible payload length" in report.errors[0]


def test_garbage_inserted_between_records_raises(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(encode(1, b"a") + b"\x00" * 13 + encode(2, b"b"))
    with pytest.raises(LogCorruptError) as info:
        FileLog.open(path, warn=pytest.fail)
    assert info.value.offset == HEADER_SIZE + 1
    report = scan(path)
    assert report.records == 2 and report.last_seq == 2
    assert len(report.errors) == 1 and "13 bytes skipped" in report.errors[0]


def test_magic_split_across_scan_chunks_is_found(tmp_path: Path, monkeypatch: Any) -> None:
    """The resync search reads in chunks; a record straddling a chunk border still counts."""
    monkeypatch.setattr(filelog, "_READ_CHUNK", 16)
    path = tmp_path / "a.log"
    path.write_bytes(encode(1, b"a") + b"\x00" * 14 + encode(2, b"b"))
    with pytest.raises(LogCorruptError):
        FileLog.open(path, warn=pytest.fail)


@pytest.mark.parametrize("seqs", [[1, 2, 4], [1, 3], [2], [1, 2, 2], [1, 2, 3, 1]])
def test_sequence_gap_raises(tmp_path: Path, seqs: list[int]) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"".join(encode(s, b"v%d" % s) for s in seqs))
    bad_index = next(i for i, s in enumerate(seqs) if s != i + 1)
    with pytest.raises(LogCorruptError) as info:
        FileLog.open(path, warn=pytest.fail)
    err = info.value
    assert err.expected_seq == bad_index + 1
    assert err.found_seq == seqs[bad_index]
    assert f"expected {bad_index + 1}, found {seqs[bad_index]}" in str(err)
    report = scan(path)
    assert report.records == len(seqs)
    assert len(report.errors) == 1
    assert f"expected seq {bad_index + 1}, found {seqs[bad_index]}" in report.errors[0]


# --------------------------------------------------------------------------- scan


def test_scan_clean_log(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    offs = make_log(path, PAYLOADS)
    report = scan(path)
    assert report.ok
    assert report.records == len(PAYLOADS)
    assert report.last_seq == len(PAYLOADS)
    assert report.good_bytes == report.total_bytes == offs[-1]
    assert report.torn_tail_bytes == 0
    assert report.errors == []


def test_scan_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"")
    report = scan(path)
    assert report.ok and report.records == 0 and report.last_seq == 0 and report.total_bytes == 0


def test_scan_reports_everything_and_modifies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    payloads = [b"p%02d" % i for i in range(1, 21)]
    offs = offsets(payloads)
    # A gap: the 10th record has seq 12, and the seqs continue densely from there.
    records = [encode(i + 1 if i < 9 else i + 3, p) for i, p in enumerate(payloads)]
    data = bytearray(b"".join(records))
    data[offs[4] + HEADER_SIZE] ^= 0xFF  # checksum failure in seq 5
    data[offs[15] + 2] ^= 0xFF  # bad magic in seq 16
    data += b"\x89MB"  # torn tail: 3 bytes of a header
    path.write_bytes(bytes(data))
    report = scan(path)
    assert path.read_bytes() == bytes(data)
    assert report.total_bytes == len(data)
    assert report.torn_tail_bytes == 3
    assert report.records == 18
    assert not report.ok
    errors = report.errors
    assert len(errors) == 4, errors
    assert f"byte offset {offs[4]}" in errors[0] and "expected seq 5" in errors[0]
    assert "checksum" in errors[0]
    assert f"byte offset {offs[9]}" in errors[1] and "expected seq 10, found 12" in errors[1]
    assert f"byte offset {offs[15]}" in errors[2] and "magic" in errors[2]
    assert "expected seq 18" in errors[2]
    assert f"byte offset {offs[20]}" in errors[3] and "torn tail of 3 bytes" in errors[3]
    assert report.last_seq == 22
    with pytest.raises(LogCorruptError):
        FileLog.open(path, warn=pytest.fail)
    assert path.read_bytes() == bytes(data)


def test_scan_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan(tmp_path / "nope.log")


# --------------------------------------------------------------------------- fsync policies


@pytest.fixture
def sync_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = filelog._sync_fd

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(filelog, "_sync_fd", counting)
    return calls


@pytest.mark.parametrize("policy", list(FsyncPolicy))
def test_policies_round_trip(tmp_path: Path, policy: FsyncPolicy) -> None:
    path = tmp_path / f"{policy.name}.log"
    with FileLog.open(path, fsync=policy) as log:
        assert log.fsync_policy is policy
        for i in range(50):
            log.append(b"r%d" % i)
        log.flush()
        log.append_many([b"m%d" % i for i in range(50)])
        log.flush()
        assert len(read_all(log)) == 100
    with FileLog.open(path, fsync=policy) as log:
        assert log.last_seq == 100
        assert read_all(log, 50) == [(50, b"r49"), *[(51 + i, b"m%d" % i) for i in range(50)]]


def test_policy_always_syncs_every_append(tmp_path: Path, sync_calls: list[int]) -> None:
    with FileLog.open(tmp_path / "a.log", fsync=FsyncPolicy.ALWAYS) as log:
        sync_calls.clear()
        log.append(b"a")
        log.append(b"b")
        log.append_many([b"c", b"d", b"e"])
        assert len(sync_calls) == 3
        log.flush()  # nothing new since the last sync
        assert len(sync_calls) == 3
        # Visible to another reader without flush(): the data is already in the file.
        assert scan(log.path).records == 5


def test_policy_batch_syncs_on_flush_and_close(tmp_path: Path, sync_calls: list[int]) -> None:
    path = tmp_path / "a.log"
    log = FileLog.open(path, fsync=FsyncPolicy.BATCH)
    sync_calls.clear()
    for i in range(100):
        log.append(b"%d" % i)
    log.append_many([b"x", b"y"])
    assert sync_calls == []
    log.flush()
    assert len(sync_calls) == 1
    log.flush()  # nothing new
    assert len(sync_calls) == 1
    log.append(b"z")
    log.close()
    assert len(sync_calls) == 2
    with FileLog.open(path) as log:
        assert log.last_seq == 103


def test_policy_never_does_not_sync(tmp_path: Path, sync_calls: list[int]) -> None:
    path = tmp_path / "a.log"
    with FileLog.open(path, fsync=FsyncPolicy.NEVER) as log:
        log.append(b"a")
        log.append_many([b"b", b"c"])
        log.flush()
        assert scan(path).records == 3  # flush() still hands the data to the OS
    assert sync_calls == []


def test_io_error_makes_log_unusable_until_reopened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.log"
    log = FileLog.open(path, fsync=FsyncPolicy.ALWAYS)
    log.append(b"a")

    def failing(fd: int) -> None:
        raise OSError(5, "EIO")

    monkeypatch.setattr(filelog, "_sync_fd", failing)
    with pytest.raises(OSError):
        log.append(b"b")
    with pytest.raises(LogError, match="reopen"):
        log.append(b"c")
    with pytest.raises(LogError):
        log.flush()
    log.close()  # does not raise
    monkeypatch.undo()
    with FileLog.open(path) as log:
        # "b" reached the OS before the fsync failed; a prefix either way.
        assert [p for _, p in log.read()] in ([b"a"], [b"a", b"b"])


# --------------------------------------------------------------------------- properties

payload_lists = st.lists(st.binary(max_size=200), min_size=0, max_size=25)
_counter = itertools.count()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=payload_lists, data=st.data())
def test_property_truncation_yields_a_prefix(tmp_path: Path, payloads: list[bytes], data: st.DataObject) -> None:
    path = tmp_path / f"prop{next(_counter)}.log"
    offs = make_log(path, payloads)
    cut = data.draw(st.integers(min_value=0, max_value=offs[-1]), label="cut")
    os.truncate(path, cut)
    complete = sum(1 for end in offs[1:] if end <= cut)

    log, warnings = open_log(path)
    with log:
        got = read_all(log)
        assert got == list(enumerate(payloads[:complete], start=1))
        assert log.last_seq == complete
        assert len(warnings) == (0 if cut in offs else 1)
        assert path.stat().st_size == offs[complete]
        assert log.append(b"more") == complete + 1
    assert scan(path).ok


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=payload_lists.filter(bool), data=st.data())
def test_property_flipped_byte_never_yields_bad_data(
    tmp_path: Path, payloads: list[bytes], data: st.DataObject
) -> None:
    path = tmp_path / f"flip{next(_counter)}.log"
    offs = make_log(path, payloads)
    pos = data.draw(st.integers(min_value=0, max_value=offs[-1] - 1), label="pos")
    mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
    flip(path, pos, mask)
    hit = max(i for i, start in enumerate(offs[:-1]) if start <= pos)  # index of the damaged record

    warnings: list[str] = []
    try:
        log = FileLog.open(path, warn=warnings.append)
    except LogCorruptError as err:
        assert hit < len(payloads) - 1, "only damage before the last record may raise"
        assert err.offset == offs[hit]
        assert err.expected_seq == hit + 1
        return
    with log:
        # Damage in the last record: it is cut, everything before it is intact.
        assert hit == len(payloads) - 1
        assert len(warnings) == 1
        assert read_all(log) == list(enumerate(payloads[:hit], start=1))
