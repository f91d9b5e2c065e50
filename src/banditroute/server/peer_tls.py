"""How a cluster replica connects to another to relay Feedback
(:mod:`banditroute.server.replica_peers`): over TLS exactly when it serves TLS itself, never
in plaintext beside a TLS port (the relay carries the caller's API key).

The other replica's certificate is checked against ``cluster.peer_ca_file`` (default
``tls.client_ca_file``), and against the host of the address it registered unless
``cluster.peer_server_name`` names the host its certificate is for: replicas register
``--host``'s address (often an IP), while certificates commonly name a DNS name the
replicas share. This replica presents its own ``tls.cert_file`` as a client certificate,
which replicas requiring client certificates (``require_client_auth``) check.
"""

from __future__ import annotations

import grpc

from banditroute.client.channels import ChannelOptions, server_name_option, tls_credentials
from banditroute.config import Settings


def peer_tls(settings: Settings) -> tuple[bool | grpc.ChannelCredentials, ChannelOptions]:
    """The relay's channel security (False: plaintext) and options. The files are read here,
    so an unreadable one is a ConfigError naming its setting at start-up."""
    tls, cluster = settings.tls, settings.cluster
    if not tls.enabled:
        return False, ()
    assert tls.cert_file is not None  # enabled: a certificate and its key (config.py)
    assert tls.key_file is not None
    ca = cluster.peer_ca_file
    credentials = tls_credentials(
        ca=None if ca is None else ("cluster.peer_ca_file", ca),
        cert=("tls.cert_file", tls.cert_file),
        key=("tls.key_file", tls.key_file),
    )
    return credentials, server_name_option(cluster.peer_server_name)


def tls_problem(details: str) -> str | None:
    """What a failed relay's gRPC error text says went wrong in the TLS handshake, naming the
    setting to check; None when it says nothing about TLS (the replica is down, say). A
    replica refusing this one's client certificate just closes the connection, which the
    text cannot tell from a replica going away."""
    if "Hostname Verification" in details:
        return (
            "its TLS certificate does not hold the name checked (the host of the address it "
            "registered, or cluster.peer_server_name)"
        )
    if "CERTIFICATE_VERIFY_FAILED" in details or "handshake failed" in details.lower():
        return "its TLS certificate failed the check against cluster.peer_ca_file"
    return None


__all__ = ["peer_tls", "tls_problem"]
