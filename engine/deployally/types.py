"""The frozen values that flow between the pipeline's steps.

source -> model -> render -> plan -> apply -> record -> notify: every step takes
and returns these, so each can be tested with plain data.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from deployally.errors import ValidationError

# An address range of a network (a Docker network's subnet, for one).
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Labels every managed container carries (DESIGN.md, "Docker conventions").
LABEL_MANAGED = "com.deployally.managed"
LABEL_DEFINITION = "com.deployally.definition"
LABEL_NAME = "com.deployally.name"
LABEL_REVISION = "com.deployally.revision"
LABEL_RENDERED_HASH = "com.deployally.rendered-hash"
LABEL_COMMIT = "com.deployally.commit"
LABEL_SERVER = "com.deployally.server"
LABEL_PRUNE_VOLUMES = "com.deployally.prune-volumes"
# Which engine (state store) owns a container: two engines on one Docker host never touch
# each other's containers.
LABEL_OWNER = "com.deployally.owner"

DEFAULT_NETWORK = "deployally"
HOST_NETWORK = "host"  # the host's own network namespace: only with engine.yaml allow.host_network
DEFAULT_PROFILE = "development"
DEFAULT_SERVER = "local"
# How long a container without a healthcheck must keep running before its rollout counts as
# done (min_ready), when neither its definition, its template nor deployally.yaml says.
DEFAULT_MIN_READY_S = 5.0
# Revisions and secret versions are SQLite INTEGERs (64-bit): a number above this from a
# file or a request is refused where it is read, never passed on to overflow in the store.
MAX_NUMBER = 2**63 - 1


# ---------------------------------------------------------------- model


@dataclass(frozen=True)
class Taxonomy:
    kingdom: str
    family: str
    species: str
    variant: str
    specimen: str

    @property
    def path(self) -> str:
        """The path a definition names its template by: family/species/variant/specimen."""
        return f"{self.family}/{self.species}/{self.variant}/{self.specimen}"


@dataclass(frozen=True)
class UserInput:
    """One declared template parameter."""

    name: str
    type: str  # string | password | integer | number | boolean | enum | port
    required: bool = False
    default: Any = None
    values: tuple[Any, ...] = ()  # for enum
    pattern: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Template:
    """A validated template: raw `spec` as written, plus derived identity."""

    id: str  # tpl_ + 12 hex of the taxonomy path
    name: str
    description: str
    version: str
    taxonomy: Taxonomy
    deprecated: bool
    spec: Mapping[str, Any]  # treat as read-only; JSON-like
    spec_hash: str  # "sha256:" + hex of canonical JSON of spec
    user_inputs: tuple[UserInput, ...]
    source: str  # "catalog/database/mysql-8.4.yaml" (builtin) or a repo path
    builtin: bool


@dataclass(frozen=True)
class SecretRef:
    """A param value that names a secret in the store; never a plaintext value."""

    name: str
    version: int | None = None  # pinned: {secret: NAME, version: N}; None: the current one


@dataclass(frozen=True)
class SecretVersions:
    """The secret versions a render may use: each name's current one, and every one kept."""

    current: Mapping[str, int]
    kept: frozenset[tuple[str, int]] = frozenset()
    anything: bool = False  # a check with no store (validate, plan in CI): every version exists
    unpinned_anything: bool = False  # validate with a store: only pins must exist

    @classmethod
    def unchecked(cls) -> SecretVersions:
        """For checks that have no secret store: every secret counts as set (version 0)."""
        return cls(current={}, anything=True)

    @classmethod
    def pins_only(cls, kept: frozenset[tuple[str, int]]) -> SecretVersions:
        """For `validate` with a state store: a pinned version must be one kept; an unpinned
        reference may name a secret that is not set yet (version 0)."""
        return cls(current={}, kept=kept, unpinned_anything=True)

    def version_of(self, ref: SecretRef) -> int | None:
        """The version `ref` uses, or None when the store has no such secret or version."""
        if ref.version is not None:
            return ref.version if self.anything or (ref.name, ref.version) in self.kept else None
        if self.anything or self.unpinned_anything:
            return 0
        return self.current.get(ref.name)


@dataclass(frozen=True)
class Definition:
    """A validated definition file at one commit."""

    id: str  # def_ + 12 hex of the name
    name: str
    path: str  # repo-relative, e.g. "definitions/mysql_producao.yaml"
    template: str  # as written: taxonomy path or tpl_ id
    template_id: str  # resolved tpl_ id
    server: str
    profile: str
    params: Mapping[str, Any]  # defaults applied; password values are SecretRef
    depends_on: tuple[str, ...] = ()
    publish: tuple[tuple[int, int], ...] = ()  # (container_port, host_port)
    replicas: int = 1  # instances of it a swarm server runs; every other server runs one
    prune_volumes: bool = False
    files: tuple[Mapping[str, Any], ...] = ()  # extra config files, as in a template spec
    min_ready_s: float | None = None  # its own min_ready; None: the template's, else the repository's


# ---------------------------------------------------------------- source


@dataclass(frozen=True)
class TrustedKey:
    """A public key whose signature makes a commit deployable (engine.yaml trusted_keys)."""

    kind: str  # "ssh" or "openpgp"
    text: str  # one SSH public key line, or an ASCII-armoured OpenPGP key block
    origin: str  # where it was written: "trusted_keys[0]" or the file it was read from


@dataclass(frozen=True)
class RefusedCommit:
    """A commit of the tracked branch the engine would not deploy, and why."""

    sha: str
    summary: str
    reason: str


@dataclass(frozen=True)
class ChangeSet:
    """Paths that differ between two commits (repo-relative)."""

    added: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    renamed: tuple[tuple[str, str], ...] = ()  # (old path, new path)

    def paths(self) -> frozenset[str]:
        """Every path touched, old and new sides of renames included."""
        out = set(self.added) | set(self.modified) | set(self.deleted)
        for old, new in self.renamed:
            out |= {old, new}
        return frozenset(out)


@dataclass(frozen=True)
class Unreadable:
    """A repository file that exists but is not text DeployAlly can read, and why."""

    shown: str  # the file's path as an error may print it: control characters escaped
    problem: str  # what is wrong and what to do, e.g. "not UTF-8 text; save it as UTF-8"


# ---------------------------------------------------------------- render


@dataclass(frozen=True)
class PortBinding:
    container_port: int
    protocol: str = "tcp"
    host_port: int | None = None  # published only where the definition says
    host_ip: str | None = None  # the host address it listens on (engine.yaml publish_address)


@dataclass(frozen=True)
class VolumeMount:
    name: str  # <definition>_<mount path slug>
    mount_path: str


@dataclass(frozen=True)
class ConfigFile:
    """A rendered config file, mounted read-only at `mount_path`."""

    mount_path: str
    content: str  # may hold secret placeholders, resolved only at apply time
    mode: int = 0o644


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval_s: float = 10.0
    timeout_s: float = 5.0
    retries: int = 3
    start_period_s: float = 0.0


@dataclass(frozen=True)
class ContainerSpec:
    """Everything Docker needs to run one definition, fully rendered."""

    name: str  # container name == definition name
    definition_id: str
    template_id: str
    image: str  # "repository:tag"
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    user: str | None = None
    working_dir: str | None = None
    env: tuple[tuple[str, str], ...] = ()  # sorted by key
    labels: tuple[tuple[str, str], ...] = ()  # the template's own labels, sorted
    ports: tuple[PortBinding, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    files: tuple[ConfigFile, ...] = ()
    restart: str = "unless-stopped"
    memory_bytes: int | None = None
    cpus: float | None = None
    healthcheck: Healthcheck | None = None
    stop_signal: str | None = None
    stop_grace_s: float | None = None
    network: str = DEFAULT_NETWORK
    depends_on: tuple[str, ...] = ()
    secrets: tuple[tuple[str, int], ...] = ()  # (secret name, version) the spec uses
    server: str = DEFAULT_SERVER
    prune_volumes: bool = False  # remove the named volumes when the definition goes
    replicas: int = 1  # tasks of its service on a swarm server; any other server runs one
    # How long it must keep running, without a healthcheck, before a rollout counts as done;
    # None: the driver's default. Not in rendered_hash: it gates the next rollout only, and
    # a change of it alone leaves the running container be.
    min_ready_s: float | None = None
    rendered_hash: str = ""  # sha256 over all fields above but min_ready_s; filled by render


# ---------------------------------------------------------------- live state


class InstanceState(str, enum.Enum):
    """How an instance stands, in DeployAlly's own words: each driver maps its engine's to these."""

    RUNNING = "running"
    CREATED = "created"  # made, never started
    RESTARTING = "restarting"
    PAUSED = "paused"
    EXITED = "exited"  # stopped, or its process ended
    DEAD = "dead"  # could not be stopped or removed cleanly


class InstanceHealth(str, enum.Enum):
    """What the instance's healthcheck says; an instance without one has no health."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    STARTING = "starting"


@dataclass(frozen=True)
class InstanceSettings:
    """What an instance runs with that its spec decides but its rendered hash cannot show
    (they can change after it is made); a driver observes them only when asked."""

    restart: str  # as a spec writes it: "unless-stopped", "always", "on-failure:3", "no"
    memory_bytes: int | None = None
    cpus: float | None = None


@dataclass(frozen=True)
class LiveInstance:
    """A managed instance as its driver reports it, from one list call."""

    ref: str  # the driver's own handle on the instance; opaque to everyone else
    name: str
    definition_id: str
    revision: int | None
    rendered_hash: str
    commit: str
    state: InstanceState
    health: InstanceHealth | None  # None: no healthcheck
    image: str
    created_at: datetime | None = None
    started_at: datetime | None = None
    settings: InstanceSettings | None = None  # None: not observed (the list call does not say)
    node: str | None = None  # the host it runs on, for a server of many (a swarm's node)
    # A swarm service's own instances (its tasks, each on its node); () for a single container.
    tasks: tuple[LiveInstance, ...] = ()

    @property
    def running(self) -> bool:
        return self.state is InstanceState.RUNNING


class InstanceEventKind(str, enum.Enum):
    """What happened to an instance; the first three are also webhook events."""

    STARTED = "instance.started"
    STOPPED = "instance.stopped"
    UNHEALTHY = "instance.unhealthy"
    HEALTHY = "instance.healthy"  # not a webhook: tells the engine a new instance is ready
    REMOVED = "instance.removed"  # not a webhook: the instance is gone, so the engine heals
    CHANGED = "instance.changed"  # not a webhook: its settings were changed (`docker update`)


@dataclass(frozen=True)
class InstanceEvent:
    """One thing that happened to one of this engine's instances, in our own words."""

    kind: InstanceEventKind
    ref: str
    name: str
    definition_id: str | None
    exit_code: int | None
    at: datetime
    # What the instance itself runs (its own labels), which may not be the definition's
    # applied revision yet: a new instance starts before its deployment is recorded.
    revision: int | None = None
    commit: str | None = None


# ---------------------------------------------------------------- plan


class ActionKind(str, enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    REMOVE = "remove"
    START = "start"  # exists with the right spec, but not running (self-heal)
    NOOP = "unchanged"


class ReasonKind(str, enum.Enum):
    """Why a deployment happened; nobody should have to guess."""

    DEFINITION = "definition"  # the definition file changed
    TEMPLATE = "template"  # the template's spec_hash changed
    CONFIG_FILE = "config_file"  # a mounted config file changed
    SECRET = "secret"  # a secret's version changed
    DRIFT = "drift"  # live state differs from what was applied
    ENGINE_CONFIG = "engine_config"  # the engine's configuration (engine.yaml) changed
    OPERATOR = "operator"  # asked for through the API or CLI
    ROLLBACK = "rollback"  # a past revision was committed back
    REMOVED = "removed"  # the definition file was deleted
    NEW = "new"  # first deployment of a definition


@dataclass(frozen=True)
class FieldChange:
    field: str  # dotted path, e.g. "env.MYSQL_DATABASE", "image", "ports[0].host_port"
    before: Any
    after: Any


@dataclass(frozen=True)
class Reason:
    kind: ReasonKind
    summary: str  # one line a person reads
    commit: str | None = None
    changes: tuple[FieldChange, ...] = ()


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    name: str  # definition name
    desired: ContainerSpec | None  # None for REMOVE
    live: LiveInstance | None
    changes: tuple[FieldChange, ...] = ()
    reason: Reason | None = None


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()

    def changed(self) -> tuple[Action, ...]:
        """Actions that do something (everything but NOOP)."""
        return tuple(a for a in self.actions if a.kind is not ActionKind.NOOP)


# ---------------------------------------------------------------- apply / record


class DeploymentStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    WAITING = "waiting"  # not started: something it needs is not ready (no backoff, no failure)

    @property
    def final(self) -> bool:
        """Whether the deployment has ended (success, failed or rolled_back)."""
        return self in (DeploymentStatus.SUCCESS, DeploymentStatus.FAILED, DeploymentStatus.ROLLED_BACK)


class WaitKind(str, enum.Enum):
    """What a waiting deployment waits for."""

    DEPENDENCY = "dependency"  # a definition in its depends_on is not running and healthy
    SERVER = "server"  # its server is offline
    RESTART = "restart"  # the engine was stopped before it began; the next start carries it on


@dataclass(frozen=True)
class Waiting:
    """Why a deployment has not started yet, and since when."""

    kind: WaitKind
    summary: str  # one line a person reads
    on: tuple[str, ...]  # the definitions (or the server) it waits for
    since: datetime


@dataclass(frozen=True)
class ApplyResult:
    """What a driver reports after carrying out one action."""

    status: DeploymentStatus  # SUCCESS, FAILED or ROLLED_BACK
    ref: str | None = None  # the instance now running, in the driver's own terms
    message: str = ""
    # The new instance never proved ready (exited, unhealthy, not healthy in time): its spec
    # is at fault, not the server, and trying the same spec again will not do better.
    unready: bool = False


@dataclass(frozen=True)
class LogLine:
    at: datetime
    message: str


@dataclass(frozen=True)
class Deployment:
    id: str  # deploy_ + 12 hex
    definition_id: str
    definition_name: str
    server_id: str
    revision: int | None
    commit: str | None
    action: ActionKind
    status: DeploymentStatus
    reason: Reason
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    logs: tuple[LogLine, ...] = field(default=())
    waiting: Waiting | None = None  # set while the status is WAITING


class DefinitionStatus(str, enum.Enum):
    PENDING = "pending"  # committed, not yet applied
    ACTIVE = "active"  # applied and running
    FAILED = "failed"  # last deployment failed or rolled back
    INVALID = "invalid"  # the file at head does not validate; the old container is kept
    STOPPED = "stopped"  # an operator stopped it through the API


@dataclass(frozen=True)
class DefinitionRecord:
    """What the store knows of one definition: its desired spec and how it stands."""

    id: str
    name: str
    path: str
    template_id: str
    server_id: str
    profile: str
    status: DefinitionStatus
    current_revision: int  # newest revision in git history
    applied_revision: int | None  # revision running now, if any
    desired: ContainerSpec | None  # last spec rendered from a valid file
    applied_hash: str | None  # rendered hash of what was last applied successfully
    depends_files: tuple[str, ...]  # repo paths its render read (config file sources)
    params: Mapping[str, Any]  # as in git: secrets stay references, never values
    last_error: str | None
    operator_stopped: bool
    created_at: datetime
    updated_at: datetime
    # The rendered hash and revision whose new instance failed its health gate; the same spec
    # at the same revision is not retried by itself (a person redeploys, or something changes).
    unready_hash: str | None = None
    unready_revision: int | None = None

    @property
    def held_unready(self) -> bool:
        """Is its desired spec the one that failed its health gate, at the same revision?"""
        return (
            self.desired is not None
            and self.unready_hash == self.desired.rendered_hash
            and self.unready_revision == self.current_revision
        )


@dataclass(frozen=True)
class Revision:
    definition_id: str
    name: str
    number: int
    commit: str
    desired_hash: str  # hash of the definition file, template spec_hash and config files
    path: str  # file path at that commit ("" when the revision removed it)
    created_at: datetime
    secrets: tuple[tuple[str, int], ...] = ()  # the secret versions its file pins


# ---------------------------------------------------------------- the running engine


class SyncResult(str, enum.Enum):
    SUCCESS = "success"  # ran to completion: every change applied, no file refused
    PARTIAL = "partial"  # ran to completion, but a deployment failed or a file was refused
    ERROR = "error"  # stopped before the end: the repository, store or Docker failed it


@dataclass(frozen=True)
class SyncSnapshot:
    """The running sync at one moment."""

    running_s: float  # since the sync began, waiting for the sync lock included
    doing: str  # what it is doing now, in a user's words
    last: str  # its last progress line ("site: revision 3 deployed"), "" before one
    changes: int  # the changes it has planned so far (0 before its plan)
    health_timeout_s: float  # how long each new container may take to become healthy
    stuck_after_s: float = 0.0  # when /health calls it stuck (serve/status.py)


@dataclass(frozen=True)
class EngineStatus:
    """How the running engine stands; /health, /metrics and `deployally status` all show this."""

    syncs: int = 0  # finished so far, whatever their result
    syncing: bool = False
    failures: int = 0  # syncs in a row that ended in error
    last_sync_at: datetime | None = None  # when a sync last ran to completion
    last_sync_commit: str | None = None  # the commit that sync reached
    last_sync_result: SyncResult | None = None  # of the last sync, completed or not
    last_sync_seconds: float | None = None  # how long the last sync took
    watching: bool = False  # the repository's refs are watched (a push is seen at once)
    docker_events: bool = False  # Docker's event stream is followed
    mirror: str | None = None  # the remote being mirrored, credentials redacted
    reasons: tuple[str, ...] = ()  # why the engine is degraded; empty when it is not
    sync: SyncSnapshot | None = None  # the sync running now, if any

    @property
    def degraded(self) -> bool:
        return bool(self.reasons)


# ---------------------------------------------------------------- the sync's steps


@dataclass(frozen=True)
class Desired:
    """What the producer recorded for a commit: every definition, why the changed ones changed."""

    commit: str
    records: Mapping[str, DefinitionRecord]  # every definition, by name, as the store now holds it
    reasons: Mapping[str, Reason] = field(default_factory=dict)  # why each changed one changed
    before: Mapping[str, ContainerSpec | None] = field(default_factory=dict)  # the specs they replace
    errors: tuple[ValidationError, ...] = ()  # files refused at this commit
    changed: frozenset[str] = frozenset()  # names whose desired spec changed or went


@dataclass(frozen=True)
class ServerIntent:
    """What one server should run: everything its applier needs besides its live state."""

    server: str  # the server's name
    commit: str | None  # the commit the desired specs come from
    definitions: Mapping[str, DefinitionRecord]  # this server's definitions, by name
    elsewhere: frozenset[str] = frozenset()  # names defined on another server: not ours here
    before: Mapping[str, ContainerSpec | None] = field(default_factory=dict)
    reasons: Mapping[str, Reason] = field(default_factory=dict)
    open: Mapping[str, Deployment] = field(default_factory=dict)  # requested or waiting, to carry on
    backing_off: frozenset[str] = frozenset()  # failed definitions whose retry is not due yet
    not_ready: frozenset[str] = frozenset()  # definitions (any server) not running their applied spec
    # Instances whose settings (restart policy, limits) to look at, an inspect each: told they
    # changed, or not looked at since the engine started.
    observe: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ServerOutcome:
    """What applying one server came to: its deployments, or the cause it could not be reached."""

    server: str
    commit: str | None
    deployments: tuple[Deployment, ...] = ()  # those this sync made or moved on
    unchanged: int = 0
    unreachable: str | None = None  # why the server could not be reached, when it could not
    waiting: int = 0  # deployments still waiting (new or from before)
    carried: frozenset[str] = frozenset()  # ids of the open deployments it carried on

    @property
    def applied(self) -> bool:
        """Whether the server now runs the commit: reached, and every deployment succeeded."""
        return (
            self.unreachable is None
            and self.waiting == 0
            and all(d.status is DeploymentStatus.SUCCESS for d in self.deployments)
        )
