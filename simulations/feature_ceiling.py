"""How much routing skill a table's prompts allow: full-information predictors, trained offline
on the tuning part, routed on the held-out part at each budget.

    python simulations/feature_ceiling.py --data ../shared/data/outcomes --only routerbench \
        --semantic --sentence \
        --json benchmarks/results/feature_ceiling.json

No bandit here: each model's quality is predicted from the prompt by a regularised logistic
(0/1 qualities) or ridge regression fitted on every (prompt, model) outcome of the tuning part
(what a warm-started router knows at best), and each held-out prompt goes to the model with the
highest predicted quality minus lambda times its cost, lambda bisected so the mean cost meets the
budget. With the same feature sets the router reads (its dense features, optionally the static
semantic embedding), with the held-out prompts' **true task labels** added (which no router is
given), with the full all-MiniLM-L6-v2 sentence embedding (``--sentence``: the numpy encoder
on every prompt, minutes of CPU; cached under var/sentence_embeddings), and k-nearest neighbours
in either embedding. Quality and cost are relative to the strongest model, as in
routing_skill.py. The figures bound what a warm-started router can reach with these signals:
if a predictor that sees the true task cannot reach a target, more bandit tuning will not
either.

Needs scikit-learn (the dev extra).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from held_tables import found_tables, write_json

from banditroute.config import load_settings
from banditroute.features import extract
from banditroute.outcome_tables import OutcomeTable
from banditroute.simulation.catalog import build_run_catalog

FRACTIONS = (0.10, 0.15, 0.20, 0.25, 0.35)
SENTENCE_CHARS = 2000
SENTENCE_TOKENS = 256
Array = np.ndarray


def route_at_budgets(
    predicted: Array, quality: Array, cost: Array, fractions: Sequence[float]
) -> dict[str, dict[str, float]]:
    """Relative quality and cost of routing each prompt to argmax(predicted - lambda * cost),
    lambda the smallest (by bisection) that keeps the mean cost within each budget."""
    ref = int(np.argmax(quality.mean(axis=0)))
    ref_q, ref_c = float(quality[:, ref].mean()), float(cost[:, ref].mean())
    rows = np.arange(len(quality))
    out: dict[str, dict[str, float]] = {}
    for fraction in fractions:
        budget = fraction * ref_c
        lo, hi = 0.0, 1e6
        for _ in range(80):
            lam = (lo + hi) / 2
            choice = np.argmax(predicted - lam * cost, axis=1)
            if cost[rows, choice].mean() > budget:
                lo = lam
            else:
                hi = lam
        choice = np.argmax(predicted - hi * cost, axis=1)
        out[f"{fraction:.2f}"] = {
            "quality": float(quality[rows, choice].mean()) / ref_q,
            "cost": float(cost[rows, choice].mean()) / ref_c,
        }
    return out


def fit_predict(train_x: Array, train_q: Array, test_x: Array, strength: float) -> Array:
    """Each model's predicted quality on ``test_x`` from one regression per model."""
    from sklearn.linear_model import LogisticRegression, Ridge

    predicted = np.zeros((len(test_x), train_q.shape[1]))
    for k in range(train_q.shape[1]):
        y = train_q[:, k]
        if set(np.unique(y).tolist()) <= {0.0, 1.0} and len(np.unique(y)) == 2:
            model = LogisticRegression(C=strength, max_iter=5000).fit(train_x, y)
            predicted[:, k] = model.predict_proba(test_x)[:, 1]
        else:
            predicted[:, k] = Ridge(alpha=1.0 / strength).fit(train_x, y).predict(test_x)
    return predicted


def nearest_neighbours(train_e: Array, train_q: Array, test_e: Array, k: int) -> Array:
    """Each model's mean quality over the ``k`` most cosine-similar tuning prompts."""
    a = train_e / np.maximum(np.linalg.norm(train_e, axis=1, keepdims=True), 1e-12)
    b = test_e / np.maximum(np.linalg.norm(test_e, axis=1, keepdims=True), 1e-12)
    nearest = np.argsort(-(b @ a.T), axis=1)[:, :k]
    result: Array = train_q[nearest].mean(axis=1)
    return result


def dense_features(table: OutcomeTable, embedder: Any) -> tuple[Array, Array | None]:
    """The router's dense features of every prompt and, with an embedder, its static
    semantic embedding."""
    features = [extract(p, embedder=embedder) for p in table.prompts]
    numeric = np.array([list(f.numeric().values()) for f in features])
    if embedder is None:
        return numeric, None
    return numeric, np.array([f.embedding for f in features])


def sentence_embeddings(table: OutcomeTable, cache: Path) -> Array:
    """all-MiniLM-L6-v2's mean-pooled embedding of each prompt's last characters (cached)."""
    if cache.is_file():
        cached: Array = np.load(cache)
        if len(cached) == table.n_prompts:
            return cached
    from tqdm import tqdm

    from banditroute.embedding.source import packaged_model

    files = packaged_model()
    encoder, tokenizer = files.encoder(), files.load_tokenizer()
    out = []
    for text in tqdm(table.prompts, desc=f"MiniLM {table.name}", unit="prompt"):
        ids = np.array([tokenizer.encode(text[-SENTENCE_CHARS:]).ids[-SENTENCE_TOKENS:]])
        out.append(encoder.sentence_embeddings(ids, np.ones(ids.shape, dtype=np.bool_))[0])
    result = np.array(out)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, result)
    return result


def ceiling(
    table: OutcomeTable,
    *,
    settings_catalog: Any,
    embedder: Any,
    sentence_cache: Path | None,
    fractions: Sequence[float],
) -> dict[str, Any]:
    """Every predictor's routed quality and cost on the held-out part of ``table``."""
    name = table.name.rsplit("/", 1)[-1].removesuffix(".parquet")
    tasks = dict(zip(table.prompt_ids, table.tasks, strict=True))
    tune, held = table.holdout_split()
    cost = build_run_catalog(held, settings_catalog).cost_usd
    quality = held.quality
    num_tr, emb_tr = dense_features(tune, embedder)
    num_te, emb_te = dense_features(held, embedder)
    mean, std = num_tr.mean(axis=0), num_tr.std(axis=0) + 1e-9
    num_tr, num_te = (num_tr - mean) / std, (num_te - mean) / std
    names = sorted(set(table.tasks))

    def one_hot(ids: Sequence[str]) -> Array:
        return np.array([[1.0 if tasks[i] == n else 0.0 for n in names] for i in ids])

    runs: dict[str, Callable[[], Array]] = {
        "router's dense features": lambda: fit_predict(num_tr, tune.quality, num_te, 1.0),
        "dense + TRUE task label": lambda: fit_predict(
            np.hstack([num_tr, one_hot(tune.prompt_ids)]),
            tune.quality,
            np.hstack([num_te, one_hot(held.prompt_ids)]),
            1.0,
        ),
    }
    embeddings: dict[str, tuple[Array, Array]] = {}
    if emb_tr is not None and emb_te is not None:
        embeddings["static 64-d"] = (emb_tr, emb_te)
    if sentence_cache is not None:
        embeddings["MiniLM 384-d"] = (
            sentence_embeddings(tune, sentence_cache / f"{name}.tune.npy"),
            sentence_embeddings(held, sentence_cache / f"{name}.holdout.npy"),
        )
    for label, (e_tr, e_te) in embeddings.items():
        for strength in (0.3, 1.0):
            runs[f"dense + {label}, C={strength}"] = lambda e_tr=e_tr, e_te=e_te, c=strength: (
                fit_predict(
                    np.hstack([num_tr, 4 * e_tr]), tune.quality, np.hstack([num_te, 4 * e_te]), c
                )
            )
        for k in (25, 50):
            runs[f"{k}-NN in {label}"] = lambda e_tr=e_tr, e_te=e_te, k=k: nearest_neighbours(
                e_tr, tune.quality, e_te, k
            )
    runs["oracle (true outcomes)"] = lambda: quality.astype(np.float64)
    results = {}
    for label, predict in runs.items():
        results[label] = route_at_budgets(predict(), quality, cost, fractions)
        cells = " ".join(
            f"{f}:{r['quality']:.3f}@{r['cost']:.3f}" for f, r in results[label].items()
        )
        print(f"{table.name} {label:34s} {cells}", flush=True)
    return {"tune_prompts": tune.n_prompts, "held_out_prompts": held.n_prompts, "runs": results}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and print (and optionally write) every table's ceiling."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of outcome tables")
    parser.add_argument("--only", help="only tables whose name contains this")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument(
        "--semantic", action="store_true", help="also the static embedding (the shipped table)"
    )
    parser.add_argument("--semantic-cache", type=Path, help="another static table (distilled)")
    parser.add_argument(
        "--sentence", action="store_true", help="also the full MiniLM sentence embedding (slow)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if any(not 0 < f <= 1 for f in args.fractions):
        parser.error("--fractions: each must be in (0, 1]")
    settings = load_settings(None)
    embedder = None
    if args.semantic_cache is not None:
        from banditroute.embedding.load import load_static_embedder

        embedder = load_static_embedder(args.semantic_cache.expanduser(), progress=True)
    elif args.semantic:
        from banditroute.embedding import packaged_embedder

        embedder = packaged_embedder()
    sentence_cache = None
    if args.sentence:
        sentence_cache = Path("var") / "sentence_embeddings"
    results = {}
    for name, table in found_tables(args.data, settings.catalog.ids, args.only):
        results[name] = ceiling(
            table,
            settings_catalog=settings.catalog,
            embedder=embedder,
            sentence_cache=sentence_cache,
            fractions=args.fractions,
        )
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
