"""Sticky sessions (issue 15): Routes with one ``session_id`` stay on one model until it fails,
is excluded or stops being eligible; sticky decisions are logged as forced (probability 1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fake_clock import FakeClock

from banditroute.config import Settings
from banditroute.decisions import Decision, FeedbackReport, RouteQuery
from banditroute.errors import AlreadyExists, ConfigError
from banditroute.outcomes import OutcomeStatus
from banditroute.router import Router
from banditroute.sessions import SessionSettings, SessionTable
from banditroute.store.base import EventLog
from banditroute.store.memory import MemoryLog

PROMPT = "Explain what a hash table is."
GPT4 = "gpt-4-1106-preview"
PII_MODELS = {"meta/llama-2-70b-chat", "mistralai/mixtral-8x7b-chat", "mistralai/mistral-7b-chat"}
MakeRouter = Callable[..., tuple[Router, EventLog]]


def route(router: Router, session: str = "conv-1", **fields: Any) -> Decision:
    fields.setdefault("prompt", PROMPT)
    return router.route(RouteQuery(session_id=session, **fields))


def logged(event_log: EventLog, decision_id: str) -> Any:
    assert isinstance(event_log, MemoryLog)
    return next(r for r in event_log.decisions if r.decision_id == decision_id)


def test_a_session_stays_on_its_first_model(make_router: MakeRouter) -> None:
    """Every Route of a session after the first gets the first one's model, marked sticky,
    logged with probability 1 (one-hot) and the session's keyed hash, not drawn; the first is
    a draw with its true probability. Without a session the uniform policy varies."""
    router, event_log = make_router()
    first = route(router)
    assert not first.sticky
    assert first.probability == pytest.approx(1 / len(first.ranking))
    later = [route(router, prompt=f"Question {i}: what is {i} squared?") for i in range(12)]
    assert {d.model for d in later} == {first.model}
    assert all(d.sticky for d in later)
    assert all(d.probability == 1.0 for d in later)
    assert all(not d.explored for d in later)
    sticky = later[0]
    assert sticky.ranking[0] == (first.model, 1.0)
    assert {p for _, p in sticky.ranking[1:]} == {0.0}
    assert sticky.fallback_models == tuple(m for m, _ in sticky.ranking[1:])
    record = logged(event_log, sticky.decision_id)
    assert record.sticky
    assert record.probability == 1.0
    assert sorted(record.probabilities) == [0.0] * (len(record.probabilities) - 1) + [1.0]
    assert record.session
    assert "conv-1" not in record.session
    start = logged(event_log, first.decision_id)
    assert not start.sticky
    assert start.session == record.session
    free = {router.route(RouteQuery(prompt=f"Question {i}?")).model for i in range(30)}
    assert len(free) > 1


def test_a_failure_with_the_sessions_model_makes_a_new_sticky_choice(
    make_router: MakeRouter,
) -> None:
    """A feedback with an error status for the session's model breaks the stickiness: the
    next Route is a fresh draw, and its model sticks from then on."""
    router, _ = make_router()
    first = route(router, candidate_models=[GPT4, "claude-v2"])
    held = route(router)
    assert held.sticky
    router.feedback(FeedbackReport(held.decision_id, status=OutcomeStatus.TIMEOUT))
    fresh = route(router)
    assert not fresh.sticky
    assert fresh.probability < 1.0
    again = route(router)
    assert again.sticky
    assert again.model == fresh.model
    if first.model != fresh.model:  # a late failure of a model the session left: no change
        router.feedback(FeedbackReport(first.decision_id, status=OutcomeStatus.ERROR))
        assert route(router).sticky


def test_a_failure_then_success_keeps_the_model(make_router: MakeRouter) -> None:
    """The session's last outcome decides: an OK after an error restores the stickiness."""
    router, _ = make_router()
    first = route(router)
    second = route(router)
    router.feedback(FeedbackReport(first.decision_id, status=OutcomeStatus.ERROR))
    router.feedback(FeedbackReport(second.decision_id, status=OutcomeStatus.OK))
    assert route(router).sticky


def test_exclusion_and_ineligibility_break_the_session(make_router: MakeRouter) -> None:
    """An excluded model, a candidate list without it, personal data it may not receive and
    an open breaker each give a fresh draw among the eligible models (the session then moves
    to it)."""
    router, _ = make_router()
    assert route(router, candidate_models=[GPT4]).model == GPT4
    assert route(router).model == GPT4
    excluded = route(router, excluded_models=[GPT4])
    assert not excluded.sticky
    assert excluded.model != GPT4
    assert route(router).model == excluded.model  # the session moved
    route(router, candidate_models=[GPT4])  # back onto GPT-4
    narrowed = route(router, candidate_models=["claude-v2", "claude-v1"])
    assert not narrowed.sticky
    assert narrowed.model in {"claude-v2", "claude-v1"}
    route(router, candidate_models=[GPT4])
    pii = route(router, prompt="Write to jane.doe@example.com about the invoice.")
    assert not pii.sticky
    assert pii.model in PII_MODELS
    route(router, candidate_models=[GPT4])
    router.health.reset(GPT4)
    for _ in range(router.settings.health.consecutive_failures):
        router.health.record_outcome(GPT4, OutcomeStatus.ERROR, 100.0, "default")
    assert router.health.breaker_state(GPT4) == "open"
    broken = route(router)
    assert not broken.sticky
    assert broken.model != GPT4


def test_tenants_cannot_share_or_hijack_a_session(
    make_router: MakeRouter, make_settings: Callable[..., Settings]
) -> None:
    """The same session_id of two tenants names two sessions: tenant B's first Route with A's
    id is a fresh draw, and B's choice does not move A's session."""
    router, _ = make_router(make_settings({"tenants": [{"name": "a"}, {"name": "b"}]}))
    assert route(router, tenant="a", candidate_models=[GPT4]).model == GPT4
    other = route(router, tenant="b", excluded_models=[GPT4])
    assert not other.sticky
    assert route(router, tenant="b").model == other.model
    a_again = route(router, tenant="a")
    assert a_again.sticky
    assert a_again.model == GPT4


def test_a_tenant_without_sessions_ignores_session_ids(
    make_router: MakeRouter, make_settings: Callable[..., Settings]
) -> None:
    """``[[tenants]] sessions = false``: session_id keeps nothing and nothing is logged."""
    settings = make_settings({"tenants": [{"name": "default", "sessions": False}]})
    router, event_log = make_router(settings)
    decisions = [route(router) for _ in range(20)]
    assert not any(d.sticky for d in decisions)
    assert len({d.model for d in decisions}) > 1
    assert "session" not in logged(event_log, decisions[0].decision_id).constraints
    assert len(router.sessions) == 0
    with pytest.raises(ConfigError, match=r"tenants\.x\.sessions"):
        make_settings({"tenants": [{"name": "x", "sessions": "yes"}]})


def test_sessions_expire_after_ttl(
    make_router: MakeRouter, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """An idle session expires ttl_s after its last Route (each Route renews it); the next
    Route starts it afresh."""
    router, _ = make_router(make_settings({"sessions": {"ttl_s": 60.0}}))
    route(router, candidate_models=[GPT4])
    clock.advance(59.0)
    assert route(router).sticky  # renewed at T0 + 59
    clock.advance(59.0)
    assert route(router).sticky
    clock.advance(60.0)
    expired = route(router, excluded_models=[GPT4])
    assert not expired.sticky
    clock.advance(61.0)
    assert not route(router).sticky


def test_the_session_table_is_bounded(
    make_router: MakeRouter, make_settings: Callable[..., Settings]
) -> None:
    """Past ``max_sessions`` the least recently used session is forgotten."""
    router, _ = make_router(make_settings({"sessions": {"max_sessions": 2}}))
    for name in ("s1", "s2", "s3"):
        route(router, session=name)
    assert len(router.sessions) == 2
    assert route(router, session="s3").sticky
    assert route(router, session="s2").sticky
    assert not route(router, session="s1").sticky  # evicted; now it evicts s3
    assert len(router.sessions) == 2
    with pytest.raises(ConfigError, match=r"max_sessions"):
        make_settings({"sessions": {"max_sessions": 0}})


def test_session_table_unit() -> None:
    """The table: unknown -> None, assign, failure and recovery, expiry, eviction, the
    count of live sessions."""
    table = SessionTable()
    settings = SessionSettings(ttl_s=10.0, max_sessions=1)
    key = ("t", "h")
    assert table.model(key, 0.0, settings) is None
    table.assign(key, "m", 0.0, settings)
    assert table.model(key, 5.0, settings) == "m"
    table.outcome(key, "other", ok=False)
    assert table.model(key, 5.0, settings) == "m"
    table.outcome(key, "m", ok=False)
    assert table.model(key, 5.0, settings) is None
    table.outcome(key, "m", ok=True)
    assert table.model(key, 5.0, settings) == "m"
    assert table.model(key, 10.0, settings) is None
    table.assign(key, "m", 20.0, settings)
    table.assign(("t", "g"), "n", 21.0, settings)
    assert table.model(key, 21.0, settings) is None
    assert len(table) == 1
    assert table.live(30.0, settings) == 1
    assert table.live(31.0, settings) == 0  # ("t", "g") last used at 21: expired


def test_a_retried_request_id_replays_the_session_decision(make_router: MakeRouter) -> None:
    """A request_id retry returns the same decision (session and all); a different session_id
    under the same request_id is another request (ALREADY_EXISTS)."""
    router, _ = make_router()
    first = route(router, request_id="r1")
    assert route(router, request_id="r1").decision_id == first.decision_id
    with pytest.raises(AlreadyExists):
        route(router, session="conv-2", request_id="r1")


def test_restored_sticky_decisions_keep_their_flag(
    make_router: MakeRouter, clock: FakeClock
) -> None:
    """A restart reloads a pending sticky decision as sticky: a retry of its request_id on
    the restarted router replays it with the flag (the session table itself starts empty:
    the next new Route of the session is a fresh draw)."""
    router, event_log = make_router()
    route(router)
    held = route(router, request_id="r-held")
    assert held.sticky
    restarted, _ = make_router(event_log=event_log)
    assert restarted.restore_pending() == 2
    replayed = route(restarted, request_id="r-held")
    assert (replayed.decision_id, replayed.replayed) == (held.decision_id, True)
    assert replayed.sticky
    assert not route(restarted).sticky
