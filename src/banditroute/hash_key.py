"""The secret key of the logged prompt hashes: read from its file, created there on first use.

The file lives beside the log unless configured (:attr:`LogSettings.hash_key_path`). It is
created with mode 0600 by writing a fresh key to a private temporary file and hard-linking it
into place, so several serving processes starting at once agree on one key (the first link
wins; the others read it) and none ever reads a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from banditroute.errors import ConfigError

MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 64
"""Key length bounds: 128 bits at least; BLAKE2b takes keys of at most 64 bytes."""

_FIELD = "log.prompt_hash_key_file"


def load_or_create(path: Path) -> bytes:
    """The key in ``path`` (whitespace around it ignored), creating the file with a random
    key (64 hex digits) and mode 0600 if it does not exist."""
    if not path.exists():
        _create(path)
    try:
        mode = path.stat().st_mode
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{_FIELD}: cannot read {str(path)!r}: {exc}", field=_FIELD) from exc
    if mode & 0o077:
        raise ConfigError(
            f"{_FIELD}: {str(path)!r} is readable by group or others (mode {mode & 0o777:o}); "
            "chmod 600 it",
            field=_FIELD,
        )
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ConfigError(
            f"{_FIELD}: {str(path)!r} holds {len(key)} bytes; a key has "
            f"{MIN_KEY_BYTES}-{MAX_KEY_BYTES}",
            field=_FIELD,
        )
    return key


def _create(path: Path) -> None:
    """Write a new random key to ``path`` unless another process does so first."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    except OSError as exc:
        raise ConfigError(f"{_FIELD}: cannot create {str(path)!r}: {exc}", field=_FIELD) from exc
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
