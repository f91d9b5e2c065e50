"""PromotePolicy and RollbackPolicy: a candidate goes live only when its DR lower bound on the
server's own log beats the live policy's estimate by the margin, the evidence is chained in
the audit log either way, and a promotion can be rolled back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest
from cert_helpers import issue

from banditroute.audit import open_audit_log, verify
from banditroute.cli import main
from banditroute.server.app import Service
from banditroute.snapshots import parse_snapshot
from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb

ADMIN_KEY, ACME_KEY = "key-admin-promote", "key-acme-promote"
MODELS = [
    {"id": name, "provider": f"p{i}", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.1,
     "data_classes": ["public", "internal", "pii"]}
    for i, name in enumerate(("alpha", "beta", "gamma"))
]  # fmt: skip
CONFIG: dict[str, Any] = {
    "models": MODELS,
    "policy": {"kind": "uniform"},
    "auth": {"required": True, "admin_key_sha256": [hash_key(ADMIN_KEY)]},
    "tenants": [{"name": "acme", "api_key_sha256": [hash_key(ACME_KEY)]}],
    "log": {"sync_feedback": True},
}
QUALITY = {"alpha": 1.0, "beta": 0.1, "gamma": 0.1}
DECISIONS = 240  # fixed:alpha under uniform logging of 3 models: ESS about 80


@pytest.fixture
def served(start_service: Callable[..., Service], api: Callable[..., Any]) -> Service:
    """A uniform-logging service with DECISIONS decisions fed back: alpha is clearly best."""
    service = start_service(CONFIG)
    _feed(api(service, ACME_KEY))
    return service


def _feed(client: Any) -> None:
    """DECISIONS decisions with their feedback, through ``client``: alpha is clearly best."""
    for i in range(DECISIONS):
        decision = client.route(prompt=f"Question {i}: what is {i} plus {i}?")
        client.feedback(decision_id=decision.decision_id, quality=QUALITY[decision.model],
                        cost_usd=0.0001)  # fmt: skip


def _promote(client: Any, candidate: str, margin: float = 0.05) -> pb.PromotePolicyResponse:
    request = pb.PromotePolicyRequest(candidate=candidate, margin=margin)
    response: pb.PromotePolicyResponse = client.call("PromotePolicy", request)
    return response


def _audit(service: Service) -> tuple[Any, list[tuple[str, str, dict[str, Any]]]]:
    """Stop the service; the audit chain's verdict and its promotion/rollback records."""
    service.stop()
    source = open_audit_log(service.settings.log.path)
    try:
        result = verify(source.connection)
    finally:
        source.connection.close()
    with duckdb.connect(str(service.settings.log.path), read_only=True) as con:
        rows = con.execute(
            "SELECT kind, policy_version, CAST(payload AS VARCHAR) FROM audit "
            "WHERE kind IN ('promotion', 'rollback') ORDER BY seq"
        ).fetchall()
    return result, [(kind, version, json.loads(payload)) for kind, version, payload in rows]


def test_a_candidate_short_of_the_margin_is_refused_with_the_evidence_audited(
    served: Service, api: Callable[..., Any]
) -> None:
    """fixed:beta is worse than the live uniform policy: refused, the live policy stays, and
    the audit chain (which still verifies) holds the evidence: both estimates with their
    intervals, ESS, decisions, margin, verdict and the log digest."""
    admin = api(served, ADMIN_KEY)
    before = served.router.policy.version
    response = _promote(admin, "fixed:beta")
    assert not response.promoted
    assert "does not clear" in response.reason
    assert response.candidate.lower <= response.live.value + response.margin
    assert response.decisions == DECISIONS
    assert len(response.log_digest) == 64
    assert response.policy_version == before == served.router.policy.version
    result, records = _audit(served)
    assert result.ok, result.problem
    [(kind, version, evidence)] = records
    assert (kind, version) == ("promotion", before)
    assert evidence["verdict"] == "refused"
    assert evidence["candidate"]["policy"] == "fixed:beta"
    assert evidence["live"]["policy"] == "logged"
    assert evidence["log_digest"] == response.log_digest
    assert evidence["decisions"] == DECISIONS
    assert evidence["margin"] == pytest.approx(0.05)
    assert evidence["tolerance"] == pytest.approx(0.02)  # the default: 0 in the request
    assert {"value", "lower", "upper", "ess"} <= set(evidence["candidate"])


def test_a_clearly_better_candidate_goes_live_and_rolls_back(
    served: Service, api: Callable[..., Any]
) -> None:
    """fixed:alpha clears the gate: later decisions are its; RollbackPolicy puts the uniform
    policy back (a second rollback has nothing to undo); the chain verifies with both
    records, the promotion's naming the policy it replaced."""
    admin, acme = api(served, ADMIN_KEY), api(served, ACME_KEY)
    before = served.router.policy.version
    response = _promote(admin, "fixed:alpha")
    assert response.promoted, response.reason
    assert response.candidate.lower > response.live.value + response.margin
    assert response.policy_version == "fixed:alpha"
    decision = acme.route(prompt="After the promotion")
    assert (decision.model, decision.policy_version) == ("alpha", "fixed:alpha")

    rolled = admin.call("RollbackPolicy", pb.RollbackPolicyRequest())
    assert (rolled.policy_version, rolled.rolled_back_version) == (before, "fixed:alpha")
    assert acme.route(prompt="After the rollback").policy_version == before
    details = admin.fails("RollbackPolicy", pb.RollbackPolicyRequest(),
                          grpc.StatusCode.FAILED_PRECONDITION)  # fmt: skip
    assert "no promotion to roll back" in details

    result, records = _audit(served)
    assert result.ok, result.problem
    assert [(kind, version) for kind, version, _ in records] == [
        ("promotion", "fixed:alpha"), ("rollback", before),
    ]  # fmt: skip
    assert records[0][2]["verdict"] == "promoted"
    assert records[0][2]["previous_version"] == before
    assert records[1][2]["rolled_back_version"] == "fixed:alpha"


def test_promotion_and_rollback_need_an_admin_key(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """A tenant key may not change the live policy."""
    acme = api(start_service(CONFIG), ACME_KEY)
    request = pb.PromotePolicyRequest(candidate="fixed:alpha")
    acme.fails("PromotePolicy", request, grpc.StatusCode.PERMISSION_DENIED)
    acme.fails("RollbackPolicy", pb.RollbackPolicyRequest(), grpc.StatusCode.PERMISSION_DENIED)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"candidate": "bogus:thing"}, "candidate"),
        ({"candidate": ""}, "candidate"),
        ({"candidate": "fixed:no-such-model"}, "candidate"),
        ({"candidate": "logged"}, "candidate"),
        ({"candidate": "linucb:alpha=-1"}, "candidate"),
        ({"candidate": "shadow:none"}, "candidate"),
        ({"candidate": "x" * 1001}, "candidate"),
        ({"candidate": "uniform", "margin": -0.1}, "margin"),
        ({"candidate": "uniform", "margin": float("nan")}, "margin"),
        ({"candidate": "uniform", "objective": "nope"}, "objective"),
        ({"candidate": "uniform", "tolerance": -0.1}, "tolerance"),
        ({"candidate": "uniform", "tolerance": 1.5}, "tolerance"),
        ({"candidate": "uniform", "tolerance": float("nan")}, "tolerance"),
    ],
)
def test_a_bad_request_is_invalid_argument_naming_the_field(
    served: Service, api: Callable[..., Any], request_fields: dict[str, Any], field: str
) -> None:
    """Malformed or unknown candidates, a negative or NaN margin, an unknown objective and a
    tolerance outside (0, 1] are INVALID_ARGUMENT naming the field; nothing is promoted."""
    admin = api(served, ADMIN_KEY)
    before = served.router.policy.version
    details = admin.fails(
        "PromotePolicy", pb.PromotePolicyRequest(**request_fields),
        grpc.StatusCode.INVALID_ARGUMENT,
    )  # fmt: skip
    assert details.startswith(field), details
    assert served.router.policy.version == before


def test_a_promoted_policy_of_another_kind_does_not_overwrite_the_configured_snapshot(
    served: Service, api: Callable[..., Any]
) -> None:
    """A restart builds ``[policy] kind``; a promoted fixed policy saved in its place could
    not be restored into it (the snapshot would be moved aside as corrupt). The policy it
    replaced is saved instead, so a restart resumes the configured policy."""
    assert _promote(api(served, ADMIN_KEY), "fixed:alpha").promoted
    served.stop()
    path = served.settings.policy.snapshot_path
    assert path is not None
    assert parse_snapshot(path.read_bytes())[0] == "uniform"


def test_the_command_line_promotes_and_rolls_back_on_a_running_server(
    served: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``banditroute promote --server`` calls PromotePolicy with the key from
    $BANDITROUTE_API_KEY (exit 0: promoted), ``--rollback`` calls RollbackPolicy; a tenant's
    key is refused (exit 2, the status named)."""
    server = f"127.0.0.1:{served.port}"
    monkeypatch.setenv("BANDITROUTE_API_KEY", ACME_KEY)
    assert main(["promote", "--server", server, "--candidate", "fixed:alpha"]) == 2
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    monkeypatch.setenv("BANDITROUTE_API_KEY", ADMIN_KEY)
    assert main(["promote", "--server", server, "--candidate", "fixed:alpha"]) == 0
    assert "live policy: fixed:alpha" in capsys.readouterr().out
    assert served.router.policy.version == "fixed:alpha"
    assert main(["promote", "--server", server, "--rollback"]) == 0
    assert served.router.policy.version != "fixed:alpha"


def test_the_command_line_reaches_a_tls_server_with_tls_ca(
    start_service: Callable[..., Service],
    api: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Against a server serving TLS (a self-signed certificate for localhost and 127.0.0.1),
    ``promote --server`` with ``--tls-ca`` naming that certificate promotes (exit 0).
    Without it the plaintext call fails (exit 2) with UNAVAILABLE and a hint naming
    --tls-ca; an unreadable --tls-ca is an error naming the argument."""
    pem = issue(tmp_path, "localhost", server=True)[0]
    service = start_service(
        {**CONFIG, "tls": {"cert_file": str(pem.cert_file), "key_file": str(pem.key_file)}}
    )
    _feed(api(service, ACME_KEY, credentials=grpc.ssl_channel_credentials(pem.cert)))
    promote = ["promote", "--server", f"127.0.0.1:{service.port}", "--candidate", "fixed:alpha"]
    monkeypatch.setenv("BANDITROUTE_API_KEY", ADMIN_KEY)
    assert main(promote) == 2
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err
    assert "--tls-ca" in err
    assert main([*promote, "--tls-ca", str(tmp_path / "missing.crt")]) == 2
    assert "error: --tls-ca: cannot read" in capsys.readouterr().err
    assert service.router.policy.version != "fixed:alpha"
    assert main([*promote, "--tls-ca", str(pem.cert_file)]) == 0
    assert "live policy: fixed:alpha" in capsys.readouterr().out
    assert service.router.policy.version == "fixed:alpha"


def test_the_command_line_presents_a_client_certificate_for_mutual_tls(
    start_service: Callable[..., Service],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Against a server requiring client certificates, ``promote --server --rollback`` with
    --tls-ca alone is refused in the handshake (UNAVAILABLE); with --tls-cert/--tls-key
    (signed by the server's client CA) the call reaches the server, which answers it
    (FAILED_PRECONDITION: nothing to roll back). A certificate without its key is an error
    naming --tls-cert."""
    pem = issue(tmp_path, "localhost", server=True)[0]
    ca, ca_cert, ca_key = issue(tmp_path, "clients-ca", ca=True)
    client = issue(tmp_path, "client", issuer=(ca_cert, ca_key))[0]
    tls = {"cert_file": str(pem.cert_file), "key_file": str(pem.key_file),
           "client_ca_file": str(ca.cert_file), "require_client_auth": True}  # fmt: skip
    service = start_service({**CONFIG, "tls": tls})
    monkeypatch.setenv("BANDITROUTE_API_KEY", ADMIN_KEY)
    rollback = ["promote", "--server", f"127.0.0.1:{service.port}", "--rollback",
                "--tls-ca", str(pem.cert_file)]  # fmt: skip
    assert main(rollback) == 2
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert main([*rollback, "--tls-cert", str(client.cert_file)]) == 2
    assert "error: --tls-cert: a client certificate needs its key" in capsys.readouterr().err
    client_args = ["--tls-cert", str(client.cert_file), "--tls-key", str(client.key_file)]
    assert main([*rollback, *client_args]) == 2
    assert "error: FAILED_PRECONDITION" in capsys.readouterr().err


def test_a_shadow_policy_is_promoted_as_it_runs(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """shadow:NAME is judged on the distributions the shadow logged beside every decision and,
    when it clears, the running shadow object itself becomes the live policy."""
    config = {
        **CONFIG,
        "policies": {"best": {"kind": "fixed", "fixed_model": "alpha", "min_probability": 0.0}},
        "tenants": [{"name": "acme", "api_key_sha256": [hash_key(ACME_KEY)],
                     "shadow_policies": ["best"]}],
    }  # fmt: skip
    service = start_service(config)
    client = api(service, ACME_KEY)
    for i in range(DECISIONS):
        decision = client.route(prompt=f"Question {i}: what is {i} times {i}?")
        client.feedback(decision_id=decision.decision_id, quality=QUALITY[decision.model])
    response = _promote(api(service, ADMIN_KEY), "shadow:best")
    assert response.promoted, response.reason
    assert service.router.policy is service.router.policies["best"]
