"""Replay simulation: stream an outcome table through the in-process router, score the result.

An outcome table holds every model's outcome for every prompt (see
:mod:`banditroute.outcome_tables`, shared with the server's warm start). The simulator streams
the prompts in a seeded random order through the same :class:`~banditroute.router.Router` the
server uses; the router sees only the prompt text and learns only from the outcome of the
model it chose (``environment``). What a table lacks (cost, tokens, latency) is derived or
modelled, and the output says how (``catalog``, ``environment``). ``results`` scores the run
against the per-prompt oracle, the best fixed model and every single model; ``plot`` draws it.
"""

from __future__ import annotations

from banditroute.choices import NAMED_POLICIES
from banditroute.outcome_tables import (
    OutcomeTable,
    load_outcomes,
    table_from_rows,
    write_outcomes,
)
from banditroute.simulation.catalog import RunCatalog, build_run_catalog
from banditroute.simulation.environment import LatencyModel, Outcome, ReplayEnvironment
from banditroute.simulation.policies import OraclePolicy, build_policy
from banditroute.simulation.results import best_fixed_model, format_table, summarise
from banditroute.simulation.runner import (
    NullLog,
    Outcomes,
    RunSpec,
    SeedTrace,
    WarmStart,
    oracle_choice,
    run_seed,
    run_seeds,
)
from banditroute.simulation.simulate import (
    QUALITY_ONLY,
    SimulationConfig,
    SimulationResult,
    prepare,
    simulate,
)

__all__ = [
    "NAMED_POLICIES",
    "QUALITY_ONLY",
    "LatencyModel",
    "NullLog",
    "OraclePolicy",
    "Outcome",
    "OutcomeTable",
    "Outcomes",
    "ReplayEnvironment",
    "RunCatalog",
    "RunSpec",
    "SeedTrace",
    "SimulationConfig",
    "SimulationResult",
    "WarmStart",
    "best_fixed_model",
    "build_policy",
    "build_run_catalog",
    "format_table",
    "load_outcomes",
    "oracle_choice",
    "prepare",
    "run_seed",
    "run_seeds",
    "simulate",
    "summarise",
    "table_from_rows",
    "write_outcomes",
]
