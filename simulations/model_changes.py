"""Model-change scenarios on real tables: a strong model added, a model degraded and a price cut,
mid-stream; how many prompts until the router adapts.

    python simulations/model_changes.py --data ../shared/data/outcomes --seeds 5 \
        --json benchmarks/results/model_changes.json --plots benchmarks/results/model_changes

Each scenario warm-starts the router from the table's tuning part (full information, the way
``serve --warm-start`` does; for ``add`` without the added model) and streams the held-out
prompts (:meth:`OutcomeTable.holdout_split`) under a budget, changing one model at ``--step``:

* **add**: the model is excluded from every request before the step (it joins the catalogue
  then). Adapted: the first step after which the model's share of the trailing 50 prompts
  reaches half its share in the same stream when it was there from the start;
* **degrade**: from the step on, the model's quality on every prompt is multiplied by
  ``--degrade`` (default 0.3). Adapted: its trailing share falls to half its share before;
* **price**: from the step on, the model's realised cost and its catalogue price (the router
  reloads its settings, as ``ReloadConfig`` does) are multiplied by ``--price`` (default 0.2).
  Adapted: its trailing share reaches halfway from its share before to its share in the same
  stream when the new price held from the start.

Each scenario also runs with drift detection off (``costaware:drift_delta=0``), which shows
what river's ADWIN detectors per model add. ParetoBandit reports about 142 steps to adopt a
new model; the ``add`` rows are the comparable figure.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from held_tables import write_json

from banditroute.config import Settings, load_settings
from banditroute.outcome_tables import OutcomeTable, load_outcomes
from banditroute.simulation.catalog import build_run_catalog
from banditroute.simulation.runner import (
    ModelChange,
    Outcomes,
    RunSpec,
    SeedTrace,
    WarmStart,
    run_seeds,
)
from banditroute.simulation.simulate import SimulationConfig, prepare

WINDOW = 50


@dataclass(frozen=True)
class Scenario:
    """One change to one model of one table, under a budget (a fraction of the reference's)."""

    table: str
    kind: str
    model: str
    reference: str
    fraction: float


SCENARIOS = (
    Scenario("routerbench_train", "add", "gpt-4-1106-preview", "gpt-4-1106-preview", 0.25),
    Scenario("routerbench_train", "degrade", "zero-one-ai/Yi-34B-Chat", "gpt-4-1106-preview", 0.25),
    Scenario("routerbench_train", "price", "gpt-4-1106-preview", "gpt-4-1106-preview", 0.25),
    Scenario(
        "paretobandit_val", "add", "mistralai/mistral-large-2512", "google/gemini-2.5-pro", 0.1
    ),
    Scenario(
        "paretobandit_val", "degrade", "mistralai/mistral-large-2512", "google/gemini-2.5-pro", 0.1
    ),
)


def _spec(
    stream: OutcomeTable,
    warm: OutcomeTable,
    *,
    settings: Settings,
    policy: str,
    budget: float,
    changes: tuple[ModelChange, ...],
) -> RunSpec:
    spec, _ = prepare(SimulationConfig(outcomes=stream, policy=policy, budget_usd=budget), settings)
    warm_run = build_run_catalog(warm, spec.settings.catalog, arg="--warm-start")
    return replace(
        spec,
        warm=WarmStart(Outcomes.from_run(warm, warm_run), "full", warm.name),
        changes=changes,
    )


def _shares(traces: list[SeedTrace], column: int) -> np.ndarray:
    """Per seed, the model's share of the trailing WINDOW prompts at each step."""
    kernel = np.ones(WINDOW) / WINDOW
    return np.array(
        [np.convolve((t.chosen == column).astype(float), kernel, mode="full")[: len(t.chosen)]
         for t in traces]
    )  # fmt: skip


def _first_step(series: np.ndarray, start: int, reached: Any) -> int | None:
    """Steps after ``start`` until ``reached(value)`` holds (None if it never does)."""
    for step in range(start, len(series)):
        if reached(series[step]):
            return step - start
    return None


def run(scenario: Scenario, settings: Settings, args: Any) -> dict[str, Any]:
    """Run a scenario with and without drift detection; adaptation steps per seed."""
    step = args.step
    table = load_outcomes(args.data / f"{scenario.table}.parquet", model_order=settings.catalog.ids)
    tune, stream = table.holdout_split()
    column = stream.models.index(scenario.model)
    ref = stream.models.index(scenario.reference)
    run_catalog = build_run_catalog(stream, settings.catalog)
    budget = scenario.fraction * float(run_catalog.cost_usd[:, ref].mean())
    factor = {"add": 1.0, "degrade": args.degrade, "price": args.price}[scenario.kind]
    warm = tune
    if scenario.kind == "add":
        keep = [k for k in range(tune.n_models) if k != column]
        warm = _without_model(tune, keep)
    change = ModelChange(scenario.kind, scenario.model, step, factor)  # type: ignore[arg-type]
    # The comparison stream: the model present from the start, or the change made at step 0.
    if scenario.kind == "add":
        steady_changes: tuple[ModelChange, ...] = ()
    else:
        steady_changes = (replace(change, step=0),)
    out: dict[str, Any] = {"scenario": scenario.__dict__, "step": step, "budget_usd": budget}
    seed_list = list(range(args.seeds))
    steady_warm = tune if scenario.kind == "add" else warm
    steady = run_seeds(
        _spec(stream, steady_warm, settings=settings, policy="costaware", budget=budget,
              changes=steady_changes),
        seed_list,
    )  # fmt: skip
    steady_share = float(_shares(steady, column)[:, -200:].mean())
    out["steady_share"] = steady_share
    for policy in ("costaware", "costaware:drift_delta=0"):
        spec = _spec(
            stream, warm, settings=settings, policy=policy, budget=budget, changes=(change,)
        )
        traces = run_seeds(spec, seed_list)
        shares = _shares(traces, column)
        before = float(shares[:, max(0, step - WINDOW) : step].mean()) if step > 0 else 0.0
        if scenario.kind == "add":
            target = 0.5 * steady_share
            steps = [_first_step(s, step, lambda v, t=target: v >= t) for s in shares]
        elif scenario.kind == "degrade":
            target = 0.5 * before
            steps = [_first_step(s, step, lambda v, t=target: v <= t) for s in shares]
        else:
            target = before + 0.5 * (steady_share - before)
            rising = steady_share >= before
            steps = [
                _first_step(s, step, lambda v, t=target, r=rising: v >= t if r else v <= t)
                for s in shares
            ]
        quality_after = float(np.mean([t.quality[step:].mean() for t in traces]))
        out[policy] = {
            "share_before": before,
            "target_share": target,
            "steps_to_adapt": steps,
            "median_steps": _median(steps),
            "quality_after_change": quality_after,
            "cost_after_change": float(np.mean([t.cost_usd[step:].mean() for t in traces])),
            "share_curve": [round(float(v), 3) for v in shares.mean(axis=0)[::5]],
        }
        print(
            f"{scenario.table} {scenario.kind:7s} {scenario.model.rsplit('/', 1)[-1]:22s} "
            f"{policy:24s} share before {before:.2f} target {target:.2f} steady "
            f"{steady_share:.2f}: adapted after {_median(steps)} prompts (per seed {steps}); "
            f"quality after {quality_after:.3f}",
            flush=True,
        )
    if args.plots is not None:
        _plot(out, args.plots / f"{scenario.table}-{scenario.kind}.png")
    return out


def _median(steps: list[int | None]) -> float | None:
    """Median over seeds, counting a seed that never adapted as the longest possible."""
    if all(s is None for s in steps):
        return None
    finite = [s if s is not None else 10**9 for s in steps]
    value = float(np.median(finite))
    return None if value >= 10**9 else value


def _without_model(table: OutcomeTable, keep: list[int]) -> OutcomeTable:
    """The table without the models not in ``keep`` (columns)."""
    return replace(
        table,
        models=tuple(table.models[k] for k in keep),
        quality=table.quality[:, keep],
        cost_usd=table.cost_usd[:, keep],
        input_tokens=table.input_tokens[:, keep],
        output_tokens=table.output_tokens[:, keep],
        response_chars=table.response_chars[:, keep],
    )


def _plot(result: dict[str, Any], path: Path) -> None:
    """The changed model's trailing share along the stream, with and without drift detection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    scenario = result["scenario"]
    for policy, style in (("costaware", "-"), ("costaware:drift_delta=0", "--")):
        curve = result[policy]["share_curve"]
        ax.plot(np.arange(len(curve)) * 5, curve, style, label=policy)
    ax.axvline(result["step"], color="0.5", lw=0.8, label="change")
    ax.axhline(result["steady_share"], color="0.7", ls=":", label="steady share")
    ax.set_ylim(0, 1)
    ax.set_xlabel("prompt in the held-out stream")
    ax.set_ylabel(f"share of the trailing {WINDOW} prompts")
    ax.set_title(f"{scenario['table']}: {scenario['kind']} {scenario['model'].rsplit('/', 1)[-1]}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every scenario, write the JSON and plots."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of outcome tables")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--step", type=int, default=150, help="stream step of the change")
    parser.add_argument("--degrade", type=float, default=0.3, help="quality factor")
    parser.add_argument("--price", type=float, default=0.2, help="price factor")
    parser.add_argument("--only", help="only scenarios whose table or kind contains this")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plots", type=Path)
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.step < 0:
        parser.error("--seeds must be >= 1 and --step >= 0")
    settings = load_settings()
    results = []
    for scenario in SCENARIOS:
        if args.only and args.only not in f"{scenario.table} {scenario.kind}":
            continue
        if not (args.data / f"{scenario.table}.parquet").is_file():
            print(f"skipping {scenario.table}: no such table in {args.data}", file=sys.stderr)
            continue
        results.append(run(scenario, settings, args))
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
