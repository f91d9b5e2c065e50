"""Data privacy through the gRPC interface: prompts holding personal data or secrets (detected,
or declared by the client) go only to models tagged for that data class, are never explored
on (the policy's best model with probability 1), and leave no trace of their text in the
DuckDB log even when the tenant stores prompts."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import duckdb
import grpc
import pytest

from banditroute.config import load_settings
from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb

CATALOG = load_settings().catalog
PII_MODELS = {m.id for m in CATALOG if "pii" in m.data_classes}
INTERNAL_MODELS = {m.id for m in CATALOG if "internal" in m.data_classes}
PUBLIC_MODELS = set(CATALOG.ids)
PII_PROMPTS = {
    "email": "Please send the signed invoice to jane.roe@example.org before Friday.",
    "phone": "Call the customer back at (415) 555-2671 about the delayed delivery.",
    "card": "My card number is 4111 1111 1111 1111, why was the payment declined?",
}
SECRET_PROMPTS = {
    "api key": "Why does the client reject sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34 as invalid?",
    "private key": (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
        "-----END PRIVATE KEY-----\nWhich format is this key in?"
    ),
}
SECRET_FRAGMENTS = ("jane", "roe", "example", "4111", "2671", "ab12cd34", "miievqibad")
CLEAN = "Write a short poem about autumn leaves falling in the park."
FAILED = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture
def service(start_service: Callable[..., Service]) -> Service:
    """A service with the default catalogue and policy whose default tenant stores prompts
    (tenant store_prompts = true; log.store_prompts keeps its default, false)."""
    return start_service({"tenants": [{"name": "default", "store_prompts": True}]})


def _check_greedy(response: pb.RouteResponse, allowed: set[str], data_class: str) -> None:
    """Routed under ``data_class`` to an ``allowed`` model, without exploring."""
    assert response.data_classification == data_class
    assert response.model in allowed
    assert response.explored is False
    assert response.probability == 1.0
    assert {r.model for r in response.ranking} == allowed
    assert sum(r.probability for r in response.ranking) == 1.0
    assert set(response.fallback_models) == allowed - {response.model}
    assert {e.model: e.constraint for e in response.exclusions} == {
        m: "data_classification" for m in PUBLIC_MODELS - allowed
    }


@pytest.mark.parametrize("kind", sorted(PII_PROMPTS))
def test_personal_data_goes_only_to_pii_models_without_exploring(
    service: Service, api: Callable[..., Any], kind: str
) -> None:
    """A prompt with an e-mail address, a phone number or a Luhn-valid card number is routed
    as "pii": only to the models tagged for pii (the open-weight ones), with explored = false
    and probability 1.0, every other model excluded with constraint "data_classification"; a
    chat whose personal data sits in an earlier turn is classified the same."""
    client = api(service)
    _check_greedy(client.route(prompt=PII_PROMPTS[kind]), PII_MODELS, "pii")
    chat = [
        pb.ChatMessage(role="system", content=PII_PROMPTS[kind]),
        pb.ChatMessage(role="user", content="Draft a polite reply."),
    ]
    _check_greedy(client.route(messages=chat), PII_MODELS, "pii")


def test_luhn_invalid_card_number_is_not_personal_data(
    service: Service, api: Callable[..., Any]
) -> None:
    """A 16-digit number failing the Luhn check is not a card: the prompt stays public and is
    explored on over the whole catalogue."""
    response = api(service).route(prompt="Order 4111 1111 1111 1112 shipped, when does it arrive?")
    assert response.data_classification == "public"
    assert response.explored is True
    assert {r.model for r in response.ranking} == PUBLIC_MODELS


@pytest.mark.parametrize("kind", sorted(SECRET_PROMPTS))
def test_secret_fails_when_no_model_may_receive_it(
    service: Service, api: Callable[..., Any], kind: str
) -> None:
    """A prompt with an API key or a private key is "secret"; no default-catalogue model
    carries "secret", so Route fails with FAILED_PRECONDITION starting with
    "data_classification"."""
    request = pb.RouteRequest(prompt=SECRET_PROMPTS[kind])
    details = api(service).fails("Route", request, FAILED)
    assert details.startswith("data_classification")


def test_secret_goes_to_a_model_tagged_for_secrets(
    start_service: Callable[..., Service], api: Callable[..., Any], catalogue: list[dict[str, Any]]
) -> None:
    """With one model tagged for "secret", a prompt holding a key goes to it alone, greedily;
    a client declaring "secret" on a clean prompt gets the same."""
    vault = "mistralai/mistral-7b-chat"
    for model in catalogue:
        if model["id"] == vault:
            model["data_classes"] = ["public", "internal", "pii", "secret"]
    client = api(start_service({"models": catalogue}))
    for prompt in SECRET_PROMPTS.values():
        _check_greedy(client.route(prompt=prompt), {vault}, "secret")
    _check_greedy(client.route(prompt=CLEAN, data_classification="secret"), {vault}, "secret")


def test_declared_classification_is_honoured_and_validated(
    service: Service, api: Callable[..., Any]
) -> None:
    """data_classification = "pii" on a clean prompt is routed like detected personal data;
    "internal" goes to the models tagged for it (the self-hosted ones) and keeps exploring; a
    declared class less sensitive than the detected one is raised to it; an unknown (or
    wrongly cased) class is INVALID_ARGUMENT naming data_classification."""
    client = api(service)
    _check_greedy(client.route(prompt=CLEAN, data_classification="pii"), PII_MODELS, "pii")
    internal = client.route(prompt=CLEAN, data_classification="internal")
    assert internal.data_classification == "internal"
    assert internal.explored is True
    assert {r.model for r in internal.ranking} == INTERNAL_MODELS
    assert {e.constraint for e in internal.exclusions} == {"data_classification"}
    raised = client.route(prompt=PII_PROMPTS["email"], data_classification="public")
    _check_greedy(raised, PII_MODELS, "pii")
    for bad in ("confidential", "PII", " pii"):
        request = pb.RouteRequest(prompt=CLEAN, data_classification=bad)
        details = client.fails("Route", request, grpc.StatusCode.INVALID_ARGUMENT)
        assert details.startswith("data_classification")


def test_log_keeps_no_trace_of_sensitive_prompts(service: Service, api: Callable[..., Any]) -> None:
    """In the DuckDB log (read after stop), sensitive decisions have explored = false, their
    data class, probability 1 and a NULL prompt although the tenant stores prompts, and no
    fragment of the personal data or secret appears anywhere in the row (features included);
    a public prompt is stored verbatim."""
    client = api(service)
    sensitive = {client.route(prompt=prompt).decision_id: "pii" for prompt in PII_PROMPTS.values()}
    sensitive[client.route(prompt=CLEAN, data_classification="pii").decision_id] = "pii"
    public = client.route(prompt=CLEAN)
    service.stop()
    with duckdb.connect(str(service.settings.log.path), read_only=True) as con:
        rows = con.execute(
            "SELECT decision_id, explored, data_class, prompt, probability, "
            "CAST(columns(*) AS VARCHAR) FROM decisions"
        ).fetchall()
    by_id = {row[0]: row for row in rows}
    assert set(by_id) == {*sensitive, public.decision_id}
    for decision_id, data_class in sensitive.items():
        row = by_id[decision_id]
        assert row[1:5] == (False, data_class, None, 1.0)
        text = json.dumps([str(cell) for cell in row]).lower()
        leaked = [f for f in SECRET_FRAGMENTS if f in text]
        assert not leaked, f"log row of a {data_class} decision holds {leaked}"
    assert by_id[public.decision_id][1:4] == (True, "public", CLEAN)


def test_personal_data_at_the_end_of_a_long_prompt_is_found(
    start_service: Callable[..., Service], api: Callable[..., Any], catalogue: list[dict[str, Any]]
) -> None:
    """A 300,000-character prompt (under server.max_prompt_chars) whose only personal data is
    an e-mail address in its last line, where few-shot prompts put the question, is still
    "pii": the whole accepted prompt is scanned, not a head window. With GPT-4 tagged for pii
    (the only such model whose window fits the prompt) it goes there without exploring."""
    gpt4 = "gpt-4-1106-preview"
    for model in catalogue:
        if model["id"] == gpt4:
            model["data_classes"] = ["public", "internal", "pii"]
    client = api(start_service({"models": catalogue}))
    tail = "\nQ: draft a reply to jane.roe@example.org about the invoice."
    unit = "Q: what is the capital of Spain? A: Madrid.\n"
    prompt = (unit * (300_000 // len(unit) + 1))[: 300_000 - len(tail)] + tail
    response = client.route(prompt=prompt)
    assert response.data_classification == "pii"
    assert response.explored is False
    assert response.model == gpt4
    public = client.route(prompt=prompt[: -len(tail)])
    assert public.data_classification == "public"
