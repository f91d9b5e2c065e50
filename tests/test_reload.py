"""Router.reload: new settings swapped in at once, learning and pending decisions kept, and what
only a restart can change refused whole."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from banditroute.config import Settings, settings_from_mapping
from banditroute.decision_ids import DecisionIds
from banditroute.decisions import Disposition, FeedbackReport, RouteQuery
from banditroute.errors import FailedPrecondition, InvalidArgument
from banditroute.features import extract
from banditroute.policies.base import Policy
from banditroute.policies.costaware import CostAwarePolicy
from banditroute.policies.vw import VWPolicy
from banditroute.router import Router
from banditroute.store.memory import MemoryLog

PROMPT = "What is the capital of France?"
MODELS: dict[str, dict[str, Any]] = {
    "alpha": {"provider": "p1", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0},
    "beta": {"provider": "p2", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0},
    "gamma": {"provider": "p3", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0},
}


def _settings(models: list[str], **sections: Any) -> Settings:
    entries = [{"id": name, **MODELS[name]} for name in models]
    return settings_from_mapping({"models": entries, **copy.deepcopy(sections)})


def _router(settings: Settings, policy: Policy, **kwargs: Any) -> Router:
    return Router(settings, policy, MemoryLog(), **kwargs)


def _teach(router: Router, good: str, bad: str, rounds: int) -> None:
    """Feedback that makes ``good`` worth 1 and ``bad`` worth 0 on the test prompt."""
    for _ in range(rounds):
        for model in (good, bad):
            decision = router.route(RouteQuery(prompt=PROMPT, candidate_models=(model,)))
            quality = 1.0 if model == good else 0.0
            router.feedback(FeedbackReport(decision.decision_id, quality=quality))


@pytest.mark.parametrize("make_policy", [CostAwarePolicy, VWPolicy], ids=["costaware", "vw"])
def test_adding_a_model_keeps_what_the_policy_learned(make_policy: Callable[[], Policy]) -> None:
    """After feedback teaches the policy to prefer alpha over beta, a reload that adds gamma
    leaves the policy's state byte for byte as it was (same version, same distribution over
    alpha and beta), and gamma becomes eligible at once, starting from the prior."""
    policy = make_policy()
    router = _router(_settings(["alpha", "beta"]), policy)
    _teach(router, "alpha", "beta", rounds=30)
    context = extract(PROMPT)
    pair = (router.catalog.get("alpha"), router.catalog.get("beta"))
    before = policy.distribution(context, pair, explore=True)
    state, version = policy.save(), policy.version
    assert before[0] > before[1]

    change = router.reload(_settings(["alpha", "beta", "gamma"]))

    assert change.models_added == ("gamma",)
    assert (change.models_removed, change.models_changed, change.keys) == ((), (), ())
    assert policy.save() == state
    assert policy.version == version
    after = policy.distribution(context, (router.catalog.get("alpha"), router.catalog.get("beta")))
    np.testing.assert_allclose(after, before)
    decision = router.route(RouteQuery(prompt=PROMPT, candidate_models=("gamma",)))
    assert decision.model == "gamma"
    assert {model for model, _ in router.route(RouteQuery(prompt=PROMPT)).ranking} == {
        "alpha", "beta", "gamma",
    }  # fmt: skip


@pytest.mark.parametrize("make_policy", [CostAwarePolicy, VWPolicy], ids=["costaware", "vw"])
def test_removed_models_pending_decision_still_takes_feedback(
    make_policy: Callable[[], Policy],
) -> None:
    """A decision for gamma made before a reload that removes gamma (and drops it from the
    tenant's allow-list) still accepts feedback, naming gamma or not: it is LEARNED, priced
    from gamma's entry at decision time; gamma is never chosen again and a new decision's
    feedback naming it is INVALID_ARGUMENT."""
    tenant = {"name": "acme", "models": ["alpha", "gamma"]}
    policy = make_policy()
    router = _router(_settings(["alpha", "beta", "gamma"], tenants=[tenant]), policy)
    query = RouteQuery(prompt=PROMPT, candidate_models=("gamma",), tenant="acme")
    first, second = router.route(query), router.route(query)

    router.reload(_settings(["alpha", "beta"], tenants=[{**tenant, "models": ["alpha"]}]))

    updates = policy.updates
    result = router.feedback(
        FeedbackReport(first.decision_id, model="gamma", quality=0.5, tenant="acme",
                       input_tokens=1000, output_tokens=500)
    )  # fmt: skip
    assert result.disposition == Disposition.LEARNED
    assert router.log.feedback[-1].cost_usd == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    assert (
        router.feedback(FeedbackReport(second.decision_id, quality=0.5, tenant="acme")).disposition
        == Disposition.LEARNED
    )
    assert policy.updates == updates + 2
    chosen = {router.route(RouteQuery(prompt=f"{PROMPT} {i}")).model for i in range(30)}
    assert "gamma" not in chosen
    with pytest.raises(InvalidArgument, match="candidate_models"):
        router.route(RouteQuery(prompt=PROMPT, candidate_models=("gamma",)))
    fresh = router.route(RouteQuery(prompt=PROMPT, candidate_models=("alpha",)))
    with pytest.raises(InvalidArgument, match="model"):
        router.feedback(FeedbackReport(fresh.decision_id, model="gamma", quality=1.0))


def test_a_route_under_way_during_a_reload_uses_one_settings_throughout() -> None:
    """A reload landing in the middle of a Route (here: while it draws its decision id, after
    the routing rules were matched and before the eligible models are computed) does not mix
    the two: the route completes wholly under the settings it started with (its rule pins
    gamma, which the new settings remove along with the rule), and the next route uses the
    new ones."""
    old = _settings(["alpha", "beta", "gamma"], rules=[{"name": "to-gamma", "pin": "gamma"}])
    new = _settings(["alpha", "beta"])
    ids = DecisionIds()
    reloads: list[Router] = []

    def new_id() -> str:
        if reloads:
            reloads.pop().reload(new)
        return ids()

    router = _router(old, CostAwarePolicy(), new_id=new_id)
    reloads.append(router)
    decision = router.route(RouteQuery(prompt=PROMPT))
    assert (decision.model, decision.rule) == ("gamma", "to-gamma")
    assert router.settings is new
    after = router.route(RouteQuery(prompt=PROMPT))
    assert after.model in {"alpha", "beta"}
    assert after.rule == ""


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"server": {"port": 50052}}, "server.port"),
        ({"server": {"host": "0.0.0.0"}}, "server.host"),
        ({"server": {"workers": 2}}, "server.workers"),
        ({"log": {"path": "elsewhere.duckdb"}}, "log.path"),
        ({"policy": {"kind": "vw"}}, "policy.kind"),
        ({"tls": {"cert_file": "c.pem", "key_file": "k.pem"}}, "tls.cert_file"),
        ({"health": {"latency_window": 20}}, "health.latency_window"),
    ],
)
def test_what_only_a_restart_changes_is_refused_whole(sections: dict[str, Any], key: str) -> None:
    """A reload whose settings change a key only a restart can apply is FAILED_PRECONDITION
    naming that key, and nothing of it is applied (the model it also adds stays unknown)."""
    current = _settings(["alpha", "beta"], policy={"kind": "costaware"})
    router = _router(current, CostAwarePolicy())
    policy = {"kind": "costaware", **sections.pop("policy", {})}
    with pytest.raises(FailedPrecondition, match=key) as caught:
        router.reload(_settings(["alpha", "beta", "gamma"], policy=policy, **sections))
    assert caught.value.field == key
    assert router.settings is current
    assert "gamma" not in router.catalog


def test_reload_reports_changed_models_and_keys_and_applies_them() -> None:
    """A re-priced model is reported changed and the max_cost_usd constraint uses the new
    price at once; changed objective weights, health settings and request limits are listed
    by their configuration keys and take effect."""
    router = _router(_settings(["alpha", "beta"]), CostAwarePolicy())
    cheap = RouteQuery(prompt=PROMPT, candidate_models=("alpha",), max_cost_usd=0.001)
    router.route(cheap)
    pricier = copy.deepcopy(MODELS)
    pricier["alpha"]["output_usd_per_mtok"] = 200.0
    entries = [{"id": name, **pricier[name]} for name in ("alpha", "beta")]
    change = router.reload(
        settings_from_mapping({
            "models": entries,
            "objectives": {"balanced": {"cost": 10.0}},
            "health": {"cooldown_s": 5.0},
            "server": {"max_prompt_chars": 40},
        })
    )  # fmt: skip
    assert change.models_changed == ("alpha",)
    assert change.keys == (
        "health.cooldown_s", "objectives.balanced.cost", "server.max_prompt_chars",
    )  # fmt: skip
    assert router.catalog.get("alpha").output_usd_per_mtok == 200.0
    assert router.health.settings.cooldown_s == 5.0
    with pytest.raises(FailedPrecondition):
        router.route(cheap)
    with pytest.raises(InvalidArgument, match="limit is 40"):
        router.route(RouteQuery(prompt="x" * 41))


def test_a_tenant_budget_change_keeps_the_spend() -> None:
    """Raising a tenant's hard cap by a reload keeps the period's spend: the tenant that hit
    the old cap routes again, and its spend figure is unchanged."""
    tenant = {"name": "acme", "budget": {"limit_usd": 0.01}}
    router = _router(_settings(["alpha"], tenants=[tenant]), CostAwarePolicy())
    decision = router.route(RouteQuery(prompt=PROMPT, tenant="acme"))
    router.feedback(FeedbackReport(decision.decision_id, cost_usd=0.01, tenant="acme"))
    with pytest.raises(Exception, match="budget"):
        router.route(RouteQuery(prompt=PROMPT, tenant="acme"))
    router.reload(_settings(["alpha"], tenants=[{**tenant, "budget": {"limit_usd": 1.0}}]))
    router.route(RouteQuery(prompt=PROMPT, tenant="acme"))
    status = router.budget_status("acme")
    assert status is not None
    assert (status.spend_usd, status.limit_usd) == (0.01, 1.0)


def test_a_model_a_reload_added_and_the_next_removed_still_takes_its_feedback() -> None:
    """Feedback may name every model of every catalogue since the start: a decision for
    gamma, added by one reload and removed by the next, accepts feedback naming gamma
    (LEARNED), as a decision for a model of the first catalogue does."""
    router = _router(_settings(["alpha", "beta"]), CostAwarePolicy())
    router.reload(_settings(["alpha", "beta", "gamma"]))
    decision = router.route(RouteQuery(prompt=PROMPT, candidate_models=("gamma",)))
    assert decision.model == "gamma"
    router.reload(_settings(["alpha", "beta"]))
    report = FeedbackReport(decision.decision_id, model="gamma", quality=0.5)
    assert router.feedback(report).disposition == Disposition.LEARNED


def test_routes_and_feedback_during_repeated_reloads_see_one_catalogue_each() -> None:
    """Four threads route and report feedback while the catalogue is swapped back and forth
    between {alpha, beta} and {beta, gamma} all along: every decision ranks exactly one of the two
    catalogues (never a mix), and every feedback, whichever catalogue is in force when it
    arrives, is LEARNED."""
    first, second = _settings(["alpha", "beta"]), _settings(["beta", "gamma"])
    router = _router(first, CostAwarePolicy())
    catalogues = {frozenset(first.catalog.ids), frozenset(second.catalog.ids)}
    seen: list[frozenset[str]] = []
    dispositions: list[Disposition] = []
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for index in range(40):
                decision = router.route(RouteQuery(prompt=f"{PROMPT} {thread} {index}"))
                seen.append(frozenset(model for model, _ in decision.ranking))
                report = FeedbackReport(decision.decision_id, quality=0.5)
                dispositions.append(router.feedback(report).disposition)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    swaps, deadline = 0, time.monotonic() + 120.0  # the deadline catches a hang only
    while any(thread.is_alive() for thread in threads):
        assert time.monotonic() < deadline
        router.reload(second if swaps % 2 == 0 else first)
        swaps += 1
    assert swaps > 0
    assert errors == []
    assert set(seen) <= catalogues
    assert dispositions == [Disposition.LEARNED] * 160
