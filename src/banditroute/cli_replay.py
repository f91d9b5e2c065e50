"""``banditroute replay | tune | export``: counterfactual evaluation from the decision log.

The lead wires these into :mod:`banditroute.cli` with :func:`add_parsers`; each handler takes
the parsed arguments and returns an exit code, raising
:class:`~banditroute.errors.InvalidArgument` or :class:`~banditroute.errors.ConfigError`
naming the argument for bad input (``cli.main`` prints ``banditroute CMD: error: MESSAGE``).

    banditroute replay --log var/banditroute.duckdb --candidate logged --candidate uniform \\
        --candidate fixed:gpt-4-1106-preview --candidate vw --objective quality=1,cost=50 \\
        --json replay.json --plot replay.png
    banditroute tune --log var/banditroute.duckdb --cost-weights 0,25,50,100,200 \\
        --target-quality-share 0.95 --plot frontier.png
    banditroute export --log var/banditroute.duckdb --format dsjson --out decisions.dsjson
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from banditroute.choices import (
    DEFAULT_N_BOOT,
    DEFAULT_TOLERANCE,
    DEFAULT_WORD_BUCKETS,
    ESTIMATOR_NAMES,
    MAX_TOLERANCE,
    METHODS,
    MISSING_RULES,
    SPEC_HELP,
    Missing,
    check_tolerance,
)
from banditroute.errors import InvalidArgument

if TYPE_CHECKING:
    from banditroute.config import Settings
    from banditroute.evaluation.logdata import ReplayLog

# The handlers import the evaluation modules (numpy, duckdb, Vowpal Wabbit, ...) when they run:
# building the parser, and so ``--help``, must not load them (tests/test_cli_imports.py).

DEFAULT_CANDIDATES: tuple[str, ...] = ("logged", "uniform")
MAX_WORD_BUCKETS = 4096
"""Most hashed-word buckets: the reward model solves a dense ridge per model and fold in
that many dimensions and holds an (n, buckets) matrix (20,000 took ten minutes on 300
decisions; 10^8 ran out of memory)."""


# -- shared arguments ----------------------------------------------------------------------------
def _log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log",
        type=Path,
        required=True,
        help="the DuckDB decision log (or its Parquet export folder); a log a running server "
        "holds is read from its export",
    )
    parser.add_argument("--config", type=Path, help="TOML settings (catalogue, objectives)")
    parser.add_argument("--since", help="first decision time: ISO 8601 (UTC default) or epoch s")
    parser.add_argument("--until", help="decisions before this time (same formats)")
    parser.add_argument(
        "--objective",
        help="a profile name or inline weights such as quality=1,cost=0,latency=0 "
        "(default: the configured default profile)",
    )


def _interval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval",
        default="bootstrap",
        choices=list(METHODS),
        help="confidence interval method (default: bootstrap)",
    )
    parser.add_argument("--level", type=float, default=0.95, help="interval level (0.95)")
    parser.add_argument(
        "--n-boot", type=int, default=DEFAULT_N_BOOT, help=f"bootstrap resamples ({DEFAULT_N_BOOT})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (resampling, folds, learners)")
    parser.add_argument(
        "--word-buckets",
        type=int,
        default=DEFAULT_WORD_BUCKETS,
        help=f"hashed-word buckets in the reward model's features, at most {MAX_WORD_BUCKETS} "
        f"(default {DEFAULT_WORD_BUCKETS}: none; they did not help on RouterBench)",
    )


def tolerance_argument(parser: argparse.ArgumentParser, judged: str) -> None:
    """``--tolerance``: the precision a reliable verdict asks of ``judged`` (an interval)."""
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"rate a candidate reliable only if {judged} reaches at most this share of its "
        f"estimate on either side, in (0, {MAX_TOLERANCE:g}] (default {DEFAULT_TOLERANCE:g}: "
        "within 2%%)",
    )


def check_tolerance_argument(args: argparse.Namespace) -> None:
    """``--tolerance`` in (0, MAX_TOLERANCE], else InvalidArgument naming it."""
    try:
        check_tolerance(args.tolerance, "--tolerance")
    except ValueError as exc:
        raise InvalidArgument(str(exc), field="--tolerance") from None


def _settings(args: argparse.Namespace) -> Settings:
    from banditroute.config import config_path_from_environment, load_settings

    return load_settings(args.config or config_path_from_environment())


def _window(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    from banditroute.evaluation.logdata import check_window, parse_time

    since = parse_time(args.since, arg="--since") if args.since else None
    until = parse_time(args.until, arg="--until") if args.until else None
    check_window(since, until)
    return since, until


def _check_intervals(args: argparse.Namespace) -> None:
    if not 0 < args.level < 1:
        raise InvalidArgument(
            f"--level: must be between 0 and 1, got {args.level}", field="--level"
        )
    if args.n_boot < 2:
        raise InvalidArgument(f"--n-boot: must be at least 2, got {args.n_boot}", field="--n-boot")
    if args.seed < 0:
        raise InvalidArgument(f"--seed: must be >= 0, got {args.seed}", field="--seed")
    if not 0 <= args.word_buckets <= MAX_WORD_BUCKETS:
        raise InvalidArgument(
            f"--word-buckets: must be in 0..{MAX_WORD_BUCKETS}, got {args.word_buckets}",
            field="--word-buckets",
        )


def _output(path: Path | None, arg: str) -> None:
    if path is not None and not path.parent.is_dir():
        raise InvalidArgument(f"{arg}: no such directory {str(path.parent)!r}", field=arg)


def _load(args: argparse.Namespace, *, with_features: bool, word_buckets: int) -> ReplayLog:
    from banditroute.evaluation.logdata import load_log
    from banditroute.store.reader import open_log

    since, until = _window(args)
    source = open_log(args.log, arg="--log")
    try:
        log = load_log(
            source,
            since=since,
            until=until,
            word_buckets=word_buckets,
            with_features=with_features,
        )
    finally:
        source.connection.close()
    if log.n == 0:
        where = " in the --since/--until window" if since or until else ""
        raise InvalidArgument(
            f"--log: no usable decisions{where} in {log.source}"
            + (f" ({log.n_invalid} invalid rows)" if log.n_invalid else "")
            + (f" ({log.n_sticky} sticky session decisions)" if log.n_sticky else ""),
            field="--log",
        )
    return log


def _report(
    args: argparse.Namespace,
    table: str,
    write_json: Callable[[Path], None],
    plot: Callable[[Path], None],
) -> None:
    """Print the table, then write ``--json`` and ``--plot`` when given."""
    print(table)
    if args.json:
        write_json(args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot(args.plot)
        print(f"wrote {args.plot}")


def _number_list(text: str, arg: str) -> list[float]:
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise InvalidArgument(f"{arg}: {part.strip()!r} is not a number", field=arg) from None
        if not math.isfinite(value) or value < 0:
            raise InvalidArgument(f"{arg}: weights must be >= 0, got {value}", field=arg)
        values.append(value)
    if not values:
        raise InvalidArgument(f"{arg}: give at least one number", field=arg)
    return values


def _switch_tau(text: str) -> float | None:
    """``--switch-tau``: None for auto, else a number >= 0."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(
            f"--switch-tau: expected a number or auto, got {text.strip()[:40]!r}",
            field="--switch-tau",
        ) from None
    if not value >= 0:
        raise InvalidArgument("--switch-tau: must be >= 0", field="--switch-tau")
    return value


# -- replay --------------------------------------------------------------------------------------
def _replay(args: argparse.Namespace) -> int:
    from banditroute.evaluation import replay as replay_module
    from banditroute.evaluation.candidates import (
        check_candidates,
        parse_candidate,
        shadow_distribution,
    )
    from banditroute.evaluation.logdata import counts
    from banditroute.evaluation.objective_rewards import resolve_objective
    from banditroute.evaluation.reward_model import RidgeRewardModel
    from banditroute.store.reader import open_log

    settings = _settings(args)
    objective = resolve_objective(args.objective, settings)
    specs = [parse_candidate(text) for text in (args.candidate or DEFAULT_CANDIDATES)]
    names = [n.strip() for n in args.estimators.split(",") if n.strip()]
    unknown = [n for n in names if n not in ESTIMATOR_NAMES]
    if unknown or not names:
        raise InvalidArgument(
            f"--estimators: unknown {', '.join(unknown) or '(none given)'} "
            f"(known: {', '.join(ESTIMATOR_NAMES)})",
            field="--estimators",
        )
    switch_tau = _switch_tau(args.switch_tau)
    if not args.clip > 0:
        raise InvalidArgument("--clip: must be > 0", field="--clip")
    _check_intervals(args)
    check_tolerance_argument(args)
    _output(args.json, "--json")
    _output(args.plot, "--plot")
    log = _load(
        args,
        with_features=any(spec.needs_features for spec in specs),
        word_buckets=args.word_buckets,
    )
    check_candidates(specs, settings, log.models, arg="--candidate")
    missing = cast(Missing, args.missing)
    c = counts(log)
    if missing == "exclude" and c.with_outcome < 2:
        raise InvalidArgument(
            f"--log: only {c.with_outcome} of {c.logged} decisions have an outcome (feedback "
            "for the chosen model); use --missing default to score the others",
            field="--log",
        )
    # Shadow candidates read their distributions from the log: one connection for all of them.
    shadow_source = (
        open_log(args.log, arg="--log") if any(s.kind == "shadow" for s in specs) else None
    )
    try:
        result = replay_module.replay(
            log,
            specs,
            objective,
            settings,
            estimators=replay_module.make_estimators(names, switch_tau=switch_tau, clip=args.clip),
            missing=missing,
            method=args.interval,
            level=args.level,
            n_boot=args.n_boot,
            seed=args.seed,
            reward_model=RidgeRewardModel(seed=args.seed),
            progress=True,
            shadow=None
            if shadow_source is None
            else partial(shadow_distribution, shadow_source.connection),
            tolerance=args.tolerance,
        )
    finally:
        if shadow_source is not None:
            shadow_source.connection.close()
    _report(
        args,
        replay_module.format_table(result),
        result.write_json,
        partial(replay_module.plot, result),
    )
    return 0


# -- tune ----------------------------------------------------------------------------------------
def _tune(args: argparse.Namespace) -> int:
    from banditroute.evaluation import tune as tune_module
    from banditroute.evaluation.candidates import check_candidates, parse_candidate
    from banditroute.evaluation.logdata import counts
    from banditroute.evaluation.objective_rewards import resolve_objective

    settings = _settings(args)
    objective = resolve_objective(args.objective, settings)
    policy = parse_candidate(args.policy, arg="--policy")
    if not policy.trained:
        raise InvalidArgument(
            f"--policy: {args.policy!r} is not a trainable policy (vw[:ARGS] or linucb[:...])",
            field="--policy",
        )
    check_candidates([policy], settings, (), arg="--policy")
    cost_weights = _number_list(args.cost_weights, "--cost-weights")
    latency_weights = (
        _number_list(args.latency_weights, "--latency-weights") if args.latency_weights else None
    )
    if args.target_quality_share is not None and not 0 < args.target_quality_share <= 1:
        raise InvalidArgument(
            "--target-quality-share: must be in (0, 1]", field="--target-quality-share"
        )
    if args.max_cost is not None and not args.max_cost > 0:
        raise InvalidArgument("--max-cost: must be > 0", field="--max-cost")
    _check_intervals(args)
    check_tolerance_argument(args)
    _output(args.json, "--json")
    _output(args.plot, "--plot")
    log = _load(args, with_features=True, word_buckets=args.word_buckets)
    with_outcome = counts(log).with_outcome
    if with_outcome < 4:
        raise InvalidArgument(
            f"--log: only {with_outcome} decisions have an outcome; need at least 4",
            field="--log",
        )
    result = tune_module.tune(
        log,
        settings,
        objective,
        policy,
        cost_weights=cost_weights,
        latency_weights=latency_weights,
        quality_share=args.target_quality_share,
        max_cost=args.max_cost,
        references=not args.no_references,
        method=args.interval,
        level=args.level,
        n_boot=args.n_boot,
        seed=args.seed,
        progress=True,
        tolerance=args.tolerance,
    )
    _report(
        args, tune_module.format_table(result), result.write_json, partial(tune_module.plot, result)
    )
    return 0


# -- export --------------------------------------------------------------------------------------
def _export(args: argparse.Namespace) -> int:
    import numpy as np

    from banditroute.evaluation.candidates import iterate
    from banditroute.evaluation.dsjson import write_dsjson
    from banditroute.evaluation.objective_rewards import log_rewards, resolve_objective
    from banditroute.evaluation.replay import used_rows

    settings = _settings(args)
    objective = resolve_objective(args.objective, settings)
    if args.out != "-":
        _output(Path(args.out), "--out")
    log = _load(args, with_features=True, word_buckets=0)
    missing = cast(Missing, args.missing)
    default = settings.reward.default_reward if missing == "default" else None
    rewards = log_rewards(log, objective, default_reward=default)
    rows = np.flatnonzero(used_rows(log, missing))
    progress = iterate(rows.shape[0], "export", args.out != "-")
    selected = (int(rows[i]) for i in progress)
    if args.out == "-":
        written = write_dsjson(log, rewards, sys.stdout, settings.catalog, rows=selected)
    else:
        try:
            handle = open(args.out, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise InvalidArgument(
                f"--out: cannot write {args.out!r}: {exc}", field="--out"
            ) from exc
        with handle:
            written = write_dsjson(log, rewards, handle, settings.catalog, rows=selected)
    skipped = log.n - written
    note = f", {skipped} without an outcome skipped" if skipped else ""
    print(f"wrote {written} decisions to {args.out} (dsjson{note})", file=sys.stderr)
    return 0


# -- registration --------------------------------------------------------------------------------
def add_parsers(subparsers: Any) -> None:
    """Register ``replay``, ``tune`` and ``export`` on the CLI's subparsers."""
    replay = subparsers.add_parser(
        "replay",
        help="estimate how candidate policies would have done on the logged traffic",
        description="Counterfactual (off-policy) evaluation of candidate routing policies from "
        "the decision log, with confidence intervals and overlap diagnostics.",
    )
    _log_arguments(replay)
    replay.add_argument(
        "--candidate",
        action="append",
        metavar="SPEC",
        help=f"a policy to evaluate (repeatable; default: logged, uniform): {SPEC_HELP}",
    )
    replay.add_argument(
        "--missing",
        default="exclude",
        choices=list(MISSING_RULES),
        help="decisions without an outcome: exclude them (default) or score "
        "them with reward.default_reward",
    )
    replay.add_argument(
        "--estimators",
        default=",".join(ESTIMATOR_NAMES),
        help=f"comma-separated subset of {','.join(ESTIMATOR_NAMES)}",
    )
    replay.add_argument(
        "--switch-tau",
        default="auto",
        help="switch-DR weight threshold: a number, or auto (default: chosen from the data "
        "by estimated mean squared error, re-chosen in every bootstrap resample)",
    )
    replay.add_argument(
        "--clip",
        type=float,
        default=math.inf,
        help="cap IPS and DR importance weights (default: no cap)",
    )
    _interval_arguments(replay)
    tolerance_argument(replay, "its DR interval")
    replay.add_argument("--json", type=Path, help="write the estimates as JSON here")
    replay.add_argument("--plot", type=Path, help="draw the estimates with intervals (PNG)")
    replay.set_defaults(handler=_replay)

    tune = subparsers.add_parser(
        "tune",
        help="sweep objective weights counterfactually and recommend a cost/quality setting",
        description="For each cost (and latency) weight, train a policy on the first half of "
        "the log and estimate its quality, cost and latency on the second half (doubly "
        "robust); report the Pareto frontier and a recommended setting.",
    )
    _log_arguments(tune)
    tune.add_argument(
        "--policy",
        default="costaware",
        help="the policy to train per setting: costaware, vw[:ARGS] or linucb[:...] "
        "(default: costaware, the serving default)",
    )
    tune.add_argument(
        "--cost-weights",
        default="0,10,25,50,100,200,400,1000",
        help="cost weights (reward points per USD) to sweep (default: 0,10,25,50,100,200,400,1000)",
    )
    tune.add_argument(
        "--latency-weights",
        help="latency weights (points per ms) to sweep as well (default: the objective's)",
    )
    target = tune.add_mutually_exclusive_group()
    target.add_argument(
        "--target-quality-share",
        type=float,
        help="recommend the cheapest setting with at least this share of the best quality "
        "(default 0.95)",
    )
    target.add_argument(
        "--max-cost",
        type=float,
        help="recommend the best quality within this mean USD per decision",
    )
    tune.add_argument(
        "--no-references",
        action="store_true",
        help="do not estimate the fixed-model and logged reference policies",
    )
    _interval_arguments(tune)
    tolerance_argument(tune, "a setting's quality interval")
    tune.add_argument("--json", type=Path, help="write the sweep as JSON here")
    tune.add_argument("--plot", type=Path, help="draw quality against cost (PNG)")
    tune.set_defaults(handler=_tune)

    export = subparsers.add_parser(
        "export",
        help="export decisions joined with outcomes for other tools (dsjson for vw)",
        description="Write decisions joined with their outcomes in Vowpal Wabbit's dsjson "
        "format (_label_cost = -reward under --objective), readable by vw --dsjson.",
    )
    _log_arguments(export)
    export.add_argument("--format", default="dsjson", choices=["dsjson"], help="output format")
    export.add_argument("--out", default="-", help="output file ('-': standard output)")
    export.add_argument(
        "--missing",
        default="exclude",
        choices=list(MISSING_RULES),
        help="decisions without an outcome: skip (default) or export with reward.default_reward",
    )
    export.set_defaults(handler=_export)
