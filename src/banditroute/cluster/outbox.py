"""A replica's outbox: its log rows and learning updates, numbered, kept until the trainer has them.

Every row the replica logs (decisions, feedback, settlements, audit records) and every
learning update it makes is also appended here as a journal line stamped with the next number
of this replica's sequence (``{"n": SEQ, ...}``). The lines live in segment files under
``PATH.outbox/`` written by the :class:`~banditroute.store.journal.Journal` machinery, so
they survive kill -9 exactly as the decision log's do (Feedback makes its line durable before
it is acknowledged). The shipper (:mod:`banditroute.cluster.shipper`) sends them to the
stream and deletes a segment only once the trainer has acknowledged every line in it, so the
stream may lose anything: the outbox is the source of truth until the trainer's
acknowledgement.

The outbox has an identity of its own (``PATH.outbox/source``), fixed when it is created: a
replica restarted under another name still ships its old lines under the name they were
numbered under, so the trainer's deduplication by (source, sequence) holds.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

from banditroute.store.journal import Journal, list_segments, trim_torn_tail

SEGMENT_BYTES = 1024 * 1024
"""A segment is closed (and becomes deletable once acknowledged) past this size."""

MAX_SOURCE_CHARS = 128


def outbox_dir(log_path: Path) -> Path:
    """Where the log at ``log_path`` keeps its outbox: ``PATH.outbox/`` beside it."""
    return log_path.with_name(log_path.name + ".outbox")


def stamp(seq: int, line: bytes) -> bytes:
    """The journal line ``line`` (a JSON object) with ``"n": seq`` put first."""
    return b'{"n":' + str(seq).encode() + b"," + line[1:]


def line_seq(line: bytes) -> int:
    """The sequence number a stamped line carries (ValueError if none)."""
    if not line.startswith(b'{"n":'):
        raise ValueError("not a stamped outbox line")
    return int(line[5 : line.index(b",", 5)])


def _last_line(path: Path) -> bytes | None:
    """The last complete line of a segment (None if it has none)."""
    data = path.read_bytes()
    if not data:
        return None
    end = data.rstrip(b"\n")
    return end[end.rfind(b"\n") + 1 :] or None


def _first_seq(path: Path) -> int | None:
    """The sequence number of a segment's first line (None if empty)."""
    with open(path, "rb") as handle:
        first = handle.readline()
    return line_seq(first) if first.endswith(b"\n") else None


@dataclass(frozen=True)
class Line:
    """One outbox line: its sequence number and its bytes (ending in a newline)."""

    seq: int
    data: bytes


class Outbox:
    """Numbered lines for the trainer, durable on demand; thread-safe.

    :meth:`append` numbers and buffers a line (no disk), :meth:`sync` writes every line
    appended so far (Feedback calls it before acknowledging), :meth:`write` is the background
    flush. :meth:`read` returns written lines after a sequence number; :meth:`trim` deletes
    segments the trainer has acknowledged entirely.
    """

    def __init__(self, directory: Path, source: str, *, fsync: bool = False, floor: int = 0):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.source = self._identity(directory, source)
        self._lock = threading.Lock()
        segments = list_segments(directory)
        last = 0
        for segment in reversed(segments):
            trim_torn_tail(segment)
            tail = _last_line(segment)
            if tail is not None:
                last = line_seq(tail)
                break
        self._journal = Journal(directory, fsync=fsync)
        self._next = max(last, floor) + 1
        self._number = 0  # journal number of the newest line handed in
        self._starts: dict[Path, int] = {}  # closed segment -> its first sequence number
        self._cursor: tuple[int, Path, int] | None = None  # last line read: seq, segment, end

    @staticmethod
    def _identity(directory: Path, source: str) -> str:
        path = directory / "source"
        with contextlib.suppress(FileNotFoundError):
            kept = path.read_text().strip()
            if kept:
                return kept
        if not source or len(source) > MAX_SOURCE_CHARS:
            raise ValueError(f"outbox source must be 1..{MAX_SOURCE_CHARS} characters")
        tmp = path.with_name("source.tmp")
        tmp.write_text(source + "\n")
        tmp.replace(path)
        return source

    @property
    def last_seq(self) -> int:
        """The number of the newest line appended (0 if none ever was)."""
        return self._next - 1

    def advance_to(self, seq: int) -> None:
        """Number the next line after ``seq`` at least (the trainer acknowledged up to ``seq``
        already: an outbox recreated from nothing must not reuse numbers it has seen)."""
        with self._lock:
            self._next = max(self._next, seq + 1)

    def append(self, line: bytes) -> int:
        """Number and buffer one journal line; returns its sequence number."""
        with self._lock:
            seq = self._next
            self._next += 1
            self._number = self._journal.append(stamp(seq, line))
        return seq

    def append_many(self, lines: list[bytes]) -> int:
        """Number and buffer several lines as one piece (no crash or segment boundary separates
        them: an audit record and its row); returns the last one's number."""
        with self._lock:
            first = self._next
            self._next += len(lines)
            data = b"".join(stamp(first + i, line) for i, line in enumerate(lines))
            self._number = self._journal.append(data)
        return self._next - 1

    def append_update(self, update: dict[str, object]) -> int:
        """Number and buffer a learning update (``k`` = ``u``); returns its number."""
        return self.append(orjson.dumps({"k": "u", **update}, option=orjson.OPT_APPEND_NEWLINE))

    def sync(self) -> None:
        """Write every line appended so far; OSError if they could not be."""
        self._journal.make_durable(self._number)

    def write(self) -> None:
        """Write what is buffered and close the segment when it is large; OSError on failure."""
        self._journal.write()
        with self._lock:
            closed = None
            if self._journal_size() >= SEGMENT_BYTES:
                closed = self._journal.rotate()
        if closed is not None:
            first = _first_seq(closed)
            if first is not None:
                self._starts[closed] = first

    def _journal_size(self) -> int:
        segments = list_segments(self.directory)
        return segments[-1].stat().st_size if segments else 0

    def read(self, after: int, *, max_lines: int, max_bytes: int) -> list[Line]:
        """Written lines numbered after ``after``, in order, at most ``max_lines`` of them
        and about ``max_bytes`` (at least one line). Reading on from where the last read
        ended starts at that byte of that segment, not at the segment's start."""
        found: list[Line] = []
        size = 0
        segments = list_segments(self.directory)
        cursor = self._cursor
        for index, segment in enumerate(segments):
            offset = 0
            if cursor is not None and cursor[0] == after and cursor[1] == segment:
                offset = cursor[2]
            elif cursor is not None and cursor[0] == after and cursor[1] in segments:
                if segments.index(cursor[1]) > index:
                    continue  # before where the last read ended
            else:
                following = segments[index + 1] if index + 1 < len(segments) else None
                if following is not None:
                    start = self._starts.get(following) or _first_seq(following)
                    if start is not None and start <= after + 1:
                        continue  # every line of this segment is at or before ``after``
            with open(segment, "rb") as handle:
                handle.seek(offset)
                for raw in handle:
                    if not raw.endswith(b"\n"):
                        break  # a write in progress: the rest next time
                    offset += len(raw)
                    seq = line_seq(raw)
                    if seq <= after:
                        continue
                    found.append(Line(seq, raw))
                    size += len(raw)
                    self._cursor = (seq, segment, offset)
                    if len(found) >= max_lines or size >= max_bytes:
                        return found
        return found

    def trim(self, acked: int) -> int:
        """Delete closed segments every line of which is numbered at most ``acked``; returns
        how many were deleted."""
        segments = list_segments(self.directory)
        deleted = 0
        for segment, following in itertools.pairwise(segments):
            start = self._starts.get(following) or _first_seq(following)
            if start is None or start - 1 > acked:
                break
            segment.unlink(missing_ok=True)
            self._starts.pop(segment, None)
            deleted += 1
        return deleted

    def close(self) -> None:
        """Write what is buffered and close the open segment."""
        self._journal.close()


__all__ = ["Line", "Outbox", "line_seq", "outbox_dir", "stamp"]
