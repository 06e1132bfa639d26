"""CI: what a new user runs, against the installed wheel, with no checkout beside it.

Run by `.ci/run` with a fresh virtualenv's python, from an empty directory outside the
checkout: `templates list`, `init`, `validate`, `demo` (deployed and served) and `sync`,
against the real Docker engine. It removes exactly the containers, volumes and networks
it made, and exits non-zero naming the first step that did not do what the README says.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import docker
import docker.models.networks

import deployally
from deployally.store import Store

HERE = Path.cwd()
DEPLOYALLY = str(Path(sys.executable).parent / "deployally")
PREFIX = "wheel" + secrets.token_hex(3)
DEMO_NETWORK = "deployally"  # example-repo/deployally.yaml's network
GIT_AUTHOR = ["-c", "user.name=CI", "-c", "user.email=ci@localhost"]


def step(what: str) -> None:
    print(f"wheel check: {what}", flush=True)


def run(*args: str, cwd: Path = HERE, timeout: float = 600) -> str:
    """Run a command and return its output; stop the check with that output if it fails."""
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        sys.exit(f"wheel check: {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


def expect(condition: bool, what: str) -> None:
    if not condition:
        sys.exit(f"wheel check: {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def wait_for(url: str, deadline_s: float, proc: subprocess.Popen[str]) -> str:
    """The body of `url` once it answers 200, while `proc` runs; stop the check otherwise."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        expect(proc.poll() is None, f"the demo exited with {proc.returncode} before {url} answered")
        try:
            status, body = get(url)
            if status == 200:
                return body
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"wheel check: {url} did not answer within {deadline_s:g}s")


def installed_apart_from_any_checkout() -> None:
    step(f"deployally {deployally.__version__} from {Path(deployally.__file__).parent}")
    expect(Path(deployally.__file__).is_relative_to(sys.prefix), "deployally is not the venv's own")
    expect(not (HERE / "engine").exists(), "run this from a directory without a checkout")


def templates_list() -> None:
    step("templates list")
    out = run(DEPLOYALLY, "templates", "list")
    for path in ("database/mysql/standard/8.4", "tools/busybox/plain/stable", "web/nginx/standard/1.27"):
        expect(path in out, f"templates list does not show {path}:\n{out}")


def init_and_validate(repo: Path) -> None:
    step("init, a definition committed through the pre-commit hook, validate")
    run(DEPLOYALLY, "init", str(repo))
    hook = (repo / ".git" / "hooks" / "pre-commit").read_text()
    expect(sys.executable in hook, f"the pre-commit hook does not run this install:\n{hook}")
    (repo / "deployally.yaml").write_text(f"branch: main\nnetwork: {PREFIX}net\nhealth_timeout: 60s\n")
    (repo / "definitions" / f"{PREFIX}_hello.yaml").write_text(
        f"name: {PREFIX}_hello\ntemplate: tools/busybox/plain/stable\n"
    )
    run("git", *GIT_AUTHOR, "add", "-A", cwd=repo)
    run("git", *GIT_AUTHOR, "commit", "-q", "-m", "Add hello", cwd=repo)
    out = run(DEPLOYALLY, "validate", "--repo", str(repo))
    expect("1 definition(s) valid" in out, f"validate did not pass:\n{out}")


def demo(root: Path) -> None:
    step("demo: the example repository pushed, deployed and served")
    port = free_port()
    proc = subprocess.Popen(
        [DEPLOYALLY, "demo", str(root), "--port", str(port)],
        cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        health = json.loads(wait_for(f"http://127.0.0.1:{port}/api/v1/health", 600, proc))
        expect(health["status"] == "healthy", f"the demo's engine is not healthy: {health}")
        site = wait_for("http://127.0.0.1:18080/", 120, proc)
        expect("DeployAlly demo" in site, f"the demo's site does not show its page:\n{site}")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    expect(proc.returncode == 0, f"the demo exited {proc.returncode} after SIGTERM:\n{out}")
    expect("remote: site: revision 1 deployed" in out, f"the demo's push did not deploy:\n{out}")


def sync(repo: Path, client: docker.DockerClient) -> None:
    step("sync")
    out = run(DEPLOYALLY, "sync", "--repo", str(repo))
    expect("1 deployed, 0 failed" in out, f"sync did not deploy the definition:\n{out}")
    container = client.containers.get(f"{PREFIX}_hello")
    expect(container.status == "running", f"{PREFIX}_hello is {container.status}")
    status = json.loads(run(DEPLOYALLY, "status", "--repo", str(repo), "--json"))
    rows = {row["name"]: row["status"] for row in status["definitions"]}
    expect(rows == {f"{PREFIX}_hello": "active"}, f"status does not show it active: {rows}")


def remove_what_we_made(client: docker.DockerClient, state_dirs: list[Path], networks: list[str]) -> None:
    """Containers of the engines this check ran (by their owner label), their volumes, its networks."""
    for state_dir in state_dirs:
        if not state_dir.is_dir():
            continue
        with Store(state_dir) as store:
            owner = store.get_meta("engine_id")
        if not owner:
            continue
        for container in client.containers.list(all=True, filters={"label": f"com.deployally.owner={owner}"}):
            volumes = [m["Name"] for m in container.attrs["Mounts"] if m.get("Type") == "volume"]
            container.remove(force=True)
            for volume in volumes:
                client.volumes.get(volume).remove(force=True)
    for name in networks:
        for network in _networks(client, name):
            network.remove()


def _networks(client: docker.DockerClient, name: str) -> list[docker.models.networks.Network]:
    # Docker's `name` filter matches substrings; only the exact name is ours.
    return [n for n in client.networks.list(names=[name]) if n.name == name]


def main() -> None:
    installed_apart_from_any_checkout()
    client = docker.from_env()
    had_demo_network = bool(_networks(client, DEMO_NETWORK))
    repo, demo_root = HERE / "repo", HERE / "demo"
    try:
        templates_list()
        init_and_validate(repo)
        demo(demo_root)  # before sync: it makes sure the busybox image exists, without a registry
        sync(repo, client)
    finally:
        networks = [f"{PREFIX}net"] + ([] if had_demo_network else [DEMO_NETWORK])
        remove_what_we_made(client, [repo / ".deployally", demo_root / "state"], networks)
        client.close()
    step("the wheel works with no checkout beside it")


if __name__ == "__main__":
    main()
