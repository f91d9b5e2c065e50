"""The distilled table on disk: a safetensors file holding the table (float16) and the PCA basis
it was projected on, whose metadata records the format, the distillation settings, the SHA-256
of the source model's files and of the table itself.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from banditroute.embedding.distil import Distilled, DistilSpec
from banditroute.embedding.extra import require

log = structlog.get_logger(__name__)

FORMAT = "banditroute-static-embedding/2"
"""The ``format`` metadata of a table file; another value (such as version 1's float32 tables
without their basis) is distilled again."""

TENSORS = ("table", "mean", "directions")
"""The tensors of a table file."""
Tensors = dict[str, npt.NDArray[Any]]
"""A table file's tensors by name (the table in float16, the basis in float32)."""


@dataclass(frozen=True)
class Provenance:
    """Where a table came from: the SHA-256 of the model's files (weights, tokenizer, config)
    and of its tokenizer alone, the one file a table is read with."""

    source_sha256: str
    tokenizer_sha256: str


def hash_file(sha: Any, path: Path) -> None:
    """Feed a file's bytes to ``sha`` (a hashlib object), a megabyte at a time."""
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            sha.update(chunk)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    sha = hashlib.sha256()
    hash_file(sha, path)
    return sha.hexdigest()


def _metadata(spec: DistilSpec, origin: Provenance, tensors: Tensors) -> dict[str, str]:
    """The file's metadata; ``tensors_sha256`` covers every tensor, in name order."""
    sha = hashlib.sha256()
    for name in sorted(tensors):
        sha.update(name.encode())
        sha.update(np.ascontiguousarray(tensors[name]).tobytes())
    return {
        "format": FORMAT,
        "dims": str(spec.dims),
        "weighting": spec.weighting,
        "source_sha256": origin.source_sha256,
        "tokenizer_sha256": origin.tokenizer_sha256,
        "tensors_sha256": sha.hexdigest(),
    }


def _tensors(distilled: Distilled) -> Tensors:
    """What a file holds: the table in float16, the basis in float32; a ValueError if any of
    it is not finite (a row past float16's range would be read back as infinite)."""
    with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
        half = np.ascontiguousarray(distilled.table, dtype=np.float16)
    tensors: Tensors = {
        "table": half,
        "mean": np.ascontiguousarray(distilled.mean, dtype=np.float32),
        "directions": np.ascontiguousarray(distilled.directions, dtype=np.float32),
    }
    if not all(np.isfinite(tensor).all() for tensor in tensors.values()):
        raise ValueError("table: values that are not finite (or past float16's range)")
    return tensors


def stored(distilled: Distilled) -> Distilled:
    """The table as a file holds it: rows rounded to float16 (half the size, and a
    thousandth of a row's length is far below what the features resolve), then float32 again;
    what a fresh distillation returns too, so a cached table and a new one are the same."""
    tensors = _tensors(distilled)
    return Distilled(tensors["table"].astype(np.float32), tensors["mean"], tensors["directions"])


def _defects(tensors: Tensors, spec: DistilSpec) -> list[str]:
    """What is wrong with a file's tensors (empty when they are a table of ``spec``)."""
    half, mean, directions = (tensors[name] for name in TENSORS)
    checks = {
        "dtypes": half.dtype == np.float16 and mean.dtype == directions.dtype == np.float32,
        "shapes": mean.ndim == 1
        and half.ndim == 2
        and half.shape[1] == spec.dims
        and directions.shape == (spec.dims, mean.shape[0]),
        "finite": all(np.isfinite(tensor).all() for tensor in tensors.values()),
    }
    return [name for name, good in checks.items() if not good]


def read_table(
    path: Path, spec: DistilSpec, origin: Provenance | None, *, tokenizer_sha256: str = ""
) -> Distilled | None:
    """The table at ``path`` when it is intact (its digest and finite values), has these
    settings and was distilled from ``origin``'s model; None (saying why in the log)
    otherwise. With ``origin`` None (the table shipped with banditroute, whose model is not
    installed), only its tokenizer is checked: ``tokenizer_sha256``, that of the tokenizer file
    it is to be read with."""
    if not path.is_file():
        return None
    safetensors = require("safetensors")
    try:
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            metadata = dict(handle.metadata() or {})
            if metadata.get("format") != FORMAT:  # another version: its tensors may differ
                log.warning("embedding_cache_stale_or_corrupt", path=str(path),
                            mismatched=["format"], format=metadata.get("format"))  # fmt: skip
                return None
            tensors = {name: np.asarray(handle.get_tensor(name)) for name in TENSORS}
    except Exception as exc:  # a truncated or garbled file raises many kinds of errors
        log.warning("embedding_cache_unreadable", path=str(path), error=type(exc).__name__)
        return None
    if origin is None:
        origin = Provenance(metadata.get("source_sha256", ""), tokenizer_sha256)
    wanted = _metadata(spec, origin, tensors)
    defects = _defects(tensors, spec)
    if metadata != wanted or defects:
        stale = sorted(k for k in wanted if metadata.get(k) != wanted[k])
        log.warning("embedding_cache_stale_or_corrupt", path=str(path), mismatched=stale + defects)
        return None
    half, mean, directions = (tensors[name] for name in TENSORS)
    return Distilled(half.astype(np.float32), mean, directions)


def write_table(path: Path, distilled: Distilled, spec: DistilSpec, origin: Provenance) -> None:
    """Write the table (as :func:`stored` rounds it) and its basis atomically: readers see
    the old file or the whole new one."""
    numpy_io = require("safetensors.numpy")
    tensors = _tensors(distilled)
    data: bytes = numpy_io.save(tensors, metadata=_metadata(spec, origin, tensors))
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
