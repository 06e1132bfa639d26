"""The engine's own configuration: what its operator allows, which no repository can grant itself.

Read from the file `DEPLOYALLY_CONFIG` names, else `engine.yaml` in the state
directory. Someone who can push, or who holds an API token, can write neither.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployally.errors import ValidationError, ValidationErrors
from deployally.identity import content_hash
from deployally.model.schema import (
    FieldPath,
    LineIndex,
    field_name,
    line_of,
    load_yaml,
    schema_errors,
)
from deployally.types import TrustedKey

ENGINE_CONFIG_FILE = "engine.yaml"
CONFIG_ENV = "DEPLOYALLY_CONFIG"
DEFAULT_PUBLISH_ADDRESS = "127.0.0.1"  # published ports reach this host only, unless the operator says

_PGP_BLOCK = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
# An SSH public key line as `ssh-keygen` writes it (`<type> <base64> [comment]`); the same
# pattern as engine.schema.json's, for the lines of a key file.
SSH_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\n]*)?$"
)


@dataclass(frozen=True)
class Allowances:
    """What a repository may ask of this host beyond what every container gets (engine.yaml `allow`)."""

    ports_below_1024: bool = False  # every host port below 1024
    low_ports: frozenset[int] = frozenset()  # or just these
    host_network: bool = False

    def allows_host_port(self, port: int) -> bool:
        """Whether a definition may publish this host port."""
        return port >= 1024 or self.ports_below_1024 or port in self.low_ports


@dataclass(frozen=True)
class EngineConfig:
    """engine.yaml with every default filled in."""

    path: str = ""  # the file it was read from; "" when there is none and defaults apply
    publish_address: str = DEFAULT_PUBLISH_ADDRESS
    allow: Allowances = field(default_factory=Allowances)
    adopted_volumes: frozenset[str] = frozenset()
    adopted_networks: frozenset[str] = frozenset()
    trusted_keys: tuple[TrustedKey, ...] = ()
    signing_key: str | None = None  # an SSH private key the engine signs its own commits with
    # Where the key that encrypts secrets at rest is; None: the default (store/secret_key.py).
    secret_key_file: Path | None = None
    # Kinds of address webhooks may reach although they are this machine's own (notify/urls.py):
    # loopback, link_local, engine_host. None by default.
    webhook_allow: frozenset[str] = frozenset()
    # The TLS directory (ca.pem, cert.pem, key.pem) of each swarm server reached over tcp://.
    docker_tls: Mapping[str, Path] = field(default_factory=dict)

    @property
    def verifies_commits(self) -> bool:
        """True when only commits signed by a trusted key may deploy."""
        return bool(self.trusted_keys)

    def render_fingerprint(self) -> str:
        """What, of this configuration, changes how definitions render or validate."""
        allow = self.allow
        return content_hash(
            {
                "publish_address": self.publish_address,
                "ports_below_1024": allow.ports_below_1024,
                "low_ports": sorted(allow.low_ports),
                "host_network": allow.host_network,
            }
        )


def engine_config_path(state_dir: Path) -> Path:
    """Where this engine's configuration lives: $DEPLOYALLY_CONFIG, else <state dir>/engine.yaml."""
    named = os.environ.get(CONFIG_ENV)
    return Path(named) if named else Path(state_dir) / ENGINE_CONFIG_FILE


def load_engine_config(state_dir: Path) -> EngineConfig:
    """Read the engine's configuration; a missing file gives the defaults, a bad one raises.

    A file named by DEPLOYALLY_CONFIG must exist: a typo must not silently drop what the
    operator meant to allow or forbid.
    """
    path = engine_config_path(state_dir)
    if not path.is_file():
        if os.environ.get(CONFIG_ENV):
            raise ValidationErrors([_missing(path)])
        return EngineConfig()
    shown = str(path)
    data, lines = load_yaml(shown, path.read_text(encoding="utf-8"))
    errors = schema_errors("engine.schema.json", shown, data, lines)
    if errors:
        raise ValidationErrors(errors)
    return _parse(shown, data, lines)


def _parse(shown: str, data: dict[str, Any], lines: LineIndex) -> EngineConfig:
    """The schema-checked mapping as an EngineConfig; what the schema cannot check raises here."""
    errors: list[ValidationError] = []

    def error(at: FieldPath, message: str) -> None:
        errors.append(ValidationError(shown, field_name(at), message, line=line_of(lines, at)))

    address = str(data.get("publish_address", DEFAULT_PUBLISH_ADDRESS))
    try:
        ipaddress.ip_address(address)
    except ValueError:
        error(
            ("publish_address",),
            f"{address!r} is not an IP address; write 127.0.0.1 (this host only), "
            "0.0.0.0 (every IPv4 interface), :: (every interface) or one of the host's addresses",
        )
    allow_data = data.get("allow") or {}
    low = allow_data.get("ports_below_1024", False)
    allow = Allowances(
        ports_below_1024=low is True,
        low_ports=frozenset(low) if isinstance(low, list) else frozenset(),
        host_network=bool(allow_data.get("host_network", False)),
    )
    adopt = data.get("adopt") or {}
    keys: list[TrustedKey] = []
    for i, entry in enumerate(data.get("trusted_keys") or []):
        if isinstance(entry, str):
            keys.append(TrustedKey(_kind(entry), entry.strip(), f"trusted_keys[{i}]"))
            continue
        key_file = Path(entry["file"])
        try:
            text = key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            error(("trusted_keys", i, "file"), f"cannot read {key_file}: {exc}")
            continue
        found, problem = _keys_in_file(text, str(key_file))
        if problem:
            error(("trusted_keys", i, "file"), problem)
        keys += found
    signing_key = data.get("signing_key")
    if signing_key is not None and not Path(signing_key).is_file():
        error(("signing_key",), f"{signing_key} does not exist; give the path of an SSH private key")
    if errors:
        raise ValidationErrors(errors)
    return EngineConfig(
        path=shown,
        publish_address=address,
        allow=allow,
        adopted_volumes=frozenset(adopt.get("volumes") or ()),
        adopted_networks=frozenset(adopt.get("networks") or ()),
        trusted_keys=tuple(keys),
        signing_key=signing_key,
        # Relative to the configuration file, as a path written in it reads.
        secret_key_file=(
            Path(os.path.normpath(Path(shown).parent / Path(secret_key).expanduser()))
            if (secret_key := data.get("secret_key_file"))
            else None
        ),
        webhook_allow=frozenset((data.get("webhooks") or {}).get("allow") or ()),
        docker_tls={
            server: Path(os.path.normpath(Path(shown).parent / Path(directory).expanduser()))
            for server, directory in (data.get("docker_tls") or {}).items()
        },
    )


def _kind(text: str) -> str:
    return "openpgp" if text.lstrip().startswith(_PGP_BLOCK) else "ssh"


def _keys_in_file(text: str, origin: str) -> tuple[list[TrustedKey], str | None]:
    """The keys of a key file (OpenPGP blocks as they are, else one SSH public key a line),
    and what is wrong with the file, if anything."""
    if _PGP_BLOCK in text:
        return [TrustedKey("openpgp", text, origin)], None
    keys = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not SSH_KEY.match(line):
            return [], (
                f"{origin} line {number} is not an SSH public key (as in id_ed25519.pub); "
                "a key file holds OpenPGP public key blocks or SSH public key lines"
            )
        keys.append(TrustedKey("ssh", line, origin))
    if not keys:
        return [], f"{origin} holds no SSH public key line and no OpenPGP public key block"
    return keys, None


def _missing(path: Path) -> ValidationError:
    return ValidationError(str(path), "", f"{CONFIG_ENV} names this file, which does not exist")
