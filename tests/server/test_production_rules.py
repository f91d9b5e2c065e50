"""Routing rules and language tags through the gRPC interface: the first matching rule pins,
restricts or trims the eligible set and the response names it; [languages] require_tagged
sends prompts in those languages only to models tagged for them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
import grpc
import pytest

from banditroute.config import load_settings, settings_from_mapping
from banditroute.errors import ConfigError
from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb

CATALOG = load_settings().catalog
GPT4 = "gpt-4-1106-preview"
CODELLAMA = "meta/code-llama-instruct-34b-chat"
CLAUDE2 = "claude-v2"
WIZARD = "WizardLM/WizardLM-13B-V1.2"
CODE_MODELS = {GPT4, CODELLAMA}
CODE_PROMPTS = [
    "Write a Python function that reverses a list.",
    "Implement a binary search in Rust.",
    "Fix this code: def add(a, b): return a - b",
]
PLAIN = "Tell me a joke about cats."
FRENCH = "Pouvez-vous m'expliquer comment fonctionne la photosynthèse dans les plantes ?"
GERMAN = "Kannst du mir bitte erklären, wie die Photosynthese in Pflanzen funktioniert?"
RULES: list[dict[str, Any]] = [
    {"name": "code-to-code-models", "match": {"markers": ["code"]},
     "restrict": sorted(CODE_MODELS)},
    {"name": "vip-pin", "match": {"tags": {"tier": "vip"}}, "pin": CLAUDE2},
    {"name": "beta-no-wizard", "match": {"tags": {"team": "beta"}, "tenants": ["default"]},
     "exclude": [WIZARD]},
    {"name": "german-to-claude", "match": {"languages": ["de"]},
     "restrict": ["claude-v1", CLAUDE2]},
]  # fmt: skip


@pytest.fixture
def client(start_service: Callable[..., Service], api: Callable[..., Any]) -> Any:
    """A client of a service with RULES and a uniform policy (the ranking is the eligible
    set)."""
    return api(start_service({"rules": RULES, "policy": {"kind": "uniform"}}))


def _rule_exclusions(response: pb.RouteResponse) -> dict[str, str]:
    return {e.model: e.reason for e in response.exclusions if e.constraint == "rule"}


def test_marker_rule_restricts_code_prompts(client: Any) -> None:
    """Prompts with the "code" marker go only to the rule's two models: the response names
    the rule, every other model is excluded with constraint "rule" and a reason naming the
    rule; tags of later rules do not matter once the first rule matched."""
    for prompt in CODE_PROMPTS:
        for tags in ({}, {"tier": "vip"}):
            response = client.route(prompt=prompt, tags=tags)
            assert response.rule == "code-to-code-models"
            assert response.model in CODE_MODELS
            assert {r.model for r in response.ranking} == CODE_MODELS
            excluded = _rule_exclusions(response)
            assert set(excluded) == set(CATALOG.ids) - CODE_MODELS
            assert all("code-to-code-models" in reason for reason in excluded.values())


def test_tag_rules_pin_and_exclude(client: Any) -> None:
    """A rule matching tags {"tier": "vip"} pins its model (probability 1, no fallbacks);
    one matching {"team": "beta"} removes a single model; a tag with another value matches
    nothing."""
    pinned = client.route(prompt=PLAIN, tags={"tier": "vip", "user": "u1"})
    assert (pinned.rule, pinned.model, pinned.probability) == ("vip-pin", CLAUDE2, 1.0)
    assert list(pinned.fallback_models) == []
    assert set(_rule_exclusions(pinned)) == set(CATALOG.ids) - {CLAUDE2}

    trimmed = client.route(prompt=PLAIN, tags={"team": "beta"})
    assert trimmed.rule == "beta-no-wizard"
    assert _rule_exclusions(trimmed) == {WIZARD: "rule 'beta-no-wizard' excludes it"}
    assert {r.model for r in trimmed.ranking} == set(CATALOG.ids) - {WIZARD}

    other = client.route(prompt=PLAIN, tags={"tier": "gold"})
    assert other.rule == ""


def test_non_matching_prompt_has_no_rule(client: Any) -> None:
    """A prompt that matches no rule has rule "" and no "rule" exclusions: every model stays
    eligible."""
    response = client.route(prompt=PLAIN)
    assert response.rule == ""
    assert not response.exclusions
    assert {r.model for r in response.ranking} == set(CATALOG.ids)


def test_rule_and_request_constraints_combine(client: Any) -> None:
    """A rule narrows, the request's own constraints narrow further: candidates outside the
    pinned model leave nothing (FAILED_PRECONDITION "rule"); a code prompt holding personal
    data finds neither code model tagged for pii (FAILED_PRECONDITION
    "data_classification")."""
    pinned = pb.RouteRequest(prompt=PLAIN, tags={"tier": "vip"}, candidate_models=[GPT4])
    details = client.fails("Route", pinned, grpc.StatusCode.FAILED_PRECONDITION)
    assert details.startswith("rule")
    personal = pb.RouteRequest(prompt="Write a Python function that emails bob.smith@example.com")
    details = client.fails("Route", personal, grpc.StatusCode.FAILED_PRECONDITION)
    assert details.startswith("data_classification")


def test_rule_name_is_logged(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """The decision row records the rule that applied ("" when none did)."""
    service = start_service({"rules": RULES})
    client = api(service)
    expected = {
        client.route(prompt=CODE_PROMPTS[0]).decision_id: "code-to-code-models",
        client.route(prompt=PLAIN).decision_id: "",
    }
    service.stop()
    with duckdb.connect(str(service.settings.log.path), read_only=True) as con:
        logged = dict(con.execute("SELECT decision_id, rule FROM decisions").fetchall())
    assert logged == expected


@pytest.mark.parametrize(
    ("rule", "text"),
    [
        ({"name": "r", "restrict": ["gpt-99"]}, "unknown model"),
        ({"name": "r", "pin": "gpt-99"}, "unknown model"),
        ({"name": "r", "match": {"markers": ["poetry"]}, "pin": GPT4}, "unknown marker"),
        ({"name": "r", "match": {"weekday": "monday"}, "pin": GPT4}, "unknown key"),
        ({"name": "r", "match": {"markers": ["code"]}}, "needs pin, restrict or exclude"),
        ({"name": "r", "match": {"min_tokens": -1}, "pin": GPT4}, "min_tokens"),
        ({"match": {}, "pin": GPT4}, "needs a name"),
    ],
)
def test_invalid_rule_is_a_config_error(rule: dict[str, Any], text: str) -> None:
    """A rule naming an unknown model or marker, with an unknown key, without an action, with
    a negative token bound or without a name is a ConfigError saying which."""
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"rules": [rule]})
    assert text in caught.value.message


@pytest.fixture
def french_client(start_service: Callable[..., Service], api: Callable[..., Any]) -> Any:
    """A client of a service where French prompts need models tagged "fr" and German prompts
    meet the german-to-claude rule."""
    config = {"languages": {"require_tagged": ["fr"]}, "policy": {"kind": "uniform"}}
    return api(start_service({**config, "rules": RULES[3:]}))


def test_required_language_goes_only_to_tagged_models(french_client: Any) -> None:
    """With require_tagged = ["fr"], a French prompt is answered with language "fr" and goes
    only to models whose languages include "fr"; the others are excluded with constraint
    "language"; an English prompt keeps every model; a German prompt (not required) is
    detected as "de" and meets the rule that matches on language."""
    french_models = {m.id for m in CATALOG if "fr" in m.languages}
    assert 0 < len(french_models) < len(CATALOG)
    for _ in range(10):
        response = french_client.route(prompt=FRENCH)
        assert response.language == "fr"
        assert response.model in french_models
        assert {r.model for r in response.ranking} == french_models
        assert {e.model: e.constraint for e in response.exclusions} == {
            m: "language" for m in set(CATALOG.ids) - french_models
        }
    english = french_client.route(prompt=PLAIN)
    assert english.language == "en"
    assert not english.exclusions
    german = french_client.route(prompt=GERMAN)
    assert german.language == "de"
    assert german.rule == "german-to-claude"
    assert german.model in {"claude-v1", CLAUDE2}


def test_required_language_with_untagged_candidates_fails(french_client: Any) -> None:
    """A French prompt whose candidates are all untagged for French fails with
    FAILED_PRECONDITION whose details start with "language"."""
    untagged = [m.id for m in CATALOG if "fr" not in m.languages][:2]
    request = pb.RouteRequest(prompt=FRENCH, candidate_models=untagged)
    details = french_client.fails("Route", request, grpc.StatusCode.FAILED_PRECONDITION)
    assert details.startswith("language")


@pytest.mark.parametrize(
    "languages", [{"require_tagged": "fr"}, {"require_tagged": [1]}, {"required": ["fr"]}]
)
def test_invalid_languages_section_is_a_config_error(languages: dict[str, Any]) -> None:
    """[languages] with require_tagged not a list of strings, or an unknown key, is a
    ConfigError naming the section."""
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"languages": languages})
    assert caught.value.message.startswith("languages")
