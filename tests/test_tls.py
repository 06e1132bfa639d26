"""`deployally serve --tls-cert --tls-key`: the API over real HTTPS with a certificate made here.

The engine's own clients (the post-receive hook, `deployally status`) keep working against
it through engine.json; a client elsewhere checks it against a CA file (`client_context`).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import DefinitionsRepo, ServeProcess
from deployally.cli import main
from deployally.serve.engine_client import running_engine_status
from deployally.serve.hook_client import post_receive
from deployally.serve.tls import TlsError, client_context, server_context


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return path


def _self_signed(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    """A certificate for localhost and 127.0.0.1, signed by its own key (valid for a day)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    key = _key()
    return _self_signed(key, tmp_path / "engine.crt"), _write_key(key, tmp_path / "engine.key")


# ---------------------------------------------------------------- refused before anything starts


def test_serve_takes_both_tls_options_or_neither(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    runner = CliRunner()
    where = ["--repo", str(tmp_path), "--state-dir", str(tmp_path / "state")]
    only_cert = runner.invoke(main, ["serve", *where, "--tls-cert", str(cert)])
    assert only_cert.exit_code == 2 and "--tls-cert needs --tls-key" in only_cert.output
    only_key = runner.invoke(main, ["serve", *where, "--tls-key", str(key)])
    assert only_key.exit_code == 2 and "--tls-key needs --tls-cert" in only_key.output
    assert not (tmp_path / "state").exists()  # nothing started


def test_a_missing_unusable_or_mismatched_tls_file_is_named(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    other_key = _write_key(_key(), tmp_path / "other.key")
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    cases = [
        (tmp_path / "nowhere.crt", key, "--tls-cert", "no such file"),
        (cert, tmp_path / "nowhere.key", "--tls-key", "no such file"),
        (tmp_path, key, "--tls-cert", "is a directory"),
        (not_pem, key, "--tls-cert", "no PEM certificate"),
        (cert, not_pem, "--tls-key", "no PEM private key"),
        (cert, other_key, "--tls-key", "is not the key of the certificate"),
    ]
    for cert_file, key_file, option, says in cases:
        with pytest.raises(TlsError) as refused:
            server_context(cert_file, key_file)
        message = str(refused.value)
        assert message.startswith(option) and says in message, message
    # Through the command: one readable line, exit 2, no traceback.
    done = CliRunner().invoke(main, [
        "serve", "--repo", str(tmp_path), "--state-dir", str(tmp_path / "state"),
        "--tls-cert", str(cert), "--tls-key", str(other_key),
    ])
    assert done.exit_code == 2 and "is not the key of the certificate" in done.output
    assert "Traceback" not in done.output


def test_a_ca_file_that_cannot_be_used_is_named(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="--ca-file .*no such file"):
        client_context(tmp_path / "ca.pem")
    (tmp_path / "junk.pem").write_text("junk\n")
    with pytest.raises(TlsError, match="--ca-file .*no PEM certificate"):
        client_context(tmp_path / "junk.pem")


# ---------------------------------------------------------------- a real HTTPS engine


def test_serve_over_https_and_its_clients_keep_working(
    defs_repo: DefinitionsRepo, tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    state = tmp_path / "state"
    engine = ServeProcess(defs_repo.path, state, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        # The engine file and the log say https, and name the certificate local clients trust.
        recorded = json.loads((state / "engine.json").read_text())
        assert recorded["url"].startswith("https://127.0.0.1:")
        assert recorded["tls_cert"] == str(cert.resolve())
        assert f"url={recorded['url']}" in engine.log() or recorded["url"] in engine.log()
        port = int(recorded["url"].rsplit(":", 1)[1])

        # A client elsewhere checks it against the CA it is given, host name and all.
        health = f"https://localhost:{port}/api/v1/health"
        with urllib.request.urlopen(health, timeout=30, context=client_context(cert)) as answer:
            assert answer.status == 200 and "engine" in json.loads(answer.read())["checks"]
        # Without that CA the engine is not trusted; plain HTTP gets no answer from it.
        with pytest.raises(urllib.error.URLError) as untrusted:
            urllib.request.urlopen(health, timeout=30, context=client_context())
        assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=30)
        # TLS 1.2 at least (the server's floor; the handshake here gets 1.2 or 1.3).
        assert server_context(cert, key).minimum_version is ssl.TLSVersion.TLSv1_2
        with (
            socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
            client_context(cert).wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        # The API answers with a token, as over HTTP.
        listed = engine.session.get(
            recorded["url"] + "/api/v1/servers", verify=str(cert), timeout=30,
            headers={"Authorization": f"Bearer {recorded['token']}"},
        )
        assert listed.status_code == 200 and listed.json()["data"][0]["name"] == "local"

        # The engine's own clients on this host: `deployally status`, and the push hook.
        status = running_engine_status(state)
        assert status is not None
        shown = CliRunner().invoke(
            main, ["status", "--json", "--repo", str(defs_repo.path), "--state-dir", str(state)]
        )
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["engine"] is not None
        # (A commit that deploys nothing: what is checked is that the engine answers the hook.)
        defs_repo.write("NOTES.md", "how we deploy\n")
        head = defs_repo.commit("Notes")
        lines: list[str] = []
        code = post_receive(defs_repo.path / ".git", "main", head, lines.append, state)
        assert code == 0, lines
        assert lines[-1] == "DeployAlly: 0 deployed, 0 failed, 0 unchanged, 0 invalid", lines
        assert not any("deploying here" in line or "did not answer" in line for line in lines)
    finally:
        assert engine.stop() == 0, engine.log()
