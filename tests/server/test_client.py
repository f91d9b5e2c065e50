"""banditroute.client against a real in-process server, a stopped one, a shedding one, a hung
one and scripted failures: deadlines, retries of idempotent calls, the fallback decision and
the handle that reports exactly once."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import duckdb
import grpc
import pytest
from client_fakes import ScriptedRouter, serving
from fault_helpers import StalledClient

from banditroute.client import Client, Decision, RetryPolicy, Status
from banditroute.client.client import RouteOptions
from banditroute.server.app import Service
from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb

FALLBACK = "gpt-3.5-turbo-1106"
HANG_S = 120.0
"""Bound on anything that could hang: only catches a hang."""
QUICK_RETRY = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    """``clients(target, **options)``: a Client with FALLBACK as its fallback model, quick
    retries and a generous deadline unless told otherwise; closed at teardown."""
    made: list[Client] = []

    def make(target: str, **options: object) -> Client:
        options.setdefault("fallback_model", FALLBACK)
        options.setdefault("retry", QUICK_RETRY)
        options.setdefault("timeout_s", 30.0)
        client = Client(target, **options)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _address(service: Service) -> str:
    return f"127.0.0.1:{service.port}"


def _feedback_rows(log: duckdb.DuckDBPyConnection) -> list[tuple[str, str, float]]:
    rows = log.execute("SELECT decision_id, status, latency_ms FROM feedback").fetchall()
    return [(str(d), str(s), float(latency)) for d, s, latency in rows]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- a real server ---------------------------------------------------------------------------


def test_a_decision_is_reported_once_with_what_the_caller_gives(
    service: Service, clients: Callable[..., Client]
) -> None:
    """``decide`` routes on the real server (a real decision, not a fallback); ``report``
    delivers the feedback (LEARNED) and a second ``report`` raises instead of sending twice."""
    client = clients(_address(service))
    with client.decide("Write a Python function that reverses a list.") as d:
        assert not d.decision.fallback
        assert d.decision.decision_id
        assert d.model == d.decision.response.model  # type: ignore[union-attr]
        ack = d.report(quality=0.9, cost_usd=0.0004, latency_ms=850.0)
        assert ack.delivered
        assert ack.disposition == "LEARNED"
        assert ack.feedback_count == 1
        with pytest.raises(RuntimeError, match="already reported"):
            d.report(quality=0.1)


@pytest.mark.parametrize(
    ("raised", "status"),
    [(None, "OK"), (ValueError("garbage answer"), "ERROR"), (TimeoutError(), "TIMEOUT")],
)
def test_leaving_the_block_reports_for_the_caller(
    service: Service,
    clients: Callable[..., Client],
    stopped_log: Callable[[Service], duckdb.DuckDBPyConnection],
    raised: Exception | None,
    status: str,
) -> None:
    """A block left without a report reports once by itself, with the latency it measured:
    OK when nothing escaped, ERROR for an exception (which still propagates), TIMEOUT for a
    TimeoutError."""
    client = clients(_address(service))
    handle = client.decide("What is the capital of France?")
    if raised is None:
        with handle:
            pass
    else:
        with pytest.raises(type(raised)), handle:
            raise raised
    assert handle.ack is not None
    assert handle.ack.delivered
    rows = _feedback_rows(stopped_log(service))
    assert [(d, s) for d, s, _ in rows] == [(handle.decision.decision_id, status)]
    assert rows[0][2] >= 0.0


def test_a_failed_automatic_report_never_hides_the_callers_exception(
    service: Service, clients: Callable[..., Client]
) -> None:
    """Leaving a handle's block with an exception after the client was closed: the report
    cannot be sent (ValueError on the closed channel), and the caller's own exception is what
    propagates, not that one."""
    client = clients(_address(service))
    handle = client.decide("What is the capital of France?")
    client.close()
    with pytest.raises(KeyError, match="the caller's"), handle:
        raise KeyError("the caller's")
    assert handle.reported


def test_a_discarded_decision_reports_nothing(
    service: Service,
    clients: Callable[..., Client],
    stopped_log: Callable[[Service], duckdb.DuckDBPyConnection],
) -> None:
    """``discard`` inside the block: no feedback is sent, neither then nor on leaving."""
    client = clients(_address(service))
    with client.decide("What is the capital of France?") as d:
        d.discard()
    assert _feedback_rows(stopped_log(service)) == []


def test_chat_messages_are_routed_on_their_text(
    service: Service, clients: Callable[..., Client]
) -> None:
    """OpenAI-style messages, content as a string or a list of parts, are routed."""
    client = clients(_address(service))
    decision = client.route(
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Add 2 and 3."}]},
        ]
    )
    assert not decision.fallback
    assert decision.decision_id


def test_errors_about_the_request_are_raised_not_hidden_by_a_fallback(
    service: Service, clients: Callable[..., Client]
) -> None:
    """An unknown objective is INVALID_ARGUMENT, raised as is (a fallback would hide a bug);
    giving both or neither of prompt and messages is a ValueError before any call."""
    client = clients(_address(service))
    with pytest.raises(grpc.RpcError) as caught:
        client.route("Hello?", objective="no-such-objective")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="exactly one"):
        client.route()
    with pytest.raises(ValueError, match="exactly one"):
        client.route("Hi", messages=[{"role": "user", "content": "Hi"}])


def test_every_route_request_field_is_a_typed_route_option(
    service: Service, clients: Callable[..., Client]
) -> None:
    """``RouteOptions`` names every RouteRequest field a caller may set (``session_id`` was
    missing, so a typed caller could not keep a conversation on one model), and a session's
    second Route through the client is sticky."""
    own = {"prompt", "messages", "request_id"}
    assert set(RouteOptions.__annotations__) == {
        f.name for f in pb.RouteRequest.DESCRIPTOR.fields if f.name not in own
    }
    client = clients(_address(service))
    first = client.route("What is the capital of France?", session_id="chat-1")
    second = client.route("And of Spain?", session_id="chat-1")
    assert second.model == first.model
    assert second.response is not None
    assert second.response.sticky


def test_a_tenant_over_its_hard_budget_cap_is_refused_not_given_the_fallback(
    make_service: Callable[..., Service], clients: Callable[..., Client]
) -> None:
    """A tenant whose spend reached its ``limit_usd`` is refused on purpose (RESOURCE_EXHAUSTED,
    "budget: ..."): the client raises it after one attempt instead of retrying it and
    answering the fallback model, whose call would spend past the cap the tenant set."""
    key = "key-acme-client-budget"
    tenant = {"name": "acme", "api_key_sha256": [hash_key(key)],
              "budget": {"period": "day", "limit_usd": 0.01}}  # fmt: skip
    service = make_service({"tenants": [tenant]})
    client = clients(_address(service), api_key=key)
    with client.decide("What is the capital of France?") as d:
        assert not d.decision.fallback
        d.report(quality=1.0, cost_usd=0.01)
    with pytest.raises(grpc.RpcError) as caught:
        client.route("What is the capital of France?")
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert caught.value.details().startswith("budget")  # type: ignore[attr-defined]


def test_a_retried_route_whose_answer_was_lost_returns_the_same_decision(
    service: Service, clients: Callable[..., Client]
) -> None:
    """The first answer is lost on the way back (UNAVAILABLE after the server decided): the
    client's retry carries the same request_id, so the server answers the same decision again
    (``replayed``) instead of making a second one."""
    proxy = ScriptedRouter(forward_to=_address(service), lose_first=grpc.StatusCode.UNAVAILABLE)
    with serving(proxy) as address:
        decision = clients(address).route("What is the capital of France?")
    assert not decision.fallback
    first, second = proxy.requests
    assert first.request_id
    assert first.request_id == second.request_id == decision.request_id
    assert decision.response is not None
    assert decision.response.replayed


# -- service unavailable, shedding, hung -----------------------------------------------------


def test_a_stopped_server_gives_the_fallback_model(
    make_service: Callable[..., Service], clients: Callable[..., Client]
) -> None:
    """With the server stopped, ``route`` answers a fallback decision for the configured
    model (reason UNAVAILABLE) and its feedback is a no-op; without a fallback model the
    UNAVAILABLE error is raised."""
    service = make_service()
    address = _address(service)
    service.stop()
    client = clients(address, fallback_models=["mistralai/mistral-7b-chat"])
    with client.decide("What is the capital of France?") as d:
        assert d.decision == Decision(
            model=FALLBACK,
            fallback_models=("mistralai/mistral-7b-chat",),
            decision_id=None,
            probability=1.0,
            fallback=True,
            fallback_reason="UNAVAILABLE",
            request_id=d.decision.request_id,
        )
        ack = d.report(quality=1.0)
    assert not ack.delivered
    assert ack.reason == "fallback decision"
    with pytest.raises(grpc.RpcError) as caught:
        clients(address, fallback_model=None).route("Hello?")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_feedback_to_a_server_that_went_away_is_not_delivered_and_does_not_raise(
    make_service: Callable[..., Service], clients: Callable[..., Client]
) -> None:
    """A decision made, then the server stops: the report says ``delivered=False`` with the
    reason instead of raising into the caller's request path."""
    service = make_service()
    client = clients(_address(service))
    handle = client.decide("What is the capital of France?")
    service.stop()
    ack = handle.report(quality=0.5)
    assert not ack.delivered
    assert ack.reason == "UNAVAILABLE"


def test_a_shedding_server_gives_the_fallback_model_then_routes_again(
    make_service: Callable[..., Service], clients: Callable[..., Client]
) -> None:
    """With server.max_concurrent_rpcs = 1 held by a half-sent Route, Route is shed with
    RESOURCE_EXHAUSTED: after its retries the client answers the fallback model (reason
    RESOURCE_EXHAUSTED); once the slot is free it routes for real again."""
    service = make_service(max_workers=2, max_concurrent_rpcs=1)
    client = clients(_address(service))
    assert not client.route("warm up").fallback
    stalled = StalledClient(service.port, "/banditroute.v1.RouterService/Route", streams=1)
    try:
        deadline = time.monotonic() + HANG_S
        while not (decision := client.route("What is the capital of France?")).fallback:
            assert time.monotonic() < deadline, "the stalled call never filled the limit"
            stalled.refill()
            time.sleep(0.05)
        assert decision.model == FALLBACK
        assert decision.fallback_reason == "RESOURCE_EXHAUSTED"
    finally:
        stalled.close()
    deadline = time.monotonic() + HANG_S
    while client.route("What is the capital of France?").fallback:
        assert time.monotonic() < deadline, "the limit was not freed"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED],
)
def test_transient_failures_are_retried_with_the_same_request_id(
    clients: Callable[..., Client], code: grpc.StatusCode
) -> None:
    """Two failures with a retryable code, then an answer: three attempts, one request_id,
    and the real decision; with only two attempts allowed, the fallback (reason: the code)."""
    router = ScriptedRouter([code, code])
    with serving(router) as address:
        decision = clients(address).route("Hello?")
        assert decision.model == "scripted-model"
        assert len(router.requests) == 3
        assert len({request.request_id for request in router.requests}) == 1
        router.codes = [code, code]
        two = clients(address, retry=RetryPolicy(attempts=2, backoff_s=0.0)).route("Hello?")
    assert two.fallback
    assert two.fallback_reason == code.name


def test_a_non_transient_failure_is_not_retried(clients: Callable[..., Client]) -> None:
    """PERMISSION_DENIED is raised after one attempt (retrying cannot change the answer)."""
    router = ScriptedRouter([grpc.StatusCode.PERMISSION_DENIED])
    with serving(router) as address, pytest.raises(grpc.RpcError) as caught:
        clients(address).route("Hello?")
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert len(router.requests) == 1


def test_feedback_is_retried_only_when_allowed(clients: Callable[..., Client]) -> None:
    """A Feedback shed once is sent again (safe under ``combine = first``); with
    ``retry_feedback=False`` (for ``mean``/``sum``) it is sent once and not delivered."""
    router = ScriptedRouter()
    with serving(router) as address:
        decision = clients(address).route("Hello?")
        router.requests.clear()
        router.codes = [grpc.StatusCode.UNAVAILABLE]
        ack = clients(address).feedback(decision, status=Status.OK, quality=1.0)
        assert ack.delivered
        assert len(router.requests) == 2
        router.requests.clear()
        router.codes = [grpc.StatusCode.UNAVAILABLE]
        once = clients(address, retry_feedback=False).feedback(decision, quality=1.0)
    assert not once.delivered
    assert once.reason == "UNAVAILABLE"
    assert len(router.requests) == 1


def test_a_hung_server_gives_the_fallback_model_at_the_deadline(
    clients: Callable[..., Client],
) -> None:
    """A server whose Route never answers: the call ends at the client's deadline with a
    fallback decision (reason DEADLINE_EXCEEDED), not when the server gets round to it. The
    only time bound is HANG_S, which catches a hang."""
    router = ScriptedRouter()
    router.hang.set()
    with serving(router) as address:
        # 5 s, not less: on a loaded machine a shorter deadline can pass before the call even
        # reaches the server, and the test is about a server that got the call and hangs.
        client = clients(address, timeout_s=5.0)
        results: list[Decision] = []
        caller = threading.Thread(target=lambda: results.append(client.route("Hello?")))
        caller.start()
        caller.join(HANG_S)
        hung = caller.is_alive()
        router.release.set()
        caller.join(HANG_S)
    assert not hung, "the client waited past its deadline"
    assert router.arrived.is_set()
    [decision] = results
    assert decision.fallback
    assert decision.fallback_reason == "DEADLINE_EXCEEDED"


def test_nothing_listening_is_a_fallback_too(clients: Callable[..., Client]) -> None:
    """A port where nothing ever listened: fallback, reason UNAVAILABLE."""
    decision = clients(f"127.0.0.1:{_free_port()}").route("Hello?")
    assert decision.fallback
    assert decision.fallback_reason == "UNAVAILABLE"


def test_bad_settings_are_refused_at_construction() -> None:
    """A non-positive timeout, fallback_models without fallback_model and zero attempts are
    ValueErrors naming the setting."""
    with pytest.raises(ValueError, match="timeout_s"):
        Client("127.0.0.1:1", timeout_s=0.0)
    with pytest.raises(ValueError, match="fallback_model"):
        Client("127.0.0.1:1", fallback_models=["a"])
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


def test_closing_the_client_cancels_its_calls_without_retry_or_fallback(
    clients: Callable[..., Client],
) -> None:
    """A call in progress when its own client closes ends with CANCELLED raised: a
    cancellation the caller caused is neither retried nor answered with a fallback; a call
    after close raises ValueError."""
    router = ScriptedRouter()
    router.hang.set()
    with serving(router) as address:
        client = clients(address)
        errors: list[BaseException] = []

        def call() -> None:
            try:
                client.route("Hello?")
            except (grpc.RpcError, ValueError) as error:
                errors.append(error)

        caller = threading.Thread(target=call)
        caller.start()
        assert router.arrived.wait(HANG_S)
        client.close()
        caller.join(HANG_S)
        hung = caller.is_alive()
        router.release.set()
    assert not hung
    [error] = errors
    assert isinstance(error, grpc.RpcError)
    assert error.code() == grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]
    assert len(router.requests) == 1
    with pytest.raises(ValueError, match="closed"):
        client.route("Hello?")
