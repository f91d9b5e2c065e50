"""The distilled table on disk: a safetensors file whose metadata records the format, the
distillation settings, the SHA-256 of the source model's files and of the table itself.

A missing, unreadable, corrupt (a table digest that does not match) or stale (another source
model or other settings) file is distilled again; writes are atomic (a temporary file in the
same directory, fsync, rename), and a lock file makes concurrent processes (``workers > 1``)
distil once: the others wait for it and read the result.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import structlog

from banditroute.embedding.bert import Array
from banditroute.embedding.distil import DistilSpec
from banditroute.embedding.extra import require

log = structlog.get_logger(__name__)

FORMAT = "banditroute-static-embedding/1"
"""The ``format`` metadata of a table file; another value is distilled again."""


def _table_digest(table: Array) -> str:
    return hashlib.sha256(np.ascontiguousarray(table, dtype=np.float32).tobytes()).hexdigest()


def _metadata(spec: DistilSpec, source_digest: str, table: Array) -> dict[str, str]:
    return {
        "format": FORMAT,
        "dims": str(spec.dims),
        "weighting": spec.weighting,
        "source_sha256": source_digest,
        "table_sha256": _table_digest(table),
    }


def read_table(path: Path, spec: DistilSpec, source_digest: str) -> Array | None:
    """The cached table when ``path`` holds an intact one distilled from this source with
    these settings; None (saying why in the log) otherwise."""
    if not path.is_file():
        return None
    safetensors = require("safetensors")
    try:
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            metadata = dict(handle.metadata() or {})
            table = np.asarray(handle.get_tensor("table"), dtype=np.float32)
    except Exception as exc:  # a truncated or garbled file raises many kinds of errors
        log.warning("embedding_cache_unreadable", path=str(path), error=type(exc).__name__)
        return None
    wanted = _metadata(spec, source_digest, table)
    if metadata != wanted or table.ndim != 2 or table.shape[1] != spec.dims:
        stale = sorted(k for k in wanted if metadata.get(k) != wanted[k])
        log.warning("embedding_cache_stale_or_corrupt", path=str(path), mismatched=stale)
        return None
    return table


def write_table(path: Path, table: Array, spec: DistilSpec, source_digest: str) -> None:
    """Write the table atomically: readers see the old file or the whole new one."""
    numpy_io = require("safetensors.numpy")
    table = np.ascontiguousarray(table, dtype=np.float32)
    data: bytes = numpy_io.save({"table": table}, metadata=_metadata(spec, source_digest, table))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # readable by the other users of a shared cache, like any file
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class CacheLock:
    """An exclusive lock on ``PATH.lock`` (held while checking and distilling)."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self._fd = -1

    def __enter__(self) -> CacheLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
