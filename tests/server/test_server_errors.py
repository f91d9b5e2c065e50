"""Every rejected request carries the right status code and a details message that starts
with the name of the offending field; rejected feedback leaves the decision untouched."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT
USER = pb.ChatMessage(role="user", content="hello there")
LONG = "z" * 257
"""One character over the default max_name_chars and max_request_id_chars (256)."""

Fields = dict[str, Any] | Callable[[int], dict[str, Any]]
"""Request fields, or a function of the service's prompt limit that returns them."""

ROUTE_ERRORS: list[tuple[str, Fields, str]] = [
    ("empty prompt", {}, "prompt"),
    ("blank prompt", {"prompt": "  \n\t "}, "prompt"),
    ("prompt and messages", {"prompt": "hi", "messages": [USER]}, "prompt"),
    ("unknown candidate", {"prompt": "hi", "candidate_models": ["gpt-99"]}, "candidate_models"),
    ("too many candidates", {"prompt": "hi", "candidate_models": ["a"] * 1001}, "candidate_models"),
    ("unknown excluded", {"prompt": "hi", "excluded_models": ["gpt-99"]}, "excluded_models"),
    ("unknown objective", {"prompt": "hi", "objective": "cheapest-please"}, "objective"),
    ("prompt over limit", lambda limit: {"prompt": "x" * (limit + 1)}, "prompt"),
    (
        "chat over limit",
        lambda limit: {
            "messages": [
                pb.ChatMessage(role="system", content="s" * (limit // 2)),
                pb.ChatMessage(role="user", content="u" * (limit // 2 + 1)),
            ]
        },
        "messages",
    ),
    ("empty chat", {"messages": [pb.ChatMessage(role="user", content="")]}, "messages"),
    ("turn without role", {"messages": [pb.ChatMessage(content="hi")]}, "messages[0].role"),
    # Sizes past the [server] limits (issue 12): the default limits are 256 for names.
    ("too many tags", {"prompt": "hi", "tags": {f"k{i}": "v" for i in range(65)}}, "tags"),
    ("long tag key", {"prompt": "hi", "tags": {"k" * 129: "v"}}, "tags"),
    ("long tag value", {"prompt": "hi", "tags": {"note": "v" * 1025}}, "tags"),
    ("too many turns", {"messages": [USER] * 1001}, "messages"),
    (
        "long role",
        {"messages": [USER, pb.ChatMessage(role=LONG, content="hi")]},
        "messages[1].role",
    ),
    ("long request_id", {"prompt": "hi", "request_id": LONG}, "request_id"),
    ("long objective", {"prompt": "hi", "objective": LONG}, "objective"),
    (
        "long data_classification",
        {"prompt": "hi", "data_classification": LONG},
        "data_classification",
    ),
    (
        "long candidate",
        {"prompt": "hi", "candidate_models": ["claude-v1", LONG]},
        "candidate_models[1]",
    ),
    ("long excluded", {"prompt": "hi", "excluded_models": [LONG]}, "excluded_models[0]"),
    (
        "long capability",
        {"prompt": "hi", "required_capabilities": [LONG]},
        "required_capabilities[0]",
    ),
    (
        "many capabilities",
        {"prompt": "hi", "required_capabilities": ["code"] * 1001},
        "required_capabilities",
    ),
    ("many excluded", {"prompt": "hi", "excluded_models": ["claude-v1"] * 1001}, "excluded_models"),
]

FEEDBACK_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("quality above 1", {"quality": 1.5}, "quality"),
    ("quality below 0", {"quality": -0.1}, "quality"),
    ("NaN quality", {"quality": math.nan}, "quality"),
    ("negative cost", {"cost_usd": -0.01}, "cost_usd"),
    ("infinite cost", {"cost_usd": math.inf}, "cost_usd"),
    ("infinite latency", {"latency_ms": math.inf}, "latency_ms"),
    ("negative latency", {"latency_ms": -1.0}, "latency_ms"),
    ("negative input tokens", {"input_tokens": -5}, "input_tokens"),
    ("negative output tokens", {"output_tokens": -1}, "output_tokens"),
    ("unknown status", {"status": 99}, "status"),
    ("unknown served model", {"model": "gpt-99"}, "model"),
]


@pytest.mark.parametrize(
    ("fields", "field"), [(f, n) for _, f, n in ROUTE_ERRORS], ids=[c for c, _, _ in ROUTE_ERRORS]
)
def test_invalid_route_is_rejected_naming_the_field(
    service: Service,
    stub: pb_grpc.RouterServiceStub,
    expect_error: Callable[..., str],
    fields: Fields,
    field: str,
) -> None:
    """An invalid RouteRequest fails with INVALID_ARGUMENT and details naming the field."""
    if callable(fields):
        fields = fields(service.settings.server.max_prompt_chars)
    details = expect_error(stub.Route, pb.RouteRequest(**fields), INVALID)
    assert details.startswith(f"{field}:"), details


def test_prompt_at_the_limit_is_accepted(
    service: Service, route: Callable[..., pb.RouteResponse]
) -> None:
    """A prompt of exactly server.max_prompt_chars characters is routed."""
    limit = service.settings.server.max_prompt_chars
    assert limit < 10_000  # the fixture's limit is small
    assert route(prompt="x" * limit).model


@pytest.mark.parametrize(
    ("fields", "field"),
    [(f, n) for _, f, n in FEEDBACK_ERRORS],
    ids=[c for c, _, _ in FEEDBACK_ERRORS],
)
def test_invalid_feedback_is_rejected_naming_the_field(
    stub: pb_grpc.RouterServiceStub,
    expect_error: Callable[..., str],
    fields: dict[str, Any],
    field: str,
) -> None:
    """An invalid FeedbackRequest for a pending decision fails with INVALID_ARGUMENT naming the
    field, and does not count: a valid feedback afterwards is the first one, and learned."""
    decision = stub.Route(pb.RouteRequest(prompt="Name three primes."), timeout=10)
    request = pb.FeedbackRequest(decision_id=decision.decision_id, **fields)
    details = expect_error(stub.Feedback, request, INVALID)
    assert details.startswith(f"{field}:"), details
    valid = stub.Feedback(
        pb.FeedbackRequest(decision_id=decision.decision_id, quality=1.0), timeout=10
    )
    assert valid.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
    assert valid.feedback_count == 1


def test_unknown_decision_is_not_found(
    stub: pb_grpc.RouterServiceStub, expect_error: Callable[..., str]
) -> None:
    """Feedback for a decision id the router never issued fails with NOT_FOUND naming
    decision_id."""
    request = pb.FeedbackRequest(decision_id="no-such-decision", quality=1.0)
    details = expect_error(stub.Feedback, request, grpc.StatusCode.NOT_FOUND)
    assert details.startswith("decision_id:"), details
    assert "no-such-decision" in details


def test_empty_decision_id_is_invalid(
    stub: pb_grpc.RouterServiceStub, expect_error: Callable[..., str]
) -> None:
    """Feedback without a decision id fails with INVALID_ARGUMENT naming decision_id."""
    details = expect_error(stub.Feedback, pb.FeedbackRequest(quality=1.0), INVALID)
    assert details.startswith("decision_id:"), details
