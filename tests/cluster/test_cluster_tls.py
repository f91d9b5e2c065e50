"""Replicas serving TLS relay Feedback to each other over TLS (real ``serve --cluster``
processes, a real valkey-server, certificates made for the test): the relay checks the other
replica's certificate against the configured CA and name and presents this replica's own
certificate, never falls back to plaintext, and says why when the check fails."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from cert_helpers import Pem, issue
from fault_helpers import ServerLauncher, ServerProcess, write_config

from banditroute.config import settings_from_mapping
from banditroute.errors import ConfigError
from banditroute.server.app import build_service
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 30.0
WAIT_BOUND_S = 120.0
"""Generous bound on waiting for both replicas to register (catches a hang only)."""
PROMPT = "Translate 'good morning' into German."
SERVICE_NAME = "replicas.internal"
"""The one name the certificates of the server-name test hold (no IP address)."""


def _replica_config(
    tmp_path: Path, name: str, pem: Pem, tls: Mapping[str, Any], cluster: Mapping[str, Any]
) -> Path:
    return write_config(
        tmp_path / f"{name}.toml",
        {
            "server": {"port": 0, "grace_s": 2.0},
            "log": {"path": str(tmp_path / f"{name}.duckdb")},
            "policy": {"snapshot_path": str(tmp_path / f"{name}.snapshot")},
            "tls": {"cert_file": str(pem.cert_file), "key_file": str(pem.key_file), **tls},
            "cluster": {"replica_id": name, "heartbeat_s": 0.2, "retry_s": 0.2, **cluster},
        },
    )


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[ServerLauncher]:
    started = ServerLauncher(tmp_path)
    yield started
    started.close_all()


@pytest.fixture
def ca(tmp_path: Path) -> Callable[..., Pem]:
    """``ca(name, server=..., names=...)``: a certificate signed by one CA made for the test
    (written as ``replicas-ca.crt``)."""
    _, ca_cert, ca_key = issue(tmp_path, "replicas-ca", ca=True)

    def sign(name: str, **kwargs: Any) -> Pem:
        return issue(tmp_path, name, issuer=(ca_cert, ca_key), **kwargs)[0]

    return sign


def _channel(
    server: ServerProcess, tmp_path: Path, client: Pem | None = None, name: str = ""
) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(tmp_path / "replicas-ca.crt").read_bytes(),
        private_key=None if client is None else client.key,
        certificate_chain=None if client is None else client.cert,
    )
    options = [("grpc.ssl_target_name_override", name)] if name else []
    return grpc.secure_channel(server.address, credentials, options=options)


def _wait_for_two(channel: grpc.Channel) -> None:
    """Poll GetStats until the replica sees two replicas alive (bounded: catches a hang)."""
    stub = pb_grpc.RouterServiceStub(channel)
    deadline = time.monotonic() + WAIT_BOUND_S
    while stub.GetStats(pb.GetStatsRequest(), timeout=CALL_TIMEOUT_S).cluster.replicas_alive < 2:
        assert time.monotonic() < deadline, "the two replicas did not both register"
        time.sleep(0.05)


def _decide_here_feed_back_there(decider: grpc.Channel, other: grpc.Channel) -> Any:
    """Route on ``decider``, send the Feedback for it to ``other``: its answer."""
    decision = pb_grpc.RouterServiceStub(decider).Route(
        pb.RouteRequest(prompt=PROMPT), timeout=CALL_TIMEOUT_S
    )
    return pb_grpc.RouterServiceStub(other).Feedback(
        pb.FeedbackRequest(decision_id=decision.decision_id, quality=1.0),
        timeout=CALL_TIMEOUT_S,
    )


def test_feedback_is_relayed_between_mutual_tls_replicas_and_learned(
    tmp_path: Path, valkey_server: Any, launcher: ServerLauncher, ca: Callable[..., Pem]
) -> None:
    """Two replicas serve mutual TLS (require_client_auth, client_ca_file: the CA that signed
    both replicas' certificates, which are for 127.0.0.1). Feedback sent to B for A's
    decision, and to A for B's, is relayed over TLS, with the relaying replica's certificate
    as its client certificate and the peer checked against client_ca_file (the default
    cluster.peer_ca_file), and learned by the replica that decided: LEARNED, not
    UNAVAILABLE."""
    mutual = {"client_ca_file": str(tmp_path / "replicas-ca.crt"), "require_client_auth": True}
    a, b = (
        launcher.start(
            _replica_config(tmp_path, name, ca(f"replica-{name}", server=True), mutual, {}),
            args=("--cluster", valkey_server.url),
        )
        for name in ("a", "b")
    )
    client = ca("client")
    with _channel(a, tmp_path, client) as to_a, _channel(b, tmp_path, client) as to_b:
        _wait_for_two(to_b)
        first = _decide_here_feed_back_there(to_a, to_b)
        assert first.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
        second = _decide_here_feed_back_there(to_b, to_a)
        assert second.disposition == pb.FEEDBACK_DISPOSITION_LEARNED


def test_the_relay_checks_the_configured_server_name_and_says_when_the_check_fails(
    tmp_path: Path, valkey_server: Any, launcher: ServerLauncher, ca: Callable[..., Pem]
) -> None:
    """The replicas' certificates name only replicas.internal, while they register
    127.0.0.1:PORT. Replica A, configured with cluster.peer_server_name = replicas.internal
    (and cluster.peer_ca_file), relays B's feedback and B learns it. Replica B, without
    peer_server_name, checks A's certificate against 127.0.0.1: the relay fails, and the
    caller gets UNAVAILABLE naming the TLS check and the setting, and B logs why."""
    peer = {"peer_ca_file": str(tmp_path / "replicas-ca.crt")}
    names = {"server": True, "names": (SERVICE_NAME,)}
    a = launcher.start(
        _replica_config(
            tmp_path, "a", ca("replica-a", **names), {}, {**peer, "peer_server_name": SERVICE_NAME}
        ),
        args=("--cluster", valkey_server.url),
    )
    b = launcher.start(
        _replica_config(tmp_path, "b", ca("replica-b", **names), {}, peer),
        args=("--cluster", valkey_server.url),
    )
    with (
        _channel(a, tmp_path, name=SERVICE_NAME) as to_a,
        _channel(b, tmp_path, name=SERVICE_NAME) as to_b,
    ):
        _wait_for_two(to_a)
        relayed = _decide_here_feed_back_there(to_b, to_a)
        assert relayed.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
        with pytest.raises(grpc.RpcError) as caught:
            _decide_here_feed_back_there(to_a, to_b)
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cluster.peer_server_name" in (caught.value.details() or "")
    logged = [line for line in b.log_text().splitlines() if "replica_relay_failed" in line]
    assert logged, b.log_text()
    assert "cluster.peer_server_name" in logged[-1]


TLS_FILES = {"cert_file": "replica.crt", "key_file": "replica.key"}
URL = "redis://127.0.0.1:6379/0"
PEER_CA = {"peer_ca_file": "ca.crt"}


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"tls": TLS_FILES, "cluster": {"url": URL}}, "cluster.peer_ca_file"),
        ({"cluster": PEER_CA}, "cluster.peer_ca_file"),
        ({"cluster": {"peer_server_name": "replicas.internal"}}, "cluster.peer_server_name"),
        (
            {"tls": TLS_FILES, "cluster": {**PEER_CA, "peer_server_name": "a b"}},
            "cluster.peer_server_name",
        ),
        (
            {
                "tls": TLS_FILES,
                "cluster": {**PEER_CA, "peer_server_name": "a" * 254},
            },
            "cluster.peer_server_name",
        ),
    ],
)
def test_relay_tls_settings_that_cannot_work_are_config_errors(
    sections: dict[str, Any], field: str
) -> None:
    """A TLS replica with no CA to check the other replicas against (no peer_ca_file, no
    client_ca_file to default to), peer settings without [tls] (the relay would be
    plaintext), and a peer_server_name that is no host name are ConfigErrors naming the
    key."""
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(sections)
    assert caught.value.field == field
    assert caught.value.message.startswith(field)


def test_cluster_flag_on_a_tls_config_without_a_peer_ca_is_a_config_error() -> None:
    """``serve --cluster URL`` on a [tls] config that gives the relay no CA fails as the
    config would (the relay never falls back to plaintext or to trusting anyone)."""
    settings = settings_from_mapping({"tls": TLS_FILES})
    with pytest.raises(ConfigError) as caught:
        settings.with_overrides(cluster_url=URL)
    assert caught.value.field == "cluster.peer_ca_file"


def test_peer_ca_file_defaults_to_the_client_ca() -> None:
    """With mutual TLS the relay trusts tls.client_ca_file unless peer_ca_file says
    otherwise (the replicas' certificates are then signed by the CA they accept)."""
    mutual = {**TLS_FILES, "client_ca_file": "clients.crt", "require_client_auth": True}
    defaulted = settings_from_mapping({"tls": mutual, "cluster": {"url": URL}})
    assert defaulted.cluster.peer_ca_file == Path("clients.crt")
    named = settings_from_mapping(
        {"tls": mutual, "cluster": {"url": URL, "peer_ca_file": "peers.crt"}}
    )
    assert named.cluster.peer_ca_file == Path("peers.crt")


@pytest.mark.parametrize("content", [None, b"not a certificate\n"])
def test_an_unusable_peer_ca_file_stops_the_replica_at_start_up(
    tmp_path: Path, ca: Callable[..., Pem], content: bytes | None
) -> None:
    """A peer_ca_file that does not exist, or holds no PEM certificate, stops build_service
    with a ConfigError naming cluster.peer_ca_file and the file, before the replica opens
    its log or joins the cluster."""
    pem = ca("replica", server=True)
    peer_ca = tmp_path / "peers.crt"
    if content is not None:
        peer_ca.write_bytes(content)
    settings = settings_from_mapping({
        "server": {"port": 0},
        "log": {"path": str(tmp_path / "log.duckdb")},
        "policy": {"snapshot_path": None},
        "tls": {"cert_file": str(pem.cert_file), "key_file": str(pem.key_file)},
        "cluster": {"url": URL, "peer_ca_file": str(peer_ca)},
    })  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        build_service(settings)
    assert caught.value.field == "cluster.peer_ca_file"
    assert str(peer_ca) in caught.value.message
    assert not (tmp_path / "log.duckdb").exists()
