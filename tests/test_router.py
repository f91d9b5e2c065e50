"""The Router: validation, decisions, sampling, feedback, reward windows and restarts."""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from scipy import stats

from banditroute.audit import AuditChain
from banditroute.catalog import ModelSpec
from banditroute.cluster import replica_tag
from banditroute.config import Settings
from banditroute.decision_ids import DecisionIds, decision_owner, sample_index
from banditroute.decisions import Disposition, FeedbackReport, RouteQuery
from banditroute.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from banditroute.features import ChatTurn, PromptFeatures
from banditroute.outcomes import Fragments, OutcomeStatus
from banditroute.policies.base import Policy
from banditroute.policies.costaware import CostAwarePolicy
from banditroute.policies.linucb import LinUCBPolicy
from banditroute.router import Router
from banditroute.store.duckdb_log import DuckDBLog
from banditroute.store.memory import MemoryLog
from banditroute.store.rows import row_digest
from banditroute.tenancy import hash_key

GPT4 = "gpt-4-1106-preview"
SMALL_CONTEXT = ("meta/llama-2-70b-chat", "zero-one-ai/Yi-34B-Chat", "WizardLM/WizardLM-13B-V1.2")
PROMPT = "What is the boiling point of water at sea level?"

MakeRouter = Callable[..., tuple[Router, Any]]


class RecordingPolicy(Policy):
    """A deterministic test policy: weights 1..K over the arms (so its ranking is the reverse
    of catalogue order), and a record of what it learns."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.learned: list[tuple[str, float, float]] = []

    def _distribution(self, context: PromptFeatures, arms: Sequence[ModelSpec]) -> np.ndarray:
        return np.arange(1, len(arms) + 1, dtype=np.float64)

    def _learn(
        self,
        context: PromptFeatures,
        arms: Sequence[ModelSpec],
        chosen: int,
        probability: float,
        reward: float,
    ) -> None:
        self.learned.append((arms[chosen].id, probability, reward))


@pytest.fixture
def policy() -> RecordingPolicy:
    """A fresh recording policy."""
    return RecordingPolicy()


# -- Route validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (RouteQuery(prompt=""), "prompt"),
        (RouteQuery(prompt="   \n\t"), "prompt"),
        (RouteQuery(prompt="hi", messages=(ChatTurn("user", "hi"),)), "prompt"),
        (RouteQuery(prompt="x" * 1001), "prompt"),
        (
            RouteQuery(messages=(ChatTurn("user", "x" * 600), ChatTurn("user", "y" * 401))),
            "messages",
        ),
        (RouteQuery(messages=(ChatTurn("user", ""), ChatTurn("system", ""))), "messages"),
        (RouteQuery(messages=(ChatTurn("", "hello"),)), "messages.role"),
        (RouteQuery(prompt=PROMPT, candidate_models=(GPT4, "gpt-5")), "candidate_models"),
        (RouteQuery(prompt=PROMPT, candidate_models=(GPT4,) * 1001), "candidate_models"),
        (RouteQuery(prompt=PROMPT, excluded_models=("claude-v3",)), "excluded_models"),
        (RouteQuery(prompt=PROMPT, objective="cheapest"), "objective"),
    ],
)  # fmt: skip
def test_invalid_route_is_rejected_naming_the_field(
    query: RouteQuery,
    field: str,
    make_router: MakeRouter,
    make_settings: Callable[..., Settings],
    policy: RecordingPolicy,
) -> None:
    """A malformed Route raises InvalidArgument with the offending field, logging nothing."""
    router, log = make_router(make_settings({"server": {"max_prompt_chars": 1000}}), policy)
    with pytest.raises(InvalidArgument) as info:
        router.route(query)
    assert info.value.field == field
    assert info.value.status == "INVALID_ARGUMENT"
    assert log.decisions == []
    assert router.pending_count == 0


def test_prompt_at_the_limit_is_accepted(
    make_router: MakeRouter, make_settings: Callable[..., Settings]
) -> None:
    """A prompt of exactly max_prompt_chars characters is routed."""
    router, _ = make_router(make_settings({"server": {"max_prompt_chars": 1000}}))
    assert router.route(RouteQuery(prompt="x" * 1000)).model


@pytest.mark.parametrize(
    "query",
    [
        RouteQuery(prompt=PROMPT, candidate_models=(GPT4,), excluded_models=(GPT4,)),
        RouteQuery(prompt="word " * 20_000, candidate_models=SMALL_CONTEXT),
    ],
)
def test_no_eligible_model_is_failed_precondition(
    query: RouteQuery, make_router: MakeRouter
) -> None:
    """When the restrictions leave no model, Route raises FailedPrecondition with the reasons."""
    router, log = make_router()
    with pytest.raises(FailedPrecondition, match="no model satisfies"):
        router.route(query)
    assert log.decisions == []


# -- Decisions ---------------------------------------------------------------------------------


def test_decision_ranking_probability_and_fallbacks(
    make_router: MakeRouter, policy: RecordingPolicy
) -> None:
    """The ranking lists every eligible model by falling probability; the decision's
    probability is its model's ranking entry; fallbacks are the other models in ranking order."""
    router, _ = make_router(policy=policy)
    candidates = ("claude-v2", GPT4, "mistralai/mistral-7b-chat", "claude-instant-v1")
    chosen = Counter()
    for i in range(40):
        decision = router.route(RouteQuery(prompt=f"{PROMPT} #{i}", candidate_models=candidates))
        ranked = [model for model, _ in decision.ranking]
        probabilities = [p for _, p in decision.ranking]
        assert sorted(ranked) == sorted(candidates)
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0)
        assert decision.probability == dict(decision.ranking)[decision.model]
        assert decision.fallback_models == tuple(m for m in ranked if m != decision.model)
        assert not decision.replayed
        chosen[decision.model] += 1
    # Catalogue order is gpt-4, claude-v2, claude-instant, mistral-7b: weights 1:2:3:4.
    assert [m for m, _ in decision.ranking] == [
        "mistralai/mistral-7b-chat",
        "claude-instant-v1",
        "claude-v2",
        GPT4,
    ]
    assert len(chosen) >= 3


def test_decision_is_logged_with_the_whole_distribution(
    make_router: MakeRouter, policy: RecordingPolicy, clock: Any
) -> None:
    """The logged row holds features, the eligible set, the full vector and the choice."""
    router, log = make_router(policy=policy)
    query = RouteQuery(
        prompt=PROMPT,
        excluded_models=(GPT4,),
        request_id="r-1",
        objective="economy",
        tags={"team": "search"},
        tenant="acme",
    )
    decision = router.route(query)
    (record,) = log.decisions
    assert record.decision_id == decision.decision_id == "d000000"
    assert record.time == decision.time == clock.now
    assert record.tenant == "acme"
    assert record.request_id == "r-1"
    assert record.objective == decision.objective == "economy"
    assert record.prompt_hash == router.prompt_hash(PROMPT)
    assert record.prompt is None
    assert record.features["chars"] == len(PROMPT)
    assert GPT4 not in record.eligible
    assert len(record.eligible) == 10
    assert dict(zip(record.eligible, record.probabilities, strict=True)) == dict(decision.ranking)
    assert record.model == decision.model
    assert record.probability == decision.probability
    assert record.policy_version == decision.policy_version == policy.version
    assert record.tags == {"team": "search"}
    assert router.pending_count == 1


def test_prompts_are_logged_only_when_configured(
    make_router: MakeRouter, make_settings: Callable[..., Settings]
) -> None:
    """With log.store_prompts the prompt text (or the joined chat) is logged."""
    router, log = make_router(make_settings({"log": {"store_prompts": True}}))
    router.route(RouteQuery(prompt=PROMPT))
    router.route(RouteQuery(messages=(ChatTurn("system", "Be brief."), ChatTurn("user", "Hi"))))
    assert [d.prompt for d in log.decisions] == [PROMPT, "Be brief.\nHi"]


def test_chat_is_routed_on_its_features(make_router: MakeRouter) -> None:
    """A chat request is routed, and its logged features count the turns."""
    router, log = make_router()
    messages = (ChatTurn("system", "You are terse."), ChatTurn("user", "def f(): pass  # why?"))
    router.route(RouteQuery(messages=messages))
    assert log.decisions[0].features["turns"] == 2
    assert "code" in log.decisions[0].features["markers"]


def test_long_prompt_excludes_small_context_models(make_router: MakeRouter) -> None:
    """Models whose context window cannot hold the prompt are not eligible."""
    router, _ = make_router()
    decision = router.route(RouteQuery(prompt="lorem ipsum " * 2000))
    ranked = {model for model, _ in decision.ranking}
    assert ranked.isdisjoint(SMALL_CONTEXT)
    assert GPT4 in ranked


def test_request_id_makes_route_idempotent(make_router: MakeRouter, clock: Any) -> None:
    """The same request id (per tenant) with the same request returns the same decision marked
    replayed, logged once; another tenant, or the same id after its window closed, gets a new
    decision."""
    router, log = make_router()
    first = router.route(RouteQuery(prompt=PROMPT, request_id="req-1"))
    again = router.route(RouteQuery(prompt=PROMPT, request_id="req-1"))
    assert again.replayed
    assert again.decision_id == first.decision_id
    assert again.model == first.model
    assert again.ranking == first.ranking
    assert again.fallback_models == first.fallback_models
    assert len(log.decisions) == 1
    other_tenant = router.route(RouteQuery(prompt=PROMPT, request_id="req-1", tenant="other"))
    assert other_tenant.decision_id != first.decision_id
    assert not other_tenant.replayed
    clock.advance(601.0)
    router.expire()
    later = router.route(RouteQuery(prompt=PROMPT, request_id="req-1"))
    assert later.decision_id not in {first.decision_id, other_tenant.decision_id}
    assert not later.replayed


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "my card is 4111111111111111 and ssn 078-05-1120"},
        {"prompt": "", "messages": (ChatTurn("user", PROMPT),)},
        {"data_classification": "pii"},
        {"excluded_models": (GPT4,)},
        {"candidate_models": (GPT4,)},
        {"max_cost_usd": 0.5},
        {"max_latency_ms": 900.0},
        {"required_capabilities": ("code",)},
        {"expected_output_tokens": 10},
        {"objective": "economy"},
        {"tags": {"team": "search"}},
    ],
)
def test_request_id_of_a_different_request_is_already_exists(
    make_router: MakeRouter, change: dict[str, Any]
) -> None:
    """A request_id reused for a request that differs in anything that can change its decision
    (prompt, chat, data class, constraints, objective, tags) is ALREADY_EXISTS naming
    request_id, never the first decision (whose model the new request may not be eligible
    for); nothing is logged for it, and the original request still replays."""
    router, log = make_router()
    original = RouteQuery(prompt=PROMPT, request_id="conv-42")
    first = router.route(original)
    with pytest.raises(AlreadyExists) as raised:
        router.route(dataclasses.replace(original, **change))
    assert raised.value.field == "request_id"
    assert len(log.decisions) == 1
    assert router.route(original) == dataclasses.replace(first, replayed=True)


def test_a_sensitive_request_reusing_a_public_ones_request_id_gets_no_public_model(
    make_router: MakeRouter,
) -> None:
    """The issue's case: a haiku routed with request_id conv-42, then a prompt with a card
    number and SSN under the same request_id, is refused (ALREADY_EXISTS) instead of being
    answered with the public decision (explored, data class public)."""
    router, _ = make_router()
    first = router.route(RouteQuery(prompt="write a haiku", request_id="conv-42"))
    assert (first.data_class, first.explored) == ("public", True)
    sensitive = RouteQuery(
        prompt="my card is 4111111111111111 and ssn 078-05-1120", request_id="conv-42"
    )
    with pytest.raises(AlreadyExists):
        router.route(sensitive)


# -- Sampling --------------------------------------------------------------------------------


def test_sample_index_is_reproducible_and_depends_on_id_and_seed() -> None:
    """The same id and seed always give the same index; other ids and seeds vary it."""
    probs = np.full(5, 0.2)
    picks = [sample_index(probs, f"id-{i}") for i in range(200)]
    assert picks == [sample_index(probs, f"id-{i}") for i in range(200)]
    assert set(picks) == set(range(5))
    reseeded = [sample_index(probs, f"id-{i}", seed=1) for i in range(200)]
    assert reseeded != picks


@pytest.mark.parametrize("worker", [None, 0, 5, 63])
def test_decision_ids_are_unguessable_and_name_their_worker(worker: int | None) -> None:
    """Decision ids are 32 hex digits random for every id: no part is shared or counted up
    between two ids, so a tenant can neither count the others' decisions between two of its
    own nor guess their ids; with several workers the first two digits still name the worker
    (decision_owner), which Feedback forwarding reads."""
    new_id = DecisionIds(worker)
    ids = [new_id() for _ in range(2000)]
    skip = 0 if worker is None else 2
    assert all(len(i) == 32 and set(i) <= set("0123456789abcdef") for i in ids)
    for start in (skip, (skip + 20) // 2, 20):  # 12-digit slices covering the random part
        assert len({i[start : start + 12] for i in ids}) == len(ids)
    if worker is not None:
        assert {decision_owner(i) for i in ids} == {worker}


def test_cluster_decision_ids_start_with_the_replica_tag() -> None:
    """A cluster replica's ids are 32 hex digits starting with its tag (what Feedback
    forwarding between replicas reads), the rest random; a prefix that is not an even number
    of lowercase hex digits is refused."""
    tag = replica_tag("replica-a")
    ids = [DecisionIds(prefix=tag)() for _ in range(500)]
    assert all(len(i) == 32 and i.startswith(tag) for i in ids)
    assert len({i[len(tag) :] for i in ids}) == len(ids)
    assert tag != replica_tag("replica-b")
    for bad in ("abc", "XY", "0" * 18):
        with pytest.raises(ValueError, match="prefix"):
            DecisionIds(prefix=bad)


def test_sample_index_follows_the_probabilities() -> None:
    """Over many ids, choices follow the probabilities (chi-square goodness of fit)."""
    probs = np.array([0.5, 0.25, 0.15, 0.07, 0.03])
    n = 20_000
    counts = np.bincount([sample_index(probs, f"decision-{i}") for i in range(n)], minlength=5)
    result = stats.chisquare(counts, probs * n)
    assert result.pvalue > 0.001
    assert np.all(np.abs(counts / n - probs) < 0.02)


def test_sample_index_never_picks_a_zero_probability() -> None:
    """Zero-probability entries are never drawn; a one-hot vector always gives its index."""
    assert {sample_index(np.array([0.5, 0.0, 0.5]), f"z{i}") for i in range(2000)} == {0, 2}
    assert {sample_index(np.array([0.0, 0.0, 1.0]), f"o{i}") for i in range(200)} == {2}


def test_router_choice_is_the_seeded_sample(
    make_router: MakeRouter, policy: RecordingPolicy
) -> None:
    """The router picks sample_index(probabilities, decision_id) among the eligible models."""
    router, log = make_router(policy=policy)
    for i in range(30):
        router.route(RouteQuery(prompt=f"question {i}?"))
    for record in log.decisions:
        index = sample_index(np.array(record.probabilities), record.decision_id, 0)
        assert record.model == record.eligible[index]


# -- Feedback ----------------------------------------------------------------------------------


def test_feedback_for_unknown_decision_is_not_found(make_router: MakeRouter) -> None:
    """Feedback naming no pending decision raises NotFound on decision_id."""
    router, log = make_router()
    with pytest.raises(NotFound) as info:
        router.feedback(FeedbackReport("no-such-decision", quality=1.0))
    assert info.value.field == "decision_id"
    assert log.feedback == []


@pytest.mark.parametrize(
    ("report", "field"),
    [
        ({"decision_id": ""}, "decision_id"),
        ({"model": "gpt-9"}, "model"),
        ({"quality": 1.5}, "quality"),
        ({"quality": math.nan}, "quality"),
        ({"quality": -0.01}, "quality"),
        ({"cost_usd": -1.0}, "cost_usd"),
        ({"cost_usd": math.inf}, "cost_usd"),
        ({"latency_ms": math.inf}, "latency_ms"),
        ({"latency_ms": -5.0}, "latency_ms"),
        ({"input_tokens": -1}, "input_tokens"),
        ({"output_tokens": -10}, "output_tokens"),
        # Finite but implausible: bounded by [reward] max_cost_usd/max_latency_ms/max_tokens.
        ({"cost_usd": 1e308}, "cost_usd"),
        ({"cost_usd": 100.01}, "cost_usd"),
        ({"latency_ms": 1e300}, "latency_ms"),
        ({"latency_ms": 3_600_001.0}, "latency_ms"),
        ({"input_tokens": 10_000_001}, "input_tokens"),
        ({"output_tokens": 2**62}, "output_tokens"),
    ],
)
def test_invalid_feedback_is_rejected_naming_the_field(
    report: dict[str, Any], field: str, make_router: MakeRouter, policy: RecordingPolicy
) -> None:
    """Malformed feedback raises InvalidArgument on its field and neither logs nor learns; a
    valid feedback afterwards is still learned."""
    router, log = make_router(policy=policy)
    decision = router.route(RouteQuery(prompt=PROMPT))
    values = {"decision_id": decision.decision_id, "quality": 0.5, **report}
    with pytest.raises(InvalidArgument) as info:
        router.feedback(FeedbackReport(**values))
    assert info.value.field == field
    assert log.feedback == []
    assert policy.learned == []
    result = router.feedback(FeedbackReport(decision.decision_id, quality=0.5))
    assert result.disposition == Disposition.LEARNED
    assert result.feedback_count == 1


def test_cost_is_priced_from_tokens(
    make_router: MakeRouter, policy: RecordingPolicy, default_settings: Settings
) -> None:
    """Without a reported cost, the served model's prices turn token counts into cost, and the
    reward is the objective's reward of those fragments."""
    router, log = make_router(policy=policy)
    decision = router.route(RouteQuery(prompt=PROMPT, candidate_models=(GPT4,)))
    result = router.feedback(
        FeedbackReport(
            decision.decision_id, quality=0.9, input_tokens=1000, output_tokens=500, latency_ms=800
        )
    )
    expected_cost = (1000 * 10.0 + 500 * 30.0) / 1e6
    (record,) = log.feedback
    assert record.cost_usd == pytest.approx(expected_cost)
    assert (record.input_tokens, record.output_tokens) == (1000, 500)
    balanced = default_settings.objectives["balanced"]
    expected = balanced.reward(Fragments(0.9, expected_cost, 800.0))
    assert result.reward == pytest.approx(expected)
    assert record.reward == pytest.approx(expected)
    assert policy.learned == [(GPT4, 1.0, pytest.approx(expected))]


def test_reported_cost_wins_over_tokens(make_router: MakeRouter) -> None:
    """A cost the client reports is used as it is, even with token counts."""
    router, log = make_router()
    decision = router.route(RouteQuery(prompt=PROMPT, candidate_models=(GPT4,)))
    router.feedback(FeedbackReport(decision.decision_id, cost_usd=0.5, input_tokens=10))
    assert log.feedback[0].cost_usd == 0.5


def test_failed_call_is_penalised(make_router: MakeRouter, policy: RecordingPolicy) -> None:
    """A feedback with a failure status learns the failure penalty (quality counts 0)."""
    router, log = make_router(policy=policy)
    decision = router.route(RouteQuery(prompt=PROMPT))
    result = router.feedback(FeedbackReport(decision.decision_id, status=OutcomeStatus.TIMEOUT))
    assert result.reward == pytest.approx(-0.5)
    assert log.feedback[0].status == "TIMEOUT"


def test_combine_first_learns_once_and_ignores_duplicates(
    make_router: MakeRouter, policy: RecordingPolicy, clock: Any
) -> None:
    """With 'first', the first feedback is learned at once; later ones are IGNORED_DUPLICATE,
    and the window's close does not learn again."""
    router, log = make_router(policy=policy)
    decision = router.route(RouteQuery(prompt=PROMPT))
    first = router.feedback(FeedbackReport(decision.decision_id, quality=1.0))
    second = router.feedback(FeedbackReport(decision.decision_id, quality=0.0))
    assert (first.disposition, first.feedback_count) == (Disposition.LEARNED, 1)
    assert (second.disposition, second.feedback_count) == (Disposition.IGNORED_DUPLICATE, 2)
    assert policy.learned == [(decision.model, decision.probability, pytest.approx(1.0))]
    assert [f.disposition for f in log.feedback] == ["LEARNED", "IGNORED_DUPLICATE"]
    clock.advance(600.0)
    assert router.expire() == 1
    assert [(s.action, s.reward) for s in log.settlements] == [("learned", None)]
    assert len(policy.learned) == 1


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("mean", 0.5), ("last", 0.25), ("min", 0.25), ("max", 1.0), ("sum", 1.5)],
)
def test_deferred_combine_learns_at_window_close(
    *,
    rule: str,
    expected: float,
    make_router: MakeRouter,
    make_settings: Callable[..., Settings],
    policy: RecordingPolicy,
    clock: Any,
) -> None:
    """With a deferred rule every feedback is DEFERRED (returning the reward combined so far);
    when the window closes the combined reward is learned once ('learned_combined')."""
    settings = make_settings({"reward": {"combine": rule}})
    router, log = make_router(settings, policy)
    decision = router.route(RouteQuery(prompt=PROMPT))
    results = [
        router.feedback(FeedbackReport(decision.decision_id, quality=q)) for q in (1.0, 0.25, 0.25)
    ]
    assert {r.disposition for r in results} == {Disposition.DEFERRED}
    assert [r.feedback_count for r in results] == [1, 2, 3]
    assert results[-1].reward == pytest.approx(expected)
    assert [f.reward for f in log.feedback] == pytest.approx([1.0, 0.25, 0.25])
    assert policy.learned == []
    clock.advance(599.0)
    assert router.expire() == 0
    clock.advance(1.0)
    assert router.expire() == 1
    (settlement,) = log.settlements
    assert settlement.decision_id == decision.decision_id
    assert settlement.action == "learned_combined"
    assert settlement.reward == pytest.approx(expected)
    assert policy.learned == [(decision.model, decision.probability, pytest.approx(expected))]
    with pytest.raises(NotFound):
        router.feedback(FeedbackReport(decision.decision_id, quality=1.0))


@pytest.mark.parametrize(
    ("on_missing", "action", "reward"),
    [("skip", "skipped", None), ("default", "learned_default", -0.2)],
)
def test_window_expiry_without_feedback(
    *,
    on_missing: str,
    action: str,
    reward: float | None,
    make_router: MakeRouter,
    make_settings: Callable[..., Settings],
    policy: RecordingPolicy,
    clock: Any,
) -> None:
    """A window closing without feedback is skipped or learned with the default reward, and
    logged either way; later decisions stay pending; late feedback is NotFound."""
    settings = make_settings(
        {"reward": {"on_missing": on_missing, "default_reward": -0.2, "window_s": 60.0}}
    )
    router, log = make_router(settings, policy)
    early = router.route(RouteQuery(prompt=PROMPT))
    clock.advance(30.0)
    late = router.route(RouteQuery(prompt=PROMPT + " again"))
    clock.advance(40.0)
    assert router.expire() == 1
    assert router.pending_count == 1
    assert [(s.decision_id, s.action, s.reward) for s in log.settlements] == [
        (early.decision_id, action, reward)
    ]
    expected_learned = [] if reward is None else [(early.model, early.probability, reward)]
    assert policy.learned == expected_learned
    with pytest.raises(NotFound, match="window"):
        router.feedback(FeedbackReport(early.decision_id, quality=1.0))
    assert router.feedback(FeedbackReport(late.decision_id, quality=1.0)).disposition == (
        Disposition.LEARNED
    )


def test_fallback_model_feedback_is_recorded_off_policy(
    make_router: MakeRouter, policy: RecordingPolicy
) -> None:
    """Feedback about a fallback model is logged as RECORDED_OFF_POLICY and not learned; the
    chosen model's feedback is still learned."""
    router, log = make_router(policy=policy)
    decision = router.route(RouteQuery(prompt=PROMPT))
    fallback = decision.fallback_models[0]
    off = router.feedback(
        FeedbackReport(decision.decision_id, model=fallback, quality=1.0, input_tokens=100)
    )
    assert off.disposition == Disposition.RECORDED_OFF_POLICY
    assert policy.learned == []
    assert log.feedback[0].model == fallback
    assert log.feedback[0].cost_usd == pytest.approx(router.catalog.get(fallback).price(100, 0))
    on = router.feedback(FeedbackReport(decision.decision_id, model=decision.model, quality=0.5))
    assert on.disposition == Disposition.LEARNED
    assert on.feedback_count == 2
    assert len(policy.learned) == 1


def test_budget_objective_prices_cost_higher_while_overspending(
    make_router: MakeRouter, make_settings: Callable[..., Settings]
) -> None:
    """Under an objective with a budget, repeated overspending lowers the reward of the same
    outcome as the pacer's multiplier grows."""
    settings = make_settings({"objectives": {"capped": {"cost": 10.0, "budget": 0.001}}})
    router, _ = make_router(settings)
    rewards = []
    for i in range(5):
        decision = router.route(RouteQuery(prompt=f"{PROMPT} {i}", objective="capped"))
        result = router.feedback(FeedbackReport(decision.decision_id, quality=1.0, cost_usd=0.01))
        rewards.append(result.reward)
    assert rewards[0] == pytest.approx(1.0 - 10.0 * 0.01)
    assert all(b < a for a, b in itertools.pairwise(rewards))
    pacer = router.pacer(settings.objective("capped"))
    assert pacer is not None
    assert pacer.lam > 0
    assert router.pacer(settings.objective("balanced")) is None


def test_concurrent_routes_and_feedback(make_router: MakeRouter) -> None:
    """Routes and feedback from several threads give distinct decisions, each learned once."""
    policy = LinUCBPolicy(seed=1)
    router, log = make_router(policy=policy)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(40):
                decision = router.route(RouteQuery(prompt=f"thread {k} prompt {i}?"))
                router.feedback(FeedbackReport(decision.decision_id, quality=(i % 5) / 4))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({d.decision_id for d in log.decisions}) == 160
    assert policy.updates == 160
    assert [f.disposition for f in log.feedback] == ["LEARNED"] * 160


# -- Restart -----------------------------------------------------------------------------------


def test_restart_restores_pending_decisions_from_duckdb(
    tmp_path: Path, make_router: MakeRouter, clock: Any
) -> None:
    """After a restart on the same DuckDB file, decisions still in their window are pending
    again: their feedback is accepted, already-learned ones are not learned twice, request ids
    replay the same decision (for the same request only), and settled or expired decisions
    stay gone."""
    path = tmp_path / "log.duckdb"
    policy = RecordingPolicy()
    router, log = make_router(policy=policy, event_log=DuckDBLog(path))
    stale = router.route(RouteQuery(prompt="old question?"))
    clock.advance(300.0)
    decisions = [
        router.route(RouteQuery(prompt=f"{PROMPT} {i}", request_id=f"req-{i}")) for i in range(4)
    ]
    clock.advance(301.0)  # `stale` is now outside its window (never expired before the crash)
    for decision in decisions[:2]:
        assert router.feedback(FeedbackReport(decision.decision_id, quality=0.75)).disposition == (
            Disposition.LEARNED
        )
    router.feedback(FeedbackReport(decisions[2].decision_id, model=decisions[2].fallback_models[0]))
    assert len(policy.learned) == 2
    log.close()

    restarted_policy = RecordingPolicy()
    restarted, new_log = make_router(
        policy=restarted_policy, event_log=DuckDBLog(path), id_prefix="n"
    )
    try:
        assert restarted.restore_pending() == 4
        assert restarted.pending_count == 4
        assert restarted.restore_pending() == 0  # already pending: not restored twice
        replay = restarted.route(RouteQuery(prompt=f"{PROMPT} 1", request_id="req-1"))
        assert replay.replayed
        assert replay == dataclasses.replace(decisions[1], replayed=True)
        with pytest.raises(AlreadyExists):  # the fingerprint is restored with the decision
            restarted.route(RouteQuery(prompt="anything", request_id="req-1"))
        with pytest.raises(NotFound):
            restarted.feedback(FeedbackReport(stale.decision_id, quality=1.0))
        results = [
            restarted.feedback(FeedbackReport(d.decision_id, quality=0.5)) for d in decisions
        ]
        assert [r.disposition for r in results] == [
            Disposition.IGNORED_DUPLICATE,
            Disposition.IGNORED_DUPLICATE,
            Disposition.LEARNED,
            Disposition.LEARNED,
        ]
        assert [r.feedback_count for r in results] == [2, 2, 2, 1]
        assert restarted_policy.learned == [
            (decisions[2].model, decisions[2].probability, 0.5),
            (decisions[3].model, decisions[3].probability, 0.5),
        ]
        clock.advance(600.0)
        assert restarted.expire() == 4
        assert len(restarted_policy.learned) == 2
    finally:
        new_log.close()

    third, third_log = make_router(event_log=DuckDBLog(path), id_prefix="t")
    try:
        assert third.restore_pending() == 0
    finally:
        third_log.close()


def test_a_decision_logged_without_a_fingerprint_replays_for_no_one(
    tmp_path: Path, make_router: MakeRouter
) -> None:
    """A log written before decisions carried a request fingerprint (no request_hash column)
    opens, gains the column, and restores its pending decisions; a retry of such a decision's
    request_id cannot be checked, so it is ALREADY_EXISTS rather than a possibly wrong replay."""
    path = tmp_path / "log.duckdb"
    router, log = make_router(event_log=DuckDBLog(path))
    router.route(RouteQuery(prompt=PROMPT, request_id="old-1"))
    log.close()
    with duckdb.connect(str(path)) as con:
        con.execute("ALTER TABLE decisions DROP COLUMN request_hash")
    restarted, new_log = make_router(event_log=DuckDBLog(path), id_prefix="n")
    try:
        assert restarted.restore_pending() == 1
        with pytest.raises(AlreadyExists):
            restarted.route(RouteQuery(prompt=PROMPT, request_id="old-1"))
        fresh = restarted.route(RouteQuery(prompt=PROMPT, request_id="new-1"))
        assert restarted.route(RouteQuery(prompt=PROMPT, request_id="new-1")).replayed
    finally:
        new_log.close()
    with duckdb.connect(str(path), read_only=True) as con:
        hashes = dict(con.execute("SELECT request_id, request_hash FROM decisions").fetchall())
    assert hashes == {
        "old-1": None,
        "new-1": restarted.request_fingerprint(RouteQuery(prompt=PROMPT)),
    }
    assert fresh.decision_id.startswith("n")


def test_restart_keeps_deferred_rewards(
    tmp_path: Path,
    make_router: MakeRouter,
    make_settings: Callable[..., Settings],
    clock: Any,
) -> None:
    """With a deferred rule, feedback given before a restart is combined with feedback given
    after it, as if there had been no restart."""
    settings = make_settings({"reward": {"combine": "mean"}})
    path = tmp_path / "log.duckdb"
    router, log = make_router(settings, RecordingPolicy(), DuckDBLog(path))
    decision = router.route(RouteQuery(prompt=PROMPT))
    for quality in (1.0, 0.0):
        router.feedback(FeedbackReport(decision.decision_id, quality=quality))
    log.close()

    policy = RecordingPolicy()
    restarted, new_log = make_router(settings, policy, DuckDBLog(path), id_prefix="n")
    try:
        assert restarted.restore_pending() == 1
        result = restarted.feedback(FeedbackReport(decision.decision_id, quality=0.5))
        assert result.disposition == Disposition.DEFERRED
        assert result.feedback_count == 3
        assert result.reward == pytest.approx(0.5)
        clock.advance(600.0)
        assert restarted.expire() == 1
        assert policy.learned == [(decision.model, decision.probability, pytest.approx(0.5))]
    finally:
        new_log.close()


def test_a_window_that_closed_while_the_server_was_down_is_settled_at_restart(
    tmp_path: Path,
    make_router: MakeRouter,
    make_settings: Callable[..., Settings],
    clock: Any,
) -> None:
    """Decisions pending at a stop whose window closes before the restart are settled by the
    restart as the running server would have: deferred feedback is learned combined, a
    decision without feedback gets the default reward, each gets its settlements row (once:
    a later start settles nothing again), and none is pending."""
    settings = make_settings(
        {"reward": {"combine": "mean", "on_missing": "default", "default_reward": -0.2}}
    )
    path = tmp_path / "log.duckdb"
    router, log = make_router(settings, RecordingPolicy(), DuckDBLog(path))
    answered = router.route(RouteQuery(prompt=PROMPT))
    silent = router.route(RouteQuery(prompt=PROMPT + " again"))
    for quality in (1.0, 0.0):
        router.feedback(FeedbackReport(answered.decision_id, quality=quality))
    log.close()
    clock.advance(601.0)  # the windows close while the server is down

    policy = RecordingPolicy()
    restarted, new_log = make_router(settings, policy, DuckDBLog(path), id_prefix="n")
    try:
        assert restarted.restore_pending() == 0
        assert restarted.pending_count == 0
        assert policy.learned == [
            (answered.model, answered.probability, pytest.approx(0.5)),
            (silent.model, silent.probability, -0.2),
        ]
        rows = new_log.reader().execute("SELECT decision_id, action FROM settlements").fetchall()
        assert sorted(rows) == sorted(
            [(answered.decision_id, "learned_combined"), (silent.decision_id, "learned_default")]
        )
    finally:
        new_log.close()

    again = RecordingPolicy()
    third, third_log = make_router(settings, again, DuckDBLog(path), id_prefix="t")
    try:
        assert third.restore_pending() == 0
        assert again.learned == []
    finally:
        third_log.close()


def test_restore_from_memory_log(make_router: MakeRouter, policy: RecordingPolicy) -> None:
    """restore_pending works over any event log, here the in-memory one."""
    router, log = make_router(policy=policy)
    decision = router.route(RouteQuery(prompt=PROMPT))
    restarted, _ = make_router(policy=policy, event_log=log)
    assert restarted.restore_pending() == 1
    result = restarted.feedback(FeedbackReport(decision.decision_id, quality=1.0))
    assert result.disposition == Disposition.LEARNED
    assert isinstance(log, MemoryLog)


def test_restart_continues_the_pacers_multipliers(
    tmp_path: Path, make_router: MakeRouter, make_settings: Any
) -> None:
    """Budgeted objectives' pacers and a tenant's pacer, rebuilt after a restart from the
    first feedback costs in the DuckDB log, have the multipliers they had before the stop (a
    second feedback for a decision and another objective's or tenant's spend do not count);
    without restoring they start at 0."""
    settings = make_settings(
        {
            "objectives": {"balanced": {"budget": 0.001}, "economy": {"budget": 0.002}},
            "tenants": [
                {"name": "acme", "api_key_sha256": [hash_key("k")],
                 "budget": {"target_usd_per_request": 0.001}},
            ],
        }
    )  # fmt: skip
    path = tmp_path / "log.duckdb"
    router, log = make_router(settings, event_log=DuckDBLog(path))
    costs = [0.004, 0.0005, 0.003, 0.002, 0.0001]
    for i, cost in enumerate(costs):
        decision = router.route(RouteQuery(prompt=f"{PROMPT} {i}", tenant="acme"))
        router.feedback(
            FeedbackReport(decision.decision_id, quality=1.0, cost_usd=cost, tenant="acme")
        )
        if i == 1:  # a fallback's later feedback: no new request for the pacers
            router.feedback(
                FeedbackReport(
                    decision.decision_id, model=decision.fallback_models[0], cost_usd=0.01,
                    tenant="acme",
                )
            )  # fmt: skip
    other = router.route(RouteQuery(prompt=PROMPT, objective="economy"))
    router.feedback(FeedbackReport(other.decision_id, quality=1.0, cost_usd=0.05))
    acme_before = router.budget_status("acme")
    assert acme_before is not None
    assert acme_before.pacing_multiplier > 0
    before = router.pacer(settings.objective("balanced"))
    economy_before = router.pacer(settings.objective("economy"))
    assert before is not None
    assert economy_before is not None
    assert before.lam > 0
    log.close()

    restarted, new_log = make_router(settings, event_log=DuckDBLog(path), id_prefix="n")
    try:
        fresh = restarted.pacer(settings.objective("balanced"))
        assert fresh is not None
        assert fresh.lam == 0.0
        assert restarted.restore_pacers(new_log.first_costs) == 2 * len(costs) + 1  # type: ignore[attr-defined]
        assert fresh.lam == pytest.approx(before.lam)
        assert fresh.requests == len(costs)
        economy = restarted.pacer(settings.objective("economy"))
        assert economy is not None
        assert economy.lam == pytest.approx(economy_before.lam)
        acme = restarted.budget_status("acme")
        assert acme is not None
        assert acme.pacing_multiplier == pytest.approx(acme_before.pacing_multiplier)
    finally:
        new_log.close()


def test_a_model_filled_after_the_eligibility_check_is_refused_at_admission(
    make_router: MakeRouter, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eligibility saw the limited model free, but concurrent routes filled its 3 slots before
    this one was admitted: admission (check and count in one step) refuses it, the decision
    is made again without it (the free model, probability 1, the limited one excluded for
    health, "filled by concurrent routes"), and the limit holds at 3 in flight."""
    from banditroute.config import _default_document  # the default catalogue, to edit
    from banditroute.policies.fixed import FixedPolicy

    models = [dict(m) for m in _default_document()["models"]]
    limited, free = models[0]["id"], models[1]["id"]
    models[0]["max_in_flight"] = 3
    router, _ = make_router(make_settings({"models": models}), policy=FixedPolicy(limited))
    for _ in range(3):
        assert router.route(RouteQuery(prompt=PROMPT)).model == limited
    # The view eligibility had before the concurrent routes took the slots:
    monkeypatch.setattr(router.health, "unavailable_reason", lambda model, tokens=0: None)
    decision = router.route(RouteQuery(prompt=PROMPT, candidate_models=(limited, free)))
    assert decision.model == free
    assert decision.probability == 1.0
    reasons = {m: (c, r) for m, c, r in decision.exclusions}
    assert reasons[limited][0] == "health"
    assert "filled by concurrent routes" in reasons[limited][1]
    assert router.health.stats(limited).in_flight == 3


def test_audited_rows_are_logged_once_with_their_records(
    make_router: MakeRouter, clock: Any
) -> None:
    """With an audit chain, each decision, feedback and settlement row reaches the log once,
    handed over with the audit record that carries its row digest (one record per row)."""
    log = MemoryLog()
    router, _ = make_router(event_log=log)
    router.audit = AuditChain(sink=log.append_audit)
    decision = router.route(RouteQuery(prompt=PROMPT, tenant="acme"))
    router.feedback(FeedbackReport(decision_id=decision.decision_id, quality=0.5, tenant="acme"))
    clock.advance(router.settings.reward.window_s + 1)
    assert router.expire() == 1
    rows = [*log.decisions, *log.feedback, *log.settlements]
    assert len(rows) == 3
    assert [r.kind for r in log.audit] == ["decision", "feedback", "settlement"]
    assert [r.row for r in log.audit] == rows
    assert [r.row_digest for r in log.audit] == [row_digest(r) for r in rows]


def test_each_tenants_cost_target_prices_its_own_decisions(
    make_router: MakeRouter, make_settings: Any
) -> None:
    """Two tenants share the default (costaware) policy: one has a target_usd_per_request, the
    other no budget. The target is priced into that tenant's decisions only, so its mean cost
    settles at the target while the other tenant keeps the dearer, better model."""
    cheap, dear = "mistralai/mistral-7b-chat", "gpt-4-1106-preview"
    target = 0.001
    settings = make_settings(
        {"tenants": [
            {"name": "acme", "api_key_sha256": [hash_key("k")],
             "budget": {"target_usd_per_request": target}},
            {"name": "free", "api_key_sha256": [hash_key("f")]},
        ]}
    )  # fmt: skip
    router, _ = make_router(settings, CostAwarePolicy(seed=3))
    costs: dict[str, list[float]] = {"acme": [], "free": []}
    for i in range(2000):
        tenant = "acme" if i % 2 else "free"
        decision = router.route(
            RouteQuery(prompt=f"{PROMPT} {i}", tenant=tenant, candidate_models=(cheap, dear))
        )
        quality, cost = (0.9, 0.004) if decision.model == dear else (0.6, 0.0002)
        router.feedback(
            FeedbackReport(decision.decision_id, quality=quality, cost_usd=cost, tenant=tenant)
        )
        costs[tenant].append(cost)
    assert 0.9 * target <= float(np.mean(costs["acme"][-400:])) <= 1.1 * target
    assert float(np.mean(costs["free"][-400:])) > 3 * target


def test_an_unreadable_logged_decision_does_not_stop_the_others_coming_back(
    make_router: MakeRouter, policy: RecordingPolicy
) -> None:
    """A logged pending decision whose features this version cannot read (a damaged row: a key
    missing, or not an object at all) is left in the log and skipped by restore_pending; the
    readable ones are restored and learn."""
    router, log = make_router(policy=policy)
    damaged = router.route(RouteQuery(prompt=PROMPT))
    not_an_object = router.route(RouteQuery(prompt=PROMPT + " too"))
    kept = router.route(RouteQuery(prompt=PROMPT + " again"))
    assert isinstance(log, MemoryLog)
    broken: dict[str, Any] = {
        damaged.decision_id: {k: v for k, v in log.decisions[0].features.items() if k != "markers"},
        not_an_object.decision_id: ["not", "an", "object"],
    }
    log.decisions = [
        dataclasses.replace(d, features=broken[d.decision_id]) if d.decision_id in broken else d
        for d in log.decisions
    ]
    restarted, _ = make_router(policy=policy, event_log=log)
    assert restarted.restore_pending() == 1
    result = restarted.feedback(FeedbackReport(kept.decision_id, quality=1.0))
    assert result.disposition == Disposition.LEARNED
