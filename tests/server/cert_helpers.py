"""Certificates made for a test (P-256, valid for a day): self-signed, or signed by a CA made
the same way, written as PEM files. Used by the TLS tests of the server, the CLI and the
cluster's relay between replicas."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOCAL_NAMES = ("localhost", "127.0.0.1")
"""The names a server certificate holds unless told otherwise."""


@dataclass(frozen=True)
class Pem:
    """A certificate and its private key, PEM-encoded, and where they were written."""

    cert: bytes
    key: bytes
    cert_file: Path
    key_file: Path


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(
    folder: Path,
    name: str,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = False,
    server: bool = False,
    names: Sequence[str] = LOCAL_NAMES,
) -> tuple[Pem, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for ``name``, self-signed unless ``issuer`` (cert, key) signs it; a
    ``server`` certificate holds ``names`` (host names or IP addresses) as its subject
    alternative names. Written to ``folder/NAME.crt`` and ``folder/NAME.key``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
    signer = key if issuer is None else issuer[1]
    cert = builder.sign(signer, hashes.SHA256())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    return Pem(cert_pem, key_pem, cert_file, key_file), cert, key
