"""Canonical JSON and SHA-256 digests: the byte encoding the audit chain and the row digests
hash, in one module that the audit code and the log code both import.

Canonical JSON is ``json.dumps`` with sorted keys, separators ``(",", ":")``,
``ensure_ascii=False``, floats as their ``repr``, encoded as UTF-8; a NaN or infinity (which
JSON cannot hold) is written as the text ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``. Each
value has exactly one canonical text, so a verifier can insist that stored text *is* canonical
(:func:`is_canonical`) instead of re-encoding what a parser makes of it: a parser forgives
duplicate keys and whitespace, which would let an edited record hash as the original.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

__all__ = ["canonical_json", "is_canonical", "sha256_hex"]


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and other objects with ``.item()``."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_plain
)
"""The canonical encoder for values without NaN or infinity (ValueError on one)."""

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by the text ``NaN``/``Infinity``/
    ``-Infinity`` (JSON has no such numbers; DuckDB's JSON type refuses them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE.get(value, "NaN")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 text, floats as ``repr``, non-finite floats as the text
    ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (so a value read back encodes the same);
    TypeError for values JSON cannot hold (numpy scalars are taken as their Python value)."""
    try:
        return ENCODER.encode(value)
    except ValueError:  # a NaN or infinity somewhere: rare, so only then walk the value
        return canonical_json(_finite(json.loads(json.dumps(value, default=_plain))))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def is_canonical(text: str | None) -> bool:
    """Whether ``text`` is the canonical JSON of the value it denotes: valid JSON with no
    duplicate key, no ``NaN``/``Infinity`` literal, and byte for byte what
    :func:`canonical_json` gives for that value (no whitespace, keys sorted, floats as
    ``repr``)."""
    if text is None:
        return False
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
        return canonical_json(value) == text
    except (ValueError, TypeError, RecursionError):
        return False


def sha256_hex(text: str) -> str:
    """SHA-256 of ``text``'s UTF-8 bytes, as 64 lower-case hex digits."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
