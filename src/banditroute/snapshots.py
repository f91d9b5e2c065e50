"""Policy snapshots: atomic writes, and a safe fallback when a snapshot is unreadable.

A snapshot file is a small header (magic, policy name) followed by the policy's own bytes.
It is written to a temporary file, fsynced and renamed, so a crash mid-write leaves the
previous snapshot intact. An unreadable or foreign snapshot is moved aside (``.corrupt``)
and the policy starts fresh, rather than the server failing to start in a loop.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from banditroute.policies.base import Policy

log = structlog.get_logger(__name__)

MAGIC = b"BRSNAP1\n"


def save_snapshot(policy: Policy, path: Path) -> int:
    """Write the policy's state to ``path`` atomically; returns the bytes written."""
    return write_snapshot(snapshot_bytes(policy), path)


def snapshot_bytes(policy: Policy) -> bytes:
    """The policy's state as a snapshot file holds it (quick: the caller may hold the lock
    that keeps the policy still, and write the bytes after releasing it)."""
    return (
        MAGIC + policy.name.encode() + b"\n" + str(policy.updates).encode() + b"\n" + policy.save()
    )


def write_snapshot(payload: bytes, path: Path) -> int:
    """Write :func:`snapshot_bytes` to ``path`` atomically (a temporary file, fsync, rename);
    returns the bytes written. Not safe to call for the same path from two threads at once."""
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
        if not data.startswith(MAGIC):
            raise ValueError("missing snapshot header")
        name, updates, body = data[len(MAGIC) :].split(b"\n", 2)
        if name.decode() != policy.name:
            raise ValueError(f"snapshot is of policy {name.decode()!r}, not {policy.name!r}")
        policy.restore(body)
        policy.updates = int(updates)
    except (ValueError, UnicodeDecodeError) as exc:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        log.error("snapshot_unreadable", path=str(path), moved_to=str(aside), error=str(exc))
        return False
    return True
