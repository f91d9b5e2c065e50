"""The log's journal: JSON lines in numbered segment files, written before DuckDB has them.

A row reaches the journal in one of two ways. :meth:`Journal.append` only buffers it in
memory (Route: it must not wait on disk); the log's writer thread writes the buffer out every
flush interval. :meth:`Journal.append_durable` writes it, and everything buffered before it,
from the calling thread before returning (Feedback: acknowledged only once written). A
written row is in the operating system's hands, so it survives kill -9 of the server; with
``fsync`` it survives a power cut too. The writer closes segments with :meth:`rotate`, moves
them into DuckDB and deletes them; a start after a crash moves whatever was left.

Lines go out in chunks of at most :data:`WRITE_CHUNK_BYTES`, each counted as written as soon
as it lands: after a full disk, a backlog larger than the space freed still goes out a chunk
at a time (the writer moves each into the database, freeing its space, before the next),
where one write of the whole backlog would fail for as long as the backlog is larger.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path

SUFFIX = ".jsonl"

WRITE_CHUNK_BYTES = 256 * 1024
"""The most one write puts out (whole lines; a longer line goes out alone)."""


def journal_dir(log_path: Path) -> Path:
    """Where the log file at ``log_path`` keeps its journal: ``PATH.journal/`` beside it."""
    return log_path.with_name(log_path.name + ".journal")


def segment_number(path: Path) -> int:
    """The sequence number in a segment's file name."""
    return int(path.name.removesuffix(SUFFIX))


def list_segments(directory: Path) -> list[Path]:
    """The directory's segments, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.name.endswith(SUFFIX) and p.stem.isdigit()]
    return sorted(found, key=segment_number)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (``os.write`` may write less than it was given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def trim_torn_tail(path: Path) -> int:
    """Cut a segment back to its last complete line; returns the bytes removed.

    Only a write interrupted part-way (the process killed inside a multi-call write) leaves a
    torn line, and a row whose write did not finish was never acknowledged.
    """
    size = path.stat().st_size
    keep = 0
    with open(path, "rb+") as handle:
        end = size
        while end > 0:
            start = max(0, end - (1 << 16))
            handle.seek(start)
            chunk = handle.read(end - start)
            if end == size and chunk.endswith(b"\n"):
                return 0
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        handle.truncate(keep)
    return size - keep


class Journal:
    """Append-only segments under ``directory``, numbered after ``after`` and after any
    segment already there; thread-safe.

    Two locks keep Route off the disk: ``_buffer_lock`` guards the in-memory buffer only
    (held for a list append), ``_write_lock`` serialises writes and rotation. Each line gets
    a number; a durable append returns once a write covered its number, so concurrent
    Feedback calls share one write (and one fsync) instead of queueing for their own.
    """

    def __init__(self, directory: Path, *, fsync: bool = False, after: int = 0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._fsync = fsync
        self._buffer_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._buffer: list[bytes] = []
        self._buffered_bytes = 0
        self._appended = 0  # number of the newest line handed in
        self._written = 0  # every line up to this number is written
        existing = list_segments(directory)
        self._seq = max(after, segment_number(existing[-1]) if existing else 0) + 1
        self._fd = self._open(self._seq)
        self._size = 0
        self._closed = False

    @property
    def buffered_bytes(self) -> int:
        """Bytes handed in and not yet written."""
        return self._buffered_bytes

    @property
    def appended(self) -> int:
        """The number of the newest line handed in."""
        return self._appended

    @property
    def written(self) -> int:
        """Every line up to this number is written."""
        return self._written

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:012d}{SUFFIX}"

    def _open(self, seq: int) -> int:
        return os.open(self._path(seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append(self, line: bytes) -> int:
        """Buffer one line (ending in a newline); returns its number."""
        with self._buffer_lock:
            self._buffer.append(line)
            self._buffered_bytes += len(line)
            self._appended += 1
            return self._appended

    def append_durable(self, line: bytes, *, backlog_limit: int | None = None) -> None:
        """Write one line and everything buffered before it; OSError if it could not be.

        With ``backlog_limit``, more than that many bytes buffered is an OSError (EAGAIN)
        instead of a write: the writer is catching up on a failure's backlog a chunk at a
        time, and a write of all of it could fill the disk the database needs to take it in.
        After a failure the line stays buffered, in order, and goes out with a later write.
        """
        self.make_durable(self.append(line), backlog_limit=backlog_limit)

    def make_durable(self, number: int, *, backlog_limit: int | None = None) -> None:
        """Write line ``number`` and everything buffered before it, unless already written;
        OSError (EAGAIN past ``backlog_limit``) as :meth:`append_durable`."""
        with self._write_lock:
            if self._written >= number:
                return
            if backlog_limit is not None and self._buffered_bytes > backlog_limit:
                raise OSError(
                    errno.EAGAIN,
                    f"the log is catching up on {self._buffered_bytes} bytes of rows a failed "
                    "write left unwritten",
                )
            self._write_buffer()

    def write(self, chunks: int | None = None) -> bool:
        """Write what is buffered, or at most ``chunks`` chunks of it; returns whether lines
        are still buffered. OSError if a write failed."""
        with self._write_lock:
            return self._write_buffer(chunks)

    def _write_buffer(self, chunks: int | None = None) -> bool:
        """Write buffered lines to the open segment a chunk at a time (at most ``chunks``),
        each chunk counted as written once it lands; returns whether lines remain buffered.
        On failure, cut the segment back to its last whole chunk, put the unwritten lines
        back at the buffer's front and raise."""
        if self._closed:
            raise OSError(errno.EBADF, f"the journal {self.directory} is closed")
        with self._buffer_lock:
            lines, self._buffer = self._buffer, []
            upto = self._appended
        if not lines:
            self._written = upto
            return False
        first = upto - len(lines) + 1  # the number of lines[0]
        done = sent = 0
        try:
            while done < len(lines) and (chunks is None or sent < chunks):
                end, size = done + 1, len(lines[done])
                while end < len(lines) and size + len(lines[end]) <= WRITE_CHUNK_BYTES:
                    size += len(lines[end])
                    end += 1
                _write_all(self._fd, b"".join(lines[done:end]))
                if self._fsync:
                    os.fdatasync(self._fd)
                self._size += size
                sent += 1
                done = end
                with self._buffer_lock:
                    self._buffered_bytes -= size
                self._written = first + done - 1
        except OSError:
            # Leave whole lines only: cut off what a partial write put in the segment.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            with self._buffer_lock:
                self._buffer[:0] = lines[done:]
            raise
        with self._buffer_lock:
            self._buffer[:0] = lines[done:]
            return bool(self._buffer)

    def rotate(self) -> Path | None:
        """Close the open segment, holding what has been written to it (not the buffer), and
        start the next one.

        Returns the closed segment, or None when it held nothing (then it stays open).
        OSError if the next segment could not be opened.
        """
        with self._write_lock:
            if self._size == 0:
                return None
            # Open the next segment before closing this one: if the open fails, writing goes
            # on into this segment and no descriptor is left pointing at a closed file.
            fd = self._open(self._seq + 1)
            os.close(self._fd)
            closed = self._path(self._seq)
            self._seq, self._fd, self._size = self._seq + 1, fd, 0
            return closed

    def close(self) -> Path | None:
        """Write the buffer and close; returns the last segment if it holds rows, else
        removes it. OSError (and the journal stays open) if the buffer cannot be written."""
        with self._write_lock:
            if self._closed:
                return None
            self._write_buffer()
            os.close(self._fd)
            self._closed, self._fd = True, -1
            path = self._path(self._seq)
            if self._size == 0:
                path.unlink(missing_ok=True)
                return None
            return path
