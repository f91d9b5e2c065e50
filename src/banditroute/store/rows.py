"""The exact values a logged row is stored with, and its digest: what chains a decisions,
feedback or settlements row to the audit record that describes it.

A row's digest is the SHA-256 of the JSON (orjson: compact, deterministic for these types) of
its table's name followed by its values in column order, with a time as integer microseconds
since the epoch, a non-finite float as the text ``nan``/``inf``/``-inf`` (JSON has no such
number, and orjson would write null, the same as a NULL) and a JSON column as the text it
stores (:func:`json_text`: the journal line carries that text, and DuckDB keeps a JSON
value's text as written). The writer computes it
from the record (:func:`row_digest`), ``banditroute audit verify`` from the row it reads
(:data:`DIGEST_COLUMNS`): the two agree byte for byte, so any change to a stored row, even
whitespace in a JSON column, changes its digest.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import orjson

from banditroute.store.records import DecisionRecord, FeedbackRecord, SettlementRecord

__all__ = [
    "DIGEST_COLUMNS",
    "LoggedRow",
    "digest_values",
    "json_text",
    "row_digest",
    "time_us",
]

LoggedRow = DecisionRecord | FeedbackRecord | SettlementRecord

_US = 1_000_000


def time_us(seconds: float) -> int:
    """Seconds since the epoch as the integer microseconds a row's time is stored as."""
    return round(seconds * _US)


def json_text(value: Any) -> str:
    """The text a JSON column stores for ``value`` (what the journal line carries)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _float(value: float | None) -> float | None:
    """A DOUBLE column's value as DuckDB gives it back (an int or numpy float as a float)."""
    return None if value is None else float(value)


def _int(value: int | None) -> int | None:
    return None if value is None else int(value)


_TIME = "epoch_us(time)"

DIGEST_COLUMNS = {
    "decisions": (
        "decision_id", _TIME, "tenant", "request_id", "objective", "prompt_hash", "prompt",
        "features::VARCHAR", "eligible", "probabilities", "model", "probability",
        "policy_version", "explored", "tags::VARCHAR", "arm", "rule", "data_class",
        "excluded::VARCHAR", "constraints::VARCHAR", "shadow::VARCHAR", "request_hash",
    ),
    "feedback": (
        "decision_id", _TIME, "model", "quality", "cost_usd", "input_tokens", "output_tokens",
        "latency_ms", "status", "reward", "disposition",
    ),
    "settlements": ("decision_id", _TIME, "action", "reward"),
}  # fmt: skip
"""Per logged table, the SQL expressions that read a row's values in :func:`digest_values`
order: every column, times as microseconds, JSON columns as their stored text."""


def digest_values(row: LoggedRow) -> tuple[str, list[Any]]:
    """The table ``row`` goes to and its values as :data:`DIGEST_COLUMNS` reads them back."""
    if isinstance(row, DecisionRecord):
        return "decisions", [
            row.decision_id, time_us(row.time), row.tenant, row.request_id, row.objective,
            row.prompt_hash, row.prompt, json_text(row.features), list(row.eligible),
            [float(p) for p in row.probabilities], row.model, _float(row.probability),
            row.policy_version, bool(row.explored), json_text(row.tags), row.arm, row.rule,
            row.data_class, json_text(row.excluded), json_text(row.constraints),
            json_text(row.shadow), row.request_hash,
        ]  # fmt: skip
    if isinstance(row, FeedbackRecord):
        return "feedback", [
            row.decision_id, time_us(row.time), row.model, _float(row.quality),
            _float(row.cost_usd), _int(row.input_tokens), _int(row.output_tokens),
            _float(row.latency_ms), row.status, _float(row.reward), row.disposition,
        ]  # fmt: skip
    return "settlements", [row.decision_id, time_us(row.time), row.action, _float(row.reward)]


def _plain(value: Any) -> Any:
    """``value`` with non-finite floats (also in a list) as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list) and any(
        isinstance(v, float) and not math.isfinite(v) for v in value
    ):
        return [_plain(v) for v in value]
    return value


def digest(table: str, values: list[Any]) -> str:
    """The digest of a row of ``table`` with ``values`` (in :data:`DIGEST_COLUMNS` order)."""
    return hashlib.sha256(orjson.dumps([table, *map(_plain, values)])).hexdigest()


def row_digest(row: LoggedRow) -> str:
    """The digest of the row ``row`` is logged as."""
    return digest(*digest_values(row))
