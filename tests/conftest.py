"""Shared fixtures: a real Docker engine, a locally built busybox image, per-test names."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors
import pytest
import requests.exceptions

BUSYBOX_IMAGE = "busybox:stable"
# Containers a test makes outside the driver may carry this label with the test's prefix,
# so the `names` finalizer removes them even when their name does not start with it.
TEST_LABEL = "com.deployally.test"

if TYPE_CHECKING:
    from deployally.types import ContainerSpec


@pytest.fixture(autouse=True)
def _secret_keys_of_the_test(tmp_path_factory: pytest.TempPathFactory,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's secret keys go to a config home of its own, never the user's ~/.config
    (processes a test starts inherit it)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    monkeypatch.delenv("DEPLOYALLY_SECRET_KEY", raising=False)


# The suite runs in one process: descriptors that tests or the engine leave open add up until
# the process cannot open more (a clean-clone run passed 1,023 once). Growth past this fails it.
FD_GROWTH_LIMIT = 512
_fds_at_start: dict[str, str] = {}


def open_files() -> dict[str, str]:
    """What each of this process's file descriptors refers to (socket:[..], a path), by number."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the listing's own descriptor, closed by now
            continue
    return out


def pytest_sessionstart(session: pytest.Session) -> None:
    if sys.platform == "linux":
        _fds_at_start.update(open_files())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when it ends holding many more descriptors than it began with, naming them."""
    if not _fds_at_start:
        return
    import gc
    from collections import Counter

    gc.collect()  # what only waits for a collection is not a leak
    grown = [v for k, v in open_files().items() if _fds_at_start.get(k) != v]
    if len(grown) > FD_GROWTH_LIMIT:
        kinds = Counter(re.sub(r"\[\d+\]$", "", v) for v in grown)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (f"the test process ends with {len(grown)} more open descriptors than it"
                   f" began with (limit {FD_GROWTH_LIMIT}): {kinds.most_common(20)}")
        if reporter is not None:
            reporter.write_line("\n" + message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reaches Docker (through `docker_client`, which every Docker fixture
    needs) is marked `docker`, so `-m "not docker"` runs exactly the tests that need none."""
    for item in items:
        if "docker_client" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client for the local engine; fails under CI=true, skips elsewhere, when none answers."""
    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Docker engine answers, and CI=true forbids skipping: {exc}")
        pytest.skip(f"no Docker engine: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    """`busybox:stable`, imported from the host's static busybox when missing (no registry)."""
    from deployally.drivers.local.images import ensure_busybox
    from deployally.errors import DriverError

    try:
        return ensure_busybox(docker_client, pull=False)
    except DriverError as exc:
        pytest.fail(str(exc))


def _remove_prefixed(client: docker.DockerClient, prefix: str) -> None:
    """Remove every container, volume and network a test made, by name prefix or test label."""
    doomed: dict[str, str] = {}
    for c in client.api.containers(all=True, filters={"name": prefix}):
        if any(n.lstrip("/").startswith(prefix) for n in c["Names"]):
            doomed[c["Id"]] = c["Id"]
    for c in client.api.containers(all=True, filters={"label": f"{TEST_LABEL}={prefix}"}):
        doomed[c["Id"]] = c["Id"]
    for cid in doomed:
        try:
            client.api.remove_container(cid, force=True)
        except docker.errors.NotFound:
            pass
    for v in client.api.volumes(filters={"name": prefix}).get("Volumes") or []:
        if v["Name"].startswith(prefix):
            try:
                client.api.remove_volume(v["Name"], force=True)
            except docker.errors.NotFound:
                pass
    for n in client.api.networks(names=[prefix]):
        if n["Name"].startswith(prefix):
            try:
                client.api.remove_network(n["Id"])
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                # Docker 20.10 can miscount a network's endpoints under concurrent container
                # churn (plain docker-py reproduces it); only a restart of dockerd frees it.
                attached = client.api.inspect_network(n["Id"]).get("Containers") or {}
                if "has active endpoints" not in str(exc.explanation) or attached:
                    raise
                print(f"\nnetwork {n['Name']} left behind: {exc.explanation}", file=sys.stderr)


@pytest.fixture
def names(docker_client: docker.DockerClient) -> Iterator[str]:
    """A unique prefix (`t` + 6 hex) for this test's names; everything so named goes at the end."""
    prefix = "t" + secrets.token_hex(3)
    yield prefix
    _remove_prefixed(docker_client, prefix)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """An empty state directory for a driver or store."""
    path = tmp_path / "state"
    path.mkdir()
    return path


# ---------------------------------------------------------------- values


def full_spec() -> ContainerSpec:
    """A spec with every field away from its default."""
    from deployally import identity
    from deployally.types import (
        ConfigFile,
        ContainerSpec,
        Healthcheck,
        PortBinding,
        VolumeMount,
    )

    return ContainerSpec(
        name="mysql_producao",
        definition_id=identity.definition_id("mysql_producao"),
        template_id=identity.template_id("database/mysql/standard/8.4"),
        image="mysql:8.4",
        command=("mysqld", "--max-connections=200"),
        entrypoint=("docker-entrypoint.sh",),
        user="999:999",
        working_dir="/var/lib/mysql",
        env=(("MYSQL_DATABASE", "app_db"), ("MYSQL_ROOT_PASSWORD", "\x00secret:mysql_root\x00")),
        labels=(("team", "data"),),
        ports=(PortBinding(3306, "tcp", 13306), PortBinding(33060, "udp", None)),
        volumes=(VolumeMount("mysql_producao_var_lib_mysql", "/var/lib/mysql"),),
        files=(ConfigFile("/etc/mysql/conf.d/my.cnf", "[mysqld]\nx=1\n", 0o600),),
        restart="always",
        memory_bytes=2 * 1024**3,
        cpus=1.5,
        healthcheck=Healthcheck(("CMD", "mysqladmin", "ping"), 7.5, 2.0, 5, 30.0),
        stop_signal="SIGTERM",
        stop_grace_s=12.5,
        network="backend",
        depends_on=("redis_cache",),
        secrets=(("mysql_root", 3),),
        server="edge-1",
        prune_volumes=True,
        replicas=3,
        min_ready_s=3.0,
        rendered_hash="sha256:" + "ab" * 32,
    )


class DictTree:
    """A repository tree held in memory (path -> text), for the pure model and sync tests."""

    def __init__(self, files: dict[str, str], label: str = "memory") -> None:
        self.files = files
        self.label = label

    def __repr__(self) -> str:
        return f"DictTree({sorted(self.files)})"

    def list(self, prefix: str) -> list[str]:
        return sorted(p for p in self.files if p.startswith(prefix))

    def read_many(self, paths: object) -> dict[str, str]:
        return {p: self.files[p] for p in paths if p in self.files}  # type: ignore[attr-defined]


def worker_file(name: str, **params: str) -> str:
    """The text of a definition running the busybox worker template with `params`."""
    extra = params.pop("_extra", "")
    lines = [f"name: {name}", "template: tools/busybox/worker/stable"]
    if params:
        lines.append("params:")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in params.items()]
    return "\n".join(lines) + "\n" + extra


@pytest.fixture
def claims(state_dir: Path) -> Iterator[object]:
    """The state store in `state_dir`, where a LocalDriver records its claims on volumes and networks."""
    from deployally.store import Store

    with Store(state_dir) as store:
        yield store


# ---------------------------------------------------------------- git repositories of definitions


class DefinitionsRepo:
    """A real working git repository of definitions, for engine tests."""

    def __init__(self, path: Path, prefix: str) -> None:
        self.path = path
        self.prefix = prefix
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        # min_ready 0s: these tests' containers are not what a rollout's wait is tested on
        # (test_readiness, test_min_ready); an exit at once still fails its rollout.
        self.write("deployally.yaml", f"network: {prefix}net\nhealth_timeout: 30s\nmin_ready: 0s\n")
        self.commit("Start")

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
            cwd=self.path, check=True, capture_output=True, text=True,
        ).stdout

    def write(self, rel: str, text: str) -> None:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def remove(self, rel: str) -> None:
        (self.path / rel).unlink()

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def name(self, short: str) -> str:
        """A definition name unique to this test (and so cleaned up by `names`)."""
        return f"{self.prefix}_{short}"

    def worker(self, short: str, **params: str) -> str:
        """Write definitions/<name>.yaml running the busybox worker template; returns the name."""
        name = self.name(short)
        lines = [f"name: {name}", "template: tools/busybox/worker/stable"]
        extra = params.pop("_extra", "")
        if params:
            lines.append("params:")
            lines += [f"  {k}: {json.dumps(v)}" for k, v in params.items()]
        self.write(f"definitions/{name}.yaml", "\n".join(lines) + "\n" + extra)
        return name


@pytest.fixture
def defs_repo(tmp_path: Path, names: str, busybox_image: str) -> DefinitionsRepo:
    """A definitions repository whose containers, volumes and network this test owns."""
    return DefinitionsRepo(tmp_path / "repo", names)


# ---------------------------------------------------------------- the REST API over real HTTP


class ApiServer:
    """The API app served on 127.0.0.1 (a free port) by its own event loop in a thread."""

    def __init__(
        self, ws: object, *, app_values: dict[object, object] | None = None,
        ssl_context: object | None = None, **kw: object,
    ) -> None:
        import asyncio
        import threading

        from aiohttp import web

        from deployally.api.app import create_app
        from deployally.api.runner import ApiRunner

        self.ws = ws
        self.app = create_app(ws, **kw)  # type: ignore[arg-type]
        for key, value in (app_values or {}).items():  # what `serve` sets, e.g. its SYNC service
            self.app[key] = value  # type: ignore[index]
        self.loop = asyncio.new_event_loop()
        self.runner = ApiRunner(self.app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)  # type: ignore[arg-type]
        self.loop.run_until_complete(site.start())
        host, port = self.runner.addresses[0][:2]
        self.url = f"{'https' if ssl_context else 'http'}://{host}:{port}"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.session = requests.Session()

    def __repr__(self) -> str:
        return f"ApiServer({self.url})"

    def request(self, method: str, path: str, token: str | None = None, **kw: object) -> requests.Response:
        """`method` on /api/v1`path` (or on `path` itself when it starts with /metrics)."""
        headers = dict(kw.pop("headers", None) or {})  # type: ignore[call-overload]
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = self.url + (path if path.startswith("/metrics") else "/api/v1" + path)
        kw.setdefault("timeout", 60)
        return self.session.request(method, url, headers=headers, **kw)  # type: ignore[arg-type]

    def close(self) -> None:
        import asyncio

        self.session.close()
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


def _git_repo_with_first_commit(path: Path) -> Path:
    from deployally.source.git import GitRepo

    repo = GitRepo.init(path, bare=False, branch="main")
    repo.write(
        {"deployally.yaml": "reconcile_interval: 30s\n"},
        message="Start",
        author_name="Test",
        author_email="test@example.com",
        expected_head=None,
    )
    return path


@pytest.fixture
def api_ws(tmp_path: Path) -> Iterator[object]:
    """A workspace on a fresh git repository (one commit) and an empty state store."""
    from deployally.workspace import Workspace

    ws = Workspace.open(_git_repo_with_first_commit(tmp_path / "repo"), tmp_path / "state")
    yield ws
    ws.close()


@pytest.fixture
def api_tokens(api_ws: object) -> dict[str, str]:
    """One API token per scope: {"read": "da_...", "write": ..., "admin": ...}."""
    store = api_ws.store  # type: ignore[attr-defined]
    return {scope: store.create_token(f"{scope}-bot", scope) for scope in ("read", "write", "admin")}


@pytest.fixture
def api(api_ws: object, api_tokens: dict[str, str]) -> Iterator[ApiServer]:
    """The API of `api_ws`, served over real HTTP; writes do not sync (tests sync themselves)."""
    server = ApiServer(api_ws)
    yield server
    server.close()


@pytest.fixture
def api_docker_ws(api_ws: object, names: str, busybox_image: str) -> object:
    """`api_ws` whose containers use a network this test owns (removed with its `names`)."""
    repo = api_ws.repo  # type: ignore[attr-defined]
    repo.write(
        {"deployally.yaml": f"network: {names}net\nhealth_timeout: 30s\nmin_ready: 0s\n"},
        message="Test settings",
        author_name="Test",
        author_email="test@example.com",
        expected_head=repo.head(),
    )
    return api_ws


def commit_busybox(ws: object, name: str, script: str = "sleep 2147483647") -> str:
    """Commit definitions/<name>.yaml on the busybox-plain template; returns the commit."""
    repo = ws.repo  # type: ignore[attr-defined]
    text = (
        f"name: {name}\ntemplate: tools/busybox/plain/stable\n"
        f"params:\n  script: {script!r}\n"
    )
    return repo.write(  # type: ignore[no-any-return]
        {f"definitions/{name}.yaml": text},
        message=f"Define {name}",
        author_name="Test",
        author_email="test@example.com",
        expected_head=repo.head(),
    )


# ---------------------------------------------------------------- `deployally serve` as a real process


def wait_until(check: object, timeout: float, what: str, interval: float = 0.2) -> object:
    """Poll `check()` until it returns something truthy; fail naming `what` at the deadline."""
    import time

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()  # type: ignore[operator]
        except Exception as exc:  # noqa: BLE001 - a check may fail until the thing exists
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class ServeProcess:
    """`deployally serve` in a subprocess on 127.0.0.1 (any free port), stopped by `stop()`."""

    def __init__(
        self, repo: str | Path, state_dir: Path, *args: str, env: dict[str, str] | None = None
    ) -> None:
        import sys

        self.state_dir = state_dir
        self.log_path = state_dir.parent / f"serve-{secrets.token_hex(3)}.log"
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "engine.json").unlink(missing_ok=True)
        command = [
            sys.executable, "-m", "deployally", "serve", "--repo", str(repo),
            "--state-dir", str(state_dir), "--port", "0", "--reconcile-interval", "2", *args,
        ]
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        info = wait_until(self._engine_file, 60, "engine.json of the new engine")
        assert isinstance(info, dict)
        self.url: str = info["url"]
        self.token: str = info["token"]
        self.session = requests.Session()

    def __repr__(self) -> str:
        return f"ServeProcess({self.url if hasattr(self, 'url') else '?'}, pid={self.proc.pid})"

    def _engine_file(self) -> dict[str, object] | None:
        if self.proc.poll() is not None:
            pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.log()}")
        path = self.state_dir / "engine.json"
        data = json.loads(path.read_text()) if path.exists() else None
        return data if data and data.get("pid") == self.proc.pid else None

    def request(self, method: str, path: str, token: str | None = None, **kw: object) -> requests.Response:
        """`method` on /api/v1`path`, with the hook's write token unless another is given."""
        headers = dict(kw.pop("headers", None) or {})  # type: ignore[call-overload]
        headers.setdefault("Authorization", f"Bearer {token or self.token}")
        if headers["Authorization"] == "":
            del headers["Authorization"]
        return self.session.request(  # type: ignore[arg-type]
            method, self.url + "/api/v1" + path, headers=headers, timeout=120, **kw
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self, sig: int = 15, timeout: float = 120) -> int:
        """Send `sig` and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.session.close()
        self._log.close()
        return self.proc.returncode


class PushRepo(DefinitionsRepo):
    """`deployally init --bare` (hooks installed) plus a working clone to commit and push from."""

    def __init__(self, root: Path, prefix: str) -> None:
        import sys

        self.bare = root / "deploy.git"
        self.path = root / "work"
        self.prefix = prefix
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "deployally", "init", "--bare", str(self.bare)],
                       check=True, capture_output=True)
        subprocess.run(["git", "clone", "-q", str(self.bare), str(self.path)], check=True,
                       capture_output=True)
        # min_ready 0s: these tests' containers are not what a rollout's wait is tested on
        # (test_readiness, test_min_ready); an exit at once still fails its rollout.
        self.write("deployally.yaml", f"network: {prefix}net\nhealth_timeout: 30s\nmin_ready: 0s\n")
        self.commit("Test settings")

    def push(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`git push origin main`; stdout+stderr (the hooks' `remote:` lines) in `.stdout`."""
        # A refused push is a result to inspect, not an error: check=False.
        return subprocess.run(["git", "push", "origin", "main", *args], cwd=self.path, check=False,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def push_repo(tmp_path: Path, names: str, busybox_image: str) -> PushRepo:
    """A bare repository with hooks and its clone; the settings commit is not pushed yet."""
    return PushRepo(tmp_path / "push", names)


# ---------------------------------------------------------------- Docker that stops answering

DOCKER_SOCKET = "/var/run/docker.sock"


# An HTTP request line as docker-py sends it (each request in one write, on a kept-alive connection).
_REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|POST|PUT|DELETE|HEAD) (/\S*) HTTP/1\.[01]\r\n")


class DockerProxy:
    """A unix-socket proxy in front of the real engine, so a test can make Docker stop answering,
    count the requests it is sent (`requests`: "GET /v1.41/containers/<id>/json" ...) and cut
    its event streams (`cut_events`)."""

    def __init__(self, path: Path, target: str = DOCKER_SOCKET) -> None:
        self.path = path
        self.target = target
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._open = threading.Event()  # cleared while requests are held
        self._open.set()
        self.held = 0  # requests (chunks towards Docker) waiting for release()
        self.requests: list[str] = []  # every request line that reached Docker, in order
        self._event_conns: list[socket.socket] = []  # connections carrying GET /events

    def hold(self) -> None:
        """Keep every request from here on from reaching Docker until release()."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def sent(self, pattern: str) -> int:
        """How many requests whose line (`GET /v1.41/containers/ID/json`) matches `pattern` reached Docker."""
        with self._lock:
            return sum(1 for line in self.requests if re.search(pattern, line))

    def cut_events(self) -> int:
        """Break every event stream open through the proxy (the rest stay); how many were cut."""
        with self._lock:
            conns, self._event_conns = self._event_conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(conns) // 2

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Close every connection and the socket: clients see the engine gone."""
        self._open.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.path.unlink(missing_ok=True)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b, towards_docker in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, towards_docker), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, towards_docker: bool) -> None:
        try:
            while data := src.recv(65536):
                if towards_docker and not self._open.is_set():
                    with self._lock:
                        self.held += 1
                    self._open.wait()
                    with self._lock:
                        self.held -= 1
                if towards_docker:
                    self._record(data, src, dst)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _record(self, data: bytes, client: socket.socket, upstream: socket.socket) -> None:
        lines = [f"{m.decode()} {p.decode()}" for m, p in _REQUEST_LINE.findall(data)]
        with self._lock:
            self.requests += lines
            if any(re.match(r"GET /(v[\d.]+/)?events(\?|$)", line) for line in lines):
                self._event_conns += [client, upstream]


def running_revision(client: docker.DockerClient, name: str) -> str | None:
    """The revision label of the running container `name`, or None when it is not running."""
    try:
        c = client.containers.get(name)
    except docker.errors.NotFound:
        return None
    return str(c.labels["com.deployally.revision"]) if c.status == "running" else None


# ---------------------------------------------------------------- /metrics, parsed


class Scrape:
    """One /metrics answer parsed as Prometheus reads it: `scrape("name", label="v")` is a value."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def __repr__(self) -> str:
        return f"Scrape({len(self.samples)} samples)"

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        if key not in self.samples:
            near = sorted(str(k) for k in self.samples if k[0] == name)
            pytest.fail(f"no sample {name}{labels} in the scrape; {name} has: {near or 'none'}")
        return self.samples[key]

    def labelled(self, name: str, label: str) -> dict[str, float]:
        """Every value of `name` by the value of its one label `label`."""
        return {dict(k[1])[label]: v for k, v in self.samples.items() if k[0] == name}


# ---------------------------------------------------------------- a second Docker engine


def _started_engine(docker_client: docker.DockerClient, busybox_image: str, *, swarm: bool) -> object:
    """A started second engine with the test image loaded (and a swarm made, if asked)."""
    from engines import DockerEngine, EngineFailed

    engine = DockerEngine(storage_driver=docker_client.info().get("Driver"))
    try:
        engine.start()
        engine.load_image(docker_client, busybox_image)
        if swarm:
            engine.swarm_init()
    except (EngineFailed, docker.errors.DockerException) as exc:
        engine.close()
        pytest.fail(f"the second Docker engine did not start: {exc}")
    return engine


@pytest.fixture(scope="session")
def _second_engine_session(docker_client: docker.DockerClient, busybox_image: str) -> Iterator[object]:
    engine = _started_engine(docker_client, busybox_image, swarm=False)
    yield engine
    engine.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def _swarm_engine_session(docker_client: docker.DockerClient, busybox_image: str) -> Iterator[object]:
    engine = _started_engine(docker_client, busybox_image, swarm=True)
    yield engine
    engine.close()  # type: ignore[attr-defined]


@pytest.fixture
def second_engine(_second_engine_session: object, names: str) -> Iterator[object]:
    """A second Docker engine (a stand-in for a remote host), shared by the session; what this
    test's `names` prefix made on it goes at the end."""
    yield _second_engine_session
    if _second_engine_session.running:  # type: ignore[attr-defined]
        _remove_prefixed(_second_engine_session.client, names)  # type: ignore[attr-defined]


@pytest.fixture
def swarm_engine(_swarm_engine_session: object, names: str) -> Iterator[object]:
    """A single-node swarm manager on an engine of its own, shared by the session; this test's
    services, configs, secrets, containers and volumes go at the end."""
    from engines import remove_prefixed_services

    yield _swarm_engine_session
    client = _swarm_engine_session.client  # type: ignore[attr-defined]
    remove_prefixed_services(client, names)
    _remove_prefixed(client, names)


@pytest.fixture
def make_engine(docker_client: docker.DockerClient, busybox_image: str) -> Iterator[object]:
    """Start engines this test alone uses (and may stop): `make_engine(swarm=False)`; each is
    stopped and removed at the end."""
    made: list[object] = []

    def make(swarm: bool = False) -> object:
        engine = _started_engine(docker_client, busybox_image, swarm=swarm)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()  # type: ignore[attr-defined]
