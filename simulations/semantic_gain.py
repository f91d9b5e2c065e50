"""What the semantic embedding adds to predicting each model's quality from prompt features.

For each outcome table (Parquet: prompt_id, task, prompt, model, quality, cost_usd) the
prompts are split by a fixed hash: a prompt is held out when
``int.from_bytes(blake2b(prompt_id.encode("utf-8")).digest(), "big") % 10 < 3`` (30%). On the
other 70%, one L2-regularised logistic regression per model predicts quality (fractional
judge scores are fitted as weighted 0/1 pairs) from

- ``base``: ``PromptFeatures.numeric()`` plus the prompt's words hashed into 1024 buckets;
- ``base+embNN``: those plus the static embedding (NN dims, Zipf weighting unless the name
  says ``none``), standardised;
- ``embNN``: the embedding alone (with the bias);
- ``numeric`` and ``numeric+embNN``: the same without the hashed words (does the embedding
  carry what the words do?);

with the regularisation chosen by 3-fold cross-validation on the training part. On the held-out
prompts it reports, per model, log-loss, Brier score and AUC (of quality >= 0.5), and the mean
quality (and cost) of routing each prompt to the model with the highest predicted quality,
next to the best single model and the per-prompt oracle. Usage::

    python simulations/semantic_gain.py ../shared/data/outcomes/*.parquet \
        --vectors /tmp/token_vectors.npy --json /tmp/semantic_gain.json

``--vectors`` caches the model's raw per-token vectors (384 dims, before PCA): computed from the
packaged model on first use (minutes), reused to distil every dimension and weighting compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from banditroute.embedding import DistilSpec, StaticEmbedder, packaged_model
from banditroute.embedding.distil import pca, project, token_vectors
from banditroute.features import extract

WORD_BUCKETS = 1024
CS = (0.03, 0.1, 0.3, 1.0, 3.0)
"""Inverse regularisation strengths tried by cross-validation."""


def held_out(prompt_id: str) -> bool:
    """The fixed 30% hold-out rule (shared with the lead's policy evaluation)."""
    digest = hashlib.blake2b(prompt_id.encode("utf-8")).digest()
    return int.from_bytes(digest, "big") % 10 < 3


def _bucket(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") % (
        WORD_BUCKETS
    )


@dataclass
class Table:
    """One outcome file as prompt x model matrices."""

    name: str
    prompt_ids: list[str]
    prompts: list[str]
    models: list[str]
    quality: np.ndarray
    cost: np.ndarray


def load(path: Path) -> Table:
    """Read the long-format table into (prompts, models) matrices."""
    # A connection of its own: the module's default one may hold another caller's result.
    with duckdb.connect() as con:
        rows = con.execute(
            f"SELECT prompt_id, any_value(prompt), model, avg(quality), avg(cost_usd) "
            f"FROM read_parquet('{path}') GROUP BY prompt_id, model ORDER BY prompt_id, model"
        ).fetchall()
    prompt_index: dict[str, int] = {}
    prompts: list[str] = []
    models = sorted({r[2] for r in rows})
    model_index = {m: k for k, m in enumerate(models)}
    for pid, prompt, *_ in rows:
        if pid not in prompt_index:
            prompt_index[pid] = len(prompts)
            prompts.append(prompt)
    quality = np.full((len(prompts), len(models)), np.nan)
    cost = np.full((len(prompts), len(models)), np.nan)
    for pid, _, model, q, c in rows:
        quality[prompt_index[pid], model_index[model]] = q
        cost[prompt_index[pid], model_index[model]] = np.nan if c is None else c
    name = path.name.removesuffix(".parquet")
    return Table(name, list(prompt_index), prompts, models, quality, cost)


def raw_vectors(path: Path) -> np.ndarray:
    """The model's per-token vectors (384 dims), cached at ``path``."""
    if path.is_file():
        return np.asarray(np.load(path), dtype=np.float32)
    files = packaged_model()
    tokenizer = files.load_tokenizer()
    encoder = files.encoder()
    ids = np.arange(encoder.config.vocab_size, dtype=np.int64)
    started = time.process_time()
    vectors = token_vectors(encoder, ids, cls_id=tokenizer.token_to_id("[CLS]"),
                            sep_id=tokenizer.token_to_id("[SEP]"), progress=True)  # fmt: skip
    print(f"token vectors: {time.process_time() - started:.0f} s CPU", file=sys.stderr)
    np.save(path, vectors)
    return vectors


def table_for(vectors: np.ndarray, spec: DistilSpec) -> np.ndarray:
    """What ``distil`` returns for the full vocabulary, from the cached raw vectors."""
    mean, directions = pca(vectors, spec.dims)
    ids = np.arange(len(vectors), dtype=np.int64)
    return np.asarray(project(vectors, ids, mean, directions, spec.weighting), dtype=np.float32)


def _fit(x: Any, quality: np.ndarray, c: float) -> LogisticRegression:
    """Logistic regression on fractional labels: each row twice, as 1 (weight q) and 0."""
    stacked = sparse.vstack([x, x]).tocsr() if sparse.issparse(x) else np.vstack([x, x])
    labels = np.r_[np.ones(len(quality)), np.zeros(len(quality))]
    weights = np.r_[quality, 1.0 - quality]
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(stacked, labels, sample_weight=weights)
    return model


def _log_loss(q: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(q * np.log(p) + (1 - q) * np.log(1 - p)))


def fit_predict(x_train: Any, q_train: np.ndarray, x_test: Any) -> tuple[np.ndarray, float]:
    """Predicted quality of the test rows, C chosen by 3-fold CV log-loss on the train rows."""
    folds = np.arange(len(q_train)) % 3
    best_c, best = CS[0], np.inf
    for c in CS:
        loss = 0.0
        for f in range(3):
            train, test = folds != f, folds == f
            model = _fit(x_train[train], q_train[train], c)
            loss += _log_loss(q_train[test], model.predict_proba(x_train[test])[:, 1])
        if loss < best:
            best_c, best = c, loss
    return _fit(x_train, q_train, best_c).predict_proba(x_test)[:, 1], best_c


def evaluate(table: Table, embeddings: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-variant per-model held-out metrics and routing quality."""
    features = [extract(p) for p in table.prompts]
    names = list(features[0].numeric())
    numeric = np.array([[f.numeric()[k] for k in names] for f in features])
    rows, cols = [], []
    for i, f in enumerate(features):
        for b in {_bucket(w) for w in f.words}:
            rows.append(i)
            cols.append(b)
    words = sparse.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(len(features), WORD_BUCKETS)
    )
    test = np.array([held_out(pid) for pid in table.prompt_ids])
    train = ~test
    base = sparse.hstack([sparse.csr_matrix(numeric), words]).tocsr()
    variants: dict[str, Any] = {"base": base, "numeric": numeric}
    for name, emb in embeddings.items():
        scaled = (emb - emb[train].mean(axis=0)) / (emb[train].std(axis=0) + 1e-9)
        variants[f"base+{name}"] = sparse.hstack([base, sparse.csr_matrix(scaled)]).tocsr()
        if name in ("emb32", "emb64"):
            variants[f"numeric+{name}"] = np.hstack([numeric, scaled])
            variants[name] = np.hstack([np.ones((len(scaled), 1)), scaled])
    quality = table.quality
    cost = np.nan_to_num(table.cost, nan=0.0)
    best_single = int(np.argmax(quality[train].mean(axis=0)))
    out: dict[str, Any] = {
        "prompts": len(table.prompts),
        "held_out": int(test.sum()),
        "models": table.models,
        "best_single": {
            "model": table.models[best_single],
            "quality": float(quality[test, best_single].mean()),
            "cost_usd": float(cost[test, best_single].mean()),
        },
        "oracle_quality": float(quality[test].max(axis=1).mean()),
        "variants": {},
    }
    for variant, x in variants.items():
        predicted = np.zeros((int(test.sum()), len(table.models)))
        per_model = {}
        for k, model in enumerate(table.models):
            p, c = fit_predict(x[train], quality[train, k], x[test])
            predicted[:, k] = p
            q = quality[test, k]
            binary = q >= 0.5
            per_model[model] = {
                "log_loss": _log_loss(q, p),
                "brier": float(np.mean((p - q) ** 2)),
                "auc": float(roc_auc_score(binary, p)) if 0 < binary.sum() < len(q) else None,
                "C": c,
            }
        choice = predicted.argmax(axis=1)
        picked = np.arange(len(choice))
        out["variants"][variant] = {
            "per_model": per_model,
            "mean_log_loss": float(np.mean([m["log_loss"] for m in per_model.values()])),
            "mean_brier": float(np.mean([m["brier"] for m in per_model.values()])),
            "mean_auc": float(np.mean([m["auc"] for m in per_model.values() if m["auc"]])),
            "routed_quality": float(quality[test][picked, choice].mean()),
            "routed_cost_usd": float(cost[test][picked, choice].mean()),
        }
        v = out["variants"][variant]
        print(f"  {variant:16s} log-loss {v['mean_log_loss']:.4f}  Brier {v['mean_brier']:.4f}  "
              f"AUC {v['mean_auc']:.4f}  routed quality {v['routed_quality']:.4f}  "
              f"cost {v['routed_cost_usd']:.6f}", flush=True)  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, evaluate each table, print a summary, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outcomes", type=Path, nargs="+", help="outcome tables (Parquet)")
    parser.add_argument("--vectors", type=Path, required=True, help="raw token vectors (.npy)")
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    vectors = raw_vectors(args.vectors)
    tokenizer = packaged_model().load_tokenizer()
    specs = {f"emb{d}": DistilSpec(dims=d, weighting="zipf") for d in args.dims}
    specs["emb64none"] = DistilSpec(dims=64, weighting="none")
    embedders = {n: StaticEmbedder(table_for(vectors, s), tokenizer) for n, s in specs.items()}
    results = {}
    for path in args.outcomes:
        table = load(path)
        print(f"{table.name}: {len(table.prompts)} prompts, {len(table.models)} models",
              flush=True)  # fmt: skip
        embeddings = {
            name: np.array([extract(p, embedder=e).embedding for p in table.prompts])
            for name, e in embedders.items()
        }
        results[table.name] = evaluate(table, embeddings)
        best = results[table.name]["best_single"]
        print(f"  best single {best['model']}: quality {best['quality']:.4f}; oracle "
              f"{results[table.name]['oracle_quality']:.4f}", flush=True)  # fmt: skip
        if args.json:  # after each table, so a long run's finished tables are kept
            args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
