"""What checking signatures costs: the trusted keyring, and git's verdict on N signed commits.

    python bench/signed_commits.py --commits 200

Makes a repository of N commits signed with a fresh SSH key (ssh-keygen), then times
building the Verifier (the allowed-signers file, one ssh-keygen check per key), checking
the newest commit alone (what a sync does when the head is signed), and checking all N at
once (a first sync, or a pre-receive of N new commits). Not a test: figures vary by machine.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from deployally.source.git import GitRepo
from deployally.source.signatures import Verifier
from deployally.types import TrustedKey


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Bench", "-c", "user.email=bench@localhost", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-signed-") as tmp:
        root = Path(tmp)
        key = root / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        repo = root / "repo"
        git(root, "init", "-q", "-b", "main", str(repo))
        sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}"]
        started = time.perf_counter()
        for n in range(args.commits):
            git(repo, *sign, "commit", "-q", "-S", "--allow-empty", "-m", f"commit {n}")
        made = time.perf_counter() - started
        commits = git(repo, "rev-list", "--reverse", "HEAD").split()
        public = TrustedKey("ssh", key.with_suffix(".pub").read_text().strip(), "trusted_keys[0]")

        started = time.perf_counter()
        verifier = Verifier([public])
        built = time.perf_counter() - started
        try:
            started = time.perf_counter()
            head = verifier.check(GitRepo(repo), commits[-1:])
            one = time.perf_counter() - started
            fresh = Verifier([public])
            started = time.perf_counter()
            every = fresh.check(GitRepo(repo), commits)
            all_n = time.perf_counter() - started
            fresh.close()
        finally:
            verifier.close()
        assert all(v.trusted for v in every.values()) and head[commits[-1]].trusted
        print(f"{args.commits} SSH-signed commits made in {made:.2f} s (git commit -S)")
        print(f"trusted keyring built:             {built * 1000:.1f} ms")
        print(f"verdict on the head commit:        {one * 1000:.1f} ms")
        print(f"verdicts on all {args.commits} commits:      {all_n:.2f} s "
              f"({all_n / args.commits * 1000:.1f} ms a commit)")


if __name__ == "__main__":
    main()
