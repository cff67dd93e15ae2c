"""The digest chain: a running SHA-256 over the journal, so two parties can compare a long
history by exchanging a few lines.

``chain_0`` is 32 zero bytes; ``chain_n = SHA-256(chain_{n-1} || outcome_n)`` where ``outcome_n``
is the outcome of sequence number ``n`` exactly as journaled (the JSON bytes of
:func:`events.codec.encode_outcome_json`: one ``events.log`` record, or one line of a Kafka
events record). Equal ``chain_n`` means equal outcomes 1..n (up to SHA-256 collisions). Lines
are printed as ``seq <n> chain <hex>``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Final

from replay.tolerant import Record, read_log

GENESIS: Final = bytes(32)


def chain_line(seq: int, digest: bytes) -> str:
    return f"seq {seq} chain {digest.hex()}"


class Chain:
    """Running chain; ``every`` > 0 calls ``emit(seq, digest)`` at every multiple of ``every``."""

    __slots__ = ("digest", "emit", "every", "seq")

    def __init__(self, every: int = 0, emit: Callable[[int, bytes], None] | None = None) -> None:
        self.digest = GENESIS
        self.seq = 0
        self.every = every
        self.emit = emit

    def update(self, seq: int, outcome: bytes) -> None:
        if seq != self.seq + 1:
            raise ValueError(f"chain at seq {self.seq} cannot take seq {seq}")
        self.digest = hashlib.sha256(self.digest + outcome).digest()
        self.seq = seq
        if self.every and self.emit is not None and seq % self.every == 0:
            self.emit(seq, self.digest)

    @property
    def hex(self) -> str:
        return self.digest.hex()


def chain_of(outcomes: Iterator[bytes] | list[bytes], every: int = 0) -> tuple[bytes, list[str]]:
    """Chain over outcome bytes of seqs 1, 2, …; return the final digest and the lines."""
    lines: list[str] = []
    chain = Chain(every, lambda seq, digest: lines.append(chain_line(seq, digest)))
    for number, outcome in enumerate(outcomes, start=1):
        chain.update(number, outcome)
    return chain.digest, lines


def chain_of_log(path: str | os.PathLike[str], every: int = 0) -> tuple[int, bytes, list[str]]:
    """Chain over an ``events.log`` (stops at the first damaged or missing seq); return
    ``(last seq chained, digest, lines)``."""
    lines: list[str] = []
    chain = Chain(every, lambda seq, digest: lines.append(chain_line(seq, digest)))
    for item in read_log(path):
        if not isinstance(item, Record) or item.seq != chain.seq + 1:
            break
        chain.update(item.seq, item.payload)
    return chain.seq, chain.digest, lines
