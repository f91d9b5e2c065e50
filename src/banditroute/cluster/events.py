"""The cluster's keys and the shape of an event batch on the stream.

A replica ships its outbox lines (:mod:`banditroute.cluster.outbox`) in batches: one stream
entry holds consecutive lines of one source, from sequence number ``first`` to ``last``, as
the lines themselves (zlib-compressed: they are JSON text, mostly repeated keys). The trainer
never trusts a batch's shape: a malformed entry is skipped with a log line, never a crash.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass

from banditroute.cluster.outbox import Line, line_seq

STREAM_MAXLEN = 20_000
"""Entries the events stream keeps (approximately; older ones are trimmed): a bound on the
server's memory. Trimming loses nothing: the replicas resend what the trainer has not
acknowledged."""

MAX_BATCH_LINES = 2000
MAX_BATCH_BYTES = 1024 * 1024
"""A batch's bounds before compression."""


@dataclass(frozen=True)
class Keys:
    """The keys of one deployment (all under ``prefix``)."""

    prefix: str

    @property
    def events(self) -> str:
        """The stream every replica ships its batches to."""
        return f"{self.prefix}:events"

    def ack(self, source: str) -> str:
        """The number up to which the trainer holds ``source``'s lines."""
        return f"{self.prefix}:ack:{source}"

    @property
    def leader(self) -> str:
        """The trainer's leader lock (its holder's token, with an expiry)."""
        return f"{self.prefix}:trainer:leader"

    def joined(self, tag: str) -> str:
        """A sorted set: decision ids of replica tag ``tag`` whose feedback reached another
        replica while it was gone and that the trainer joined and learned (scored by when)."""
        return f"{self.prefix}:joined:{tag}"

    @property
    def snapshot(self) -> str:
        """A hash: the current policy snapshot and its version, checksum and time."""
        return f"{self.prefix}:snapshot"

    @property
    def snapshot_channel(self) -> str:
        """Pub/sub channel announcing a new snapshot version."""
        return f"{self.prefix}:snapshot:published"

    @property
    def policy_change(self) -> str:
        """A hash: the one pending promotion or rollback for the trainer to apply."""
        return f"{self.prefix}:policy:change"

    def policy_result(self, change: str) -> str:
        """A hash: what the trainer made of promotion or rollback ``change``."""
        return f"{self.prefix}:policy:result:{change}"


@dataclass(frozen=True)
class Batch:
    """Consecutive outbox lines of one source."""

    source: str
    first: int
    last: int
    lines: tuple[Line, ...]


def encode_batch(source: str, lines: list[Line]) -> dict[str, bytes]:
    """The stream entry's fields for ``lines`` (consecutive, non-empty)."""
    return {
        "s": source.encode(),
        "a": str(lines[0].seq).encode(),
        "b": str(lines[-1].seq).encode(),
        "d": zlib.compress(b"".join(line.data for line in lines), 1),
    }


def decode_batch(fields: dict[bytes, bytes]) -> Batch:
    """A batch from a stream entry's fields; ValueError if it is malformed (missing fields,
    numbers that do not match its lines, lines out of sequence)."""
    try:
        source = fields[b"s"].decode()
        first, last = int(fields[b"a"]), int(fields[b"b"])
        data = zlib.decompressobj().decompress(fields[b"d"], MAX_BATCH_BYTES * 4)
    except (KeyError, UnicodeDecodeError, zlib.error) as exc:
        raise ValueError(f"malformed batch: {type(exc).__name__}") from None
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines = tuple(Line(line_seq(text), text + b"\n") for text in raw)
    if not lines or lines[0].seq != first or lines[-1].seq != last:
        raise ValueError("malformed batch: its numbers do not match its lines")
    if any(b.seq != a.seq + 1 for a, b in itertools.pairwise(lines)):
        raise ValueError("malformed batch: lines out of sequence")
    return Batch(source, first, last, lines)


__all__ = ["Batch", "Keys", "decode_batch", "encode_batch"]
