"""Edits to definitions made as commits on the tracked branch: git stays the source of truth.

The API's writes and `deployally rollback` come here; the engine then deploys
the new commit like any push.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployally.errors import Conflict, NotFound, ValidationError
from deployally.identity import definition_id
from deployally.model import definitions as definitions_mod
from deployally.model import desired
from deployally.model.catalog import Catalog
from deployally.model.schema import load_yaml
from deployally.model.settings import Settings
from deployally.secrets import missing_version
from deployally.source.git import GitRepo
from deployally.source.tree import CommitTree
from deployally.store import ServerRecord, Store

ROLLBACK_TRAILER = "DeployAlly-Rollback:"
AUTHOR_EMAIL = "deployally@localhost"


def named_at_head(repo: GitRepo, server: ServerRecord) -> list[str]:
    """The definitions at the branch head that name `server` (by name or id), synced or not."""
    head = repo.head()
    if head is None:
        return []
    named = desired.servers_named(CommitTree(repo, head))
    return sorted(n for n, key in named.items() if key in (server.name, server.id))


def rollback(repo: GitRepo, store: Store, name: str, to: int, *, author: str) -> str:
    """Commit revision `to` of a definition's file back onto the branch; returns the commit."""
    record = store.definition(name)
    if record is None:
        raise NotFound(f"definition {name!r} is not known; see `deployally definitions list`")
    target = store.revision(record.id, to)
    if target is None or not target.path:
        known = ", ".join(str(r.number) for r in store.revisions(record.id) if r.path)
        raise NotFound(f"{record.name} has no revision {to} to roll back to (revisions: {known})")
    text = repo.read(target.commit, target.path)
    if text is None:
        raise NotFound(f"{target.path} is missing at {target.commit[:12]}")
    changes: dict[str, str | None] = {target.path: text}
    if record.path and record.path != target.path:
        changes[record.path] = None
    message = (
        f"Roll back {record.name} to revision {to}\n\n"
        f"Restores {target.path} as of {target.commit[:12]}.\n\n"
        f"{ROLLBACK_TRAILER} {record.name} {to}\n"
    )
    return repo.write(
        changes,
        message=message,
        author_name=author,
        author_email=AUTHOR_EMAIL,
        expected_head=repo.head(),
    )


DEFINITIONS_DIR = "definitions"
_NAME = re.compile(definitions_mod.NAME_RE)


@dataclass(frozen=True)
class Edit:
    """A definition edit made as a commit (`Intake.revision_of` numbers its revision)."""

    definition_id: str
    name: str
    path: str
    commit: str
    changed: bool  # False when the file already said this: no commit was made


def create_definition(
    repo: GitRepo,
    store: Store,
    catalog: Catalog,
    *,
    name: str,
    template: str,
    server: str,
    params: Mapping[str, Any],
    profile: str,
    author: str,
    settings: Settings | None = None,
) -> Edit:
    """Commit a new definitions/<name>.yaml; password params go to the secret store, never git."""
    if problem := definitions_mod.name_problem(name):
        raise ValidationError(f"{DEFINITIONS_DIR}/<name>.yaml", "name", problem)
    path = f"{DEFINITIONS_DIR}/{name}.yaml"
    head = repo.head()
    known = store.definition(name)
    if (head is not None and repo.read(head, path) is not None) or (
        known is not None and known.desired is not None
    ):
        raise Conflict(f"definition {name!r} already exists ({path}); update it with PUT instead")
    tpl = catalog.resolve(template)
    if tpl is None:
        raise ValidationError(
            path, "template", f"no template {template!r}; list them with GET /templates"
        )
    fields: dict[str, Any] = {
        "name": name, "template": tpl.taxonomy.path, "server": server, "profile": profile
    }
    plain, passwords = _split_passwords(path, name, dict(params), _password_inputs(catalog, tpl.id))
    _check_pins(path, name, plain, store)
    message = (
        f"Create definition {name}\n\n"
        f"Template {tpl.taxonomy.path}, profile {profile}, server {server}; "
        f"requested through the API by {author}.\n"
    )
    fields["params"] = plain
    return _commit(repo, store, name, path, _Text(fields, passwords, catalog, settings),
                   message, author, head)


def update_definition(
    repo: GitRepo,
    store: Store,
    catalog: Catalog,
    key: str,
    *,
    profile: str | None = None,
    params: Mapping[str, Any] | None = None,
    author: str,
    settings: Settings | None = None,
) -> Edit:
    """Commit a partial update (profile, and params merged into the file's; None unsets one)."""
    head = repo.head()
    name, path, text = _current(repo, store, key, head)
    data, _lines = load_yaml(path, text)  # bounded: a file nested 100,000 deep is an error
    if profile is not None:
        data["profile"] = profile
    current = dict(data.get("params") or {})
    passwords: dict[str, tuple[str, str]] = {}
    if params:
        tpl = catalog.resolve(str(data.get("template", "")))
        password_inputs = _password_inputs(catalog, tpl.id) if tpl else set()
        given = {k: v for k, v in params.items() if v is not None}
        for k in params:
            if params[k] is None:
                current.pop(k, None)
        plain, passwords = _split_passwords(path, name, given, password_inputs)
        _check_pins(path, name, plain, store)
        current |= plain
    data["params"] = current
    changes = [f"profile {profile}"] if profile is not None else []
    changes += [f"params {', '.join(sorted(params))}"] if params else []
    message = (
        f"Update definition {name}: {'; '.join(changes) or 'no change'}\n\n"
        f"Requested through the API by {author}.\n"
    )
    return _commit(repo, store, name, path, _Text(data, passwords, catalog, settings),
                   message, author, head)


def delete_definition(repo: GitRepo, store: Store, key: str, *, author: str) -> Edit:
    """Commit the removal of a definition's file; the engine then removes its container."""
    head = repo.head()
    name, path, _text = _current(repo, store, key, head)
    message = (
        f"Delete definition {name}\n\n"
        f"Removes {path}; requested through the API by {author}. "
        "Its volumes are kept unless it set prune_volumes.\n"
    )
    return _commit(repo, store, name, path, None, message, author, head)


def _current(repo: GitRepo, store: Store, key: str, head: str | None) -> tuple[str, str, str]:
    """Name, path and text at head of the definition `key` (def_ id or name)."""
    if head is None:
        raise NotFound(f"definition {key!r}: the branch has no commits yet")
    record = store.definition(key)
    if record is not None and record.path:
        candidates = {record.path: record.name}
    else:
        candidates = {f"{DEFINITIONS_DIR}/{key}.yaml": key} if _NAME.fullmatch(key) else {}
        if key.startswith("def_"):
            # Committed but not yet synced: find the file whose name has this id.
            for path in repo.list_files(head, f"{DEFINITIONS_DIR}/"):
                stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
                if definition_id(stem) == key:
                    candidates[path] = stem
    for path, name in candidates.items():
        text = repo.read(head, path)
        if text is not None:
            return name, path, text
    raise NotFound(f"definition {key!r} has no file on the branch; list them with GET /definitions")


def _password_inputs(catalog: Catalog, template_id: str) -> set[str]:
    tpl = catalog.by_id(template_id)
    return {ui.name for ui in tpl.user_inputs if ui.type == "password"} if tpl else set()


def _split_passwords(
    path: str,
    name: str,
    params: dict[str, Any],
    passwords: set[str],
) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """Params without their plaintext passwords, and each password's param -> (secret, value).

    A password always goes to the definition's own secret, `password_secret_name(name, param)`,
    whatever secret the file referenced before: a write through one definition never writes
    another's secret or the operator's (the store refuses a secret this definition did not make).
    """
    out: dict[str, Any] = {}
    secrets: dict[str, tuple[str, str]] = {}
    for key, value in params.items():
        if key in passwords and not isinstance(value, dict):
            if not isinstance(value, str) or not value:
                raise ValidationError(
                    path, f"params.{key}", "a password must be a non-empty string"
                )
            secret = password_secret_name(name, key)
            if "\x00" in value:
                raise ValidationError(path, f"params.{key}", "a password may not contain a NUL byte")
            secrets[key] = (secret, value)
        else:
            out[key] = value
    return out, secrets


def _check_pins(path: str, name: str, params: Mapping[str, Any], store: Store) -> None:
    """A `{secret: NAME, version: N}` the write gives must name a version the store keeps,
    or the commit would only fail at the sync; ValidationError naming the field."""
    pins = {
        key: (value["secret"], value["version"])
        for key, value in params.items()
        if isinstance(value, dict) and isinstance(value.get("secret"), str)
        and type(value.get("version")) is int  # any other is the schema's to refuse
    }
    if not pins:
        return
    kept = store.available_secrets().kept
    for key, (secret, version) in pins.items():
        if (secret, version) not in kept:
            raise ValidationError(
                path, f"params.{key}.version", missing_version(name, secret, version, kept)
            )


@dataclass(frozen=True)
class _Text:
    """A definition file to commit: its fields, and the passwords to pin as new secret versions."""

    fields: Mapping[str, Any]
    passwords: Mapping[str, tuple[str, str]]  # param -> (secret, value)
    catalog: Catalog
    settings: Settings | None

    def pinned(self, path: str, versions: Mapping[str, int]) -> str:
        """The file text with each password's param pinned to its new version, validated."""
        params = dict(self.fields.get("params") or {})
        for key, (secret, _value) in self.passwords.items():
            params[key] = {"secret": secret, "version": versions[key]}
        text = definitions_mod.dump_definition({**self.fields, "params": params})
        definitions_mod.parse_definition(path, text, self.catalog, defaults=self.settings)
        return text


def password_secret_name(definition: str, param: str) -> str:
    """`<definition>_<param>`, the secret a password given through the API is kept in; cut
    to the 63 characters a secret name may have, with a hash so two long names never meet."""
    name = f"{definition}_{param}"
    if len(name) <= 63:
        return name
    return f"{name[:54]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _commit(
    repo: GitRepo,
    store: Store,
    name: str,
    path: str,
    text: _Text | None,
    message: str,
    author: str,
    head: str | None,
) -> Edit:
    """Commit the file (None: remove it). A password becomes a new version of its secret, which
    the file pins: the commit and the value change together, or neither does."""
    staged: dict[str, tuple[str, int]] = {}  # param -> (secret, version)
    try:
        # Staged first: the engine may deploy the commit the moment it exists. Until the
        # commit is made, no unpinned reference sees the new version.
        for key, (secret, value) in (text.passwords if text else {}).items():
            try:
                staged[key] = (secret, store.stage_secret(secret, value, owner=definition_id(name)))
            except Conflict as exc:
                raise Conflict(
                    f"params.{key}: {exc}; write params.{key} as {{secret: NAME}} with a secret "
                    "you set, or remove that secret first"
                ) from exc
        content = text.pinned(path, {k: v for k, (_, v) in staged.items()}) if text else None
        commit = repo.write(
            {path: content},
            message=message,
            author_name=author,
            author_email=AUTHOR_EMAIL,
            expected_head=head,
        )
    except BaseException:
        for secret, version in staged.values():
            store.discard_secret(secret, version)  # a lost race or a bad file changes nothing
        raise
    for secret, version in staged.values():
        store.publish_secret(secret, version, commit)
    return Edit(definition_id(name), name, path, commit, commit != head)
