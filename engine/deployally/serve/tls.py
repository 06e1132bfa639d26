"""HTTPS for the engine's API: the server's context from --tls-cert/--tls-key, and the clients'.

A client on another host (an agent) checks the engine against a CA it is given
(`client_context`). The engine's own clients on its host (the post-receive hook,
`deployally status`) find the engine through engine.json, which records the
certificate `serve` was given: they trust exactly that certificate
(`engine_file_context`), so they need no CA and work with a self-signed one too.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from deployally.errors import DeployAllyError

# The first certificate in a PEM file: the engine's own (a chain file's leaf comes first).
_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.DOTALL
)


class TlsError(DeployAllyError):
    """A certificate, key or CA file cannot be used; names the option and the file."""


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The API's TLS context (TLS 1.2 at least) from a PEM certificate (chain) and its key;
    TlsError naming --tls-cert or --tls-key when a file is missing, unreadable, not PEM, or
    the key is not the certificate's."""
    cert_pem = _read("--tls-cert", cert_file, "certificate")
    key_pem = _read("--tls-key", key_file, "private key")
    try:
        leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        raise TlsError(
            f"--tls-cert {cert_file}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TlsError(
            f"--tls-key {key_file}: the key is encrypted with a passphrase; give it unencrypted"
            " (readable by the engine's user only)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsError(
            f"--tls-key {key_file}: holds no PEM private key (-----BEGIN PRIVATE KEY-----)"
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.public_key().public_bytes(der, public) != key.public_key().public_bytes(der, public):
        raise TlsError(
            f"--tls-key {key_file} is not the key of the certificate in --tls-cert {cert_file}"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise TlsError(
            f"--tls-cert {cert_file} with --tls-key {key_file}: {exc.reason or exc}"
        ) from None
    return context


def client_context(ca_file: Path | None = None, *, option: str = "--ca-file") -> ssl.SSLContext:
    """A client's TLS context (TLS 1.2 at least, the host name checked) that trusts the CA
    certificates in `ca_file` (PEM), else the system's; TlsError naming `option` and the file
    when it cannot be read."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        _read(option, ca_file, "CA certificate")
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError:
            raise TlsError(
                f"{option} {ca_file}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
            ) from None
    return context


def engine_file_context(cert_file: Path) -> ssl.SSLContext:
    """A context for the engine's own clients on its host: it trusts exactly the certificate
    `serve` was given (read from the file engine.json names), whatever signed it. The host
    name is not checked: the URL says 127.0.0.1, which a CA's certificate seldom names, and
    the certificate itself is pinned."""
    try:
        text = cert_file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise TlsError(
            f"cannot read the engine's certificate {cert_file} (engine.json names it): {exc}"
        ) from None
    first = _PEM_CERTIFICATE.search(text)
    if first is None:
        raise TlsError(f"the engine's certificate {cert_file} holds no PEM certificate")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=first.group(0))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    # The pinned certificate may be a leaf under a CA: it is the anchor all the same.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def _read(option: str, path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TlsError(f"{option} {path}: no such file (the {what}, PEM)") from None
    except IsADirectoryError:
        raise TlsError(f"{option} {path}: is a directory, not the {what} file") from None
    except OSError as exc:
        raise TlsError(f"{option} {path}: cannot be read ({exc.strerror})") from None
