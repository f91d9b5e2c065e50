"""``banditroute simulate``: stream an outcome table through the in-process router.

Wire it into the main CLI with ``add_simulate_parser(subparsers)``; the parser's default
``handler`` is :func:`run_simulate`. Argument errors name the argument: argparse rejects
malformed values (exit 2), and :class:`~banditroute.errors.ConfigError` (raised for values that
are well-formed but unusable, such as an unknown policy) carries the argument's name.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from banditroute.choices import NAMED_POLICIES, WARM_MODES
from banditroute.config import config_path_from_environment, load_settings


def _number(
    arg: str,
    convert: Callable[[str], float],
    accept: Callable[[float], bool] = lambda value: True,
    requirement: str = "",
) -> Any:
    """An argparse ``type``: ``convert(text)``, rejected unless ``accept(value)``."""
    noun = "an integer" if convert is int else "a number"

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{arg}: {text!r} is not {noun}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{arg}: must be {requirement}, got {text}")
        return value

    return parse


def _positive_float(arg: str) -> Any:
    return _number(arg, float, lambda v: math.isfinite(v) and v > 0, "a positive number")


def _non_negative_float(arg: str) -> Any:
    return _number(arg, float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")


def _positive_int(arg: str) -> Any:
    return _number(arg, int, lambda v: v >= 1, ">= 1")


def add_simulate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``simulate`` subcommand to ``subparsers`` (from ``add_subparsers``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="replay an outcome table through the in-process router",
        description=(
            "Stream the prompts of an outcome table (one row per prompt x model with quality "
            "and cost) through the same in-process router the server uses, revealing only the "
            "chosen model's outcome, and score the router against the per-prompt oracle, the "
            "best fixed model and every single model."
        ),
    )
    parser.add_argument(
        "--outcomes", type=Path, required=True, metavar="FILE.parquet", help="outcome table"
    )
    parser.add_argument(
        "--policy",
        metavar="NAME",
        help=f"one of {', '.join(NAMED_POLICIES)}, fixed:<model> (default: the configured "
        "policy.kind)",
    )
    parser.add_argument(
        "--objective",
        metavar="NAME|WEIGHTS",
        help="a profile from the config or inline weights such as "
        "quality=1,cost=50,latency=0.0001 (cost in USD, latency in ms); default: the "
        "configured default, or quality only when --budget-usd is given",
    )
    parser.add_argument(
        "--budget-usd",
        type=_positive_float("--budget-usd"),
        metavar="PER_REQUEST",
        help="keep the mean cost per request at or under this by online pacing",
    )
    parser.add_argument(
        "--pacing-rate",
        type=_non_negative_float("--pacing-rate"),
        help="step size of the budget pacer's multiplier (default: the objective's)",
    )
    parser.add_argument(
        "--seeds",
        type=_positive_int("--seeds"),
        default=5,
        metavar="N",
        help="independent runs (each with its own prompt order and exploration draws), "
        "reported as the mean and standard deviation over seeds (default: 5)",
    )
    parser.add_argument(
        "--first-seed",
        type=_number("--first-seed", int, lambda v: v >= 0, ">= 0"),
        default=0,
        help="seeds run from this one",
    )
    parser.add_argument(
        "--warm-start", type=Path, metavar="FILE.parquet", help="learn from this table first"
    )
    parser.add_argument(
        "--warm-start-mode",
        choices=WARM_MODES,
        default="bandit",
        help="bandit: one uniform-random model's outcome per prompt (probability 1/K); "
        "full: every model's outcome (default: bandit)",
    )
    parser.add_argument("--workers", type=_positive_int("--workers"), help="processes")
    parser.add_argument("--config", type=Path, help="TOML settings merged over the defaults")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write the summary")
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="write the plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_simulate)
    return parser


def run_simulate(args: argparse.Namespace) -> int:
    """Run ``banditroute simulate``; ConfigError (naming the argument) on unusable input."""
    from tqdm import tqdm

    from banditroute.errors import ConfigError
    from banditroute.simulation.results import format_table
    from banditroute.simulation.simulate import SimulationConfig, prepare, simulate

    for name in ("json", "plot"):
        path: Path | None = getattr(args, name)
        if path is not None and path.parent and not path.parent.exists():
            raise ConfigError(
                f"--{name}: directory {str(path.parent)!r} does not exist", field=f"--{name}"
            )
        if path is not None and path.is_dir():
            raise ConfigError(f"--{name}: {str(path)!r} is a directory", field=f"--{name}")
    settings = load_settings(args.config or config_path_from_environment())
    config = SimulationConfig(
        outcomes=args.outcomes,
        policy=args.policy,
        objective=args.objective,
        budget_usd=args.budget_usd,
        seeds=args.seeds,
        first_seed=args.first_seed,
        warm_start=args.warm_start,
        warm_start_mode=args.warm_start_mode,
        workers=args.workers,
        pacing_rate=args.pacing_rate,
    )
    prepared = prepare(config, settings)
    spec = prepared[0]
    total = spec.outcomes.table.n_prompts * config.seeds
    with tqdm(
        total=total,
        unit="prompt",
        desc=f"simulate {spec.policy}",
        disable=args.no_progress,
        file=sys.stderr,
    ) as bar:
        result = simulate(config, settings, progress=bar.update, prepared=prepared)
    print(format_table(result.summary))
    if args.json is not None:
        args.json.write_text(json.dumps(result.summary, indent=2) + "\n", encoding="utf-8")
    if args.plot is not None:
        from banditroute.simulation.plot import plot_run

        plot_run(result.summary, result.traces, args.plot)
    return 0
