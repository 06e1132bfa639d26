"""DeployAlly beside docker-compose and a bare docker-py loop, on the same workload, in one run.

    python bench/compare.py --sizes 10,50,100 --runs 3
    python bench/compare.py --quick          # size 2, one run: a smoke test

The workload, the same for all three tools: N busybox httpd containers (`busybox:stable`,
made with `docker import` from /bin/busybox when missing), each with a named volume, on one
bridge network of the tool's own. Member 0 carries a Docker healthcheck (wget of its page
every 1 s); the others have none. Four cases per size, in this order:

- cold: nothing exists -> all N running;
- no-op: nothing changed;
- one changed: member 1's param (its MESSAGE) changed -> that one container replaced;
- one changed, healthcheck: the same for member 0, whose healthcheck must pass.

Each figure is the wall time of one tool's own command, from its start to its own notion of
done; writing the files (and DeployAlly's `git commit`, a user's edit) comes before it:

- DeployAlly: `deployally sync` (a new process, as a user or CI runs it; not a running
  `serve`, so no watcher latency is counted and its start-up is, as compose's is), returning
  with every deployment recorded. It health-gates every rollout: a container with a
  healthcheck counts once healthy, one without once it has kept running for `min_ready`
  (the default, or `--min-ready`), and an update that fails is rolled back.
- docker-compose: `docker-compose up -d` returning (Debian's docker-compose 1.29). It waits
  for nothing after the start: 1.29 has no `--wait`, so a healthcheck is never waited for
  and a container that dies at once still counts. From 64 services on it runs with
  COMPOSE_PARALLEL_LIMIT=2N, as its users must (with its default of 64 it deadlocks there),
  and COMPOSE_HTTP_TIMEOUT at `--timeout` (2N calls at once outlast its 60 s when loaded).
- docker-py: a bare loop in this process, Docker's own floor: one filtered list call, then
  create+start of what is missing or changed (the old one removed first) on 4 threads; no
  health gate, no record, no rollback.

After each step (untimed) the bench checks that the tool's N containers run and the changed
one has the new param. The three tools take turns within each case, in an order rotated from
case to case and run to run, so drift in the machine's load hits all three alike; between
runs everything is removed. Each figure is the median of the runs; each ratio the median of
the runs' paired ratios. Everything made carries this run's prefix (`cmp<pid>x<random>_`, or
`--prefix`): containers, volumes, networks and the compose project; exactly that is removed
at the end, on an error or Ctrl-C too. Every command is bounded by `--timeout`; a command
that fails or times out counts as failed in that run and is then run once more, untimed, so
the next cases can still measure that tool.

Last, unless `--engine-share 0` or `--quick`: the engine's own time (cold, no-op, one
changed, no-op again) and peak RSS at 5,000 definitions, from bench/engine_scale.py (the
engine against its in-memory server; 5,000 containers do not fit this machine).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import docker
import docker.errors
import yaml

from deployally.drivers.local.images import ensure_busybox

IMAGE = "busybox:stable"
CASES = ("cold", "no-op", "one changed", "one changed, healthcheck")
TOOLS = ("DeployAlly", "docker-compose", "docker-py")
SCRIPT = 'echo "$MESSAGE" > /data/index.html && exec httpd -f -p 8080 -h /data'
HEALTH_TEST = ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
# Generous timeout: a loaded 2-core machine runs a check late, and what is measured is the
# gate's wait, not a flaky check.
HEALTH = {"interval_s": 1, "timeout_s": 10, "retries": 3}
THREADS = 4
COMPOSE_LIMIT = 64  # docker-compose 1.29's default COMPOSE_PARALLEL_LIMIT
DEBIAN_COMPOSE = Path("/usr/lib/python3/dist-packages/compose")


def compose_command() -> list[str]:
    """How to start Debian's docker-compose: its own script, on Debian's libraries only. A
    docker or requests that pip put in /usr/local (CI installs our tests' there) shadows
    Debian's for /usr/bin/python3, and compose 1.29 fails on docker-py 7 (ssl_version)."""
    if not DEBIAN_COMPOSE.is_dir():
        return ["docker-compose"]
    return ["/usr/bin/python3", "-I", "-S", "-c",
            ("import site, sys; site.addsitedir('/usr/lib/python3/dist-packages'); "
             "sys.argv[0] = 'docker-compose'; from compose.cli.main import main; sys.exit(main())")]


def template(checked: bool) -> str:
    """The repository template of DeployAlly's members (with or without the healthcheck)."""
    specimen = "checked" if checked else "plain"
    health = (f"  healthcheck: {{test: {json.dumps(HEALTH_TEST)}, interval: {HEALTH['interval_s']}s, "
              f"timeout: {HEALTH['timeout_s']}s, retries: {HEALTH['retries']}}}\n") if checked else ""
    return (
        f"name: Bench httpd ({specimen})\n"
        "description: busybox httpd serving its volume; the workload of bench/compare.py\n"
        "version: stable\n"
        f"taxonomy: {{kingdom: assets, family: web, species: httpd, variant: bench, specimen: {specimen}}}\n"
        "deprecated: false\n"
        "spec:\n"
        "  image: {repository: busybox, tag: stable}\n"
        "  user_inputs:\n"
        "    message: {type: string, default: one}\n"
        "  profiles: [minimal, development, production]\n"
        "  volumes: [{mount_path: /data}]\n"
        "  env: {MESSAGE: \"{{ params.message }}\"}\n"
        f"  command: {json.dumps(['sh', '-c', SCRIPT])}\n"
        f"{health}"
        "  stop_signal: SIGKILL\n"
    )


@dataclass(frozen=True)
class Workload:
    """N members; `messages[i]` is member i's param at the current step."""

    size: int
    messages: tuple[str, ...]

    @classmethod
    def initial(cls, size: int) -> Workload:
        return cls(size, tuple("one" for _ in range(size)))

    def changed(self, member: int) -> Workload:
        messages = list(self.messages)
        messages[member] = "two"
        return Workload(self.size, tuple(messages))


def changed_member(case: str) -> int | None:
    """The member a case changes: 1 (no healthcheck), 0 (the one with it), or none."""
    return {"one changed": 1, "one changed, healthcheck": 0}.get(case)


class StepFailed(Exception):
    """A tool's command failed, timed out, or left the workload not running."""


class Tool:
    """One tool under test: `apply` brings Docker to the workload and returns its seconds."""

    name = ""

    def __init__(self, client: docker.DockerClient, prefix: str, root: Path, timeout: float) -> None:
        self.client, self.prefix, self.root, self.timeout = client, prefix, root, timeout
        self.output = ""  # the last command's stdout
        root.mkdir(parents=True)

    def apply(self, work: Workload) -> float:
        raise NotImplementedError

    def container(self, member: int) -> str:
        """The name of member `member`'s container."""
        raise NotImplementedError

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> float:
        """Seconds `argv` took; StepFailed naming its output when it fails or times out."""
        started = time.perf_counter()
        try:
            done = subprocess.run(argv, check=False, cwd=self.root, env=env, capture_output=True, text=True,
                                  timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise StepFailed(f"{self.name}: still running after {self.timeout:.0f} s "
                             "(--timeout)") from exc
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise StepFailed(f"{self.name}: exit {done.returncode}: {(done.stderr or done.stdout)[-800:]}")
        self.output = done.stdout
        return elapsed


class DeployAlly(Tool):
    """A git repository of definitions and `deployally sync`."""

    name = "DeployAlly"

    def __init__(self, client: docker.DockerClient, prefix: str, root: Path, timeout: float,
                 min_ready: str | None) -> None:
        super().__init__(client, prefix, root, timeout)
        self.repo, self.state = root / "repo", root / "state"
        (self.repo / "definitions").mkdir(parents=True)
        (self.repo / "catalog" / "web").mkdir(parents=True)
        for checked in (False, True):
            (self.repo / "catalog" / "web" / f"bench-{'checked' if checked else 'plain'}.yaml").write_text(
                template(checked))
        settings = f"network: {prefix}danet\nhealth_timeout: 120s\n"
        if min_ready is not None:
            settings += f"min_ready: {min_ready}\n"
        (self.repo / "deployally.yaml").write_text(settings)
        self.git("init", "-q", "-b", "main")
        # Its secret keys (made by the first sync) stay in this run's directory.
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(root / "config")}
        self.written: Workload | None = None

    def git(self, *args: str) -> None:
        subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
                       cwd=self.repo, check=True, capture_output=True)

    def container(self, member: int) -> str:
        return f"{self.prefix}da{member:03d}"

    def apply(self, work: Workload) -> float:
        if work != self.written:
            for i, message in enumerate(work.messages):
                specimen = "checked" if i == 0 else "plain"
                (self.repo / "definitions" / f"{self.container(i)}.yaml").write_text(
                    f"name: {self.container(i)}\ntemplate: web/httpd/bench/{specimen}\n"
                    f"params: {{message: {message}}}\n")
            self.git("add", "-A")
            self.git("commit", "-qm", "bench step")
            self.written = work
        seconds = self.run([sys.executable, "-m", "deployally", "sync", "--repo", str(self.repo),
                            "--state-dir", str(self.state), "--json"], env=self.env)
        report = json.loads(self.output)
        failed = [d for d in report["deployments"] if d["status"] != "success"]
        if failed or not report["ok"]:
            raise StepFailed(f"DeployAlly: {len(failed)} deployments not successful, e.g. "
                             f"{failed[:1] or report['errors'][:1]}")
        self.deployments = len(report["deployments"])
        return seconds


class Compose(Tool):
    """A docker-compose.yml and `docker-compose up -d`, project `<prefix>dc`."""

    name = "docker-compose"

    def __init__(self, client: docker.DockerClient, prefix: str, root: Path, timeout: float) -> None:
        super().__init__(client, prefix, root, timeout)
        self.project = f"{prefix}dc"

    def container(self, member: int) -> str:
        return f"{self.project}_m{member:03d}_1"

    def apply(self, work: Workload) -> float:
        services: dict[str, object] = {}
        for i, message in enumerate(work.messages):
            service: dict[str, object] = {
                "image": IMAGE, "command": ["sh", "-c", SCRIPT], "environment": {"MESSAGE": message},
                "volumes": [f"m{i:03d}data:/data"], "stop_signal": "SIGKILL",
            }
            if i == 0:
                service["healthcheck"] = {
                    "test": HEALTH_TEST, "interval": f"{HEALTH['interval_s']}s",
                    "timeout": f"{HEALTH['timeout_s']}s", "retries": HEALTH["retries"]}
            services[f"m{i:03d}"] = service
        compose = {"version": "2.4", "services": services,
                   "volumes": {f"m{i:03d}data": {} for i in range(work.size)}}
        (self.root / "docker-compose.yml").write_text(yaml.safe_dump(compose))
        env = dict(os.environ)
        if work.size >= COMPOSE_LIMIT:
            # Every thread of compose's (one a service, and one its container's) holds one of
            # COMPOSE_PARALLEL_LIMIT (64) while it runs: at 64 services the services' threads
            # hold them all and wait for their containers' forever. Users raise the limit.
            env["COMPOSE_PARALLEL_LIMIT"] = str(2 * work.size)
            # And then its 2N calls at once outlast its 60 s read timeout on a loaded machine.
            env["COMPOSE_HTTP_TIMEOUT"] = str(int(self.timeout))
        return self.run([*compose_command(), "-p", self.project, "up", "-d"], env=env)


class DockerPy(Tool):
    """Docker's floor: one list call, then create+start of what differs on 4 threads."""

    name = "docker-py"

    def container(self, member: int) -> str:
        return f"{self.prefix}py{member:03d}"

    def config(self, member: int, message: str) -> dict[str, object]:
        config: dict[str, object] = {
            "image": IMAGE, "command": ["sh", "-c", SCRIPT], "environment": {"MESSAGE": message},
            "stop_signal": "SIGKILL", "network": f"{self.prefix}pynet",
            "volumes": {f"{self.container(member)}_data": {"bind": "/data", "mode": "rw"}},
        }
        if member == 0:
            config["healthcheck"] = {"test": HEALTH_TEST, "interval": HEALTH["interval_s"] * 10**9,
                                     "timeout": HEALTH["timeout_s"] * 10**9, "retries": HEALTH["retries"]}
        return config

    def apply(self, work: Workload) -> float:
        started = time.perf_counter()
        run_label = f"bench.run={self.prefix}py"
        live = {c["Names"][0].lstrip("/"): c for c in
                self.client.api.containers(all=True, filters={"label": run_label})}
        if not live and not self.client.api.networks(names=[f"{self.prefix}pynet"]):
            self.client.networks.create(f"{self.prefix}pynet", driver="bridge")
        todo = []
        for i, message in enumerate(work.messages):
            config = self.config(i, message)
            digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
            found = live.get(self.container(i))
            if found is None or found["Labels"].get("bench.hash") != digest:
                todo.append((i, config, digest, found))

        def deploy(item: tuple[int, dict[str, object], str, dict[str, object] | None]) -> None:
            i, config, digest, found = item
            if found is not None:
                self.client.api.remove_container(found["Id"], force=True)
            self.client.containers.run(
                name=self.container(i), detach=True,
                labels={"bench.run": f"{self.prefix}py", "bench.hash": digest}, **config)

        pool = ThreadPoolExecutor(THREADS)
        try:
            list(pool.map(deploy, todo))
        finally:
            # On Ctrl-C, start nothing more and let what runs finish, so cleanup sees it all.
            pool.shutdown(wait=True, cancel_futures=True)
        return time.perf_counter() - started


def check_running(client: docker.DockerClient, tool: Tool, work: Workload, member: int | None) -> None:
    """StepFailed unless the tool's N containers run and the changed one has its new param."""
    for i in range(work.size):
        try:
            attrs = client.api.inspect_container(tool.container(i))
        except docker.errors.NotFound as exc:
            raise StepFailed(f"{tool.name}: {tool.container(i)} does not exist") from exc
        if i == member or i == 0:
            env = attrs["Config"]["Env"] or []
            if f"MESSAGE={work.messages[i]}" not in env:
                raise StepFailed(f"{tool.name}: {tool.container(i)} runs {env}, not {work.messages[i]}")
        if not attrs["State"]["Running"]:
            raise StepFailed(f"{tool.name}: {tool.container(i)} is {attrs['State']['Status']}")


def remove_run(client: docker.DockerClient, prefix: str) -> list[str]:
    """Remove every container, volume and network named with this run's prefix (and compose's
    renamed old containers, by its project label); returns what could not be removed."""
    left: list[str] = []
    doomed = {c["Id"] for c in client.api.containers(all=True, filters={"name": prefix})
              if any(n.lstrip("/").startswith(prefix) for n in c["Names"])}
    doomed |= {c["Id"] for c in client.api.containers(
        all=True, filters={"label": f"com.docker.compose.project={prefix}dc"})}

    def remove(cid: str) -> None:
        try:
            client.api.remove_container(cid, force=True, v=False)
        except docker.errors.NotFound:
            pass

    # Not timed, but 300 removals one at a time take minutes on a loaded machine.
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(remove, doomed))
    # Docker's name filters match substrings: keep only names that start with the prefix.
    for v in client.api.volumes(filters={"name": prefix}).get("Volumes") or []:
        if v["Name"].startswith(prefix):
            try:
                client.api.remove_volume(v["Name"], force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                left.append(f"volume {v['Name']}: {exc.explanation}")
    for n in client.api.networks(names=[prefix]):
        if n["Name"].startswith(prefix):
            for attempt in range(5):
                try:
                    client.api.remove_network(n["Id"])
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError as exc:
                    # Docker 20.10 can count an endpoint a moment after its container is gone.
                    if attempt == 4:
                        left.append(f"network {n['Name']}: {exc.explanation}")
                    time.sleep(0.5)
    return left


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "failed"
    return f"{value * 1000:.0f} ms" if value < 0.1 else f"{value:.2f} s"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def paired_ratio(figures: dict[str, list[float | None]], a: str, b: str) -> float | None:
    """The median over runs of a's time over b's, from runs where both finished."""
    ratios = [x / y for x, y in zip(figures[a], figures[b]) if x is not None and y is not None and y > 0]
    return median(ratios)


def bench_size(client: docker.DockerClient, prefix: str, root: Path, size: int, run: int,
               args: argparse.Namespace, results: dict[tuple[int, str], dict[str, list[float | None]]]) -> None:
    """One run at one size: every case, the tools taking turns; everything removed after."""
    base = root / f"{size}-{run}"
    timeout = args.timeout or 60.0 + 2.0 * size
    tools: list[Tool] = [
        DeployAlly(client, prefix, base / "da", timeout, args.min_ready),
        Compose(client, prefix, base / "dc", timeout),
        DockerPy(client, prefix, base / "py", timeout),
    ]
    broken: set[str] = set()
    work = Workload.initial(size)
    try:
        for c, case in enumerate(CASES):
            member = changed_member(case)
            if member is not None:
                work = work.changed(member)
            shift = (run + c) % len(tools)
            for tool in tools[shift:] + tools[:shift]:
                figures = results.setdefault((size, case), {t: [] for t in TOOLS})
                if tool.name in broken:
                    figures[tool.name].append(None)
                    continue
                try:
                    seconds = tool.apply(work)
                    check_running(client, tool, work, member)
                except (StepFailed, docker.errors.APIError) as exc:
                    print(f"  run {run + 1}, {size} {case}: {tool.name} failed: {exc}", flush=True)
                    figures[tool.name].append(None)
                    # Once more, untimed: if that converges, the next cases still measure it.
                    try:
                        tool.apply(work)
                        check_running(client, tool, work, member)
                    except (StepFailed, docker.errors.APIError) as again:
                        print(f"    and again: {again}; no more of {tool.name} in this run", flush=True)
                        broken.add(tool.name)
                    continue
                figures[tool.name].append(seconds)
                print(f"  run {run + 1}, {size} {case}: {tool.name} {fmt_seconds(seconds)}", flush=True)
    finally:
        left = remove_run(client, prefix)
        if left:
            print(f"  left behind (Docker would not remove): {left}", flush=True)


def print_table(results: dict[tuple[int, str], dict[str, list[float | None]]]) -> None:
    """The medians and paired ratios so far, as a Markdown table."""
    print("\n| work | DeployAlly | docker-compose | docker-py | DA/compose | DA/docker-py |")
    print("|---|---|---|---|---|---|")
    for (size, case), figures in results.items():
        cells = []
        for t in TOOLS:
            done = [v for v in figures[t] if v is not None]
            partial = f" ({len(done)} of {len(figures[t])} runs)" if done and len(done) < len(figures[t]) else ""
            cells.append(fmt_seconds(median(done)) + partial)
        print(f"| {size}, {case} | {' | '.join(cells)} | "
              f"{fmt_ratio(paired_ratio(figures, 'DeployAlly', 'docker-compose'))} | "
              f"{fmt_ratio(paired_ratio(figures, 'DeployAlly', 'docker-py'))} |", flush=True)


def engine_share(definitions: int, timeout: float) -> None:
    """Print the engine's own time and peak RSS at `definitions`, from bench/engine_scale.py
    (the engine against its in-memory server: 5,000 containers do not fit this machine)."""
    scale = Path(__file__).resolve().parent / "engine_scale.py"
    try:
        # --child runs one size in a process of its own and prints its figures as one JSON line.
        done = subprocess.run([sys.executable, str(scale), "--child", str(definitions)], check=False,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"engine share at {definitions}: bench/engine_scale.py still running after {timeout:.0f} s")
        return
    if done.returncode != 0:
        print(f"engine share at {definitions}: bench/engine_scale.py failed: {done.stderr.strip()[-800:]}")
        return
    result = json.loads(done.stdout.strip().splitlines()[-1])
    walls = ", ".join(f"{scenario} {fig['wall_s']:.2f} s" for scenario, fig in result["scenarios"].items())
    print(f"\nthe engine's own share at {definitions} definitions (bench/engine_scale.py, no Docker): "
          f"{walls}; peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)


def interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="10,50,100", help="comma-separated numbers of containers")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="size 2, one run: a smoke test")
    parser.add_argument("--min-ready", default=None, help="DeployAlly's min_ready (deployally.yaml)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds one command may take [default: 60 + 2 per container]")
    parser.add_argument("--engine-share", type=int, default=5000, metavar="DEFINITIONS",
                        help="also the engine's own time and memory at this many (0: not; --quick: not)")
    parser.add_argument("--prefix", default=None, help="name prefix of everything made [default: random]")
    args = parser.parse_args()
    sizes = [2] if args.quick else [int(s) for s in args.sizes.split(",")]
    runs = 1 if args.quick else args.runs
    prefix = args.prefix or f"cmp{os.getpid()}x{secrets.token_hex(2)}_"
    # Started in the background by a shell, SIGINT arrives ignored; the cleanup promise holds anyway.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupted)
    client = docker.from_env()
    ensure_busybox(client, pull=False)
    compose_version = subprocess.run([*compose_command(), "version", "--short"], capture_output=True,
                                     text=True, check=True).stdout.strip()
    print(f"compare: prefix {prefix}, sizes {sizes}, runs {runs}, docker-compose {compose_version}, "
          f"Docker {client.version()['Version']}, load average {os.getloadavg()[0]:.1f}, "
          f"cpu count {os.cpu_count()}", flush=True)
    results: dict[tuple[int, str], dict[str, list[float | None]]] = {}
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="compare") as tmp:
            for run in range(runs):
                for size in sizes:
                    bench_size(client, prefix, Path(tmp), size, run, args, results)
                if run + 1 < runs:
                    print(f"\nafter run {run + 1} of {runs}:", end="")
                    print_table(results)
    except KeyboardInterrupt:
        print("compare: interrupted; what this run made is removed", flush=True)
        sys.exit(130)
    finally:
        left = remove_run(client, prefix)
        if left:
            print(f"compare: left behind: {left}", flush=True)
    print_table(results)
    if args.engine_share and not args.quick:
        engine_share(args.engine_share, 1800.0)
    print(f"\n{runs} runs in {time.monotonic() - started:.0f} s; load average at the end "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if any(v is None for figures in results.values() for values in figures.values() for v in values):
        sys.exit(1)


if __name__ == "__main__":
    main()
