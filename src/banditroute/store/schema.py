"""Column layout of the decision log: the tables, shared by the writer and the readers, and
the Arrow schemas (column for column as in the tables) of code that builds log rows as Arrow
tables (``benchmarks/ope_speed.py``)."""

from __future__ import annotations

import pyarrow as pa

_TS = pa.timestamp("us", tz="UTC")

DECISIONS_SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("time", _TS),
        ("tenant", pa.string()),
        ("request_id", pa.string()),
        ("objective", pa.string()),
        ("prompt_hash", pa.string()),
        ("prompt", pa.string()),
        ("features", pa.string()),
        ("eligible", pa.list_(pa.string())),
        ("probabilities", pa.list_(pa.float64())),
        ("model", pa.string()),
        ("probability", pa.float64()),
        ("policy_version", pa.string()),
        ("explored", pa.bool_()),
        ("tags", pa.string()),
        ("arm", pa.string()),
        ("rule", pa.string()),
        ("data_class", pa.string()),
        ("excluded", pa.string()),
        ("constraints", pa.string()),
        ("shadow", pa.string()),
        ("request_hash", pa.string()),
    ]
)
FEEDBACK_SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("time", _TS),
        ("model", pa.string()),
        ("quality", pa.float64()),
        ("cost_usd", pa.float64()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("latency_ms", pa.float64()),
        ("status", pa.string()),
        ("reward", pa.float64()),
        ("disposition", pa.string()),
    ]
)

FEEDBACK_RANK = """row_number() OVER (PARTITION BY decision_id, model
    ORDER BY time, disposition = 'IGNORED_DUPLICATE')"""
"""A feedback row's rank among the reports naming the same served model for its decision
(over the ``feedback`` columns alone): rank 1 is the report that counts as that model's call,
whose cost the tenant's budget is charged, and, for the chosen model under ``combine =
"first"``, the one learned. Later ones repeat the call (``IGNORED_DUPLICATE``, a second report
of a fallback) unless they are ``DEFERRED``: those all enter the combined reward."""


def served_model(feedback_model: str, chosen: str) -> str:
    """SQL for the model a feedback row says served: its ``model``, or the decision's
    ``chosen`` model when the row names none. Only feedback a cluster replica accepted for the
    trainer (disposition ``FOR_TRAINER``) names none: the report left the model out (the
    chosen one served) and that replica did not hold the decision; the router and the trainer
    read such a report the same way."""
    return f"coalesce(nullif({feedback_model}, ''), {chosen})"


CREATE_TABLES = """
CREATE TABLE IF NOT EXISTS decisions (
    decision_id VARCHAR, time TIMESTAMPTZ, tenant VARCHAR, request_id VARCHAR,
    objective VARCHAR, prompt_hash VARCHAR, prompt VARCHAR, features JSON,
    eligible VARCHAR[], probabilities DOUBLE[], model VARCHAR, probability DOUBLE,
    policy_version VARCHAR, explored BOOLEAN, tags JSON, arm VARCHAR, rule VARCHAR,
    data_class VARCHAR, excluded JSON, constraints JSON, shadow JSON, request_hash VARCHAR);
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS request_hash VARCHAR;
CREATE TABLE IF NOT EXISTS feedback (
    decision_id VARCHAR, time TIMESTAMPTZ, model VARCHAR, quality DOUBLE, cost_usd DOUBLE,
    input_tokens BIGINT, output_tokens BIGINT, latency_ms DOUBLE, status VARCHAR,
    reward DOUBLE, disposition VARCHAR);
CREATE TABLE IF NOT EXISTS settlements (
    decision_id VARCHAR, time TIMESTAMPTZ, action VARCHAR, reward DOUBLE);
"""
