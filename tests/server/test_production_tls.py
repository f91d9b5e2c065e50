"""TLS and mutual TLS through the gRPC interface, with certificates made for the test: a TLS
server answers clients that trust its certificate and refuses plaintext; with
require_client_auth it also refuses clients without a certificate signed by its client CA."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cert_helpers import Pem, issue

from banditroute.config import settings_from_mapping
from banditroute.errors import ConfigError
from banditroute.server.app import Service, build_service
from banditroute.v1 import router_pb2 as pb

FAIL_TIMEOUT_S = 5.0
"""Deadline of calls expected to fail in the handshake (they fail well before it)."""


@dataclass(frozen=True)
class Certificates:
    """A self-signed server certificate, a client CA, a client certificate it signed, and a
    self-signed client certificate no CA vouches for."""

    server: Pem
    client_ca: Pem
    client: Pem
    stranger: Pem


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Certificates written to a temporary folder (made once per module)."""
    folder = tmp_path_factory.mktemp("certs")
    server, _, _ = issue(folder, "localhost", server=True)
    ca, ca_cert, ca_key = issue(folder, "clients-ca", ca=True)
    client, _, _ = issue(folder, "client", issuer=(ca_cert, ca_key))
    stranger, _, _ = issue(folder, "stranger")
    return Certificates(server, ca, client, stranger)


def _tls(certs: Certificates, *, mutual: bool = False) -> dict[str, Any]:
    section: dict[str, Any] = {
        "cert_file": str(certs.server.cert_file),
        "key_file": str(certs.server.key_file),
    }
    if mutual:
        section |= {"client_ca_file": str(certs.client_ca.cert_file), "require_client_auth": True}
    return {"tls": section}


def _trusting(certs: Certificates, client: Pem | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=certs.server.cert)
    return grpc.ssl_channel_credentials(
        root_certificates=certs.server.cert, private_key=client.key, certificate_chain=client.cert
    )


def _refused(client: Any) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        client.stub.Route(pb.RouteRequest(prompt="hi"), timeout=FAIL_TIMEOUT_S)
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()


def test_tls_server_routes_for_a_trusting_client_and_refuses_plaintext(
    certs: Certificates, start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """With [tls] cert_file/key_file, a client that trusts the server's self-signed
    certificate routes and sends feedback; a plaintext client and a client that trusts another
    certificate fail to connect (UNAVAILABLE)."""
    service = start_service(_tls(certs))
    secure = api(service, credentials=_trusting(certs))
    decision = secure.route()
    assert decision.model
    assert secure.feedback(decision_id=decision.decision_id, quality=1.0).feedback_count == 1
    _refused(api(service))
    wrong_root = grpc.ssl_channel_credentials(root_certificates=certs.stranger.cert)
    _refused(api(service, credentials=wrong_root))


def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(
    certs: Certificates, start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """With client_ca_file and require_client_auth = true, a client presenting a certificate
    signed by that CA routes; a client without a certificate, or with a self-signed one, is
    refused in the handshake (UNAVAILABLE)."""
    service = start_service(_tls(certs, mutual=True))
    assert api(service, credentials=_trusting(certs, certs.client)).route().model
    _refused(api(service, credentials=_trusting(certs)))
    _refused(api(service, credentials=_trusting(certs, certs.stranger)))


@pytest.mark.parametrize(
    ("section", "text"),
    [
        ({"cert_file": "server.crt"}, "go together"),
        ({"key_file": "server.key"}, "go together"),
        ({"require_client_auth": True}, "require_client_auth"),
        (
            {"cert_file": "x.crt", "key_file": "x.key", "require_client_auth": True},
            "require_client_auth",
        ),
        ({"cert_file": 5, "key_file": "x.key"}, "tls.cert_file"),
        ({"ciphers": "all"}, "unknown key"),
    ],
)
def test_incomplete_tls_section_is_a_config_error(section: dict[str, Any], text: str) -> None:
    """A [tls] section with a certificate but no key (or the reverse), client auth without a
    client CA, a wrong type or an unknown key is a ConfigError naming the problem."""
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"tls": section})
    assert text in caught.value.message


def test_unreadable_certificate_file_fails_the_build(certs: Certificates, tmp_path: Path) -> None:
    """A [tls] cert_file that does not exist stops build_service with a ConfigError naming
    the file, and leaves the log file closed (a second build on the same log works)."""
    settings = settings_from_mapping(
        {
            "server": {"port": 0},
            "log": {"path": str(tmp_path / "log.duckdb")},
            "policy": {"snapshot_path": None},
            "tls": {
                "cert_file": str(tmp_path / "missing.crt"),
                "key_file": str(certs.server.key_file),
            },
        }
    )
    with pytest.raises(ConfigError) as caught:
        build_service(settings)
    assert "missing.crt" in caught.value.message
    good = settings_from_mapping(
        {
            "server": {"port": 0},
            "log": {"path": str(tmp_path / "log.duckdb")},
            "policy": {"snapshot_path": None},
            **_tls(certs),
        }
    )
    service = build_service(good)
    service.start()
    service.stop()
