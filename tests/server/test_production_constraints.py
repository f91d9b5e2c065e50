"""Per-request constraints through the gRPC interface: max_cost_usd, max_latency_ms,
required_capabilities and expected_output_tokens (context window) each exclude exactly the
models that violate them, say so in RouteResponse.exclusions, fail with FAILED_PRECONDITION
naming the constraint when nothing is left, and reject malformed values with
INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import duckdb
import grpc
import pytest

from banditroute.catalog import CHARS_PER_TOKEN, ModelSpec
from banditroute.config import load_settings
from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb

CATALOG = load_settings().catalog
PROMPT = "Summarise the following meeting notes in three bullet points for the team."
OUTPUT_TOKENS = 100
FAILED = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def client(start_service: Callable[..., Service], api: Callable[..., Any]) -> Any:
    """A client of a service with the default catalogue and a uniform policy (every eligible
    model has a positive probability, so the ranking shows the whole eligible set)."""
    return api(start_service({"policy": {"kind": "uniform"}}))


def _tokens(prompt: str) -> int:
    return math.ceil(len(prompt) / CHARS_PER_TOKEN)


def _excluded(response: pb.RouteResponse, constraint: str) -> set[str]:
    return {e.model for e in response.exclusions if e.constraint == constraint}


def _check_partition(response: pb.RouteResponse, allowed: set[str], constraint: str) -> None:
    """The ranking is exactly ``allowed`` and every other model is excluded by ``constraint``."""
    ranked = {r.model for r in response.ranking}
    assert ranked == allowed
    assert response.model in allowed
    assert set(response.fallback_models) == allowed - {response.model}
    assert _excluded(response, constraint) == set(CATALOG.ids) - allowed
    assert {e.constraint for e in response.exclusions} <= {constraint}


def _cost(model: ModelSpec, prompt: str, output_tokens: int) -> float:
    return model.price(_tokens(prompt), output_tokens)


def test_max_cost_usd_excludes_models_expected_to_cost_more(client: Any) -> None:
    """max_cost_usd keeps the models whose expected cost (prompt tokens plus
    expected_output_tokens at catalogue prices) is at most the bound; the others are listed
    with constraint "max_cost_usd" and a reason quoting the expected cost."""
    bound = 0.001
    allowed = {m.id for m in CATALOG if _cost(m, PROMPT, OUTPUT_TOKENS) <= bound}
    assert 0 < len(allowed) < len(CATALOG)
    response = client.route(prompt=PROMPT, max_cost_usd=bound, expected_output_tokens=OUTPUT_TOKENS)
    _check_partition(response, allowed, "max_cost_usd")
    assert all("expected cost $" in e.reason for e in response.exclusions)


def test_max_latency_ms_excludes_slow_models(client: Any) -> None:
    """max_latency_ms keeps the models whose expected latency (the catalogue prior before any
    feedback) is at most the bound; the others are listed with constraint "max_latency_ms"."""
    bound = 1500.0
    allowed = {m.id for m in CATALOG if m.expected_latency_ms(OUTPUT_TOKENS) <= bound}
    assert 0 < len(allowed) < len(CATALOG)
    response = client.route(
        prompt=PROMPT, max_latency_ms=bound, expected_output_tokens=OUTPUT_TOKENS
    )
    _check_partition(response, allowed, "max_latency_ms")


@pytest.mark.parametrize("capabilities", [["tools"], ["tools", "reasoning"], ["code", "json"]])
def test_required_capabilities_keep_models_with_all_of_them(
    client: Any, capabilities: list[str]
) -> None:
    """required_capabilities keeps only the models with every listed capability; the others
    are listed with constraint "required_capabilities" and a reason naming what they lack."""
    allowed = {m.id for m in CATALOG if set(capabilities) <= m.capabilities}
    assert allowed
    response = client.route(prompt=PROMPT, required_capabilities=capabilities)
    _check_partition(response, allowed, "required_capabilities")
    assert all(e.reason.startswith("lacks ") for e in response.exclusions)


def test_expected_output_tokens_count_against_the_context_window(client: Any) -> None:
    """A 1,300-token prompt with expected_output_tokens = 3000 does not fit the 4k-window
    models: they are listed with constraint "context_window"; the same prompt without the
    field fits every model."""
    prompt = "Please review this paragraph about gardening. " * 110
    allowed = {m.id for m in CATALOG if _tokens(prompt) + 3000 <= m.context_window}
    assert 0 < len(allowed) < len(CATALOG)
    response = client.route(prompt=prompt, expected_output_tokens=3000)
    _check_partition(response, allowed, "context_window")
    assert {r.model for r in client.route(prompt=prompt).ranking} == set(CATALOG.ids)


@pytest.mark.parametrize(
    ("fields", "constraint"),
    [
        ({"max_cost_usd": 1e-9}, "max_cost_usd"),
        ({"max_latency_ms": 1.0}, "max_latency_ms"),
        ({"required_capabilities": ["teleportation"]}, "required_capabilities"),
        ({"expected_output_tokens": 200_000}, "context_window"),
        (
            {"max_cost_usd": 1e-9, "candidate_models": [CATALOG.ids[0], CATALOG.ids[1]]},
            "max_cost_usd",
        ),
        (
            {"required_capabilities": ["tools"], "candidate_models": ["claude-v1", "claude-v2"]},
            "required_capabilities",
        ),
    ],
)
def test_unsatisfiable_constraint_fails_naming_it(
    client: Any, fields: dict[str, Any], constraint: str
) -> None:
    """When a constraint leaves no model, Route fails with FAILED_PRECONDITION whose details
    start with that constraint's name, also when candidate_models narrowed the choice first
    (the candidates only say which models were considered)."""
    details = client.fails("Route", pb.RouteRequest(prompt=PROMPT, **fields), FAILED)
    assert details.startswith(f"{constraint}: no model satisfies the request")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"max_cost_usd": -0.01}, "max_cost_usd"),
        ({"max_cost_usd": math.nan}, "max_cost_usd"),
        ({"max_cost_usd": math.inf}, "max_cost_usd"),
        ({"max_cost_usd": 0.0}, "max_cost_usd"),
        ({"max_latency_ms": -5.0}, "max_latency_ms"),
        ({"max_latency_ms": math.nan}, "max_latency_ms"),
        ({"expected_output_tokens": -1}, "expected_output_tokens"),
        ({"required_capabilities": ["tools"] * 1001}, "required_capabilities"),
    ],
)
def test_malformed_constraint_is_invalid_argument(
    client: Any, fields: dict[str, Any], field: str
) -> None:
    """Negative, zero, NaN or infinite bounds, a negative expected_output_tokens and an
    oversized capability list are INVALID_ARGUMENT whose details start with the field name."""
    details = client.fails("Route", pb.RouteRequest(prompt=PROMPT, **fields), INVALID)
    assert details.startswith(field)


def test_constraints_are_logged_with_the_decision(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """The decision row records the request's constraints (JSON) and, per excluded model, the
    constraint and reason that the response gave."""
    service = start_service({"policy": {"kind": "uniform"}})
    response = api(service).route(
        prompt=PROMPT, max_cost_usd=0.001, required_capabilities=["code"],
        expected_output_tokens=OUTPUT_TOKENS,
    )  # fmt: skip
    service.stop()
    with duckdb.connect(str(service.settings.log.path), read_only=True) as con:
        row = con.execute(
            "SELECT constraints, excluded FROM decisions WHERE decision_id = ?",
            [response.decision_id],
        ).fetchone()
    assert row is not None
    constraints, excluded = json.loads(row[0]), json.loads(row[1])
    assert constraints["max_cost_usd"] == 0.001
    assert constraints["required_capabilities"] == ["code"]
    assert constraints["expected_output_tokens"] == OUTPUT_TOKENS
    assert excluded == {e.model: f"{e.constraint}: {e.reason}" for e in response.exclusions}
