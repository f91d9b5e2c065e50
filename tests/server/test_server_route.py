"""Route and ListModels over in-process gRPC: the decision's internal consistency, chats,
model restrictions and request_id idempotency."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
import grpc
import pytest

from banditroute.config import load_settings
from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

CATALOGUE = load_settings().catalog.ids
CHEAP = ("mistralai/mistral-7b-chat", "WizardLM/WizardLM-13B-V1.2", "claude-instant-v1")


def assert_consistent(response: pb.RouteResponse) -> None:
    """The invariants every RouteResponse keeps."""
    ranking = [(entry.model, entry.probability) for entry in response.ranking]
    models = [model for model, _ in ranking]
    probabilities = dict(ranking)
    assert response.decision_id
    assert response.model in probabilities
    assert response.probability == probabilities[response.model]
    assert response.probability > 0.0
    assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-9)
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())
    assert [p for _, p in ranking] == sorted((p for _, p in ranking), reverse=True)
    assert len(set(models)) == len(models)
    assert list(response.fallback_models) == [m for m in models if m != response.model]
    assert response.policy_version
    assert response.objective == "balanced"


def test_route_decision_is_consistent(route: Callable[..., pb.RouteResponse]) -> None:
    """A prompt gets a catalogue model from its ranking with that entry's probability, a
    ranking over all 11 eligible models summing to 1, the others as fallbacks in ranking
    order, a policy version and a decision time of now."""
    before = time.time()
    response = route(prompt="Write a Python function that reverses a linked list.")
    after = time.time()
    assert_consistent(response)
    assert sorted(e.model for e in response.ranking) == sorted(CATALOGUE)
    assert response.HasField("decide_time")
    assert before - 1.0 <= response.decide_time.ToNanoseconds() / 1e9 <= after + 1.0
    assert not response.replayed
    assert response.policy_version.startswith("costaware:")


def test_route_messages_uses_last_user_turn(
    service: Service,
    route: Callable[..., pb.RouteResponse],
    stopped_log: Callable[[Service], duckdb.DuckDBPyConnection],
) -> None:
    """A chat is routed on its last user turn (features logged from that turn alone) and the
    whole conversation's size and turn count."""
    messages = [
        pb.ChatMessage(role="system", content="You are a helpful assistant."),
        pb.ChatMessage(role="user", content="Translate 'bonjour' into English."),
        pb.ChatMessage(role="assistant", content="Hello."),
        pb.ChatMessage(role="user", content="Now write a Python function that sorts a list."),
    ]
    response = route(messages=messages)
    assert_consistent(response)
    (features_json,) = (
        stopped_log(service)
        .execute("SELECT features FROM decisions WHERE decision_id = ?", [response.decision_id])
        .fetchone()
        or ()
    )
    features = json.loads(features_json)
    last_user = messages[3].content
    assert features["chars"] == len(last_user)
    assert features["turns"] == 4
    total = sum(len(m.content) for m in messages)
    assert features["conversation_tokens"] == math.ceil(total / 3.85)
    assert "code" in features["markers"]
    assert "translation" not in features["markers"]
    assert "bonjour" not in features["words"]


def test_candidate_models_restrict_the_choice(route: Callable[..., pb.RouteResponse]) -> None:
    """With candidate_models only those models are ranked, chosen and offered as fallbacks."""
    for _ in range(5):
        response = route(candidate_models=list(CHEAP))
        assert_consistent(response)
        assert sorted(e.model for e in response.ranking) == sorted(CHEAP)
        assert response.model in CHEAP


def test_single_candidate_is_chosen_with_probability_one(
    route: Callable[..., pb.RouteResponse],
) -> None:
    """One candidate model is chosen with probability 1 and leaves no fallbacks."""
    response = route(candidate_models=["claude-v2"])
    assert response.model == "claude-v2"
    assert response.probability == 1.0
    assert list(response.fallback_models) == []


def test_excluded_models_are_never_offered(route: Callable[..., pb.RouteResponse]) -> None:
    """Excluded models appear neither as the choice nor in the ranking."""
    response = route(excluded_models=list(CHEAP))
    assert_consistent(response)
    assert not set(CHEAP) & {e.model for e in response.ranking}
    assert len(response.ranking) == len(CATALOGUE) - len(CHEAP)


def test_request_id_replays_the_same_decision(route: Callable[..., pb.RouteResponse]) -> None:
    """The same request_id with the same request returns the same decision again, flagged
    replayed; another request_id gets a new decision."""
    first = route(request_id="req-42", tags={"team": "search"})
    again = route(request_id="req-42", tags={"team": "search"})
    other = route(request_id="req-43")
    assert not first.replayed
    assert again.replayed
    assert again.decision_id == first.decision_id
    assert again.model == first.model
    assert again.probability == first.probability
    assert list(again.ranking) == list(first.ranking)
    assert again.decide_time == first.decide_time
    assert other.decision_id != first.decision_id
    assert not other.replayed


def test_request_id_reused_for_another_request_is_already_exists(
    stub: pb_grpc.RouterServiceStub,
    route: Callable[..., pb.RouteResponse],
    expect_error: Callable[..., str],
) -> None:
    """A request_id reused for a different request (here a prompt with a card number and an
    SSN after a haiku) is ALREADY_EXISTS naming request_id, not the haiku's public, explored
    decision; a different chat or constraint under the key is refused the same way."""
    first = route(prompt="write a haiku", request_id="conv-42")
    assert (first.data_classification, first.explored) == ("public", True)
    sensitive = pb.RouteRequest(
        prompt="my card is 4111111111111111 and ssn 078-05-1120", request_id="conv-42"
    )
    details = expect_error(stub.Route, sensitive, grpc.StatusCode.ALREADY_EXISTS)
    assert details.startswith("request_id:")
    chat = pb.RouteRequest(
        messages=[pb.ChatMessage(role="user", content="write a haiku")], request_id="conv-42"
    )
    expect_error(stub.Route, chat, grpc.StatusCode.ALREADY_EXISTS)
    narrower = pb.RouteRequest(
        prompt="write a haiku", request_id="conv-42", excluded_models=[first.model]
    )
    expect_error(stub.Route, narrower, grpc.StatusCode.ALREADY_EXISTS)
    assert route(prompt="write a haiku", request_id="conv-42").decision_id == first.decision_id


def test_list_models_returns_the_catalogue(stub: pb_grpc.RouterServiceStub) -> None:
    """ListModels returns the 11 catalogue models with providers, prices and context windows."""
    response = stub.ListModels(pb.ListModelsRequest(), timeout=10)
    assert [m.model for m in response.models] == list(CATALOGUE)
    assert len(response.models) == 11
    by_id = {m.model: m for m in response.models}
    gpt4 = by_id["gpt-4-1106-preview"]
    assert (gpt4.provider, gpt4.input_usd_per_mtok, gpt4.output_usd_per_mtok) == (
        "openai",
        10.0,
        30.0,
    )
    assert gpt4.context_window == 128000
    assert "code" in gpt4.capabilities
    for model in response.models:
        assert model.provider
        assert model.context_window > 0
        assert model.input_usd_per_mtok > 0
        assert model.output_usd_per_mtok > 0
        assert list(model.capabilities) == sorted(model.capabilities)


@pytest.mark.parametrize("objective", ["balanced", "quality", "economy", "fast"])
def test_every_configured_objective_routes(
    route: Callable[..., pb.RouteResponse], objective: str
) -> None:
    """Each objective of the default configuration is accepted by name and echoed back."""
    response = route(objective=objective)
    assert response.objective == objective


def test_concurrent_requests_with_one_request_id_share_a_decision(
    service: Service,
    stub: pb_grpc.RouterServiceStub,
    monkeypatch: pytest.MonkeyPatch,
    stopped_log: Callable[[Service], duckdb.DuckDBPyConnection],
) -> None:
    """Retries racing with the same request_id (a slow policy keeps them all in flight at once)
    get one decision: one answer is the original, the others replay it, and one row is logged."""
    policy = service.router.policy
    distribution = policy.distribution

    def slow_distribution(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        return distribution(*args, **kwargs)

    monkeypatch.setattr(policy, "distribution", slow_distribution)
    callers = 4
    barrier = threading.Barrier(callers)

    def call(_: int) -> pb.RouteResponse:
        barrier.wait(timeout=10)
        request = pb.RouteRequest(prompt="Is this retried?", request_id="retry-me")
        response: pb.RouteResponse = stub.Route(request, timeout=10)
        return response

    with ThreadPoolExecutor(max_workers=callers) as pool:
        responses = list(pool.map(call, range(callers)))
    assert len({r.decision_id for r in responses}) == 1
    assert sorted(r.replayed for r in responses) == [False] + [True] * (callers - 1)
    assert stopped_log(service).execute("SELECT count(*) FROM decisions").fetchone() == (1,)
