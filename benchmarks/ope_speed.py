"""Replay speed: six off-policy estimators with intervals on a 1,000,000-decision log.

Writes a synthetic log straight into a DuckDB file in the service's schema (the tables of
``banditroute.store.duckdb_log``), with vectorised Arrow inserts: ``--decisions`` decisions
over the 11 default models (a few ineligible for long prompts), an epsilon-greedy logging
distribution that depends on the prompt's task, logged features JSON with markers and 24 words,
and one feedback row for 97% of the decisions (plus feedback for a fallback model on 1%).

Then it times what ``banditroute replay --candidate logged --candidate uniform --candidate
fixed:MODEL`` does: open the log, load decisions joined with outcomes into numpy (DuckDB ->
Arrow -> numpy, no Python loop per row), re-score under the objective, fit the cross-fitted
reward model, and compute IPS, SNIPS, DM, DR, SNDR and switch-DR, each with a 95% bootstrap
interval (200 resamples), plus diagnostics, for each candidate.

    .venv/bin/python benchmarks/ope_speed.py [--decisions 1000000] [--keep PATH] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from banditroute.config import load_settings
from banditroute.evaluation import evaluate
from banditroute.evaluation.candidates import parse_candidate, static_distribution
from banditroute.evaluation.estimators import diagnostics
from banditroute.evaluation.logdata import load_log
from banditroute.evaluation.objective_rewards import (
    log_rewards,
    resolve_objective,
    reward_range,
)
from banditroute.evaluation.replay import make_estimators, observed_range, used_rows
from banditroute.evaluation.reward_model import RidgeRewardModel
from banditroute.features import MARKERS
from banditroute.store.reader import open_log
from banditroute.store.schema import CREATE_TABLES, DECISIONS_SCHEMA, FEEDBACK_SCHEMA

T0_US = 1_700_000_000 * 1_000_000
N_TASKS = 6
WORDS_PER_PROMPT = 24
VOCABULARY = 3000


DECISION_COLUMNS = (
    "decision_id",
    "time",
    "tenant",
    "request_id",
    "objective",
    "prompt_hash",
    "prompt",
    "features",
    "eligible",
    "probabilities",
    "model",
    "probability",
    "policy_version",
    "explored",
    "tags",
)
FEEDBACK_COLUMNS = (
    "decision_id",
    "time",
    "model",
    "quality",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "status",
    "reward",
    "disposition",
)


def _schema(full: pa.Schema, names: tuple[str, ...]) -> pa.Schema:
    """The log schema's types for the columns the benchmark writes (others stay NULL)."""
    return pa.schema([full.field(name) for name in names])


def _lists(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def generate(path: Path, n: int, seed: int = 0, chunk: int = 250_000) -> dict[str, float]:
    """Write ``n`` synthetic decisions and their feedback to a new DuckDB log at ``path``."""
    settings = load_settings()
    models = np.array(settings.catalog.ids)
    k = len(models)
    small_context = np.array([m.context_window <= 4096 for m in settings.catalog])
    prices = np.array([m.blended_usd_per_mtok for m in settings.catalog])
    rng = np.random.default_rng(seed)
    quality_by_task = rng.uniform(0.2, 0.95, (N_TASKS, k))
    greedy_by_task = rng.integers(0, k, N_TASKS)
    vocabulary = pa.array([f"word{i}" for i in range(VOCABULARY)])
    model_names = pa.array(list(models))
    con = duckdb.connect(str(path))
    con.execute(CREATE_TABLES)
    started = time.perf_counter()
    for first in range(0, n, chunk):
        size = min(chunk, n - first)
        task = rng.integers(0, N_TASKS, size)
        prompt_ids = rng.integers(0, 200_000, size)
        tokens = rng.integers(20, 6000, size)
        long_prompt = tokens > 3800
        eligible = np.where(long_prompt[:, None], ~small_context[None, :], True)
        counts = eligible.sum(axis=1)
        epsilon = 0.3
        greedy = greedy_by_task[task]
        greedy = np.where(eligible[np.arange(size), greedy], greedy, np.argmax(eligible, axis=1))
        probs = np.where(eligible, epsilon / counts[:, None], 0.0)
        probs[np.arange(size), greedy] += 1.0 - epsilon
        chosen = (rng.random(size)[:, None] < np.cumsum(probs, axis=1)).argmax(axis=1)
        chosen = np.where(eligible[np.arange(size), chosen], chosen, greedy)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        cols = np.nonzero(eligible)[1]
        ids = pa.array([f"dec{first + i:012d}" for i in range(size)])
        words = rng.integers(0, VOCABULARY, size * WORDS_PER_PROMPT)
        marker_index = np.array([0, 1, 2, 3, 6, 7])
        features = pa.table(
            {
                "chars": tokens * 4,
                "tokens": tokens,
                "turns": np.ones(size, dtype=np.int64),
                "conversation_tokens": tokens,
                "shots": rng.integers(0, 6, size),
                "choices": np.where(task == 2, 4, 0),
                "numbers": rng.integers(0, 12, size),
                "lines": rng.integers(1, 80, size),
                "language": pa.array(np.where(rng.random(size) < 0.9, "en", "fr")),
                "markers": _lists(
                    np.arange(size + 1),
                    pa.array(list(np.array(MARKERS))).take(pa.array(marker_index[task])),
                ),
                "words": _lists(
                    np.arange(0, size * WORDS_PER_PROMPT + 1, WORDS_PER_PROMPT),
                    vocabulary.take(pa.array(words)),
                ),
            }
        )
        con.register("features", features)
        as_json = con.sql(
            "SELECT CAST(to_json(struct_pack(chars, tokens, turns, conversation_tokens, shots, "
            "choices, numbers, lines, language, markers, words)) AS VARCHAR) AS j FROM features"
        )
        assert as_json is not None
        features_json = as_json.to_arrow_table().column(0).combine_chunks()
        times = pa.array(T0_US + (first + np.arange(size)) * 10_000, type=pa.timestamp("us"))
        times = times.cast(pa.timestamp("us", tz="UTC"))
        decision_rows = pa.table(
            {
                "decision_id": ids,
                "time": times,
                "tenant": pa.array(["default"] * size),
                "request_id": pa.array([""] * size),
                "objective": pa.array(["balanced"] * size),
                "prompt_hash": pa.array([f"p{h:x}" for h in prompt_ids]),
                "prompt": pa.nulls(size, pa.string()),
                "features": features_json,
                "eligible": _lists(offsets, model_names.take(pa.array(cols))),
                "probabilities": _lists(offsets, pa.array(probs[eligible])),
                "model": model_names.take(pa.array(chosen)),
                "probability": pa.array(probs[np.arange(size), chosen]),
                "policy_version": pa.array(["bench:0"] * size),
                "explored": pa.array(np.ones(size, dtype=bool)),
                "tags": pa.array(["{}"] * size),
            },
            schema=_schema(DECISIONS_SCHEMA, DECISION_COLUMNS),
        )
        con.register("decision_rows", decision_rows)
        con.execute("INSERT INTO decisions BY NAME SELECT * FROM decision_rows")
        answered = rng.random(size) < 0.97
        fallback = rng.random(size) < 0.01
        fb_model = np.where(fallback, (chosen + 1) % k, chosen)
        quality = (rng.random(size) < quality_by_task[task, fb_model]).astype(np.float64)
        cost = prices[fb_model] * (tokens + 150) / 1e6
        latency = rng.lognormal(6.5, 0.4, size)
        ok = rng.random(size) < 0.99
        feedback_rows = pa.table(
            {
                "decision_id": ids,
                "time": times,
                "model": model_names.take(pa.array(fb_model)),
                "quality": pa.array(np.where(ok, quality, np.nan), from_pandas=True),
                "cost_usd": pa.array(cost),
                "input_tokens": pa.array(tokens),
                "output_tokens": pa.nulls(size, pa.int64()),
                "latency_ms": pa.array(latency),
                "status": pa.array(np.where(ok, "OK", "ERROR")),
                "reward": pa.array(quality - 50 * cost),
                "disposition": pa.array(np.where(fallback, "RECORDED_OFF_POLICY", "LEARNED")),
            },
            schema=_schema(FEEDBACK_SCHEMA, FEEDBACK_COLUMNS),
        ).filter(pa.array(answered))
        con.register("feedback_rows", feedback_rows)
        con.execute("INSERT INTO feedback BY NAME SELECT * FROM feedback_rows")
    con.close()
    return {"generate_s": time.perf_counter() - started}


def measure(path: Path, n_boot: int, word_buckets: int) -> dict[str, object]:
    """Time load -> rewards -> reward model -> six estimators with intervals, per candidate."""
    settings = load_settings()
    objective = resolve_objective("balanced", settings)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    cpu_started = time.process_time()
    source = open_log(path)
    log = load_log(source, word_buckets=word_buckets)
    timings["load_s"] = time.perf_counter() - started
    n_logged = log.n + log.n_invalid
    mark = time.perf_counter()
    log = log.subset(used_rows(log, "exclude"))
    rewards = log_rewards(log, objective)
    data = log.logged_data(rewards)
    timings["rewards_and_logged_data_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    q_hat = RidgeRewardModel(seed=0).fit_log(log, rewards)
    bounds = reward_range(objective, settings.reward)
    unseen = observed_range(rewards, bounds)
    timings["reward_model_s"] = time.perf_counter() - mark
    estimators = make_estimators()
    candidates: dict[str, dict[str, list[float]]] = {}
    cpu_first = 0.0
    for index, text in enumerate(["logged", "uniform", f"fixed:{settings.catalog.ids[0]}"]):
        mark = time.perf_counter()
        target = static_distribution(parse_candidate(text), log)
        intervals = evaluate(
            estimators,
            data,
            target,
            q_hat,
            n_boot=n_boot,
            seed=index,
            reward_range=bounds,
            unseen_range=unseen,
        )
        diag = diagnostics(data, target)
        timings[f"estimate[{text}]_s"] = time.perf_counter() - mark
        if index == 0:
            cpu_first = time.process_time() - cpu_started
        candidates[text] = {
            e.name: [iv.estimate, iv.lower, iv.upper]
            for e, iv in zip(estimators, intervals, strict=True)
        }
        candidates[text]["ess_max_weight"] = [diag.ess, diag.max_weight]
    total = time.perf_counter() - started
    cpu_total = time.process_time() - cpu_started
    first = (
        timings["load_s"]
        + timings["rewards_and_logged_data_s"]
        + timings["reward_model_s"]
        + timings["estimate[logged]_s"]
    )
    return {
        "n_logged": n_logged,
        "n_used": log.n,
        "n_boot": n_boot,
        "word_buckets": word_buckets,
        "timings": timings,
        "one_candidate_total_s": first,
        "three_candidates_total_s": total,
        "three_candidates_cpu_s": cpu_total,
        "one_candidate_cpu_s": cpu_first,
        "estimates": candidates,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--word-buckets", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write (or reuse) the log at this path")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        path = args.keep or Path(folder) / "bench.duckdb"
        generated: dict[str, float] = {}
        if not path.exists():
            generated = generate(path, args.decisions)
            print(f"generated {args.decisions:,} decisions in {generated['generate_s']:.1f} s")
        result = measure(path, args.n_boot, args.word_buckets)
    result |= generated
    result["machine"] = f"{platform.machine()}, {platform.python_version()}, cpus={_cpus()}"
    result["load_average_after"] = list(os.getloadavg())
    for key, value in result["timings"].items():  # type: ignore[attr-defined]
        print(f"{key:<32} {value:7.2f} s")
    print(f"{'load + 6 estimators, 1 candidate':<32} {result['one_candidate_total_s']:7.2f} s")
    print(f"{'load + 6 estimators, 3 candidates':<32} {result['three_candidates_total_s']:7.2f} s")
    print(f"{'CPU time, 1 candidate':<32} {result['one_candidate_cpu_s']:7.2f} s")
    print(f"{'CPU time, 3 candidates':<32} {result['three_candidates_cpu_s']:7.2f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
