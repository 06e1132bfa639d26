"""Which commits are signed by a key the engine's operator trusts, checked by git itself.

git verifies: an SSH signature against an allowed-signers file (`gpg.ssh.allowedSignersFile`),
an OpenPGP one against a keyring (GNUPGHOME) holding only the trusted keys, each marked
ultimately trusted, so git's verdict `G` (good, trusted) is the one test for both kinds.
Neither the user's ~/.gnupg nor their allowed signers are ever consulted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deployally.errors import ValidationError, ValidationErrors
from deployally.source.git import GitRepo, SignatureCheck
from deployally.types import TrustedKey

# git's %G? letters, in words a person acts on.
_WHY = {
    "N": "not signed",
    "B": "signed, but the signature does not match the commit",
    "U": "signed by a key that is not in trusted_keys",
    "E": "signed by a key that is not in trusted_keys",
    "X": "signed with a signature that has expired",
    "Y": "signed by a key that has expired",
    "R": "signed by a key that was revoked",
}
_PRINCIPAL = re.compile(r"[^A-Za-z0-9@._+-]")


@dataclass(frozen=True)
class Verdict:
    """Whether one commit may deploy under the trusted keys, and why not."""

    sha: str
    trusted: bool
    reason: str = ""  # "" when trusted
    signer: str = ""  # who git says signed it, when it says
    summary: str = ""  # the commit's subject line


class Verifier:
    """Checks commits against a fixed set of trusted keys; verdicts are cached by sha."""

    def __init__(self, keys: Sequence[TrustedKey], *, config_path: str = "engine.yaml") -> None:
        if not keys:
            raise ValueError("a Verifier needs at least one trusted key")
        self._tmp = tempfile.TemporaryDirectory(prefix="deployally-trust-")
        root = Path(self._tmp.name)
        self.allowed_signers = root / "allowed_signers"
        self.gnupg_home = root / "gnupg"
        self.gnupg_home.mkdir(mode=0o700)
        self._verdicts: dict[str, Verdict] = {}
        try:
            _build(keys, self.allowed_signers, self.gnupg_home, config_path)
        except BaseException:
            self._tmp.cleanup()
            raise

    def __repr__(self) -> str:
        return f"Verifier({self._tmp.name!r})"

    def check(self, repo: GitRepo, commits: Iterable[str]) -> dict[str, Verdict]:
        """The verdict on each commit, from one `git log` for those not seen before."""
        wanted = list(dict.fromkeys(commits))
        new = [c for c in wanted if c not in self._verdicts]
        if new:
            for found in repo.signatures(
                new, allowed_signers=self.allowed_signers, gnupg_home=self.gnupg_home
            ):
                self._verdicts[found.sha] = _verdict(found)
        return {c: self._verdicts[c] for c in wanted}

    def close(self) -> None:
        """Remove the keyring and allowed-signers file."""
        self._tmp.cleanup()


def _verdict(found: SignatureCheck) -> Verdict:
    if found.status == "G":
        return Verdict(found.sha, True, signer=found.signer, summary=found.summary)
    why = _WHY.get(found.status, f"not verifiable (git says {found.status!r})")
    if found.key and found.status != "N":
        why += f" ({found.key})"
    return Verdict(found.sha, False, why, found.signer, found.summary)


def _build(keys: Sequence[TrustedKey], allowed: Path, gnupg_home: Path, config_path: str) -> None:
    """Write the allowed-signers file and import the OpenPGP keys, or raise naming the bad key."""
    errors: list[ValidationError] = []
    lines = []
    ssh = [k for k in keys if k.kind == "ssh"]
    if ssh and shutil.which("ssh-keygen") is None:
        errors.append(_bad(config_path, ssh[0], "an SSH key needs ssh-keygen; install openssh-client"))
    for n, key in enumerate(ssh if not errors else ()):
        checked = subprocess.run(
            ["ssh-keygen", "-l", "-f", "-"], input=key.text + "\n",
            capture_output=True, text=True, check=False,
        )
        if checked.returncode != 0:
            errors.append(_bad(config_path, key, "ssh-keygen does not read it as an SSH public key"))
            continue
        keytype, blob, *comment = key.text.split(maxsplit=2)
        # The principal only names the signer in reports; git matches signatures by key.
        principal = _PRINCIPAL.sub("", comment[0]) if comment else ""
        lines.append(f"{principal or f'trusted-key-{n + 1}'} {keytype} {blob}\n")
    allowed.write_text("".join(lines))  # written even when empty: git needs it to answer N/U
    openpgp = [k for k in keys if k.kind == "openpgp"]
    (gnupg_home / "gpg.conf").write_text("no-autostart\n")  # verifying needs no agent
    if openpgp and shutil.which("gpg") is None:
        errors.append(_bad(config_path, openpgp[0], "an OpenPGP key needs gpg; install gnupg"))
        openpgp = []
    for key in openpgp:
        imported = _gpg(gnupg_home, ["--import"], key.text)
        if imported.returncode != 0:
            errors.append(_bad(config_path, key, f"gpg could not import it: {_last_line(imported)}"))
    if openpgp and not errors:
        listing = _gpg(gnupg_home, ["--with-colons", "--list-keys"], "")
        primaries = _primary_fingerprints(listing.stdout)
        # Only trusted keys are in this keyring: each is trusted ultimately, so git says G.
        trust = "".join(f"{fpr}:6:\n" for fpr in primaries)
        _gpg(gnupg_home, ["--import-ownertrust"], trust)
    if errors:
        raise ValidationErrors(errors)


def _gpg(home: Path, args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["gpg", "--batch", "--quiet", "--no-tty", "--homedir", str(home), *args],
        input=stdin, capture_output=True, text=True, check=False,
    )


def _primary_fingerprints(colons: str) -> list[str]:
    """The fingerprint following each `pub` record of `gpg --with-colons --list-keys`."""
    out = []
    after_pub = False
    for line in colons.splitlines():
        kind = line.split(":", 1)[0]
        if kind == "pub":
            after_pub = True
        elif kind == "fpr" and after_pub:
            out.append(line.split(":")[9])
            after_pub = False
    return out


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def _bad(config_path: str, key: TrustedKey, message: str) -> ValidationError:
    field = key.origin if key.origin.startswith("trusted_keys") else "trusted_keys"
    where = "" if field == key.origin else f"{key.origin}: "
    return ValidationError(config_path, field, where + message)
