"""Trusted signatures, checked by git itself, with real keys made by ssh-keygen and gpg."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import DefinitionsRepo
from deployally.errors import ValidationErrors
from deployally.source.git import GitRepo
from deployally.source.signatures import Verifier
from deployally.types import TrustedKey


@dataclass(frozen=True)
class SshKey:
    private: Path
    public: str  # the .pub line

    def trusted(self) -> TrustedKey:
        return TrustedKey("ssh", self.public, "trusted_keys[0]")


def make_ssh_key(directory: Path, name: str) -> SshKey:
    """An ed25519 key pair without a passphrase, as a person would make one."""
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@example.com", "-f", str(private)],
        check=True,
    )
    return SshKey(private, private.with_suffix(".pub").read_text().strip())


def ssh_signed_commit(repo: DefinitionsRepo, message: str, key: SshKey) -> str:
    repo.git("add", "-A")
    repo.git("-c", "gpg.format=ssh", "-c", f"user.signingkey={key.private}",
             "commit", "-q", "-S", "--allow-empty", "-m", message)
    return repo.git("rev-parse", "HEAD").strip()


@dataclass(frozen=True)
class GpgKey:
    home: Path
    fingerprint: str
    armored: str


@pytest.fixture(scope="module")
def gpg_key() -> Iterator[GpgKey]:
    """An OpenPGP signing key in a keyring of its own (a short path: gpg-agent's socket lives there)."""
    if shutil.which("gpg") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("gpg is not installed; .ci/run installs Debian's gnupg")
        pytest.skip("gpg is not installed")
    home = Path(tempfile.mkdtemp(prefix="dagpg-", dir="/tmp"))
    env = {**os.environ, "GNUPGHOME": str(home)}
    try:
        subprocess.run(
            ["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key",
             "Signer <signer@example.com>", "ed25519", "sign", "never"],
            check=True, env=env, capture_output=True,
        )
        listing = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys"], env=env,
                                 check=True, capture_output=True, text=True).stdout
        fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
        armored = subprocess.run(["gpg", "--batch", "--armor", "--export", fingerprint], env=env,
                                 check=True, capture_output=True, text=True).stdout
        yield GpgKey(home, fingerprint, armored)
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def gpg_signed_commit(repo: DefinitionsRepo, message: str, key: GpgKey) -> str:
    repo.git("add", "-A")
    subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=signer@example.com",
         "-c", f"user.signingkey={key.fingerprint}", "commit", "-q", "-S", "--allow-empty", "-m", message],
        cwd=repo.path, check=True, capture_output=True, env={**os.environ, "GNUPGHOME": str(key.home)},
    )
    return repo.git("rev-parse", "HEAD").strip()


@pytest.fixture
def repo(tmp_path: Path) -> DefinitionsRepo:
    return DefinitionsRepo(tmp_path / "repo", "tsig")


def test_ssh_only_a_trusted_key_makes_a_commit_trusted(repo: DefinitionsRepo, tmp_path: Path) -> None:
    alice = make_ssh_key(tmp_path / "keys", "alice")
    mallory = make_ssh_key(tmp_path / "keys", "mallory")
    unsigned = repo.commit("unsigned")
    by_alice = ssh_signed_commit(repo, "by alice", alice)
    by_mallory = ssh_signed_commit(repo, "by mallory", mallory)
    verifier = Verifier([alice.trusted()])

    try:
        verdicts = verifier.check(GitRepo(repo.path), [unsigned, by_alice, by_mallory])
    finally:
        verifier.close()

    assert verdicts[by_alice].trusted and verdicts[by_alice].reason == ""
    assert "alice" in verdicts[by_alice].signer
    assert not verdicts[unsigned].trusted and verdicts[unsigned].reason == "not signed"
    assert not verdicts[by_mallory].trusted
    assert "not in trusted_keys" in verdicts[by_mallory].reason
    assert "SHA256:" in verdicts[by_mallory].reason  # the key's fingerprint, to recognise it


def test_the_verdict_is_git_verify_commits_own(repo: DefinitionsRepo, tmp_path: Path) -> None:
    alice = make_ssh_key(tmp_path / "keys", "alice")
    mallory = make_ssh_key(tmp_path / "keys", "mallory")
    commits = [ssh_signed_commit(repo, "a", alice), ssh_signed_commit(repo, "m", mallory), repo.commit("n")]
    verifier = Verifier([alice.trusted()])
    try:
        verdicts = verifier.check(GitRepo(repo.path), commits)
        for commit in commits:
            verify = subprocess.run(
                ["git", "-c", f"gpg.ssh.allowedSignersFile={verifier.allowed_signers}",
                 "verify-commit", commit],
                cwd=repo.path, capture_output=True, check=False,
                env={**os.environ, "GNUPGHOME": str(verifier.gnupg_home)},
            )
            assert (verify.returncode == 0) is verdicts[commit].trusted
    finally:
        verifier.close()


def test_openpgp_keys_are_checked_against_the_operators_keyring_only(
    repo: DefinitionsRepo, tmp_path: Path, gpg_key: GpgKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed = gpg_signed_commit(repo, "by the signer", gpg_key)
    # The signer's own keyring trusts the key ultimately; the engine must never look there.
    monkeypatch.setenv("GNUPGHOME", str(gpg_key.home))
    only_ssh = Verifier([make_ssh_key(tmp_path / "keys", "alice").trusted()])
    with_gpg = Verifier([TrustedKey("openpgp", gpg_key.armored, "trusted_keys[0]")])
    try:
        assert not only_ssh.check(GitRepo(repo.path), [signed])[signed].trusted
        verdict = with_gpg.check(GitRepo(repo.path), [signed])[signed]
    finally:
        only_ssh.close()
        with_gpg.close()
    assert verdict.trusted, verdict
    assert "Signer" in verdict.signer


def test_a_key_ssh_keygen_cannot_read_is_an_error_naming_it() -> None:
    with pytest.raises(ValidationErrors) as caught:
        Verifier([TrustedKey("ssh", "ssh-ed25519 AAAAnotakey x", "trusted_keys[1]")],
                 config_path="/etc/deployally/engine.yaml")
    [error] = caught.value.errors
    assert (error.path, error.field) == ("/etc/deployally/engine.yaml", "trusted_keys[1]")
    assert "ssh-keygen" in error.message


def test_an_openpgp_block_gpg_cannot_import_is_an_error_naming_it() -> None:
    broken = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot a key\n-----END PGP PUBLIC KEY BLOCK-----\n"
    with pytest.raises(ValidationErrors) as caught:
        Verifier([TrustedKey("openpgp", broken, "trusted_keys[0]")])
    assert caught.value.errors[0].field == "trusted_keys[0]"
