"""A small synthetic routing world for the replay tests: prompts, an outcome table, a log.

Four models and four kinds of prompt (code, arithmetic, trivia questions, translation), each
prompt with a fixed outcome for every model (a full-information outcome table, as the
benchmark tables are), so the true value of any policy is known exactly. :func:`write_log`
routes prompts through a real :class:`~banditroute.router.Router` with a
:class:`~banditroute.store.duckdb_log.DuckDBLog` in ``tmp_path`` and a fake clock, and reports
only the chosen model's outcome back with ``Feedback``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from banditroute import cli
from banditroute.catalog import ModelSpec
from banditroute.config import Settings, settings_from_mapping
from banditroute.decisions import FeedbackReport, RouteQuery
from banditroute.features import PromptFeatures
from banditroute.outcomes import OutcomeStatus
from banditroute.policies.base import Policy, Probabilities
from banditroute.router import Router
from banditroute.store.duckdb_log import DuckDBLog

T0 = 1_700_000_000.0
MODELS: tuple[str, ...] = ("small", "medium", "large", "coder")
TASKS: tuple[str, ...] = ("code", "math", "trivia", "translate")
SUCCESS = np.array(
    [  # P(correct) per task (rows) and model (columns)
        [0.30, 0.55, 0.85, 0.90],
        [0.40, 0.70, 0.90, 0.50],
        [0.60, 0.75, 0.90, 0.35],
        [0.25, 0.60, 0.80, 0.20],
    ]
)
PRICE = np.array([0.0002, 0.001, 0.004, 0.0015])
"""USD per call of each model (before a small per-prompt variation)."""
LOGGING = np.array(
    [  # the logging policy's distribution per task: context-dependent and exploring
        [0.10, 0.20, 0.30, 0.40],
        [0.15, 0.45, 0.25, 0.15],
        [0.40, 0.30, 0.20, 0.10],
        [0.25, 0.25, 0.40, 0.10],
    ]
)
OBJECTIVE = "quality=1,cost=50,latency=0"
CONFIG = (
    "\n".join(
        f'[[models]]\nid = "{m}"\nprovider = "test"\ninput_usd_per_mtok = {1.0 + i}\n'
        f"output_usd_per_mtok = {2.0 + i}\ncontext_window = 100000\n"
        for i, m in enumerate(MODELS)
    )
    + '[policy]\nfixed_model = "large"\n'
)
"""A ``--config`` file with the test catalogue (as :func:`settings_for_tests`), for the CLI."""


def cli_error(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI expecting bad input: exit 2 and ``banditroute CMD: error: ...``; the stderr."""
    code = cli.main(list(argv))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"banditroute {argv[0]}: error: ")
    return err


def settings_for_tests(**reward: object) -> Settings:
    """Settings with the four test models and feedback acknowledged without waiting."""
    models = [
        {
            "id": m,
            "provider": "test",
            "input_usd_per_mtok": 1.0 + i,
            "output_usd_per_mtok": 2.0 + i,
            "context_window": 100000,
        }
        for i, m in enumerate(MODELS)
    ]
    data: dict[str, object] = {"models": models, "log": {"sync_feedback": False}}
    if reward:
        data["reward"] = dict(reward)
    return settings_from_mapping(data)


def _prompt(task: int, index: int) -> str:
    if task == 0:
        return f"Write a python function that returns the {index}th prime number. def prime(n):"
    if task == 1:
        return f"Calculate {index} * {index + 7} + 3 and give the total."
    if task == 2:
        return f"Which city hosted the world fair number {index}? Answer in one word please."
    return f"Translate into French: the garden number {index} is very green."


@dataclass(frozen=True)
class World:
    """Prompts and their full-information outcomes."""

    prompts: tuple[str, ...]
    tasks: npt.NDArray[np.int64]
    quality: npt.NDArray[np.float64]
    cost: npt.NDArray[np.float64]
    latency: npt.NDArray[np.float64]

    def rewards(self, cost_weight: float = 50.0) -> npt.NDArray[np.float64]:
        """``(P, models)`` rewards under ``quality - cost_weight * cost``."""
        rewards: npt.NDArray[np.float64] = self.quality - cost_weight * self.cost
        return rewards

    def true_value(self, target: npt.NDArray[np.float64], cost_weight: float = 50.0) -> float:
        """Mean over the prompts of the policy's expected reward; ``target`` is ``(P, models)``."""
        return float(np.mean(np.sum(target * self.rewards(cost_weight), axis=1)))


def make_world(n_prompts: int = 80, seed: int = 7) -> World:
    """A seeded world with ``n_prompts`` prompts spread over the four tasks."""
    rng = np.random.default_rng(seed)
    tasks = np.arange(n_prompts) % len(TASKS)
    quality = (rng.random((n_prompts, len(MODELS))) < SUCCESS[tasks]).astype(np.float64)
    cost = PRICE[None, :] * rng.uniform(0.7, 1.3, (n_prompts, len(MODELS)))
    latency = rng.uniform(200.0, 2000.0, (n_prompts, len(MODELS)))
    prompts = tuple(_prompt(int(t), i) for i, t in enumerate(tasks))
    return World(prompts, tasks.astype(np.int64), quality, cost, latency)


def task_of(features: PromptFeatures) -> int:
    """The test task a prompt belongs to, from its features (as the logging policy sees it)."""
    if "translation" in features.markers:
        return 3
    if "code" in features.markers:
        return 0
    if "math" in features.markers:
        return 1
    return 2


class TaskPolicy(Policy):
    """A fixed, context-dependent, exploring logging policy (``LOGGING`` by task)."""

    name = "task"

    def _distribution(self, context: PromptFeatures, arms: Sequence[ModelSpec]) -> Probabilities:
        row = LOGGING[task_of(context)]
        return np.array([row[MODELS.index(arm.id)] for arm in arms])


@dataclass(frozen=True)
class WrittenLog:
    """A log on disk and what generated it."""

    path: Path
    world: World
    prompt_of: tuple[int, ...]
    """The prompt index of each decision, in decision order."""
    n: int


def write_log(
    path: Path,
    world: World,
    n: int,
    *,
    seed: int = 0,
    policy: Policy | None = None,
    settings: Settings | None = None,
    no_feedback_every: int = 0,
    other_model_every: int = 0,
    duplicate_every: int = 0,
    exclude_every: int = 0,
    start: float = T0,
    export_dir: Path | None = None,
    sessions: int = 0,
) -> WrittenLog:
    """Route ``n`` prompts (drawn with replacement) and report the chosen model's outcome.

    Every ``no_feedback_every``-th decision gets no feedback, every ``other_model_every``-th
    only a feedback for another model (a fallback), and every ``duplicate_every``-th a second,
    different feedback after the first. Every ``exclude_every``-th request excludes the
    ``large`` model (so it is not eligible). ``export_dir`` also exports Parquet parts.
    With ``sessions``, every other request carries one of that many session ids (so the
    session's later decisions are sticky).
    """
    settings = settings or settings_for_tests()
    rng = np.random.default_rng(seed)
    clock = [start]
    ids = itertools.count()
    event_log = DuckDBLog(
        path,
        flush_interval_s=0.005,
        batch_size=4096,
        export_dir=export_dir,
        export_interval_s=3600.0,
    )
    router = Router(
        settings,
        policy or TaskPolicy(),
        event_log,
        clock=lambda: clock[0],
        new_id=lambda: f"s{seed}-{next(ids):06d}",
        seed=seed,
    )
    prompt_of: list[int] = []
    for step in range(1, n + 1):
        p = int(rng.integers(len(world.prompts)))
        prompt_of.append(p)
        excluded = ("large",) if exclude_every and step % exclude_every == 0 else ()
        session = f"conv-{step % sessions}" if sessions and step % 2 == 0 else ""
        decision = router.route(
            RouteQuery(prompt=world.prompts[p], excluded_models=excluded, session_id=session)
        )
        clock[0] += 1.0
        m = MODELS.index(decision.model)
        if no_feedback_every and step % no_feedback_every == 0:
            continue
        if other_model_every and step % other_model_every == 0:
            other = decision.fallback_models[0]
            k = MODELS.index(other)
            report = FeedbackReport(
                decision.decision_id,
                model=other,
                quality=float(world.quality[p, k]),
                cost_usd=float(world.cost[p, k]),
            )
            router.feedback(report)
            continue
        router.feedback(
            FeedbackReport(
                decision.decision_id,
                quality=float(world.quality[p, m]),
                cost_usd=float(world.cost[p, m]),
                latency_ms=float(world.latency[p, m]),
                status=OutcomeStatus.OK,
            )
        )
        if duplicate_every and step % duplicate_every == 0:
            router.feedback(
                FeedbackReport(
                    decision.decision_id,
                    quality=1.0 - float(world.quality[p, m]),
                    cost_usd=0.5,
                    status=OutcomeStatus.ERROR,
                )
            )
    event_log.close()
    return WrittenLog(path, world, tuple(prompt_of), n)
