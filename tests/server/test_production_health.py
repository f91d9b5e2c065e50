"""Model health through the gRPC interface: failures reported by Feedback open a model's
circuit breaker, which takes it out of the eligible set and the fallbacks until its cooldown
lets a probe through; an admin closes it with ResetModelHealth. Per-model rate and in-flight
limits keep a saturated model out while another is free."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from banditroute.config import settings_from_mapping
from banditroute.errors import ConfigError
from banditroute.server.app import Service
from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb

GPT4 = "gpt-4-1106-preview"
GPT35 = "gpt-3.5-turbo-1106"
MIXTRAL = "mistralai/mixtral-8x7b-chat"
FAILURES = 3
COOLDOWN_S = 3.0
"""Breaker cooldown of these tests: long enough that a loaded machine's stall between two
calls does not let it run out before the test looks (0.3 s did, at load average 12)."""
ERROR = pb.OUTCOME_STATUS_ERROR
TIMEOUT = pb.OUTCOME_STATUS_TIMEOUT
OK = pb.OUTCOME_STATUS_OK
ADMIN_KEY = "key-admin-health"
TENANT_KEY = "key-acme-health"


def _config(cooldown_s: float = COOLDOWN_S, **extra: Any) -> dict[str, Any]:
    """A fixed policy on GPT-4 without an exploration floor (so the breaker's effect is visible
    deterministically) and a breaker that opens after FAILURES consecutive failures."""
    return {
        "policy": {"kind": "fixed", "fixed_model": GPT4, "min_probability": 0.0},
        "health": {"consecutive_failures": FAILURES, "cooldown_s": cooldown_s},
        **extra,
    }


def _health(client: Any, model: str) -> pb.ModelHealth:
    rows = [h for h in client.stats().health if h.model == model]
    assert len(rows) == 1, f"GetStats has no health row for {model}"
    return rows[0]


def _fail(client: Any, model: str, times: int = FAILURES) -> None:
    """Route ``times`` requests to ``model`` and report each as failed (ERROR, TIMEOUT...)."""
    statuses = [ERROR, TIMEOUT]
    for i in range(times):
        decision = client.route(candidate_models=[model])
        assert decision.model == model
        client.feedback(
            decision_id=decision.decision_id, status=statuses[i % 2], latency_ms=30000.0
        )


def _exclusion(response: pb.RouteResponse, model: str) -> pb.ModelExclusion:
    found = [e for e in response.exclusions if e.model == model]
    assert len(found) == 1, f"{model} is not listed in exclusions"
    return found[0]


def test_failures_open_the_breaker_and_exclude_the_model(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """After FAILURES feedbacks with status ERROR/TIMEOUT, the model leaves the eligible set:
    Route chooses another model, lists the failed one in exclusions with constraint "health"
    (reason: circuit open), never in the ranking or fallbacks; GetStats reports state "open"
    with a non-zero error rate; a request that only it could serve fails with
    FAILED_PRECONDITION whose details start with "health"."""
    client = api(start_service(_config(cooldown_s=30.0)))
    assert client.route().model == GPT4
    assert _health(client, GPT4).state == "closed"
    _fail(client, GPT4, FAILURES - 1)
    assert client.route().model == GPT4, "opened before consecutive_failures"
    _fail(client, GPT4, 1)

    for _ in range(5):
        response = client.route()
        assert response.model != GPT4
        assert GPT4 not in response.fallback_models
        assert GPT4 not in [r.model for r in response.ranking]
        exclusion = _exclusion(response, GPT4)
        assert exclusion.constraint == "health"
        assert "circuit open" in exclusion.reason
    health = _health(client, GPT4)
    assert health.state == "open"
    assert health.error_rate == 1.0  # every reported outcome failed
    assert _health(client, GPT35).state == "closed"

    details = client.fails(
        "Route",
        pb.RouteRequest(prompt="hi", candidate_models=[GPT4]),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details.startswith("health")


def test_breaker_half_opens_after_cooldown_and_a_probe_decides(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """After cooldown_s an open breaker is "half_open": one probe route is let through while a
    second concurrent one is refused (FAILED_PRECONDITION health); a failed probe re-opens
    it; after the next cooldown a successful probe closes it and traffic returns."""
    client = api(start_service(_config()))
    _fail(client, GPT4)
    assert _health(client, GPT4).state == "open"
    time.sleep(COOLDOWN_S + 0.1)
    assert _health(client, GPT4).state == "half_open"

    probe = client.route()
    assert probe.model == GPT4, "the half-open model is not probed"
    refused = client.route()
    assert refused.model != GPT4
    assert _exclusion(refused, GPT4).constraint == "health"
    assert "half-open" in _exclusion(refused, GPT4).reason
    client.feedback(decision_id=probe.decision_id, status=TIMEOUT)
    assert _health(client, GPT4).state == "open"
    assert client.route().model != GPT4

    time.sleep(COOLDOWN_S + 0.1)
    probe = client.route()
    assert probe.model == GPT4
    client.feedback(decision_id=probe.decision_id, status=OK, quality=1.0, latency_ms=800.0)
    assert _health(client, GPT4).state == "closed"
    assert client.route().model == GPT4


def test_reset_model_health_needs_an_admin_key_and_a_known_model(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """ResetModelHealth with a tenant key is PERMISSION_DENIED and leaves the breaker open;
    with an admin key an unknown or empty model is INVALID_ARGUMENT naming "model"; a known
    model's breaker closes at once (the response and GetStats say "closed") and Route chooses
    it again."""
    config = _config(
        cooldown_s=30.0,
        auth={"required": True, "admin_key_sha256": [hash_key(ADMIN_KEY)]},
        tenants=[{"name": "default", "api_key_sha256": [hash_key(TENANT_KEY)]}],
    )
    service = start_service(config)
    tenant, admin = api(service, TENANT_KEY), api(service, ADMIN_KEY)
    _fail(tenant, GPT4)
    assert _health(tenant, GPT4).state == "open"

    denied = pb.ResetModelHealthRequest(model=GPT4)
    details = tenant.fails("ResetModelHealth", denied, grpc.StatusCode.PERMISSION_DENIED)
    assert "admin" in details
    assert _health(tenant, GPT4).state == "open"
    for bad in ("gpt-99", ""):
        details = admin.fails(
            "ResetModelHealth",
            pb.ResetModelHealthRequest(model=bad),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert details.startswith("model")

    reset = admin.reset(GPT4)
    assert reset.health.model == GPT4
    assert reset.health.state == "closed"
    assert _health(tenant, GPT4).state == "closed"
    response = tenant.route()
    assert response.model == GPT4
    assert GPT4 not in [e.model for e in response.exclusions]


def test_excluded_models_gives_the_next_best(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """excluded_models (a model that just failed for the client) takes the model out of this
    request only: the answer is the first fallback of the unrestricted decision, the excluded
    model appears in exclusions with constraint "excluded_models" and nowhere in the ranking;
    an unknown excluded model is INVALID_ARGUMENT; excluding every candidate is
    FAILED_PRECONDITION naming excluded_models."""
    client = api(start_service(_config()))
    first = client.route()
    assert first.model == GPT4
    second = client.route(excluded_models=[GPT4])
    assert second.model == first.fallback_models[0]
    assert _exclusion(second, GPT4).constraint == "excluded_models"
    assert GPT4 not in [r.model for r in second.ranking]
    assert GPT4 not in second.fallback_models
    assert client.route().model == GPT4, "excluded_models must not outlive the request"

    details = client.fails(
        "Route",
        pb.RouteRequest(prompt="hi", excluded_models=["gpt-99"]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details.startswith("excluded_models")
    details = client.fails(
        "Route",
        pb.RouteRequest(prompt="hi", candidate_models=[GPT4, GPT35], excluded_models=[GPT4, GPT35]),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details.startswith("excluded_models")


def test_requests_per_minute_limit_diverts_to_a_free_model(
    start_service: Callable[..., Service], api: Callable[..., Any], catalogue: list[dict[str, Any]]
) -> None:
    """With requests_per_minute = 2 on GPT-4 and candidates GPT-4 and GPT-3.5, the first two
    routes choose GPT-4 and the third GPT-3.5, naming GPT-4 in exclusions (constraint "health",
    reason "rate limit"); GetStats counts 2 requests in the last minute; a request that only
    GPT-4 may serve is FAILED_PRECONDITION health. Feedback does not free a rate slot."""
    for model in catalogue:
        if model["id"] == GPT4:
            model["requests_per_minute"] = 2
    client = api(start_service(_config(models=catalogue)))
    pair = [GPT4, GPT35]
    chosen = []
    for _ in range(2):
        decision = client.route(candidate_models=pair)
        chosen.append(decision.model)
        client.feedback(decision_id=decision.decision_id, quality=1.0)
    assert chosen == [GPT4, GPT4]
    third = client.route(candidate_models=pair)
    assert third.model == GPT35
    assert list(third.fallback_models) == []
    exclusion = _exclusion(third, GPT4)
    assert exclusion.constraint == "health"
    assert "rate limit 2 requests/min" in exclusion.reason
    assert _health(client, GPT4).requests_last_minute == 2
    details = client.fails(
        "Route",
        pb.RouteRequest(prompt="hi", candidate_models=[GPT4]),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details.startswith("health")


def test_max_in_flight_limit_is_released_by_feedback(
    start_service: Callable[..., Service], api: Callable[..., Any], catalogue: list[dict[str, Any]]
) -> None:
    """With max_in_flight = 1 on GPT-4, a second route while the first awaits feedback goes to
    GPT-3.5 (GPT-4 excluded: "health", in-flight limit) and GetStats shows GPT-4 in flight 1;
    once the first decision's feedback arrives GPT-4 is chosen again."""
    for model in catalogue:
        if model["id"] == GPT4:
            model["max_in_flight"] = 1
    client = api(start_service(_config(models=catalogue)))
    pair = [GPT4, GPT35]
    first = client.route(candidate_models=pair)
    assert first.model == GPT4
    second = client.route(candidate_models=pair)
    assert second.model == GPT35
    assert "in-flight limit 1" in _exclusion(second, GPT4).reason
    assert _health(client, GPT4).in_flight == 1
    client.feedback(decision_id=first.decision_id, quality=0.9, latency_ms=700.0)
    assert _health(client, GPT4).in_flight == 0
    third = client.route(candidate_models=pair)
    assert third.model == GPT4
    assert GPT4 not in [e.model for e in third.exclusions]


@pytest.mark.parametrize("key", ["requests_per_minute", "tokens_per_minute", "max_in_flight"])
@pytest.mark.parametrize("value", [0, -1])
def test_invalid_model_limit_is_a_config_error(
    catalogue: list[dict[str, Any]], key: str, value: int
) -> None:
    """A per-model limit below 1 is rejected when the settings are read, with a ConfigError
    naming the key (not a ValueError later, when the service is built)."""
    catalogue[0][key] = value
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"models": catalogue})
    assert key in caught.value.message


def test_failures_of_a_fallback_count_against_the_fallback(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """Feedback naming the model that actually served (a fallback) moves that model's breaker,
    not the chosen one's: three failed fallback calls open GPT-3.5's breaker while GPT-4,
    chosen every time, stays closed and chosen."""
    client = api(start_service(_config(cooldown_s=30.0)))
    for _ in range(FAILURES):
        decision = client.route()
        assert decision.model == GPT4
        ack = client.feedback(decision_id=decision.decision_id, model=GPT35, status=TIMEOUT)
        assert ack.disposition == pb.FEEDBACK_DISPOSITION_RECORDED_OFF_POLICY
    assert _health(client, GPT35).state == "open"
    assert _health(client, GPT4).state == "closed"
    response = client.route()
    assert response.model == GPT4
    assert GPT35 not in response.fallback_models
    assert _exclusion(response, GPT35).constraint == "health"


def test_tokens_per_minute_limit_excludes_a_prompt_too_big_for_the_quota(
    start_service: Callable[..., Service], api: Callable[..., Any], catalogue: list[dict[str, Any]]
) -> None:
    """With tokens_per_minute = 1000 on GPT-4, a short prompt may go there but a prompt of
    about 1,300 tokens may not (constraint "health", reason "token limit"), even as the first
    request of the minute."""
    for model in catalogue:
        if model["id"] == GPT4:
            model["tokens_per_minute"] = 1000
    client = api(start_service(_config(models=catalogue)))
    pair = [GPT4, GPT35]
    big = client.route(prompt="Please review this paragraph. " * 170, candidate_models=pair)
    assert big.model == GPT35
    assert "token limit 1000 tokens/min" in _exclusion(big, GPT4).reason
    assert client.route(candidate_models=pair).model == GPT4


def test_measured_latency_replaces_the_prior_for_max_latency_ms(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """max_latency_ms first judges GPT-4 by its catalogue prior (too slow for 1,000 ms); once
    min_samples feedbacks report it answering in 100 ms, the measured median is used and
    GPT-4 becomes eligible under the same bound."""
    client = api(start_service(_config(health={"min_samples": 3, "consecutive_failures": 3})))
    bounded = {"candidate_models": [GPT4, MIXTRAL], "max_latency_ms": 2000.0}
    before = client.route(**bounded)
    assert before.model == MIXTRAL
    assert _exclusion(before, GPT4).constraint == "max_latency_ms"
    for _ in range(3):
        decision = client.route(candidate_models=[GPT4])
        client.feedback(decision_id=decision.decision_id, quality=1.0, latency_ms=100.0)
    after = client.route(**bounded)
    assert after.model == GPT4
    assert {r.model for r in after.ranking} == {GPT4, MIXTRAL}


def test_one_tenant_cannot_take_a_model_from_another(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """With two tenants, one reporting every GPT-4 call as failed (far past
    consecutive_failures) and every served call as taking an hour leaves GPT-4 chosen for the
    other tenant, including under a max_latency_ms it meets by the catalogue's prior; absurd
    figures (latency_ms 1e300, cost_usd 1e308) are INVALID_ARGUMENT naming the field. Once the
    second tenant also sees a run of failures of its own, the breaker opens for both."""
    mallory_key, bob_key = "key-mallory-health", "key-bob-health"
    config = _config(
        cooldown_s=30.0,
        auth={"required": True},
        tenants=[
            {"name": "default"},
            {"name": "mallory", "api_key_sha256": [hash_key(mallory_key)]},
            {"name": "bob", "api_key_sha256": [hash_key(bob_key)]},
        ],
    )
    service = start_service(config)
    mallory, bob = api(service, mallory_key), api(service, bob_key)
    for _ in range(12):
        decision = mallory.route(candidate_models=[GPT4])
        mallory.feedback(decision_id=decision.decision_id, latency_ms=3_600_000.0)
    _fail(mallory, GPT4, 3 * FAILURES)
    for field, value in (("latency_ms", 1e300), ("cost_usd", 1e308)):
        decision = mallory.route(candidate_models=[GPT4])
        details = mallory.fails(
            "Feedback",
            pb.FeedbackRequest(decision_id=decision.decision_id, **{field: value}),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert details.startswith(field)
    assert _health(bob, GPT4).state == "closed"
    assert bob.route().model == GPT4
    assert bob.route(max_latency_ms=60_000.0).model == GPT4
    _fail(bob, GPT4, FAILURES)
    assert _health(bob, GPT4).state == "open"
    assert bob.route().model != GPT4
