"""Property-based fuzzing of every RouterService RPC against one in-process service.

Random and malformed requests (megabyte strings, arbitrary unicode, NaN and infinite doubles,
unknown enum values, 10,000 candidate models, duplicate ids, random decision ids, odd metadata)
and raw bytes that are not valid protobuf (invalid UTF-8 in string fields, truncated messages,
wrong wire types) must each be answered within a bounded time with a deliberate status: OK or
a client error, never UNKNOWN or INTERNAL (the servicer's answer to an unexpected exception).
Afterwards the service still reports SERVING and its decision log is consistent.

Protobuf refuses to serialise a lone surrogate in a string field on the client, so lone
surrogates reach the server only as the raw bytes of their UTF-8-style encoding. gRPC limits
ordinary metadata values to printable ASCII (the client rejects anything else before sending),
so arbitrary bytes travel in ``-bin`` entries.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banditroute.config import load_settings, settings_from_mapping
from banditroute.server.app import Service, build_service
from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 30.0
"""Deadline of every fuzzed call: a call that takes longer fails as DEADLINE_EXCEEDED (not an
allowed status), which on a loaded machine only a hang does."""
EXAMPLES = 150
"""Examples per RPC."""
ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,  # a fuzzed request_id reused for another request
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
SERVICE = "/banditroute.v1.RouterService/"
METHODS = (
    "Route",
    "Feedback",
    "ListModels",
    "GetStats",
    "ResetModelHealth",
    "ReloadConfig",
    "PromotePolicy",
    "RollbackPolicy",
)
PROMOTE_EXAMPLES = 40
"""Examples for PromotePolicy: a well-formed one replays the whole log (seconds each)."""

MODELS = list(load_settings().catalog.ids)
ACME_KEY, BETA_KEY, ADMIN_KEY = "fuzz-acme", "fuzz-beta", "fuzz-admin"
ACME_MODELS = MODELS[:3]
TENANT_KEYS: dict[str, str | None] = {"default": None, "acme": ACME_KEY, "beta": BETA_KEY}
CONFIG: dict[str, Any] = {
    "server": {"port": 0, "host": "127.0.0.1"},
    "auth": {"required": False, "admin_key_sha256": [hash_key(ADMIN_KEY)]},
    "tenants": [
        {
            "name": "acme",
            "api_key_sha256": [hash_key(ACME_KEY)],
            "models": ACME_MODELS,
            "objectives": ["balanced", "economy"],
        },
        {
            "name": "beta",
            "api_key_sha256": [hash_key(BETA_KEY)],
            "budget": {"period": "day", "limit_usd": 5.0, "target_usd_per_request": 0.001},
        },
    ],
    "reward": {"window_s": 3600.0},
}
PROMPTS = (
    "What is the capital of France?",
    "Write a Python function that reverses a list.",
    "Solve 12 * 7 + 3 and explain each step.",
    "Traduis 'bonjour' en anglais.",
    "Summarize the plot of Hamlet in two sentences.",
)


# -- the service -----------------------------------------------------------------------------------


@dataclass
class Fuzzed:
    """The module's service, a channel to it, decisions to send feedback for, and a record of
    what came back."""

    service: Service
    channel: grpc.Channel
    stub: pb_grpc.RouterServiceStub
    decisions: list[tuple[str, str]] = field(default_factory=list)
    """(decision_id, tenant) of decisions routed at setup."""
    acknowledged: Counter[str] = field(default_factory=Counter)
    """Feedback answered OK, per decision id."""
    codes: dict[str, Counter[str]] = field(default_factory=dict)
    """Status codes seen, per RPC."""
    last_decision_id: str = ""
    """The decision of the last Route answered OK."""


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """One started service (VW policy, tenants default/acme/beta, an admin key, no key
    required) and 60 decisions routed for the three tenants; stopped at module teardown."""
    folder: Path = tmp_path_factory.mktemp("fuzz")
    config = {
        **CONFIG,
        "log": {"path": str(folder / "fuzz.duckdb")},
        "policy": {"snapshot_path": str(folder / "fuzz.snapshot")},
    }
    service = build_service(settings_from_mapping(config))
    service.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        state = Fuzzed(service, channel, pb_grpc.RouterServiceStub(channel))
        for index, (tenant, key) in itertools.product(range(20), TENANT_KEYS.items()):
            metadata = () if key is None else (("x-api-key", key),)
            request = pb.RouteRequest(prompt=PROMPTS[index % len(PROMPTS)] + f" #{index}")
            response = state.stub.Route(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
            state.decisions.append((response.decision_id, tenant))
        yield state
    finally:
        channel.close()
        service.stop()


def _call(
    state: Fuzzed, rpc: str, request: Any, metadata: Sequence[tuple[str, str | bytes]]
) -> grpc.StatusCode:
    """Make one call; assert it ends within the deadline with an allowed status."""
    start = time.monotonic()
    try:
        response = getattr(state.stub, rpc)(
            request, metadata=tuple(metadata), timeout=CALL_TIMEOUT_S
        )
        code, details = grpc.StatusCode.OK, ""
        if rpc == "Route":
            state.last_decision_id = response.decision_id
    except grpc.RpcError as error:  # every RpcError a call raises is also a grpc.Call
        code, details = error.code(), error.details() or ""
    elapsed = time.monotonic() - start
    state.codes.setdefault(rpc, Counter())[code.name] += 1
    assert code in ALLOWED, f"{rpc} -> {code.name}: {details[:500]} ({request!r:.300})"
    assert elapsed < CALL_TIMEOUT_S + 1.0
    return code


# -- strategies ------------------------------------------------------------------------------------

UTF8 = st.characters(codec="utf-8")  # every code point but the surrogates
HEADER = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_."
INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)

huge_text = st.builds(
    lambda unit, times: unit * times,
    st.text(UTF8, min_size=1, max_size=4),
    st.integers(1_000, 260_000),
)
"""Up to about a million characters (and up to 4 MB of UTF-8)."""
texts = st.one_of(
    st.text(max_size=40, alphabet=UTF8),
    st.text(max_size=300, alphabet=UTF8),
    st.sampled_from(["", " ", "\x00", "\n\t", "\ufeff", "\U0010ffff", "é" * 3, "🦀" * 5]),
    huge_text,
)
model_ids = st.one_of(st.sampled_from(MODELS), texts)
EXTREMES = (math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1e-300, 1e10, 1e20, 1e300, 1.7e308)
doubles = st.one_of(
    st.sampled_from(EXTREMES),
    st.sampled_from(EXTREMES).map(lambda x: -x),
    st.floats(allow_nan=True, allow_infinity=True),
)
model_lists = st.one_of(
    st.lists(model_ids, max_size=6),
    st.lists(st.sampled_from(MODELS), max_size=30),  # duplicates
    st.builds(lambda m, n: [m] * n, st.sampled_from(MODELS), st.integers(999, 1001)),
    st.builds(lambda n: (MODELS * (n // len(MODELS) + 1))[:n], st.just(10_000)),
)
metadata_entries = st.one_of(
    st.tuples(
        st.sampled_from(["x-api-key", "authorization"]),
        st.one_of(
            st.text(HEADER, max_size=80),
            st.sampled_from(
                [
                    ACME_KEY,
                    BETA_KEY,
                    ADMIN_KEY,
                    f"Bearer {ACME_KEY}",
                    f"bEaReR {ADMIN_KEY}",
                    "Bearer ",
                    "Bearer",
                    "",
                ]
            ),
        ),
    ),
    st.tuples(
        st.sampled_from(["x-api-key-bin", "authorization-bin", "x-odd-bin"]),
        st.binary(max_size=300),
    ),
    st.tuples(st.text(KEY_CHARS, min_size=1, max_size=40).map("x-".__add__), st.text(HEADER)),
    st.tuples(st.integers(1_000, 20_000).map(lambda n: "x-" + "k" * n), st.just("v")),
    st.tuples(st.just("x-api-key"), st.integers(1_000, 20_000).map(lambda n: "a" * n)),
)
metadata = st.lists(metadata_entries, max_size=4)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def usually(
    plain: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], one_in: int = 4
) -> st.SearchStrategy[Any]:
    """``odd`` once in ``one_in`` draws, else ``plain``: requests whose fields are mostly
    plausible get past validation, so that the odd field is the one exercised."""
    # sampled_from draws near-uniformly (integers() favours its bounds); the plain branch
    # comes first, so shrinking heads for it.
    return st.sampled_from(range(one_in)).flatmap(lambda i: odd if i == one_in - 1 else plain)


def rare(plain: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``odd`` once in ten draws: for messages with many fields."""
    return usually(plain, odd, one_in=10)


keys = st.sampled_from([[], [("x-api-key", ACME_KEY)], [("x-api-key", BETA_KEY)]])
"""No key (tenant default) or a tenant's key."""
callers = usually(keys, metadata)


@st.composite
def route_requests(draw: st.DrawFn) -> pb.RouteRequest:
    """RouteRequests whose fields are each usually plausible and otherwise random."""
    request = pb.RouteRequest(
        prompt=draw(rare(st.sampled_from(PROMPTS), texts)),
        candidate_models=draw(rare(st.just([]), model_lists)),
        excluded_models=draw(rare(st.just([]), model_lists)),
        request_id=draw(rare(st.sampled_from(["", "", "r1", "r2"]), texts)),
        objective=draw(rare(st.sampled_from(["", "balanced", "economy", "fast"]), texts)),
        tags=draw(rare(st.just({}), st.dictionaries(texts, texts, max_size=3))),
        data_classification=draw(
            rare(st.sampled_from(["", "public", "internal", "pii", "secret"]), texts)
        ),
        required_capabilities=draw(
            rare(
                st.lists(st.sampled_from(["code", "math", "tools", "json"]), max_size=3),
                st.one_of(
                    st.lists(texts, max_size=3),
                    st.builds(lambda n: ["code"] * n, st.integers(1_000, 10_000)),
                ),
            )
        ),
    )
    if draw(st.sampled_from(range(5))) == 4:
        request.prompt = ""
        for role, content in draw(
            st.lists(st.tuples(rare(st.just("user"), texts), texts), max_size=4)
        ):
            request.messages.add(role=role, content=content)
    for name in ("max_cost_usd", "max_latency_ms"):
        value = draw(rare(st.none(), doubles))
        if value is not None:
            setattr(request, name, value)
    tokens = draw(rare(st.none(), st.one_of(INT64, st.integers(0, 4096))))
    if tokens is not None:
        request.expected_output_tokens = tokens
    return request


@st.composite
def feedback_requests(draw: st.DrawFn) -> pb.FeedbackRequest:
    """FeedbackRequests whose fields are each usually plausible and otherwise random (NaN,
    infinities, negative, huge, unknown enum values). ``decision_id`` is usually left empty,
    for the caller to fill in with a real one, and otherwise random."""
    request = pb.FeedbackRequest(
        decision_id=draw(rare(st.just(""), st.one_of(texts, st.text("0123456789abcdef")))),
        model=draw(rare(st.just(""), model_ids)),
        status=draw(rare(st.integers(0, 5), INT32)),
    )
    for name in ("quality", "cost_usd", "latency_ms"):  # the point of this RPC: once in four
        value = draw(usually(_optional(st.floats(0.0, 1.0)), doubles))
        if value is not None:
            setattr(request, name, value)
    for name in ("input_tokens", "output_tokens"):
        value = draw(usually(_optional(st.integers(0, 10_000)), INT64))
        if value is not None:
            setattr(request, name, value)
    return request


def _key_for(tenant: str) -> list[tuple[str, str | bytes]]:
    key = TENANT_KEYS.get(tenant)
    return [] if key is None else [("x-api-key", key)]


# -- the RPCs --------------------------------------------------------------------------------------


@FUZZ
@given(request=route_requests(), extra=callers)
def test_route_survives_random_requests(
    fuzzed: Fuzzed, request: pb.RouteRequest, extra: list[tuple[str, str | bytes]]
) -> None:
    """Route answers any request (huge or odd strings, NaN/inf/negative bounds, 10,000
    candidate models, duplicates, unknown names, odd metadata) with OK or a client error."""
    _call(fuzzed, "Route", request, extra)


@FUZZ
@given(data=st.data(), fresh=st.booleans(), tenant=st.sampled_from(list(TENANT_KEYS)))
def test_feedback_survives_random_requests(
    fuzzed: Fuzzed, data: st.DataObject, fresh: bool, tenant: str
) -> None:
    """Feedback for real decisions (routed just now, so that it is learned, or earlier) and
    random ids, with NaN, infinite, negative and huge quality, cost, latency and token counts
    and unknown status values, answers OK or a client error; the acknowledged ones are
    remembered for the log check."""
    # Everything is drawn first: what is drawn must not depend on how the service answers.
    pool_id, pool_tenant = data.draw(st.sampled_from(fuzzed.decisions))
    request = data.draw(feedback_requests())
    extra = data.draw(usually(st.just([]), metadata))
    other_key = data.draw(usually(st.none(), keys))
    decision_id = pool_id
    if fresh:
        caller = _key_for(tenant)
        route = pb.RouteRequest(prompt=PROMPTS[sum(fuzzed.acknowledged.values()) % len(PROMPTS)])
        if _call(fuzzed, "Route", route, caller) == grpc.StatusCode.OK:  # beta may be broke
            decision_id = fuzzed.last_decision_id
        else:
            tenant = pool_tenant
    else:
        tenant = pool_tenant
    request.decision_id = request.decision_id or decision_id
    caller = (_key_for(tenant) if other_key is None else other_key) + extra
    if _call(fuzzed, "Feedback", request, caller) == grpc.StatusCode.OK:
        fuzzed.acknowledged[request.decision_id] += 1


@FUZZ
@given(
    name=st.sampled_from(["quality", "cost_usd", "latency_ms", "input_tokens", "output_tokens"]),
    real=doubles,
    whole=st.one_of(INT64, st.sampled_from([2**63 - 1, 2**62, 10**15, -1, -(2**63)])),
    tenant=st.sampled_from(list(TENANT_KEYS)),
)
def test_feedback_with_extreme_numbers_keeps_routing_working(
    fuzzed: Fuzzed, name: str, real: float, whole: int, tenant: str
) -> None:
    """One extreme number (NaN, infinite, negative, subnormal, 1e300, 2**63 - 1 tokens) in an
    otherwise valid Feedback for a fresh decision is rejected or learned, and the next Route is
    still answered: nothing the learner is fed can break later decisions."""
    caller = _key_for(tenant)
    route = pb.RouteRequest(prompt=PROMPTS[sum(fuzzed.acknowledged.values()) % len(PROMPTS)])
    if _call(fuzzed, "Route", route, caller) != grpc.StatusCode.OK:
        return  # beta's budget is spent (RESOURCE_EXHAUSTED): nothing left to learn from
    request = pb.FeedbackRequest(decision_id=fuzzed.last_decision_id, quality=0.5)
    setattr(request, name, whole if name.endswith("tokens") else real)
    if _call(fuzzed, "Feedback", request, caller) == grpc.StatusCode.OK:
        fuzzed.acknowledged[request.decision_id] += 1
    _call(fuzzed, "Route", route, caller)


@FUZZ
@given(extra=callers)
def test_list_models_survives_random_metadata(
    fuzzed: Fuzzed, extra: list[tuple[str, str | bytes]]
) -> None:
    """ListModels answers under any metadata (keys, binary values, very long entries)."""
    _call(fuzzed, "ListModels", pb.ListModelsRequest(), extra)


@FUZZ
@given(
    since=usually(
        _optional(st.tuples(st.integers(0, 2_000_000_000), st.integers(0, 999_999_999))),
        st.tuples(INT64, INT32),
    ),
    tenant=usually(st.sampled_from(["", "", "default", "acme", "beta", "nobody"]), texts),
    extra=usually(
        st.sampled_from([[], [("x-api-key", ADMIN_KEY)], [("x-api-key", ACME_KEY)]]), metadata
    ),
)
def test_get_stats_survives_random_requests(
    fuzzed: Fuzzed,
    since: tuple[int, int] | None,
    tenant: str,
    extra: list[tuple[str, str | bytes]],
) -> None:
    """GetStats answers any ``since`` (out-of-range seconds, negative or huge nanos) and any
    tenant name, for admin, tenant and anonymous callers."""
    request = pb.GetStatsRequest(tenant=tenant)
    if since is not None:
        request.since.CopyFrom(Timestamp(seconds=since[0], nanos=since[1]))
    _call(fuzzed, "GetStats", request, extra)


@FUZZ
@given(
    model=usually(st.sampled_from(MODELS), texts),
    admin=usually(st.just(True), st.just(False)),
    extra=usually(st.just([]), metadata),
)
def test_reset_model_health_survives_random_requests(
    fuzzed: Fuzzed, model: str, admin: bool, extra: list[tuple[str, str | bytes]]
) -> None:
    """ResetModelHealth answers any model name, with and without an admin key."""
    metadata_ = ([("x-api-key", ADMIN_KEY)] if admin else []) + extra
    _call(fuzzed, "ResetModelHealth", pb.ResetModelHealthRequest(model=model), metadata_)


@FUZZ
@given(extra=usually(st.sampled_from([[], [("x-api-key", ADMIN_KEY)]]), metadata))
def test_reload_config_survives_random_metadata(
    fuzzed: Fuzzed, extra: list[tuple[str, str | bytes]]
) -> None:
    """ReloadConfig (of the unchanged configuration) answers under any metadata, with and
    without the admin key."""
    _call(fuzzed, "ReloadConfig", pb.ReloadConfigRequest(), extra)


PROMOTE_CANDIDATES = (
    "uniform", f"fixed:{MODELS[0]}", "linucb:alpha=0.3", "logged", "shadow:none",
    "snapshot:/etc/passwd", "fixed:", "vw:--bogus",
)  # fmt: skip
"""Well-formed and malformed candidate specs (the server refuses snapshots and unknown shadows)."""


@st.composite
def promote_requests(draw: st.DrawFn) -> pb.PromotePolicyRequest:
    """PromotePolicyRequests whose fields are each usually plausible and otherwise random."""
    return pb.PromotePolicyRequest(
        candidate=draw(usually(st.sampled_from(PROMOTE_CANDIDATES), texts)),
        margin=draw(usually(st.sampled_from([0.0, 0.01, 0.5]), doubles)),
        tolerance=draw(usually(st.sampled_from([0.0, 0.02, 0.5, 1.0]), doubles)),
        objective=draw(usually(st.sampled_from(["", "balanced", "economy"]), texts)),
    )


@settings(parent=FUZZ, max_examples=PROMOTE_EXAMPLES)
@given(
    request=promote_requests(),
    admin=usually(st.just(True), st.just(False)),
    extra=usually(st.just([]), metadata),
)
def test_promote_and_rollback_survive_random_requests(
    fuzzed: Fuzzed, request: pb.PromotePolicyRequest, admin: bool,
    extra: list[tuple[str, str | bytes]],
) -> None:  # fmt: skip
    """PromotePolicy answers any candidate spec (huge, unicode, malformed, a snapshot path from
    the network), any margin and tolerance (NaN, infinite, negative, huge) and any objective,
    with and without an admin key; RollbackPolicy answers after it (whether or not there is a
    promotion to undo)."""
    metadata_ = ([("x-api-key", ADMIN_KEY)] if admin else []) + extra
    _call(fuzzed, "PromotePolicy", request, metadata_)
    _call(fuzzed, "RollbackPolicy", pb.RollbackPolicyRequest(), metadata_)


# -- raw bytes -------------------------------------------------------------------------------------

BAD_UTF8 = (b"\xff\xfe\xfd", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"abc\x80")
"""Invalid UTF-8: stray bytes, a lone surrogate, an overlong '/', above U+10FFFF, a stray
continuation byte."""
CORRUPT_WIRE = (
    b"\x0a\x10abc",  # field 1, length 16, 3 bytes follow
    b"\x08\xff\xff",  # unterminated varint
    b"\x0e\x00",  # wire type 6 does not exist
    b"\x0f\x00",  # wire type 7 does not exist
    b"\x0c",  # end-group with no start
    b"\x0b\x08\x01",  # start-group never ended
    b"\x0a\xff\xff\xff\xff\x0f",  # a 4 GB length
    b"\x0d\x00\x00",  # fixed32 cut short
    b"\x09\x00\x00\x00",  # fixed64 cut short
)
ODD_WIRE = (b"\x00\x01", b"\x08\x01", b"\x0d\x00\x00\x00\x00", b"\x7a\x00")
"""Field number 0 (rejected for a message with fields, skipped by ListModelsRequest), and a
string field sent as varint or fixed32, and an unknown field: each parses or fails cleanly."""
STRING_FIELD = {
    "Route": 1,
    "Feedback": 1,
    "GetStats": 2,
    "ResetModelHealth": 1,
    "PromotePolicy": 1,
}
"""A string field of each request message (ListModels, ReloadConfig and RollbackPolicy
requests have none)."""


def _raw(state: Fuzzed, method: str) -> Callable[..., bytes]:
    return state.channel.unary_unary(
        SERVICE + method, request_serializer=None, response_deserializer=None
    )


def _raw_call(state: Fuzzed, method: str, data: bytes) -> tuple[grpc.StatusCode, str]:
    start = time.monotonic()
    try:
        _raw(state, method)(data, timeout=CALL_TIMEOUT_S)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as error:  # every RpcError a call raises is also a grpc.Call
        code, details = error.code(), error.details() or ""
    assert time.monotonic() - start < CALL_TIMEOUT_S + 1.0
    state.codes.setdefault(f"{method} (raw)", Counter())[code.name] += 1
    assert code in ALLOWED, f"{method} {data[:60]!r} -> {code.name}: {details}"
    return code, details


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (payload shorter than 128 bytes)."""
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


@pytest.mark.parametrize("method", METHODS)
def test_undecodable_bytes_are_invalid_argument(fuzzed: Fuzzed, method: str) -> None:
    """Bytes that are not a valid request message (a corrupt wire format, or invalid UTF-8 in a
    string field, a nested message's string or a map key) are INVALID_ARGUMENT naming the
    parse error, not INTERNAL."""
    samples = list(CORRUPT_WIRE)
    if method in STRING_FIELD:
        samples += [_field(STRING_FIELD[method], bad) for bad in BAD_UTF8]
    if method == "Route":
        samples += [
            _field(2, _field(2, b"\xff\xfe\xfd")),  # messages[0].content
            _field(7, _field(1, b"\xed\xa0\x80") + _field(2, b"v")),  # tags key
        ]
    for data in samples:
        code, details = _raw_call(fuzzed, method, data)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (data, details)
        assert "not a valid message" in details, details


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    data=st.one_of(
        st.binary(max_size=600),
        st.sampled_from(CORRUPT_WIRE + ODD_WIRE),
        st.builds(_field, st.integers(1, 15), st.sampled_from(BAD_UTF8)),
        st.builds(lambda req, cut: req.SerializeToString()[:cut], route_requests(), INT32),
    ),
)
def test_raw_bytes_are_answered(fuzzed: Fuzzed, method: str, data: bytes) -> None:
    """Random bytes, corrupt wire formats, invalid UTF-8 in any field and truncated valid
    requests sent to any RPC are answered with OK or a client error."""
    _raw_call(fuzzed, method, data)


def test_lone_surrogates_are_refused_by_the_client() -> None:
    """Protobuf will not serialise a lone surrogate, so the raw-bytes tests above carry the
    only way one can reach the server."""
    with pytest.raises((UnicodeEncodeError, ValueError)):
        pb.RouteRequest(prompt="a \ud800 b").SerializeToString()


# -- afterwards ------------------------------------------------------------------------------------


def test_service_is_up_and_log_is_consistent(fuzzed: Fuzzed) -> None:
    """After the fuzzing (this test runs last in the module): health is SERVING, a normal
    Route and Feedback still work; then, with the service stopped, every feedback row's
    decision is in the log, every acknowledged feedback is there, and every decision's
    probabilities cover its eligible models, sum to 1 (within 1e-9) and give its chosen model
    the logged probability."""
    health = health_pb2_grpc.HealthStub(fuzzed.channel)
    for name in ("", "banditroute.v1.RouterService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=CALL_TIMEOUT_S)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    decision = fuzzed.stub.Route(pb.RouteRequest(prompt=PROMPTS[0]), timeout=CALL_TIMEOUT_S)
    assert decision.model in MODELS
    ack = fuzzed.stub.Feedback(
        pb.FeedbackRequest(decision_id=decision.decision_id, quality=1.0), timeout=CALL_TIMEOUT_S
    )
    assert ack.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
    fuzzed.acknowledged[decision.decision_id] += 1

    fuzzed.service.stop()
    with duckdb.connect(str(fuzzed.service.settings.log.path), read_only=True) as log:
        decisions = log.execute(
            "SELECT decision_id, eligible, probabilities, model, probability FROM decisions"
        ).fetchall()
        feedback = Counter(
            row[0] for row in log.execute("SELECT decision_id FROM feedback").fetchall()
        )
    ids = {row[0] for row in decisions}
    assert len(ids) == len(decisions), "a decision id is logged twice"
    assert set(feedback) <= ids, sorted(set(feedback) - ids)[:5]
    missing = {d: n for d, n in fuzzed.acknowledged.items() if feedback[d] < n}
    assert not missing, missing
    for decision_id, eligible, probabilities, model, probability in decisions:
        assert len(eligible) == len(probabilities) > 0, decision_id
        assert len(set(eligible)) == len(eligible), decision_id
        assert all(0.0 <= p <= 1.0 for p in probabilities), (decision_id, probabilities)
        assert math.fsum(probabilities) == pytest.approx(1.0, abs=1e-9), decision_id
        assert model in eligible, decision_id
        assert probabilities[eligible.index(model)] == probability, decision_id
    print(
        f"\nfuzz: {len(decisions)} decisions, {sum(feedback.values())} feedback rows, "
        f"{sum(fuzzed.acknowledged.values())} acknowledged;",
        "; ".join(f"{rpc}: {dict(codes)}" for rpc, codes in sorted(fuzzed.codes.items())),
    )
