"""The files of a log directory besides the two logs: ``meta.json`` and ``snapshots/``.

Layout (``engine/io/embedded.py`` writes it, ``replay/`` reads it)::

    DIR/commands.log            every accepted command (the source of truth)
    DIR/events.log              the outcome of each command, same seq
    DIR/meta.json               {"format": 1, "rulesVersion": N}
    DIR/snapshots/<seq>.msgpack the engine state after command <seq>
    DIR/writer.lock             the single-writer lock (engine/io/lock.py)

``meta.json`` is written atomically (``engine.io.atomic.write_atomic``) and validated on every
open, by writers and readers alike (:func:`read_meta`): it must be a JSON object whose
``format`` is one this code reads (:data:`KNOWN_FORMATS`) and whose ``rulesVersion`` is an
integer. An unknown format is refused (a newer marginbook wrote the directory); an empty or
garbage file is refused with the repair command (``marginbook recover DIR --rewrite-meta``).

A snapshot file is ``SNAPSHOT_MAGIC`` (8 bytes), the SHA-256 of the body (32 bytes), then the
body: ``engine.core.snapshot.encode(state)``. The checksum catches a torn or damaged file, which
is then never restored (:class:`SnapshotDamaged`); the state's ``last_seq`` must equal the seq
in the file name. Files without the magic (written before the checksum existed) are restored as
plain bodies, unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.core import RULES_VERSION, snapshot
from engine.core.state import State
from engine.io.atomic import write_atomic
from engine.io.filelog import LogError

__all__ = [
    "COMMANDS_FILE",
    "EVENTS_FILE",
    "FORMAT",
    "KNOWN_FORMATS",
    "META_FILE",
    "SNAPSHOT_DIR",
    "SNAPSHOT_MAGIC",
    "LogDirError",
    "Meta",
    "SnapshotDamaged",
    "checked_body",
    "ensure_meta",
    "read_meta",
    "read_snapshot",
    "rules_version_of",
    "snapshot_body",
    "snapshot_file_bytes",
    "snapshot_path",
    "snapshot_paths",
    "write_meta",
    "write_snapshot",
]

META_FILE: Final = "meta.json"
COMMANDS_FILE: Final = "commands.log"
EVENTS_FILE: Final = "events.log"
SNAPSHOT_DIR: Final = "snapshots"
#: The log directory format this code writes, and the ones it reads.
FORMAT: Final = 1
KNOWN_FORMATS: Final = frozenset({1})
SNAPSHOT_MAGIC: Final = b"MBSNAP1\n"
_DIGEST_SIZE: Final = 32


class LogDirError(LogError):
    """A log directory that cannot be used as it is: the message names the file, where and
    what is wrong, and ``repair`` (when there is one) the command that repairs it."""

    def __init__(self, message: str, repair: str | None = None) -> None:
        super().__init__(f"{message}; repair: {repair}" if repair else message)
        self.repair = repair


class SnapshotDamaged(LogError):
    """A snapshot file that must not be restored (torn, damaged, or of another seq)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: snapshot not usable: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Meta:
    format: int
    rules_version: int


def rewrite_meta_command(directory: Path) -> str:
    return f"marginbook recover {directory} --rewrite-meta"


def read_meta(directory: str | os.PathLike[str]) -> Meta | None:
    """The validated ``meta.json`` of a directory (``None`` when there is none); raise
    :class:`LogDirError` for an unreadable, empty, garbage or unknown-format one."""
    folder = Path(directory)
    path = folder / META_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LogDirError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    repair = rewrite_meta_command(folder)
    if not data.strip():
        raise LogDirError(f"{path}: empty file (it should hold the log format and the engine rules version)", repair)
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        where = f" at byte {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise LogDirError(f"{path}: not valid JSON{where}: {exc}", repair) from None
    if not isinstance(value, dict):
        raise LogDirError(f"{path}: not a JSON object (found {type(value).__name__})", repair)
    fmt = value.get("format")
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise LogDirError(f"{path}: `format` must be an integer, found {fmt!r}", repair)
    if fmt not in KNOWN_FORMATS:
        known = ", ".join(str(f) for f in sorted(KNOWN_FORMATS))
        raise LogDirError(
            f"{path}: log format {fmt} is not known to this marginbook (it reads format {known}): "
            f"the directory was written by another version; use that version"
        )
    rules = value.get("rulesVersion")
    if not isinstance(rules, int) or isinstance(rules, bool):
        raise LogDirError(f"{path}: `rulesVersion` must be an integer, found {rules!r}", repair)
    return Meta(fmt, rules)


def rules_version_of(directory: str | os.PathLike[str]) -> int | None:
    """The engine rules version recorded in a log directory (``None``: not recorded)."""
    meta = read_meta(directory)
    return None if meta is None else meta.rules_version


def write_meta(directory: Path, meta: Meta, sync: bool = True) -> None:
    data = json.dumps({"format": meta.format, "rulesVersion": meta.rules_version}) + "\n"
    write_atomic(directory / META_FILE, data.encode(), sync)


def ensure_meta(directory: Path, warn: Callable[[str], None], sync: bool = True) -> Meta:
    """For a writer: validate ``meta.json``, or write it for this engine when missing."""
    meta = read_meta(directory)
    if meta is None:
        meta = Meta(FORMAT, RULES_VERSION)
        write_meta(directory, meta, sync)
    elif meta.rules_version != RULES_VERSION:
        warn(
            f"{directory} was written under engine rules version {meta.rules_version}; "
            f"this engine applies {RULES_VERSION}"
        )
    return meta


# --------------------------------------------------------------------------- snapshots


def snapshot_path(directory: str | os.PathLike[str], seq: int) -> Path:
    return Path(directory) / SNAPSHOT_DIR / f"{seq:012d}.msgpack"


def snapshot_paths(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Snapshots in a log directory as ``(seq, path)``, oldest first."""
    folder = Path(directory) / SNAPSHOT_DIR
    if not folder.is_dir():
        return []
    found = [(int(p.stem), p) for p in folder.glob("*.msgpack") if p.stem.isdigit()]
    return sorted(found)


def snapshot_file_bytes(state: State) -> bytes:
    body = snapshot.encode(state)
    return SNAPSHOT_MAGIC + hashlib.sha256(body).digest() + body


def write_snapshot(directory: str | os.PathLike[str], state: State, sync: bool = True) -> Path:
    """Write the snapshot of ``state`` atomically (temp file, fsync, rename, directory fsync)."""
    final = snapshot_path(directory, state.last_seq)
    final.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(final, snapshot_file_bytes(state), sync)
    return final


def snapshot_body(path: Path) -> bytes:
    """The ``engine.core.snapshot`` body of a snapshot file, its checksum verified."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SnapshotDamaged(path, f"cannot be read: {exc.strerror or exc}") from None
    return checked_body(data, path)


def checked_body(data: bytes, path: Path) -> bytes:
    """The body of the bytes of snapshot file ``path``, checksum verified (:func:`snapshot_body`)."""
    if not data.startswith(SNAPSHOT_MAGIC):
        if SNAPSHOT_MAGIC.startswith(data):
            raise SnapshotDamaged(path, f"truncated ({len(data)} bytes)")
        return data  # written before snapshot files had a checksum
    head = len(SNAPSHOT_MAGIC) + _DIGEST_SIZE
    if len(data) < head:
        raise SnapshotDamaged(path, f"truncated ({len(data)} bytes, the header alone is {head})")
    body = data[head:]
    if hashlib.sha256(body).digest() != data[len(SNAPSHOT_MAGIC) : head]:
        raise SnapshotDamaged(path, f"checksum mismatch ({len(body)} body bytes): the file is torn or damaged")
    return body


def read_snapshot(path: Path, seq: int | None = None, data: bytes | None = None) -> State:
    """Restore a snapshot file; raise :class:`SnapshotDamaged` if it is not usable. ``seq``:
    the seq it must hold the state after (default: the one in its name). ``data``: the file's
    bytes, when already read."""
    body = snapshot_body(path) if data is None else checked_body(data, path)
    try:
        state = snapshot.restore(body)
    except Exception as exc:  # a decode boundary: whatever the bytes make restore raise
        raise SnapshotDamaged(path, f"does not decode: {exc}") from None
    expected = int(path.stem) if seq is None and path.stem.isdigit() else seq
    if expected is not None and state.last_seq != expected:
        raise SnapshotDamaged(path, f"holds the state after seq {state.last_seq}, not {expected}")
    return state
