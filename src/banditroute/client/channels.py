"""gRPC channels to a banditroute server, plaintext or TLS, built one way for every caller:
the Python client, ``promote --server`` and a cluster replica relaying Feedback to another.

Certificates come from PEM files read once, up front, so that a missing or unreadable file is
a :class:`~banditroute.errors.ConfigError` naming the setting or argument that gave it, not a
failed handshake later.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from banditroute.errors import ConfigError

ChannelOptions = Sequence[tuple[str, Any]]
PEM_MARKER = b"-----BEGIN "
MAX_PEM_BYTES = 1024 * 1024
"""A certificate bundle larger than this is not one (a wrong path, say a log file)."""


def open_channel(
    target: str, tls: bool | grpc.ChannelCredentials = False, options: ChannelOptions = ()
) -> grpc.Channel:
    """A channel to ``target``: plaintext (``tls=False``), TLS trusting the system's roots
    (``True``), or TLS with these credentials (CA, client certificate)."""
    if tls is False:
        return grpc.insecure_channel(target, options=list(options))
    credentials = grpc.ssl_channel_credentials() if tls is True else tls
    return grpc.secure_channel(target, credentials, options=list(options))


def read_pem(path: Path, name: str) -> bytes:
    """The contents of a PEM file; ConfigError naming ``name`` (the setting or argument that
    gave ``path``) when it cannot be read or holds no PEM block."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}", field=name) from exc
    if len(data) > MAX_PEM_BYTES or PEM_MARKER not in data:
        raise ConfigError(f"{name}: {path} is not a PEM file", field=name)
    return data


def tls_credentials(
    ca: tuple[str, Path] | None = None,
    cert: tuple[str, Path] | None = None,
    key: tuple[str, Path] | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials trusting the CA file ``ca`` (the system's roots when None), and
    presenting the client certificate ``cert`` with its ``key`` (mutual TLS) when given. Each
    file comes as (the setting or argument that named it, its path), for the error."""
    if (cert is None) != (key is None):
        named = (cert or key or ("", Path()))[0]
        other = "key" if cert is not None else "certificate"
        raise ConfigError(f"{named}: a client certificate needs its {other} too", field=named)
    return grpc.ssl_channel_credentials(
        root_certificates=None if ca is None else read_pem(ca[1], ca[0]),
        private_key=None if key is None else read_pem(key[1], key[0]),
        certificate_chain=None if cert is None else read_pem(cert[1], cert[0]),
    )


def server_name_option(name: str) -> tuple[tuple[str, Any], ...]:
    """Channel options that check the server's certificate against ``name`` instead of the
    target's host (none for an empty name)."""
    return (("grpc.ssl_target_name_override", name),) if name else ()


__all__ = ["ChannelOptions", "open_channel", "read_pem", "server_name_option", "tls_credentials"]
