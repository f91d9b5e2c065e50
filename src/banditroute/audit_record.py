"""One audit record and its hash: the fields, and the exact text the chain hashes.

``hash(n) = sha256_hex(hash(n-1) + content(n))`` where ``content`` is the canonical JSON
(:mod:`banditroute.canonical`) of every field except the two hashes, with ``seq`` included and
``time`` as integer microseconds since the epoch (what a DuckDB ``TIMESTAMPTZ`` keeps). The
three JSON fields are stored as exactly the canonical text the content holds, so a verifier
hashes the stored bytes themselves (:func:`joined_content`).

A record also carries ``row_digest``, the digest of the decisions, feedback or settlements row
it describes (:mod:`banditroute.store.rows`), so the chain covers those tables too. It is in
the content only when set: records written before it existed hash as they did.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from banditroute.canonical import ENCODER, canonical_json, sha256_hex
from banditroute.store.rows import LoggedRow, time_us

__all__ = [
    "GENESIS_HASH",
    "KINDS",
    "AuditKind",
    "AuditRecord",
    "chain_hash",
    "content",
    "encode_field",
    "joined_content",
    "record_hash",
    "time_us",
]

AuditKind = Literal["decision", "feedback", "settlement", "promotion", "rollback"]
KINDS: frozenset[str] = frozenset(get_args(AuditKind))

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of record 1."""


@dataclass(frozen=True)
class AuditRecord:
    """One audited event; made by :meth:`~banditroute.audit.AuditChain.append`, which sets
    ``seq`` and the hashes.

    ``time`` is seconds since the epoch (hashed and stored to the microsecond). ``excluded``
    maps each model that was not eligible to the reason; ``constraints`` holds the constraints
    applied (explicit candidates, exclusions, budget, data class, ...); ``payload`` holds the
    reward fragments and reward of a feedback (anything JSON can hold; empty for a decision
    unless the caller adds something). ``row_digest`` is the digest of the logged row the
    record describes (None for a record without one, or written before row digests);
    ``row`` is that row, handed to the log with the record (not stored with it).
    """

    seq: int
    time: float
    tenant: str
    kind: AuditKind
    decision_id: str
    policy_version: str
    feature_hash: str
    eligible: tuple[str, ...]
    excluded: Mapping[str, str]
    constraints: Mapping[str, Any]
    payload: Mapping[str, Any]
    prev_hash: str
    hash: str
    row_digest: str | None = None
    row: LoggedRow | None = field(default=None, repr=False, compare=False)
    encoded: tuple[str, str, str] | None = field(default=None, repr=False, compare=False)
    """Canonical JSON of ``excluded``, ``constraints`` and ``payload`` as the chain hashed
    them, kept so that writing the record does not encode them again."""

    def json_fields(self) -> tuple[str, str, str]:
        """Canonical JSON of ``excluded``, ``constraints`` and ``payload`` (as stored)."""
        if self.encoded is not None:
            return self.encoded
        return (canonical_json(dict(self.excluded)), canonical_json(dict(self.constraints)),
                canonical_json(dict(self.payload)))  # fmt: skip

    @property
    def time_us(self) -> int:
        """``time`` as integer microseconds since the epoch, as hashed and stored."""
        return time_us(self.time)


CONTENT_KEYS = (
    "seq", "time_us", "tenant", "kind", "decision_id", "policy_version", "feature_hash",
    "eligible", "excluded", "constraints", "payload",
)  # fmt: skip
"""The hashed fields, in the column order of the audit table (``time`` as ``time_us``)."""


def content(values: Sequence[Any], row_digest: str | None = None) -> str:
    """Canonical JSON of the hashed fields, given in :data:`CONTENT_KEYS` order, and of
    ``row_digest`` if set."""
    fields = dict(zip(CONTENT_KEYS, values, strict=True))
    if row_digest is not None:
        fields["row_digest"] = row_digest
    return canonical_json(fields)


def joined_content(
    head: Sequence[Any],
    eligible: Sequence[str] | None,
    encoded: Sequence[str],
    row_digest: str | None = None,
) -> str:
    """The text :func:`content` gives, from the three JSON fields already encoded as
    canonical text (``head``: seq, time_us, tenant, kind, decision_id, policy_version,
    feature_hash).

    JSON of a dict with sorted keys is each key and its value's own encoding, joined in key
    order; the keys below are already sorted. The JSON fields are spliced in as given: the
    writer passes the text it stores, a verifier the text it read (after checking that it is
    canonical, so that each field's extent in the content is unambiguous).
    """
    seq, time, tenant, kind, decision_id, policy_version, feature_hash = map(_scalar, head)
    excluded, constraints, payload = encoded
    models = _scalar(eligible) if eligible is None else "[" + ",".join(map(_scalar, eligible)) + "]"
    row = "" if row_digest is None else f'"row_digest":{_scalar(row_digest)},'
    return (
        f'{{"constraints":{constraints},"decision_id":{decision_id},'
        f'"eligible":{models},"excluded":{excluded},'
        f'"feature_hash":{feature_hash},"kind":{kind},"payload":{payload},'
        f'"policy_version":{policy_version},{row}"seq":{seq},"tenant":{tenant},'
        f'"time_us":{time}}}'
    )


def _scalar(value: Any) -> str:
    """:func:`canonical_json` of one head field; the usual ints and strings without building
    an encoder (seven per record on Route's path)."""
    kind = type(value)
    if kind is str:
        return str(json.encoder.encode_basestring(value))
    if kind is int:
        return str(value)
    return canonical_json(value)


def encode_field(value: dict[str, Any]) -> str:
    """Canonical JSON of one JSON field, ValueError on NaN or infinity; an empty one (most
    decisions exclude no model) skips building an encoder."""
    return ENCODER.encode(value) if value else "{}"


def chain_hash(prev_hash: str, text: str) -> str:
    """The hash of a record whose content is ``text`` and whose predecessor's is
    ``prev_hash``."""
    return sha256_hex(prev_hash + text)


def record_hash(record: AuditRecord) -> str:
    """The hash ``record`` should carry, recomputed from its ``prev_hash`` and content."""
    text = content(
        (record.seq, record.time_us, record.tenant, record.kind, record.decision_id,
         record.policy_version, record.feature_hash, list(record.eligible),
         dict(record.excluded), dict(record.constraints), dict(record.payload)),
        record.row_digest,
    )  # fmt: skip
    return chain_hash(record.prev_hash, text)
