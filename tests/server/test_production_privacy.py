"""Data privacy through the gRPC interface: prompts holding personal data or secrets (detected,
or declared by the client) go only to models tagged for that data class, are never explored
on (the policy's best model with probability 1), and leave no trace of their text in the
DuckDB log even when the tenant stores prompts."""

from __future__ import annotations

import hashlib
import json
import stat
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest
from fault_helpers import ServerLauncher, write_config

from banditroute import hash_key
from banditroute.config import load_settings
from banditroute.errors import ConfigError
from banditroute.features import prompt_hash
from banditroute.server import servicer
from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

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


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[ServerLauncher]:
    """Starts ``banditroute serve`` processes; kills any still running at teardown."""
    servers = ServerLauncher(tmp_path)
    yield servers
    servers.close_all()


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


# -- tags, keyed prompt hashes and the server log (issue 12, item 6) ----------------------------

TAG_EMAIL = "zorro.tagleak@example.com"


def _decision_rows(service: Service) -> dict[str, tuple[str, dict[str, str]]]:
    """decision_id -> (prompt_hash, tags) from the DuckDB log of a stopped service."""
    with duckdb.connect(str(service.settings.log.path), read_only=True) as con:
        rows = con.execute("SELECT decision_id, prompt_hash, tags FROM decisions").fetchall()
    return {row[0]: (row[1], json.loads(row[2]) if row[2] else {}) for row in rows}


def test_tags_count_toward_the_data_class_and_are_logged_only_as_digests(
    service: Service, api: Callable[..., Any]
) -> None:
    """An e-mail address in a tag value, in a tag key, or disguised with a full-width at sign
    makes a clean prompt "pii" (routed greedily to pii models). Such a decision's tags are
    logged as keyed hashes of each key and value, so no tag text reaches the log; a public
    request's tags are logged as sent."""
    client = api(service)
    sensitive_tags = [
        {"user": TAG_EMAIL, "team": "search"},
        {TAG_EMAIL: "1"},
        {"user": "zorro.tagleak\uff20example.com"},
    ]
    sensitive = {}
    for tags in sensitive_tags:
        response = client.route(prompt=CLEAN, tags=tags)
        _check_greedy(response, PII_MODELS, "pii")
        sensitive[response.decision_id] = tags
    public = client.route(prompt=CLEAN, tags={"team": "search"})
    assert public.data_classification == "public"
    service.stop()
    key = hash_key.load_or_create(service.settings.log.hash_key_path)
    rows = _decision_rows(service)
    for decision_id, tags in sensitive.items():
        logged = rows[decision_id][1]
        assert logged == {prompt_hash(k, key): prompt_hash(v, key) for k, v in tags.items()}
        assert "zorro" not in json.dumps(logged, ensure_ascii=False)
        assert "search" not in json.dumps(logged)
    assert rows[public.decision_id][1] == {"team": "search"}


def test_logged_prompt_hash_is_keyed_and_stable_across_a_restart(
    start_service: Callable[[Mapping[str, Any]], Service],
    api: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """The logged prompt_hash is not the unkeyed BLAKE2b of the prompt (which anyone can
    compute for a guessed prompt): it is keyed with a secret created beside the log on first
    start (mode 0600), and a restart on the same log keeps the key, so the same prompt logs
    the same hash."""
    config = {"log": {"path": str(tmp_path / "keyed.duckdb")}}
    first = start_service(config)
    before = api(first).route(prompt=CLEAN).decision_id
    first.stop()
    key_path = first.settings.log.hash_key_path
    assert key_path == tmp_path / "keyed.duckdb.hashkey"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key_text = key_path.read_text()
    second = start_service(config)
    after = api(second).route(prompt=CLEAN).decision_id
    second.stop()
    assert key_path.read_text() == key_text
    rows = _decision_rows(second)
    unkeyed = hashlib.blake2b(CLEAN.encode(), digest_size=16).hexdigest()
    assert rows[before][0] == rows[after][0] != unkeyed
    assert rows[before][0] == prompt_hash(CLEAN, key_text.strip().encode())


def test_configured_prompt_hash_key_file_is_used(
    start_service: Callable[[Mapping[str, Any]], Service],
    api: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """log.prompt_hash_key_file names the key (an operator's secret); a key file readable by
    group or others, or of the wrong size, refuses to start naming the setting."""
    key_file = tmp_path / "secrets" / "prompt.key"
    key_file.parent.mkdir()
    key_file.write_bytes(b"an operator's secret key of 40 bytes....\n")
    key_file.chmod(0o600)
    service = start_service({"log": {"prompt_hash_key_file": str(key_file)}})
    decision_id = api(service).route(prompt=CLEAN).decision_id
    service.stop()
    expected = prompt_hash(CLEAN, b"an operator's secret key of 40 bytes....")
    assert _decision_rows(service)[decision_id][0] == expected
    key_file.chmod(0o640)
    with pytest.raises(ConfigError, match=r"log\.prompt_hash_key_file: .*chmod 600"):
        start_service({"log": {"prompt_hash_key_file": str(key_file)}})
    key_file.write_bytes(b"short")
    key_file.chmod(0o600)
    with pytest.raises(ConfigError, match=r"log\.prompt_hash_key_file: .*5 bytes"):
        start_service({"log": {"prompt_hash_key_file": str(key_file)}})


LEAKS = {
    "card": "4111 1111 1111 1111",
    "email": "zorro.logleak@example.com",
    "objective": "zorro.objective@example.com",
    "decision": "zorro.decision@example.com",
}


def test_rejected_calls_leave_no_client_value_in_the_server_log(
    launcher: ServerLauncher, tmp_path: Path
) -> None:
    """A real server at debug level rejects a Route whose candidate_models hold a card number
    and an e-mail address, one whose objective is an e-mail address, and a Feedback whose
    decision_id is one. The client's error names the field; the server's log records each
    rejection (rpc_rejected with the field) but none of the values, nor a fragment of them."""
    config = write_config(
        tmp_path / "leak.toml",
        {
            "server": {"port": 0, "grace_s": 2.0},
            "log": {"path": str(tmp_path / "leak.duckdb")},
            "policy": {"snapshot_path": str(tmp_path / "leak.snapshot")},
        },
    )
    server = launcher.start(config, log_level="debug")
    channel = grpc.insecure_channel(server.address)
    try:
        stub = pb_grpc.RouterServiceStub(channel)
        calls = [
            ("candidate_models", stub.Route, pb.RouteRequest(
                prompt=CLEAN, candidate_models=[LEAKS["card"], LEAKS["email"]])),
            ("objective", stub.Route, pb.RouteRequest(prompt=CLEAN, objective=LEAKS["objective"])),
            ("decision_id", stub.Feedback, pb.FeedbackRequest(
                decision_id=LEAKS["decision"], quality=1.0)),
        ]  # fmt: skip
        for field, method, request in calls:
            with pytest.raises(grpc.RpcError) as caught:
                method(request, timeout=10.0)
            assert isinstance(caught.value, grpc.Call)
            assert (caught.value.details() or "").startswith(field)
    finally:
        channel.close()
    assert server.terminate() == 0
    text = server.log_text()
    assert text.count("rpc_rejected") == 3, text
    for field in ("candidate_models", "objective", "decision_id"):
        assert f"field={field}" in text, text
    for fragment in ("4111", "1111 1111", "zorro", "logleak", "example.com"):
        assert fragment not in text, f"the server log holds {fragment!r}:\n{text}"


class _RecordingLog:
    """Stands in for a module's structlog logger: keeps each event as the text a renderer
    would write (its keyword values, and the traceback for ``exception``)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _record(self, event: str, **values: Any) -> None:
        self.lines.append(f"{event} {values}")

    info = warning = error = debug = _record

    def exception(self, event: str, **values: Any) -> None:
        self.lines.append(f"{event} {values}\n{traceback.format_exc()}")


def test_internal_error_log_names_the_exception_type_not_its_message(
    service: Service, api: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug whose exception message quotes client input (here an e-mail address) answers
    INTERNAL with an incident id only, and the server log records the incident, the exception
    type and where it was raised, but not the message."""
    recorder = _RecordingLog()
    monkeypatch.setattr(servicer, "log", recorder)

    def broken(query: Any) -> Any:
        raise RuntimeError(f"cannot route for {TAG_EMAIL}")

    monkeypatch.setattr(service.router, "route", broken)
    details = api(service).fails("Route", pb.RouteRequest(prompt=CLEAN), grpc.StatusCode.INTERNAL)
    assert "incident" in details
    assert TAG_EMAIL not in details
    (line,) = recorder.lines
    assert line.startswith("rpc_failed")
    assert "RuntimeError" in line
    assert "broken" in line  # the stack names the function that raised
    assert "zorro" not in line
