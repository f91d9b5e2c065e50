"""A server started with policy.warm_start learns the outcome table before its first request,
unless it restored a snapshot; a table that fits no catalogue model stops the start-up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from banditroute.errors import ConfigError
from banditroute.outcome_tables import table_from_rows, write_outcomes
from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

GOOD, BAD = "zero-one-ai/Yi-34B-Chat", "WizardLM/WizardLM-13B-V1.2"
PROMPTS = 30


def _write(path: Path, qualities: dict[str, float]) -> Path:
    rows = [
        {"prompt_id": f"p{i}", "task": "t", "prompt": f"Pick A or B for question {i}.",
         "model": model, "quality": quality, "cost_usd": 0.0001}
        for i in range(PROMPTS)
        for model, quality in qualities.items()
    ]  # fmt: skip
    write_outcomes(table_from_rows("warm", rows), path)
    return path


def _route(service: Service, connect: Callable[[Service], grpc.Channel]) -> pb.RouteResponse:
    stub = pb_grpc.RouterServiceStub(connect(service))
    request = pb.RouteRequest(prompt="Pick A or B for question 1000.", candidate_models=[GOOD, BAD])
    return stub.Route(request, timeout=10.0)


def test_warm_start_teaches_the_policy_before_the_first_request(
    tmp_path: Path,
    make_service: Callable[..., Service],
    connect: Callable[[Service], grpc.Channel],
) -> None:
    """The first Route already prefers the model that succeeded throughout the table, and the
    policy version counts the warm-start updates; a restart that restores the snapshot does
    not learn the table a second time."""
    table = _write(tmp_path / "warm.parquet", {GOOD: 1.0, BAD: 0.0})
    snapshot = tmp_path / "policy.snapshot"
    sections = {"policy": {"warm_start": str(table), "snapshot_path": str(snapshot)}}
    first = make_service(sections)
    decision = _route(first, connect)
    assert decision.model == GOOD
    assert decision.probability > 0.9
    assert decision.policy_version.endswith(f":{2 * PROMPTS}")
    first.stop()
    assert snapshot.is_file()
    again = _route(make_service(sections), connect)
    assert again.policy_version.endswith(f":{2 * PROMPTS}")


def test_a_table_matching_no_catalogue_model_stops_the_start(
    tmp_path: Path, make_service: Callable[..., Service]
) -> None:
    """Start-up fails with a ConfigError naming --warm-start when the table and the
    catalogue share no model."""
    table = _write(tmp_path / "other.parquet", {"acme/one": 1.0})
    with pytest.raises(ConfigError, match="--warm-start"):
        make_service({"policy": {"warm_start": str(table)}})
