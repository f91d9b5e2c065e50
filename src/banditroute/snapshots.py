"""Policy snapshots: atomic writes, a checksum, and a safe fallback when a snapshot is
unreadable.

A snapshot file is a header line (magic), the SHA-256 (hex) of the rest, then the policy name,
its update count and the policy's own bytes. It is written to a temporary file, fsynced and
renamed, so a crash mid-write leaves the previous snapshot intact. A snapshot whose checksum
does not match (cut short, bit-flipped: a policy may well restore from a truncated model
without complaint), or that is unreadable or foreign, is moved aside (``.corrupt``) with a
``snapshot_unreadable`` log line and the policy starts fresh, rather than the server failing
to start in a loop or serving a damaged model. Snapshots written before the checksum
(``BRSNAP1``) still load, unchecked.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import structlog

from banditroute.policies.base import Policy

log = structlog.get_logger(__name__)

MAGIC = b"BRSNAP2\n"
LEGACY_MAGIC = b"BRSNAP1\n"
"""The header of a snapshot written before the checksum: loaded unchecked."""
MAX_UPDATES = 2**53
"""Largest update count a snapshot header may give (exact in a float, which the policies'
exploration schedules divide by)."""


def save_snapshot(policy: Policy, path: Path) -> int:
    """Write the policy's state to ``path`` atomically; returns the bytes written."""
    return write_snapshot(snapshot_bytes(policy), path)


def snapshot_bytes(policy: Policy) -> bytes:
    """The policy's state as a snapshot file holds it after its header: name, update count,
    the policy's bytes (quick: the caller may hold the lock that keeps the policy still, and
    write the bytes, with :func:`write_snapshot`, after releasing it)."""
    return policy.name.encode() + b"\n" + str(policy.updates).encode() + b"\n" + policy.save()


def parse_snapshot(data: bytes) -> tuple[str, int, bytes]:
    """The policy name, update count and policy bytes of a snapshot file's ``data``;
    ValueError if it is no snapshot, or its checksum does not match (cut short, altered)."""
    if data.startswith(MAGIC):
        digest, _, body = data[len(MAGIC) :].partition(b"\n")
        if hashlib.sha256(body).hexdigest().encode() != digest:
            raise ValueError(
                f"checksum mismatch: the snapshot is cut short or corrupt ({len(data)} bytes)"
            )
    elif data.startswith(LEGACY_MAGIC):
        body = data[len(LEGACY_MAGIC) :]
    else:
        raise ValueError("missing snapshot header")
    parts = body.split(b"\n", 2)
    if len(parts) != 3:
        raise ValueError("snapshot header cut short")
    name, updates, state = parts
    count = int(updates)
    if not 0 <= count <= MAX_UPDATES:
        raise ValueError(f"snapshot header: an update count outside 0..{MAX_UPDATES}")
    return name.decode(), count, state


def snapshot_payload(state: bytes) -> bytes:
    """A snapshot file's bytes for :func:`snapshot_bytes` ``state``: the header, the state's
    SHA-256 and the state (what a trainer publishes; :func:`parse_snapshot` checks it)."""
    return MAGIC + hashlib.sha256(state).hexdigest().encode() + b"\n" + state


def write_snapshot(state: bytes, path: Path) -> int:
    """Write :func:`snapshot_bytes` to ``path`` under the header and its checksum, atomically
    (a temporary file, fsync, rename); returns the bytes written. Not safe to call for the
    same path from two threads at once."""
    payload = snapshot_payload(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return len(payload)


def load_snapshot(policy: Policy, path: Path) -> bool:
    """Restore the policy from ``path`` if it exists; False (and a fresh policy) otherwise."""
    if not path.exists():
        return False
    data = path.read_bytes()
    try:
        name, updates, body = parse_snapshot(data)
        if name != policy.name:
            raise ValueError(f"snapshot is of policy {name!r}, not {policy.name!r}")
        policy.restore(body)
        policy.updates = updates
    except (ValueError, UnicodeDecodeError) as exc:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        log.error("snapshot_unreadable", path=str(path), moved_to=str(aside), error=str(exc),
                  bytes=len(data))  # fmt: skip
        return False
    return True
