"""banditroute as a LiteLLM Router plugin, with the real litellm package against a fake
OpenAI-compatible model server on 127.0.0.1 (no network): ``model="auto"`` calls the
deployment Route chose, Feedback carries the call's tokens, cost and latency, failed calls
report their status, and with banditroute down LiteLLM still answers from the fallback
deployment."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the cost map

import asyncio
import importlib
import queue
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import litellm
import pytest
from fake_llm import COMPLETION_TOKENS, PROMPT_TOKENS, fake_llm
from litellm import Router

from banditroute.client import Client, Decision, FeedbackAck, Outcome, RetryPolicy
from banditroute.client.litellm_router import BanditrouteStrategy
from banditroute.server.app import Service

pytestmark = pytest.mark.filterwarnings(
    # pydantic's note on litellm's own TypedDicts, raised inside litellm while it answers.
    "ignore:Items? .* using the `ReadOnly` qualifier:UserWarning"
)

HANG_S = 120.0
"""Bound on waiting for a report: only catches a hang."""
GPT35 = "gpt-3.5-turbo-1106"
MISTRAL = "mistralai/mistral-7b-chat"
INPUT_COST = 2e-6
OUTPUT_COST = 3e-6
MESSAGES = [{"role": "user", "content": "Write a Python function that reverses a list."}]

Report = tuple[Decision, Outcome, FeedbackAck]


def _deployment(base: str, name: str, *, catalogue: str | None = None) -> dict[str, Any]:
    """A deployment of the ``auto`` group calling the fake server's ``name`` endpoint."""
    info: dict[str, Any] = {"id": f"dep-{name}"}
    if catalogue is not None:
        info["banditroute_model"] = catalogue
    return {
        "model_name": "auto",
        "litellm_params": {
            "model": f"openai/{name}",
            "api_base": f"{base}/{name}/v1",
            "api_key": "not-a-key",
            "input_cost_per_token": INPUT_COST,
            "output_cost_per_token": OUTPUT_COST,
            "timeout": 2.0,
        },
        "model_info": info,
    }


@pytest.fixture
def llm() -> Iterator[tuple[str, list[str]]]:
    """The fake model server: its base URL and the endpoints called."""
    with fake_llm() as served:
        yield served


@pytest.fixture
def gateway() -> Iterator[Callable[..., tuple[Router, queue.Queue[Report]]]]:
    """``gateway(target, deployments, models=None, grade=None)``: a LiteLLM Router (no
    retries) with the banditroute plugin installed, its client falling back to GPT35; returns
    it with the queue its reports arrive on. Uninstalled and closed at teardown."""
    installed: list[tuple[BanditrouteStrategy, Client]] = []

    def make(
        target: str,
        deployments: list[dict[str, Any]],
        models: dict[str, str] | None = None,
        grade: Any = None,
    ) -> tuple[Router, queue.Queue[Report]]:
        client = Client(
            target,
            fallback_model=GPT35,
            timeout_s=30.0,
            retry=RetryPolicy(attempts=2, backoff_s=0.01, max_backoff_s=0.01),
        )
        reports: queue.Queue[Report] = queue.Queue()
        strategy = BanditrouteStrategy(
            client,
            models=models,
            grade=grade,
            on_report=lambda d, o, a: reports.put((d, o, a)),
        )
        router = Router(model_list=deployments, num_retries=0)
        strategy.install(router)
        installed.append((strategy, client))
        return router, reports

    yield make
    for strategy, client in installed:
        strategy.uninstall()
        client.close()


def _address(service: Service) -> str:
    return f"127.0.0.1:{service.port}"


def _feedback(log: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    return log.execute(
        "SELECT decision_id, model, status, input_tokens, output_tokens, cost_usd, latency_ms,"
        " quality FROM feedback ORDER BY time"
    ).fetchall()


def test_auto_calls_the_deployment_route_chose_and_reports_its_outcome(
    service: Service,
    llm: tuple[str, list[str]],
    gateway: Callable[..., tuple[Router, queue.Queue[Report]]],
    stopped_log: Callable[[Service], duckdb.DuckDBPyConnection],
) -> None:
    """Four async calls of ``model="auto"`` over two deployments (one mapped by model_info,
    one by the ``models`` mapping): each answer comes from the deployment of the model Route
    decided, and each decision's Feedback arrives once with the usage's tokens, LiteLLM's
    response_cost, a latency and the grader's quality."""
    base, seen = llm
    router, reports = gateway(
        _address(service),
        [_deployment(base, "a", catalogue=GPT35), _deployment(base, "b")],
        models={"dep-b": MISTRAL},
        grade=lambda messages, response: 0.75 if messages else None,
    )
    endpoint = {GPT35: "a", MISTRAL: "b"}

    async def calls() -> list[Any]:
        return [await router.acompletion(model="auto", messages=MESSAGES) for _ in range(4)]

    answers = asyncio.run(calls())
    got = [reports.get(timeout=HANG_S) for _ in answers]
    by_id = {decision.decision_id: (decision, outcome, ack) for decision, outcome, ack in got}
    assert len(by_id) == 4
    # Call by call, the endpoint that answered is the deployment of the model Route decided.
    answered = [
        answer.choices[0].message.content.removeprefix("answered by ") for answer in answers
    ]
    assert answered == seen
    for decision, outcome, ack in got:
        assert not decision.fallback
        assert ack.delivered
        assert outcome["status"] == "OK"
    expected_cost = PROMPT_TOKENS * INPUT_COST + COMPLETION_TOKENS * OUTPUT_COST
    log = stopped_log(service)
    decided = [
        model for (model,) in log.execute("SELECT model FROM decisions ORDER BY time").fetchall()
    ]
    assert [endpoint[model] for model in decided] == seen
    rows = _feedback(log)
    assert len(rows) == 4
    for decision_id, model, status, tokens_in, tokens_out, cost, latency, quality in rows:
        assert model == by_id[decision_id][0].model
        assert status == "OK"
        assert (tokens_in, tokens_out) == (PROMPT_TOKENS, COMPLETION_TOKENS)
        assert cost == pytest.approx(expected_cost)
        assert latency > 0.0
        assert quality == 0.75


def test_a_sync_completion_is_routed_and_reported_too(
    service: Service,
    llm: tuple[str, list[str]],
    gateway: Callable[..., tuple[Router, queue.Queue[Report]]],
) -> None:
    """``Router.completion`` (LiteLLM's sync path: get_available_deployment and
    log_success_event) routes and reports like the async path."""
    base, seen = llm
    router, reports = gateway(_address(service), [_deployment(base, "a", catalogue=GPT35)])
    answer = router.completion(model="auto", messages=MESSAGES)
    decision, outcome, ack = reports.get(timeout=HANG_S)
    assert answer.choices[0].message.content == "answered by a"
    assert decision.model == GPT35
    assert ack.delivered
    assert outcome["input_tokens"] == PROMPT_TOKENS
    assert seen == ["a"]


@pytest.mark.parametrize(
    "case",
    [
        ("ratelimited", litellm.RateLimitError, "RATE_LIMITED"),
        ("broken", litellm.InternalServerError, "ERROR"),
    ],
)
def test_a_failing_deployment_reports_its_status(
    service: Service,
    llm: tuple[str, list[str]],
    gateway: Callable[..., tuple[Router, queue.Queue[Report]]],
    stopped_log: Callable[[Service], duckdb.DuckDBPyConnection],
    case: tuple[str, type[Exception], str],
) -> None:
    """A deployment answering 429 reports RATE_LIMITED, one answering 500 reports ERROR
    (with a latency, without tokens), and the caller still gets LiteLLM's exception."""
    endpoint, error, status = case
    base, _ = llm
    router, reports = gateway(_address(service), [_deployment(base, endpoint, catalogue=MISTRAL)])

    async def call() -> None:
        await router.acompletion(model="auto", messages=MESSAGES)

    with pytest.raises(error):
        asyncio.run(call())
    decision, outcome, ack = reports.get(timeout=HANG_S)
    assert decision.model == MISTRAL
    assert outcome["status"] == status
    assert ack.delivered
    [row] = _feedback(stopped_log(service))
    assert row[2] == status
    assert row[3] is None
    assert row[6] >= 0.0


def test_a_deployment_that_times_out_reports_timeout(
    service: Service,
    llm: tuple[str, list[str]],
    gateway: Callable[..., tuple[Router, queue.Queue[Report]]],
) -> None:
    """A deployment that never answers within its LiteLLM timeout reports TIMEOUT."""
    base, _ = llm
    deployment = _deployment(base, "hung", catalogue=MISTRAL)
    deployment["litellm_params"]["timeout"] = 0.5
    router, reports = gateway(_address(service), [deployment])

    async def call() -> None:
        await router.acompletion(model="auto", messages=MESSAGES)

    with pytest.raises(litellm.Timeout):
        asyncio.run(call())
    _, outcome, ack = reports.get(timeout=HANG_S)
    assert outcome["status"] == "TIMEOUT"
    assert ack.delivered


def test_with_banditroute_down_litellm_answers_from_the_fallback_deployment(
    make_service: Callable[..., Service],
    llm: tuple[str, list[str]],
    gateway: Callable[..., tuple[Router, queue.Queue[Report]]],
) -> None:
    """banditroute stopped: the client's fallback decision (GPT35) picks its deployment, the
    call is answered, and nothing is reported (a fallback decision has no id)."""
    service = make_service()
    address = _address(service)
    service.stop()
    base, seen = llm
    router, reports = gateway(
        address,
        [_deployment(base, "b", catalogue=MISTRAL), _deployment(base, "a", catalogue=GPT35)],
    )

    async def call() -> Any:
        return await router.acompletion(model="auto", messages=MESSAGES)

    answer = asyncio.run(call())
    assert answer.choices[0].message.content == "answered by a"
    assert seen == ["a"]
    assert reports.empty()


def test_a_group_without_catalogue_ids_is_a_clear_error(
    service: Service,
    llm: tuple[str, list[str]],
    gateway: Callable[..., tuple[Router, queue.Queue[Report]]],
) -> None:
    """No deployment of the group names a banditroute model: the call fails with a message
    saying how to name one, and no model is called."""
    base, seen = llm
    router, _ = gateway(_address(service), [_deployment(base, "a")])
    with pytest.raises(Exception, match="banditroute_model"):
        router.completion(model="auto", messages=MESSAGES)
    assert seen == []


def test_a_conversation_in_metadata_stays_on_one_deployment(
    service: Service,
    llm: tuple[str, list[str]],
    gateway: Callable[..., tuple[Router, queue.Queue[Report]]],
) -> None:
    """A completion's ``metadata={"banditroute_session_id": ...}`` is sent as Route's
    session_id: every later turn of the conversation goes to the deployment its first turn
    was routed to (sticky), while a request without it is drawn as before (the plugin had no
    way to pass a session)."""
    base, seen = llm
    router, reports = gateway(
        _address(service),
        [_deployment(base, "a", catalogue=GPT35), _deployment(base, "b", catalogue=MISTRAL)],
    )
    session = {"banditroute_session_id": "conversation-7"}
    router.completion(model="auto", messages=MESSAGES, metadata=dict(session))
    first, _, _ = reports.get(timeout=HANG_S)
    assert not _sticky(first)
    for _ in range(3):
        router.completion(model="auto", messages=MESSAGES, metadata=dict(session))
        later, _, _ = reports.get(timeout=HANG_S)
        assert _sticky(later)
        assert later.model == first.model
    assert len(set(seen)) == 1
    router.completion(model="auto", messages=MESSAGES)
    unsessioned, _, _ = reports.get(timeout=HANG_S)
    assert not _sticky(unsessioned)


def _sticky(decision: Decision) -> bool:
    """Whether Route answered the decision with the session's model (RouteResponse.sticky)."""
    return decision.response is not None and decision.response.sticky


def test_without_litellm_the_import_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing the plugin where LiteLLM is not installed fails with a message that says
    which extra to install (it was Python's bare "No module named 'litellm'")."""
    monkeypatch.setitem(sys.modules, "litellm", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "banditroute.client.litellm_router")
    with pytest.raises(ModuleNotFoundError, match=re.escape("pip install 'banditroute[litellm]'")):
        importlib.import_module("banditroute.client.litellm_router")


def test_a_grade_outside_zero_to_one_is_dropped_not_the_whole_report(
    service: Service,
    llm: tuple[str, list[str]],
    gateway: Callable[..., tuple[Router, queue.Queue[Report]]],
) -> None:
    """A grader answering 1.5 (or NaN) would make banditroute refuse the whole Feedback
    (INVALID_ARGUMENT on quality) inside LiteLLM's callback, losing the call's status, tokens
    and cost; the report is sent without a quality instead."""
    base, _ = llm
    grades = iter([1.5, float("nan")])
    router, reports = gateway(
        _address(service),
        [_deployment(base, "a", catalogue=GPT35)],
        grade=lambda messages, response: next(grades),
    )
    for _ in range(2):
        router.completion(model="auto", messages=MESSAGES)
        _, outcome, ack = reports.get(timeout=HANG_S)
        assert ack.delivered
        assert "quality" not in outcome
        assert outcome["input_tokens"] == PROMPT_TOKENS
