"""Feedback over in-process gRPC: rewards, dispositions, token pricing and learning."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from banditroute.v1 import router_pb2 as pb

GPT4 = "gpt-4-1106-preview"


def test_feedback_learns_then_ignores_duplicates(
    route: Callable[..., pb.RouteResponse], feedback: Callable[..., pb.FeedbackResponse]
) -> None:
    """The first feedback is learned with reward = quality (no cost or latency given); a second
    one is recorded as a duplicate (combine rule "first") and keeps the first reward."""
    decision = route()
    first = feedback(decision_id=decision.decision_id, quality=0.8)
    assert first.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
    assert first.reward == pytest.approx(0.8)
    assert first.feedback_count == 1
    second = feedback(decision_id=decision.decision_id, quality=0.1)
    assert second.disposition == pb.FEEDBACK_DISPOSITION_IGNORED_DUPLICATE
    assert second.feedback_count == 2
    assert math.isfinite(second.reward)


def test_learning_advances_the_policy_version(
    route: Callable[..., pb.RouteResponse], feedback: Callable[..., pb.FeedbackResponse]
) -> None:
    """Each learned feedback adds one update to the policy version's counter."""
    decision = route()
    assert decision.policy_version.endswith(":0")
    feedback(decision_id=decision.decision_id, quality=1.0)
    assert route().policy_version.endswith(":1")


def test_cost_is_priced_from_tokens(
    route: Callable[..., pb.RouteResponse], feedback: Callable[..., pb.FeedbackResponse]
) -> None:
    """Without cost_usd the call is priced from the served model's token prices: GPT-4 at
    $10/$30 per million tokens makes 1000 in + 500 out cost $0.025, so the balanced reward is
    1 - 50 * 0.025 = -0.25."""
    decision = route(candidate_models=[GPT4])
    response = feedback(
        decision_id=decision.decision_id, quality=1.0, input_tokens=1000, output_tokens=500
    )
    assert response.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
    assert response.reward == pytest.approx(1.0 - 50.0 * 0.025)


def test_explicit_cost_overrides_tokens(
    route: Callable[..., pb.RouteResponse], feedback: Callable[..., pb.FeedbackResponse]
) -> None:
    """A given cost_usd is used as is, even when token counts are also given."""
    decision = route(candidate_models=[GPT4])
    response = feedback(
        decision_id=decision.decision_id,
        quality=1.0,
        cost_usd=0.002,
        input_tokens=1000,
        output_tokens=500,
    )
    assert response.reward == pytest.approx(1.0 - 50.0 * 0.002)


def test_reward_combines_quality_cost_latency_and_failure(
    route: Callable[..., pb.RouteResponse], feedback: Callable[..., pb.FeedbackResponse]
) -> None:
    """A failed call scores quality 0 minus the failure penalty, cost and latency (balanced:
    cost 50/USD, latency 0.0001/ms, failure 0.5)."""
    decision = route()
    response = feedback(
        decision_id=decision.decision_id,
        status=pb.OUTCOME_STATUS_TIMEOUT,
        quality=0.9,
        cost_usd=0.001,
        latency_ms=2000.0,
    )
    assert response.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
    assert response.reward == pytest.approx(0.0 - 0.5 - 50.0 * 0.001 - 0.0001 * 2000.0)


def test_unspecified_status_counts_as_ok(
    route: Callable[..., pb.RouteResponse], feedback: Callable[..., pb.FeedbackResponse]
) -> None:
    """A feedback with no status and no quality is an answered call worth 1 minus its costs."""
    decision = route()
    response = feedback(decision_id=decision.decision_id, latency_ms=500.0)
    assert response.reward == pytest.approx(1.0 - 0.0001 * 500.0)


def test_fallback_feedback_is_recorded_off_policy(
    route: Callable[..., pb.RouteResponse], feedback: Callable[..., pb.FeedbackResponse]
) -> None:
    """Feedback naming a fallback model is recorded but not learned, and the chosen model's
    own feedback is still learned afterwards."""
    decision = route()
    fallback = decision.fallback_models[0]
    off = feedback(decision_id=decision.decision_id, model=fallback, quality=1.0)
    assert off.disposition == pb.FEEDBACK_DISPOSITION_RECORDED_OFF_POLICY
    assert off.feedback_count == 1
    on = feedback(decision_id=decision.decision_id, model=decision.model, quality=0.5)
    assert on.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
    assert on.reward == pytest.approx(0.5)
    assert on.feedback_count == 2


def test_replayed_decision_takes_feedback_once(
    route: Callable[..., pb.RouteResponse], feedback: Callable[..., pb.FeedbackResponse]
) -> None:
    """Feedback on a replayed (idempotent) decision joins the original decision."""
    first = route(request_id="once")
    again = route(request_id="once")
    assert feedback(decision_id=first.decision_id, quality=1.0).feedback_count == 1
    duplicate = feedback(decision_id=again.decision_id, quality=1.0)
    assert duplicate.disposition == pb.FEEDBACK_DISPOSITION_IGNORED_DUPLICATE
    assert duplicate.feedback_count == 2
