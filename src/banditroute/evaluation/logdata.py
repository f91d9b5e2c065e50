"""Read the decision log into arrays for off-policy evaluation, vectorised through DuckDB.

Each decision in the time window is joined to its *outcome*: the first feedback row (by time,
then by log order) whose model is the decision's chosen model (a row naming no model, feedback
a cluster replica accepted for the trainer, reports the chosen one:
:func:`~banditroute.store.schema.served_model`). Feedback for another model (a fallback the
client served instead) says nothing about the logged action and is not used; a decision with
no such feedback has no outcome. Three queries do the work: the models of the
eligible lists; the decisions in log order (a plain scan, which DuckDB returns in insertion
order), with the eligible lists spread over the models and the reward model's context
features computed from the logged features JSON (the dense
:meth:`~banditroute.features.PromptFeatures.numeric` view, the prompt size, optionally hashed
words); and the outcomes, keyed by the decision's row. Everything arrives as Arrow columns that
become numpy arrays without a Python loop per row. A log written out of time order (merged
Parquet parts) is sorted by time, ties broken by a hash of the decision id.

The action space ``K`` is the union of the models in the eligible lists, in order of first
appearance (the catalogue order, when the log was written with one catalogue). For decision
``i``: ``mask[i, k]`` says model ``k`` was eligible, ``logging_probs[i, k]`` is the logged
probability (the logged ``probabilities`` vector aligned with ``eligible``) and
``position[i, k]`` is the model's index in the logged eligible list (-1 if not eligible), so a
policy can be shown the arms in the order the router showed them.

Rows whose logged distribution is unusable (chosen model not eligible, probabilities that do
not sum to 1, a propensity that disagrees with the vector) are dropped and counted. So are
sticky decisions (``constraints.session_sticky``: a session kept its model, logged with
probability 1): forced rather than drawn, they say nothing about what another model would
have done, and an estimator must not weigh them as draws (:mod:`banditroute.sessions`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from banditroute.choices import DEFAULT_WORD_BUCKETS
from banditroute.evaluation.logged import LoggedData
from banditroute.features import MARKERS, PromptFeatures, features_from_dict
from banditroute.store.reader import LogSource
from banditroute.store.schema import served_model

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

NUMERIC_COLUMNS: tuple[str, ...] = (
    "bias", "log_tokens", "log_conv_tokens", "shots", "choices", "numbers", "lang_en", *MARKERS,
)  # fmt: skip
"""``PromptFeatures.numeric()``, in its order."""

CONTEXT_COLUMNS: tuple[str, ...] = (*NUMERIC_COLUMNS, "tokens_k", "conversation_tokens_k")
"""The reward model's dense context: the numeric view, then the prompt and conversation size
in thousands of tokens (capped at 100), on which cost and latency depend linearly."""


PROBABILITY_ATOL = 1e-6
"""Tolerance of the checks on a logged probability vector (as :class:`LoggedData`)."""

_FEATURE_TYPES: dict[str, str] = {
    "tokens": "DOUBLE",
    "conversation_tokens": "DOUBLE",
    "shots": "DOUBLE",
    "choices": "DOUBLE",
    "numbers": "DOUBLE",
    "language": "VARCHAR",
    "markers": "VARCHAR[]",
}


_FEATURE_DEFAULTS: dict[str, Any] = {
    **{f.name: 0 for f in fields(PromptFeatures)},
    "turns": 1,
    "language": "unknown",
    "markers": [],
    "words": [],
    "embedding": [],
}
"""Neutral values for prompt-feature keys missing from a logged features object."""


def _whole(value: Any) -> Any:
    """A count logged as a whole float (``2.0``, as some JSON writers give it) as the int it
    is; anything else unchanged (``features_from_dict`` judges it)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _feature_types(words: bool) -> str:
    """The ``json_transform`` structure of the features the query reads."""
    types = dict(_FEATURE_TYPES)
    if words:
        types["words"] = "VARCHAR[]"
    return json.dumps(types)


def _context_sql(words: int) -> str:
    """SQL column ``ctx``: a list of :data:`CONTEXT_COLUMNS`, from the parsed features ``f``
    (then ``word_buckets``, the hashed words' buckets, when ``words`` > 0).

    Missing keys (an older log, a null features value) count as 0 / absent.
    """

    def num(key: str) -> str:
        return f"coalesce(f.{key}, 0)"

    exprs = [
        "1.0",
        f"least(log2(1 + {num('tokens')}) / 16.0, 1.0)",
        f"least(log2(1 + {num('conversation_tokens')}) / 18.0, 1.0)",
        f"least({num('shots')}, 10) / 10.0",
        f"least({num('choices')}, 6) / 6.0",
        f"least({num('numbers')}, 20) / 20.0",
        "CASE WHEN f.language = 'en' THEN 1.0 ELSE 0.0 END",
    ]
    exprs += [
        f"CASE WHEN coalesce(list_contains(f.markers, '{m}'), false) THEN 1.0 ELSE 0.0 END"
        for m in MARKERS
    ]
    exprs += [
        f"least({num('tokens')}, 100000) / 1000.0",
        f"least({num('conversation_tokens')}, 100000) / 1000.0",
    ]
    columns = ["[" + ", ".join(f"CAST({e} AS DOUBLE)" for e in exprs) + "] AS ctx"]
    if words:
        columns.append(
            f"list_transform(f.words, lambda x: CAST(hash(x) % {words} AS INTEGER)) AS word_buckets"
        )
    return ", ".join(columns)


@dataclass(frozen=True)
class ReplayLog:
    """Logged decisions in time order with their outcomes, as numpy arrays (see module doc).

    Fragments of decisions without an outcome are NaN (and ``ok`` is False). ``quality`` is
    the reported score (NaN when the client did not score an answer; objectives count that as
    1 when the call succeeded). ``contexts`` is ``(n, len(CONTEXT_COLUMNS))``; ``words`` is
    ``(n, buckets)`` counts of hashed words or None; ``features_json`` holds the logged
    features (only when loaded with ``with_features``) for policies that need the full
    :class:`PromptFeatures`.
    """

    source: str
    models: tuple[str, ...]
    decision_ids: pa.Array
    times: FloatArray
    actions: IntArray
    propensities: FloatArray
    mask: BoolArray
    logging_probs: FloatArray
    position: npt.NDArray[np.int16]
    quality: FloatArray
    cost_usd: FloatArray
    latency_ms: FloatArray
    ok: BoolArray
    has_outcome: BoolArray
    other_feedback: BoolArray
    contexts: FloatArray
    words: FloatArray | None = None
    prompt_groups: npt.NDArray[np.uint64] | None = None
    features_json: pa.Array | None = None
    policy_versions: pa.Array | None = None
    n_invalid: int = 0
    n_sticky: int = 0
    """Sticky session decisions left out (forced, not drawn by the policy)."""
    notes: tuple[str, ...] = field(default=())

    @property
    def n(self) -> int:
        """Number of decisions."""
        return int(self.actions.shape[0])

    @property
    def n_actions(self) -> int:
        """Number of models ``K``."""
        return len(self.models)

    def subset(self, rows: npt.ArrayLike) -> ReplayLog:
        """The decisions at ``rows`` (an index array or a boolean mask), in that order."""
        index = np.asarray(rows)
        if index.dtype == np.bool_:
            if index.all():
                return self
            index = np.flatnonzero(index)
        take = pa.array(index, type=pa.int64())
        changes: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                changes[f.name] = np.take(value, index, axis=0)
            elif isinstance(value, pa.Array):
                changes[f.name] = value.take(take)
        return replace(self, **changes)

    def logged_data(self, rewards: npt.ArrayLike) -> LoggedData:
        """The :class:`LoggedData` of these decisions with the given rewards ``(n,)``."""
        return LoggedData(
            actions=self.actions,
            rewards=np.asarray(rewards, dtype=np.float64),
            propensities=self.propensities,
            mask=self.mask,
            logging_probs=self.logging_probs,
        )

    def eligible_columns(self, row: int) -> IntArray:
        """Model indices eligible for decision ``row``, in the logged eligible order."""
        cols = np.flatnonzero(self.mask[row])
        ordered: IntArray = cols[np.argsort(self.position[row, cols], kind="stable")]
        return ordered

    @property
    def first_eligible(self) -> IntArray:
        """Index of the first model of each decision's logged eligible list ``(n,)``."""
        pos = np.where(self.mask, self.position, np.iinfo(np.int16).max)
        first: IntArray = np.argmin(pos, axis=1).astype(np.int64)
        return first

    def features(self, row: int) -> PromptFeatures:
        """The logged prompt features of decision ``row`` (needs ``with_features``).

        Keys a log lacks (written by an older version, or a null value) get neutral defaults
        and unknown keys are ignored, so old logs still replay.
        """
        if self.features_json is None:
            raise RuntimeError("features: the log was loaded without with_features=True")
        text = self.features_json[row].as_py()
        logged = json.loads(text) if text else {}
        kept = {k: _whole(v) for k, v in logged.items() if k in _FEATURE_DEFAULTS and v is not None}
        return features_from_dict({**_FEATURE_DEFAULTS, **kept})

    def decision_id(self, row: int) -> str:
        """The decision id of ``row``."""
        return str(self.decision_ids[row].as_py())


@dataclass(frozen=True)
class LogCounts:
    """How the decisions of the window were used."""

    logged: int
    invalid: int
    sticky: int
    with_outcome: int
    without_outcome: int
    other_model_feedback_only: int


def counts(log: ReplayLog) -> LogCounts:
    """Counts of decisions with and without an outcome (after dropping invalid rows)."""
    with_outcome = int(log.has_outcome.sum())
    return LogCounts(
        logged=log.n + log.n_invalid + log.n_sticky,
        invalid=log.n_invalid,
        sticky=log.n_sticky,
        with_outcome=with_outcome,
        without_outcome=log.n - with_outcome,
        other_model_feedback_only=int((log.other_feedback & ~log.has_outcome).sum()),
    )


def _literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _models_query(where: str) -> str:
    """The models of the eligible lists, in order of first appearance (time, then position)."""
    return f"""
SELECT m FROM (
    SELECT time, unnest(eligible) AS m, generate_subscripts(eligible, 1) AS pos
    FROM decisions {where}
) GROUP BY m ORDER BY min(time), min(pos), m
"""


def _query(where: str, models: Sequence[str], words: int, with_features: bool) -> str:
    """One row per decision, in log order (a plain scan: DuckDB keeps insertion order), with
    the eligible lists aligned with ``models``: ``pos`` (1-based position in the eligible list,
    0 if absent) and ``prob`` (the logged probability, 0 if absent, NaN if missing), both lists
    of ``len(models)``."""
    extra = ", features AS features_json, policy_version" if with_features else ""
    model_list = "[" + ", ".join(_literal(m) for m in models) + "]"
    positions = f"list_transform({model_list}, lambda m: coalesce(list_position(eligible, m), 0))"
    probabilities = (
        f"list_transform({positions}, lambda q: CASE WHEN q = 0 THEN 0.0 "
        "ELSE coalesce(CAST(probabilities[q] AS DOUBLE), CAST('NaN' AS DOUBLE)) END)"
    )
    return f"""
SELECT decision_id, epoch_us(time) AS time_us, hash(decision_id) AS id_hash,
       hash(prompt_hash) AS prompt_group,
       coalesce(len(eligible), 0) AS n_eligible,
       coalesce(len(probabilities), 0) AS n_probabilities,
       coalesce(list_position({model_list}, model), 0) AS action, probability,
       {positions} AS pos, {probabilities} AS prob,
       coalesce(TRY_CAST(json_extract_string(constraints, '$.session_sticky') AS BOOLEAN),
                false) AS sticky,
       {_context_sql(words)}{extra}
FROM (
    SELECT *, json_transform(features, '{_feature_types(words > 0)}') AS f
    FROM decisions {where}
)
"""


def _outcomes_query(where: str) -> str:
    """Per decision with any feedback: its row index in :func:`_query`'s order, and the first
    feedback for the chosen model (by time, then log order), if there is one."""
    outcome = "struct_pack(quality := f.quality, cost_usd := f.cost_usd, "
    outcome += "latency_ms := f.latency_ms, status := f.status)"
    return f"""
WITH d AS (
    SELECT decision_id, model, row_number() OVER () - 1 AS row
    FROM decisions {where}
),
fb AS (
    SELECT decision_id, model, time, quality, cost_usd, latency_ms, status,
           row_number() OVER () AS seq
    FROM feedback
),
o AS (
    SELECT d.row,
           arg_min({outcome}, struct_pack(t := f.time, s := f.seq))
               FILTER (WHERE {served_model("f.model", "d.model")} = d.model) AS o
    FROM fb f JOIN d ON d.decision_id = f.decision_id
    GROUP BY d.row
)
SELECT row, o.quality AS quality, o.cost_usd AS cost_usd, o.latency_ms AS latency_ms,
       o.status AS status, o IS NOT NULL AS has_outcome
FROM o
"""


def _float(column: pa.ChunkedArray | pa.Array) -> FloatArray:
    """A nullable numeric Arrow column as float64 with NaN for null."""
    array = pc.cast(column, pa.float64())
    values: FloatArray = np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)
    return values


def _int(column: pa.ChunkedArray | pa.Array, null: int) -> IntArray:
    """A nullable integer Arrow column as int64 with ``null`` for null."""
    values: IntArray = np.asarray(
        pc.fill_null(pc.cast(column, pa.int64()), null).to_numpy(zero_copy_only=False),
        dtype=np.int64,
    )
    return values


def _fixed(column: pa.ChunkedArray, width: int) -> npt.NDArray[Any]:
    """A column of ``width``-long lists without nulls as an ``(n, width)`` array."""
    values = pc.list_flatten(column).to_numpy()
    return np.asarray(values).reshape(len(column), width)


def _bool(column: pa.ChunkedArray | pa.Array) -> BoolArray:
    values: BoolArray = np.asarray(
        pc.fill_null(column, False).to_numpy(zero_copy_only=False), dtype=np.bool_
    )
    return values


def _word_counts(column: pa.ChunkedArray, n: int, buckets: int) -> FloatArray:
    """Per-row counts of the hashed words' buckets, ``(n, buckets)``."""
    lists = column.combine_chunks()
    lengths = np.asarray(
        pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False),
        dtype=np.int64,
    )
    flat = pc.list_flatten(lists)
    bucket = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.int32)
    starts = np.arange(0, n * buckets, buckets, dtype=np.int64)
    cells: IntArray = np.repeat(starts, lengths)
    cells += bucket
    result = np.bincount(cells, minlength=n * buckets).astype(np.float64)
    return result.reshape(n, buckets)


def time_filter(since: datetime | None, until: datetime | None) -> tuple[str, dict[str, datetime]]:
    """The WHERE clause and named parameters of a ``[since, until)`` window on decision time."""
    clauses, params = [], {}
    if since is not None:
        clauses.append("time >= $since")
        params["since"] = since.astimezone(UTC)
    if until is not None:
        clauses.append("time < $until")
        params["until"] = until.astimezone(UTC)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def load_log(
    source: LogSource | duckdb.DuckDBPyConnection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    word_buckets: int = DEFAULT_WORD_BUCKETS,
    with_features: bool = False,
) -> ReplayLog:
    """Decisions in ``[since, until)`` joined with their outcomes, in time order.

    ``source`` is what :func:`banditroute.store.reader.open_log` returns (or a connection with
    ``decisions`` and ``feedback`` tables or views). ``word_buckets`` hashed-word buckets go into
    ``words`` (0: none). ``with_features`` also keeps the features JSON and policy versions
    (needed to run policies on the logged contexts, and by the dsjson export).
    """
    if word_buckets < 0:
        raise ValueError(f"word_buckets: must be >= 0, got {word_buckets}")
    con = source.connection if isinstance(source, LogSource) else source
    description = source.description if isinstance(source, LogSource) else "DuckDB connection"
    where, params = time_filter(since, until)
    found = con.execute(_models_query(where), params).fetchall()
    models = tuple(str(row[0]) for row in found)
    if not models:
        n_all = con.execute(f"SELECT count(*) FROM decisions {where}", params).fetchone()
        return _empty(description, int(n_all[0]) if n_all else 0, word_buckets, with_features)
    relation = con.sql(_query(where, models, word_buckets, with_features), params=params)
    outcomes = con.sql(_outcomes_query(where), params=params)
    assert relation is not None
    assert outcomes is not None
    return _from_arrow(
        relation.to_arrow_table(),
        outcomes.to_arrow_table(),
        models=models,
        description=description,
        word_buckets=word_buckets,
        with_features=with_features,
    )


def _from_arrow(
    table: pa.Table,
    outcomes: pa.Table,
    *,
    models: tuple[str, ...],
    description: str,
    word_buckets: int,
    with_features: bool,
) -> ReplayLog:
    n_all, k = table.num_rows, len(models)
    position = (_fixed(table.column("pos"), k) - 1).astype(np.int16)
    logging_probs = np.asarray(_fixed(table.column("prob"), k), dtype=np.float64)
    mask = position >= 0
    actions = _int(table.column("action"), 0) - 1
    propensities = _float(table.column("probability"))
    n_eligible = _int(table.column("n_eligible"), 0)
    rows = np.arange(n_all)
    safe_actions = np.maximum(actions, 0)
    with np.errstate(invalid="ignore"):
        valid = n_eligible > 0
        valid &= n_eligible == mask.sum(axis=1)  # a model listed twice counts once in mask
        valid &= n_eligible == _int(table.column("n_probabilities"), 0)
        valid &= actions >= 0
        valid &= mask[rows, safe_actions]
        valid &= np.isfinite(logging_probs).all(axis=1) & (logging_probs >= 0).all(axis=1)
        valid &= np.abs(logging_probs.sum(axis=1) - 1.0) <= PROBABILITY_ATOL
        valid &= (propensities > 0) & (propensities <= 1)
        valid &= np.abs(logging_probs[rows, safe_actions] - propensities) <= PROBABILITY_ATOL
    sticky = _bool(table.column("sticky"))
    n_sticky = int(sticky.sum())
    n_invalid = int((~valid & ~sticky).sum())
    valid &= ~sticky
    # Outcomes scattered to their decisions' rows (NaN / False where there is none).
    rows_with_feedback = _int(outcomes.column("row"), 0)
    quality, cost, latency = np.full(n_all, np.nan), np.full(n_all, np.nan), np.full(n_all, np.nan)
    quality[rows_with_feedback] = _float(outcomes.column("quality"))
    cost[rows_with_feedback] = _float(outcomes.column("cost_usd"))
    latency[rows_with_feedback] = _float(outcomes.column("latency_ms"))
    ok, has_outcome, any_feedback = (np.zeros(n_all, dtype=np.bool_) for _ in range(3))
    ok[rows_with_feedback] = _bool(pc.equal(outcomes.column("status"), "OK"))
    has_outcome[rows_with_feedback] = _bool(outcomes.column("has_outcome"))
    any_feedback[rows_with_feedback] = True
    contexts = np.asarray(_fixed(table.column("ctx"), len(CONTEXT_COLUMNS)), dtype=np.float64)
    words = (
        _word_counts(table.column("word_buckets"), n_all, word_buckets) if word_buckets else None
    )
    log = ReplayLog(
        source=description,
        models=models,
        decision_ids=table.column("decision_id").combine_chunks(),
        times=_float(table.column("time_us")) / 1e6,
        actions=safe_actions,
        propensities=propensities,
        mask=mask,
        logging_probs=logging_probs,
        position=position,
        quality=quality,
        cost_usd=cost,
        latency_ms=latency,
        ok=ok,
        has_outcome=has_outcome,
        other_feedback=any_feedback,
        contexts=contexts,
        words=words,
        prompt_groups=np.asarray(
            pc.fill_null(table.column("prompt_group"), 0).to_numpy(zero_copy_only=False),
            dtype=np.uint64,
        ),
        features_json=(table.column("features_json").combine_chunks() if with_features else None),
        policy_versions=(
            table.column("policy_version").combine_chunks() if with_features else None
        ),
    )
    # Time order (ties broken by a hash of the decision id). A log is normally written in time
    # order already; only when it is not (merged or out-of-order parts) are the rows sorted.
    time_us = _int(table.column("time_us"), 0)
    if np.all(time_us[1:] >= time_us[:-1]):
        if n_invalid == 0 and n_sticky == 0:
            return log
        return replace(log.subset(np.flatnonzero(valid)), n_invalid=n_invalid, n_sticky=n_sticky)
    id_hash = np.asarray(table.column("id_hash").to_numpy(), dtype=np.uint64)
    order = np.lexsort((id_hash, time_us))
    return replace(log.subset(order[valid[order]]), n_invalid=n_invalid, n_sticky=n_sticky)


def _empty(description: str, n_invalid: int, word_buckets: int, with_features: bool) -> ReplayLog:
    d = len(CONTEXT_COLUMNS)
    return ReplayLog(
        source=description,
        models=(),
        decision_ids=pa.array([], type=pa.string()),
        times=np.zeros(0),
        actions=np.zeros(0, dtype=np.int64),
        propensities=np.zeros(0),
        mask=np.zeros((0, 0), dtype=np.bool_),
        logging_probs=np.zeros((0, 0)),
        position=np.zeros((0, 0), dtype=np.int16),
        quality=np.zeros(0),
        cost_usd=np.zeros(0),
        latency_ms=np.zeros(0),
        ok=np.zeros(0, dtype=np.bool_),
        has_outcome=np.zeros(0, dtype=np.bool_),
        other_feedback=np.zeros(0, dtype=np.bool_),
        contexts=np.zeros((0, d)),
        words=np.zeros((0, word_buckets)) if word_buckets else None,
        features_json=pa.array([], type=pa.string()) if with_features else None,
        policy_versions=pa.array([], type=pa.string()) if with_features else None,
        n_invalid=n_invalid,
    )


def parse_time(text: str, *, arg: str) -> datetime:
    """A time given on the command line: ISO 8601 (UTC unless it says otherwise) or epoch seconds.

    Raises :class:`~banditroute.errors.InvalidArgument` naming ``arg``.
    """
    from banditroute.errors import InvalidArgument

    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidArgument(f"{arg}: {text!r} is out of range", field=arg) from None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(
            f"{arg}: {text!r} is not an ISO 8601 time (e.g. 2025-01-31T12:00:00Z) or epoch seconds",
            field=arg,
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def check_window(since: datetime | None, until: datetime | None) -> None:
    """InvalidArgument naming ``--since`` when it is not before ``--until``."""
    from banditroute.errors import InvalidArgument

    if since is not None and until is not None and since >= until:
        raise InvalidArgument(
            f"--since: {since.isoformat()} is not before --until {until.isoformat()}",
            field="--since",
        )


__all__ = [
    "CONTEXT_COLUMNS",
    "NUMERIC_COLUMNS",
    "DEFAULT_WORD_BUCKETS",
    "LogCounts",
    "ReplayLog",
    "check_window",
    "counts",
    "load_log",
    "parse_time",
    "time_filter",
]
