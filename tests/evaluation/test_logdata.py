"""Tests of reading the decision log into arrays (``banditroute.evaluation.logdata``) and of
re-scoring its reward fragments under an objective (``objective_rewards``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest
from replay_world import MODELS, T0, WrittenLog, make_world, write_log

from banditroute.errors import InvalidArgument
from banditroute.evaluation.logdata import (
    CONTEXT_COLUMNS,
    NUMERIC_COLUMNS,
    check_window,
    counts,
    load_log,
    parse_time,
)
from banditroute.evaluation.objective_rewards import fragment_arrays, log_rewards, score
from banditroute.features import extract, features_from_dict
from banditroute.objectives import Objective
from banditroute.outcomes import Fragments, OutcomeStatus
from banditroute.store.reader import open_log
from banditroute.store.schema import CREATE_TABLES


@pytest.fixture(scope="module")
def odd_log(tmp_path_factory: pytest.TempPathFactory) -> WrittenLog:
    """A log with every kind of feedback trouble: none, another model's, a second one."""
    path = tmp_path_factory.mktemp("odd") / "log.duckdb"
    return write_log(
        path,
        make_world(),
        240,
        seed=3,
        no_feedback_every=7,
        other_model_every=11,
        duplicate_every=5,
        exclude_every=4,
    )


def _raw(path: Path) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    rows = con.execute(
        "SELECT decision_id, eligible, probabilities, model, probability, features "
        "FROM decisions ORDER BY time, decision_id"
    ).fetchall()
    con.close()
    return rows


def test_outcome_is_the_first_feedback_for_the_chosen_model(odd_log: WrittenLog) -> None:
    """A decision's outcome is its first feedback for the chosen model; feedback for another
    model, or none at all, leaves it without one (and it is counted)."""
    log = load_log(open_log(odd_log.path))
    world = odd_log.world
    steps = np.arange(1, odd_log.n + 1)
    no_feedback = steps % 7 == 0
    other_only = (steps % 11 == 0) & ~no_feedback
    assert log.n == odd_log.n
    np.testing.assert_array_equal(log.has_outcome, ~(no_feedback | other_only))
    np.testing.assert_array_equal(log.other_feedback & ~log.has_outcome, other_only)
    c = counts(log)
    assert (c.logged, c.without_outcome, c.other_model_feedback_only) == (
        240,
        int((no_feedback | other_only).sum()),
        int(other_only.sum()),
    )
    prompts = np.array(odd_log.prompt_of)
    chosen = np.array([MODELS.index(log.models[a]) for a in log.actions])
    has = log.has_outcome
    # Duplicates (every 5th) reported 1 - quality with status ERROR second: the first one wins.
    np.testing.assert_array_equal(log.quality[has], world.quality[prompts, chosen][has])
    np.testing.assert_allclose(log.cost_usd[has], world.cost[prompts, chosen][has])
    assert log.ok[has].all()
    assert np.isnan(log.quality[~has]).all()


def test_arrays_align_with_the_logged_vectors(odd_log: WrittenLog) -> None:
    """mask, logging_probs, position and actions reproduce each logged eligible list,
    probability vector and choice, in time order."""
    log = load_log(open_log(odd_log.path))
    raw = _raw(odd_log.path)
    assert [log.decision_id(i) for i in range(log.n)] == [r[0] for r in raw]
    assert np.all(np.diff(log.times) >= 0)
    for row, (_, eligible, probs, model, probability, _) in enumerate(raw):
        cols = log.eligible_columns(row)
        assert [log.models[c] for c in cols] == list(eligible)  # type: ignore[call-overload]
        np.testing.assert_allclose(log.logging_probs[row, cols], probs)  # type: ignore[arg-type]
        assert log.mask[row].sum() == len(eligible)  # type: ignore[arg-type]
        assert log.models[log.actions[row]] == model
        assert log.propensities[row] == pytest.approx(probability)
    assert not log.mask[3::4, log.models.index("large")].any()  # excluded every 4th request


def test_context_features_equal_prompt_features_numeric(odd_log: WrittenLog) -> None:
    """The SQL-computed context columns equal ``PromptFeatures.numeric()`` of the logged
    features (then the token counts in thousands), and the hashed-word counts add up to the
    number of logged words."""
    log = load_log(open_log(odd_log.path), word_buckets=16)
    assert log.words is not None
    for row, record in enumerate(_raw(odd_log.path)):
        features = features_from_dict(json.loads(str(record[5])))
        numeric = features.numeric()
        expected = [numeric[name] for name in NUMERIC_COLUMNS]
        expected += [features.tokens / 1000, features.conversation_tokens / 1000]
        np.testing.assert_allclose(log.contexts[row], expected, rtol=1e-6, atol=1e-6)
        assert log.words[row].sum() == len(features.words)
    assert list(NUMERIC_COLUMNS) == list(extract("hello there").numeric())
    assert CONTEXT_COLUMNS[: len(NUMERIC_COLUMNS)] == NUMERIC_COLUMNS


def test_time_window_selects_since_inclusive_until_exclusive(shared_log: WrittenLog) -> None:
    """``since`` is inclusive and ``until`` exclusive on the decision time."""
    source = open_log(shared_log.path)
    since = datetime.fromtimestamp(T0 + 100, tz=UTC)
    until = datetime.fromtimestamp(T0 + 250, tz=UTC)
    log = load_log(source, since=since, until=until)
    assert log.n == 150
    assert log.times.min() == T0 + 100
    assert log.times.max() == T0 + 249
    assert load_log(source, since=datetime.fromtimestamp(T0 + 10_000, tz=UTC)).n == 0


def test_parquet_export_reads_like_the_file(tmp_path: Path) -> None:
    """A log read from the writer's Parquet export gives the same arrays as the file."""
    export = tmp_path / "log.duckdb.export"
    written = write_log(tmp_path / "log.duckdb", make_world(), 120, seed=5, export_dir=export)
    from_file = load_log(open_log(written.path))
    from_export = load_log(open_log(export))
    assert from_export.models == from_file.models
    for name in ("actions", "propensities", "mask", "logging_probs", "quality", "has_outcome"):
        np.testing.assert_array_equal(getattr(from_export, name), getattr(from_file, name))


def test_export_parts_from_before_a_new_column_read_by_name(tmp_path: Path) -> None:
    """An export whose older parts lack a column added since (request_hash) reads every part
    by column name: the old rows have no value there, and the new rows keep theirs instead of
    the column being dropped for all."""
    folder = tmp_path / "export"
    (folder / "decisions").mkdir(parents=True)
    con = duckdb.connect()
    con.execute(CREATE_TABLES)
    con.execute("INSERT INTO decisions (decision_id, request_id) VALUES ('old', 'r0')")
    con.execute(
        "INSERT INTO decisions (decision_id, request_id, request_hash) VALUES ('new', 'r1', 'h')"
    )
    for number, (decision, columns) in enumerate(
        [("old", "* EXCLUDE (request_hash)"), ("new", "*")]
    ):
        target = folder / "decisions" / f"part-{number:05d}.parquet"
        con.execute(
            f"COPY (SELECT {columns} FROM decisions WHERE decision_id = '{decision}') "
            f"TO '{target}' (FORMAT parquet)"
        )
    rows = open_log(folder).connection.execute(
        "SELECT decision_id, request_hash FROM decisions ORDER BY decision_id"
    )
    assert rows.fetchall() == [("new", "h"), ("old", None)]


def test_inconsistent_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    """Rows whose chosen model is not eligible, whose probabilities do not sum to 1, or whose
    propensity disagrees with the vector are dropped and counted as invalid; a valid row with
    an incomplete features object still yields prompt features."""
    written = write_log(tmp_path / "log.duckdb", make_world(), 30, seed=2)
    con = duckdb.connect(str(written.path))
    template = (
        "INSERT INTO decisions (decision_id, time, eligible, probabilities, model, "
        "probability, features) VALUES (?, to_timestamp(?), ?, ?, ?, ?, '{}')"
    )
    con.execute(template, ["bad-1", T0, ["small", "large"], [0.5, 0.5], "coder", 0.5])
    con.execute(template, ["bad-2", T0, ["small", "large"], [0.5, 0.4], "small", 0.5])
    con.execute(template, ["bad-3", T0, ["small", "large"], [0.5, 0.5], "small", 0.9])
    con.execute(template, ["bad-4", T0, ["small", "large"], [1.0], "small", 1.0])
    con.execute(template, ["ok-1", T0, ["small", "large"], [0.25, 0.75], "large", 0.75])
    con.close()
    log = load_log(open_log(written.path), with_features=True)
    assert log.n_invalid == 4
    assert log.n == 31
    ids = [log.decision_id(i) for i in range(log.n)]
    # Its features object is empty (as from an older writer): neutral defaults fill it in.
    features = log.features(ids.index("ok-1"))
    assert (features.tokens, features.turns, features.language, features.words) == (
        0,
        1,
        "unknown",
        (),
    )


def test_null_feature_values_and_whole_float_counts_still_replay(tmp_path: Path) -> None:
    """A logged features object with a null value (neutral default) or a count written as a
    whole float (``2.0``) still yields prompt features, as the docstring promises, instead of
    aborting the replay of the whole log."""
    written = write_log(tmp_path / "log.duckdb", make_world(), 5, seed=3)
    con = duckdb.connect(str(written.path))
    con.execute(
        "INSERT INTO decisions (decision_id, time, eligible, probabilities, model, "
        "probability, features) VALUES (?, to_timestamp(?), ?, ?, ?, ?, ?)",
        [
            "odd-1", T0, ["small", "large"], [0.25, 0.75], "large", 0.75,
            json.dumps({"language": None, "tokens": 2.0, "words": None}),
        ],
    )  # fmt: skip
    con.close()
    log = load_log(open_log(written.path), with_features=True)
    ids = [log.decision_id(i) for i in range(log.n)]
    features = log.features(ids.index("odd-1"))
    assert (features.language, features.tokens, features.words) == ("unknown", 2, ())


def test_feedback_naming_no_model_is_the_chosen_models_outcome(tmp_path: Path) -> None:
    """Feedback a cluster replica accepted for the trainer while the decision's replica was
    gone names no model when the report named none (that replica does not hold the decision):
    read with its decision, it is the outcome of the chosen model, as the trainer learns it."""
    written = write_log(tmp_path / "log.duckdb", make_world(), 10, seed=2)
    con = duckdb.connect(str(written.path))
    con.execute(
        "INSERT INTO decisions (decision_id, time, eligible, probabilities, model, "
        "probability, features) VALUES ('fwd-1', to_timestamp(?), ['small', 'large'], "
        "[0.5, 0.5], 'large', 0.5, '{}')",
        [T0],
    )
    con.execute(
        "INSERT INTO feedback (decision_id, time, model, quality, cost_usd, latency_ms, "
        "status, reward, disposition) VALUES ('fwd-1', to_timestamp(?), '', 0.9, 0.002, "
        "120.0, 'OK', 0.0, 'FOR_TRAINER')",
        [T0 + 1.0],
    )
    con.close()
    log = load_log(open_log(written.path))
    i = [log.decision_id(j) for j in range(log.n)].index("fwd-1")
    assert log.has_outcome[i]
    assert (log.quality[i], log.cost_usd[i], log.latency_ms[i]) == (0.9, 0.002, 120.0)
    assert log.ok[i]


def test_rescoring_matches_objective_reward() -> None:
    """Vectorised re-scoring equals ``Objective.reward`` outcome by outcome, including
    unscored successes (quality counts 1), failures (quality 0 and the penalty) and unknown
    cost or latency (contribute nothing)."""
    rng = np.random.default_rng(0)
    n = 200
    quality = np.where(rng.random(n) < 0.2, np.nan, rng.random(n))
    cost = np.where(rng.random(n) < 0.2, np.nan, rng.random(n) / 100)
    latency = np.where(rng.random(n) < 0.2, np.nan, rng.random(n) * 3000)
    ok = rng.random(n) < 0.85
    objective = Objective("t", quality=1.5, cost=40.0, latency=0.0002, failure=0.7)
    got = score(objective, fragment_arrays(quality, cost, latency, ok))

    def none(x: float) -> float | None:
        return None if np.isnan(x) else float(x)

    expected = [
        objective.reward(
            Fragments(none(q), none(c), none(lat), OutcomeStatus.OK if k else OutcomeStatus.ERROR)
        )
        for q, c, lat, k in zip(quality, cost, latency, ok, strict=True)
    ]
    np.testing.assert_allclose(got, expected)


def test_default_reward_replaces_missing_outcomes(odd_log: WrittenLog) -> None:
    """With a default reward, decisions without an outcome get it; the others keep their
    score under the objective."""
    log = load_log(open_log(odd_log.path))
    objective = Objective("t", quality=1.0, cost=10.0, latency=0.0)
    plain = log_rewards(log, objective)
    with_default = log_rewards(log, objective, default_reward=-0.25)
    np.testing.assert_array_equal(with_default[~log.has_outcome], -0.25)
    np.testing.assert_array_equal(with_default[log.has_outcome], plain[log.has_outcome])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14T22:13:20Z", T0),
        ("2023-11-14T22:13:20", T0),
        ("2023-11-14T23:13:20+01:00", T0),
        ("1700000000", T0),
        ("1700000000.5", T0 + 0.5),
    ],
)
def test_parse_time_accepts_iso_and_epoch(text: str, expected: float) -> None:
    """--since/--until take ISO 8601 (UTC when no offset is given) or epoch seconds."""
    assert parse_time(text, arg="--since").timestamp() == expected


def test_time_arguments_are_checked() -> None:
    """A malformed time names its argument; --since must come before --until."""
    with pytest.raises(InvalidArgument, match="--until: 'noon'"):
        parse_time("noon", arg="--until")
    later, earlier = parse_time("1700000100", arg="x"), parse_time("1700000000", arg="x")
    with pytest.raises(InvalidArgument, match=r"--since: .* is not before --until"):
        check_window(later, earlier)
    check_window(earlier, later)
