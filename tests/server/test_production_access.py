"""Access control through the gRPC interface: API keys (``x-api-key`` or ``authorization:
Bearer``) name the tenant, a tenant's allow-lists bound what it may route to and under which
objectives, a tenant sees only its own decisions and figures, admin keys see everything, and
health checks and reflection stay open."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from banditroute.config import load_settings, settings_from_mapping
from banditroute.errors import ConfigError
from banditroute.server.app import Service
from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb

CATALOG = load_settings().catalog
ACME_KEY, BETA_KEY, ADMIN_KEY = "key-acme", "key-beta", "key-admin"
ACME_MODELS = ["gpt-3.5-turbo-1106", "mistralai/mixtral-8x7b-chat", "mistralai/mistral-7b-chat"]
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
REQUESTS: dict[str, Any] = {
    "Route": pb.RouteRequest(prompt="hi"),
    "Feedback": pb.FeedbackRequest(decision_id="x"),
    "ListModels": pb.ListModelsRequest(),
    "GetStats": pb.GetStatsRequest(),
    "ResetModelHealth": pb.ResetModelHealthRequest(model="claude-v1"),
    "ReloadConfig": pb.ReloadConfigRequest(),
    "PromotePolicy": pb.PromotePolicyRequest(candidate="uniform"),
    "RollbackPolicy": pb.RollbackPolicyRequest(),
}
CONFIG: dict[str, Any] = {
    "policy": {"kind": "uniform"},
    "auth": {"required": True, "admin_key_sha256": [hash_key(ADMIN_KEY)]},
    "tenants": [
        {
            "name": "acme",
            "api_key_sha256": [hash_key(ACME_KEY)],
            "models": ACME_MODELS,
            "objectives": ["balanced", "economy"],
            "default_objective": "economy",
        },
        {"name": "beta", "api_key_sha256": [hash_key(BETA_KEY)]},
    ],
}


@pytest.fixture
def service(start_service: Callable[..., Service]) -> Service:
    """A service that requires a key: tenants acme (allow-lists) and beta, and an admin key."""
    return start_service(CONFIG)


@pytest.mark.parametrize(
    ("key", "header"),
    [
        (None, "x-api-key"),
        ("", "x-api-key"),
        ("key-nobody", "x-api-key"),
        ("key-nobody", "authorization"),
        (ACME_KEY.upper(), "x-api-key"),
    ],
)
def test_missing_or_unknown_key_is_unauthenticated(
    service: Service, api: Callable[..., Any], key: str | None, header: str
) -> None:
    """With auth.required, every RouterService RPC without a key, with an empty key or with a
    key no tenant or admin owns (keys are case-sensitive) is UNAUTHENTICATED, before the
    request is looked at."""
    client = api(service, key, header=header)
    for rpc, request in REQUESTS.items():
        assert "API key" in client.fails(rpc, request, UNAUTHENTICATED)


def test_key_in_authorization_bearer_header_works(
    service: Service, api: Callable[..., Any]
) -> None:
    """``authorization: Bearer KEY`` authenticates like ``x-api-key: KEY`` (same tenant, so
    the same allow-list applies), whatever the case of the scheme; another scheme is
    UNAUTHENTICATED."""
    response = api(service, ACME_KEY, header="authorization").route()
    assert response.model in ACME_MODELS
    assert response.objective == "economy"
    client = api(service)
    client.metadata = (("authorization", f"bearer {ACME_KEY}"),)
    assert client.route().model in ACME_MODELS
    client.metadata = (("authorization", f"Basic {ACME_KEY}"),)
    client.fails("Route", pb.RouteRequest(prompt="hi"), UNAUTHENTICATED)


def test_health_and_reflection_need_no_key(service: Service, api: Callable[..., Any]) -> None:
    """Health checks and server reflection answer without an API key although RouterService
    requires one (load balancers and grpcurl do not carry keys)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "banditroute.v1.RouterService"):
            check = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
        names = {s.name for s in answer.list_services_response.service}
        assert "banditroute.v1.RouterService" in names
    finally:
        channel.close()


def test_allow_list_bounds_models_and_objectives(service: Service, api: Callable[..., Any]) -> None:
    """A tenant with an allow-list: every route chooses (and ranks and falls back to) allowed
    models only, every other catalogue model is excluded with constraint "tenant_allow_list";
    candidate_models outside the list and an objective outside its objectives are
    PERMISSION_DENIED naming the field; an unknown objective stays INVALID_ARGUMENT; the
    tenant's default objective applies when none is given."""
    acme = api(service, ACME_KEY)
    for i in range(25):
        response = acme.route(prompt=f"Question number {i}: what is {i} + {i}?")
        assert response.model in ACME_MODELS
        assert {r.model for r in response.ranking} == set(ACME_MODELS)
        assert set(response.fallback_models) <= set(ACME_MODELS)
        assert {e.model: e.constraint for e in response.exclusions} == {
            m: "tenant_allow_list" for m in CATALOG.ids if m not in ACME_MODELS
        }
        assert response.objective == "economy"
    narrowed = acme.route(candidate_models=ACME_MODELS[:1])
    assert narrowed.model == ACME_MODELS[0]

    outside = pb.RouteRequest(prompt="hi", candidate_models=[ACME_MODELS[0], "gpt-4-1106-preview"])
    assert acme.fails("Route", outside, DENIED).startswith("candidate_models")
    objective = pb.RouteRequest(prompt="hi", objective="quality")
    assert acme.fails("Route", objective, DENIED).startswith("objective")
    unknown = pb.RouteRequest(prompt="hi", objective="no-such-profile")
    assert acme.fails("Route", unknown, grpc.StatusCode.INVALID_ARGUMENT).startswith("objective")
    assert acme.route(objective="balanced").objective == "balanced"

    beta = api(service, BETA_KEY)
    assert beta.route(objective="quality").objective == "quality"
    assert len(beta.route(candidate_models=["gpt-4-1106-preview"]).ranking) == 1


def test_list_models_shows_only_allowed_models(service: Service, api: Callable[..., Any]) -> None:
    """ListModels answers a tenant with an allow-list with exactly those models (catalogue
    order); a tenant without one, and an admin, get the whole catalogue."""
    assert api(service, ACME_KEY).models() == [m for m in CATALOG.ids if m in ACME_MODELS]
    assert api(service, BETA_KEY).models() == list(CATALOG.ids)
    assert api(service, ADMIN_KEY).models() == list(CATALOG.ids)


def test_feedback_for_another_tenants_decision_is_not_found(
    service: Service, api: Callable[..., Any]
) -> None:
    """A tenant (or an admin key, which acts as the default tenant) that quotes another
    tenant's decision_id gets NOT_FOUND, exactly as for an unknown id, and the decision is
    untouched: its owner's feedback is then the first one and is learned."""
    acme, beta, admin = api(service, ACME_KEY), api(service, BETA_KEY), api(service, ADMIN_KEY)
    decision = acme.route()
    request = pb.FeedbackRequest(decision_id=decision.decision_id, quality=0.1)
    for other in (beta, admin):
        details = other.fails("Feedback", request, grpc.StatusCode.NOT_FOUND)
        assert details.startswith("decision_id")
    ack = acme.feedback(decision_id=decision.decision_id, quality=0.9)
    assert ack.feedback_count == 1
    assert ack.disposition == pb.FEEDBACK_DISPOSITION_LEARNED


def test_feedback_naming_a_model_outside_the_allow_list_is_denied(
    service: Service, api: Callable[..., Any]
) -> None:
    """A tenant cannot report outcomes for a model its allow-list keeps from it (none of its
    decisions could have been served by it): failures it invents would open that model's
    breaker for every tenant. PERMISSION_DENIED naming model, and the model's health is
    untouched; an allowed fallback is still recorded."""
    acme, admin = api(service, ACME_KEY), api(service, ADMIN_KEY)
    decision = acme.route()
    other = "gpt-4-1106-preview"
    request = pb.FeedbackRequest(
        decision_id=decision.decision_id, model=other, status=pb.OUTCOME_STATUS_ERROR
    )
    for _ in range(6):
        assert acme.fails("Feedback", request, DENIED).startswith("model")
    for health in admin.stats().health:
        assert health.model != other or (health.state, health.error_rate) == ("closed", 0.0)
    fallback = decision.fallback_models[0]
    ack = acme.feedback(decision_id=decision.decision_id, model=fallback, quality=0.5)
    assert ack.disposition == pb.FEEDBACK_DISPOSITION_RECORDED_OFF_POLICY


def test_request_id_is_scoped_to_the_tenant(service: Service, api: Callable[..., Any]) -> None:
    """Two tenants using the same request_id get two decisions: only the same tenant's repeat
    is a replay (replayed = true, same decision_id)."""
    acme, beta = api(service, ACME_KEY), api(service, BETA_KEY)
    first = acme.route(request_id="req-1")
    other = beta.route(request_id="req-1")
    assert other.decision_id != first.decision_id
    assert other.replayed is False
    again = acme.route(request_id="req-1")
    assert (again.decision_id, again.replayed) == (first.decision_id, True)


def test_get_stats_is_scoped_to_the_callers_tenant(
    service: Service, api: Callable[..., Any]
) -> None:
    """GetStats with a tenant key shows that tenant's usage only, and the health of the
    models it may use only; naming another (or an unknown) tenant is PERMISSION_DENIED. An
    admin key sees every tenant (or the one it names) and every model's health; an admin
    naming an unknown tenant gets NOT_FOUND."""
    acme, beta, admin = api(service, ACME_KEY), api(service, BETA_KEY), api(service, ADMIN_KEY)
    for client, n in ((acme, 2), (beta, 3)):
        for _ in range(n):
            decision = client.route()
            client.feedback(decision_id=decision.decision_id, quality=1.0, cost_usd=0.001)

    own = acme.stats()
    assert {u.tenant for u in own.usage} <= {"acme", ""}
    assert sum(u.calls for u in own.usage if u.tenant == "acme" and u.model) == 2
    assert {h.model for h in own.health} <= set(ACME_MODELS)
    assert acme.stats(tenant="acme") == own
    for other in ("beta", "default", "nobody"):
        details = acme.fails("GetStats", pb.GetStatsRequest(tenant=other), DENIED)
        assert details.startswith("tenant")

    everything = admin.stats()
    totals = {u.tenant: u.calls for u in everything.usage if u.tenant and not u.model}
    assert totals == {"acme": 2, "beta": 3}
    assert {h.model for h in everything.health} >= {m for m in CATALOG.ids if m in ACME_MODELS}
    only_beta = admin.stats(tenant="beta")
    assert {u.tenant for u in only_beta.usage if u.tenant} == {"beta"}
    details = admin.fails(
        "GetStats", pb.GetStatsRequest(tenant="nobody"), grpc.StatusCode.NOT_FOUND
    )
    assert details.startswith("tenant")


def test_get_stats_hides_other_tenants_traffic_from_a_tenant(
    service: Service, api: Callable[..., Any]
) -> None:
    """A tenant key's GetStats health rows carry no figure that counts every tenant's traffic
    (requests_last_minute and in_flight are 0 although beta routed to the model and awaits
    feedback), while the breaker state stays; an admin sees the counts."""
    acme, beta, admin = api(service, ACME_KEY), api(service, BETA_KEY), api(service, ADMIN_KEY)
    model = ACME_MODELS[0]
    for _ in range(3):
        assert beta.route(candidate_models=[model]).model == model
    counts = {h.model: (h.requests_last_minute, h.in_flight) for h in admin.stats().health}
    assert counts[model] == (3, 3)
    seen = {h.model: h for h in acme.stats().health}
    assert seen[model].state == "closed"
    assert {(h.requests_last_minute, h.in_flight) for h in seen.values()} == {(0, 0)}
    assert {h.requests_last_minute for h in beta.stats().health} == {0}


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"tenants": [{"name": "t", "models": ["gpt-99"]}]}, "tenants.t.models"),
        ({"tenants": [{"name": "t", "objectives": ["cheapest"]}]}, "tenants.t.objectives"),
        ({"tenants": [{"name": "t", "default_objective": "cheapest"}]}, "default_objective"),
        ({"tenants": [{"name": "t", "store_prompts": "yes"}]}, "tenants.t.store_prompts"),
        ({"tenants": [{"name": "t", "api_key_sha256": "abc"}]}, "tenants.t.api_key_sha256"),
        ({"tenants": [{"name": "t", "quota": 5}]}, "unknown key"),
        ({"tenants": [{"models": []}]}, "needs a name"),
        (
            {
                "tenants": [
                    {"name": "a", "api_key_sha256": [hash_key("k")]},
                    {"name": "b", "api_key_sha256": [hash_key("k")]},
                ]
            },
            "listed twice",
        ),
        (
            {
                "auth": {"admin_key_sha256": [hash_key("k")]},
                "tenants": [{"name": "a", "api_key_sha256": [hash_key("k")]}],
            },
            "listed twice",
        ),
        ({"auth": {"required": "yes"}}, "auth.required"),
        ({"auth": {"keys": []}}, "unknown key"),
        (
            {
                "tenants": [
                    {"name": "t", "api_key_sha256": [hash_key("k1")]},
                    {"name": "t", "api_key_sha256": [hash_key("k2")]},
                ]
            },
            "tenants.t: the tenant is listed twice",
        ),
        ({"tenants": [{"name": "t", "budget": {"limit_usd": True}}]}, "tenants.t.budget.limit_usd"),
        (
            {"tenants": [{"name": "t", "budget": {"target_usd_per_request": float("nan")}}]},
            "tenants.t.budget.target_usd_per_request",
        ),
        (
            {
                "tenants": [
                    {
                        "name": "t",
                        "experiment": {"arms": [{"policy": "default", "weight": float("nan")}]},
                    }
                ]
            },
            "tenants.t.experiment.arms",
        ),
        (
            {"tenants": [{"name": "t", "objectives": ["economy"], "default_objective": "quality"}]},
            "tenants.t.default_objective",
        ),
    ],
)
def test_invalid_access_configuration_is_a_config_error(change: dict[str, Any], text: str) -> None:
    """Tenants naming unknown models or objectives, a non-boolean store_prompts, keys that are
    not a list or that two principals share, unknown keys, a tenant without a name and a
    non-boolean auth.required are ConfigErrors naming the key."""
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(change)
    assert text in caught.value.message


def test_digests_are_matched_whatever_their_hex_case() -> None:
    """A digest listed in upper-case hex names its key, for admin keys as for tenant keys; an
    admin key also listed (in the other case) for a tenant is a key listed twice."""
    admin = hash_key(ADMIN_KEY).upper()
    access = settings_from_mapping(
        {
            "auth": {"admin_key_sha256": [admin]},
            "tenants": [{"name": "t", "api_key_sha256": [hash_key(ACME_KEY).upper()]}],
        }
    ).access
    assert access.authenticate(ADMIN_KEY).admin
    assert access.authenticate(ACME_KEY).tenant.name == "t"
    with pytest.raises(ConfigError, match="listed twice"):
        settings_from_mapping(
            {
                "auth": {"admin_key_sha256": [admin]},
                "tenants": [{"name": "t", "api_key_sha256": [hash_key(ADMIN_KEY)]}],
            }
        )
