"""The volumes and networks a rollout needs on this host, and whose they are.

An engine creates them with its owner label, uses an existing one only when it is its own
(labelled, or claimed from before the label), or the operator adopted it in engine.yaml,
and deletes only its own. The decisions are ownership.py's; this module asks Docker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import docker
import docker.errors

from deployally.drivers.base import Log
from deployally.drivers.local import ownership
from deployally.drivers.local.calls import docker_call
from deployally.drivers.local.ownership import NETWORK, VOLUME, Adopted, Claims
from deployally.errors import DriverError
from deployally.types import (
    HOST_NETWORK,
    LABEL_DEFINITION,
    LABEL_MANAGED,
    LABEL_OWNER,
    ContainerSpec,
)

_LABELLED_USABLE = (ownership.Standing.OURS, ownership.Standing.ADOPTED)


class VolumesAndNetworks:
    """One engine's volumes and networks on one Docker engine."""

    def __init__(
        self,
        api: Callable[[], docker.APIClient],
        owner: str,
        claims: Claims,
        adopted: Adopted,
        name_lock: Callable[[str], threading.Lock],
    ) -> None:
        self._api = api  # lazy: the driver connects on first use
        self.owner = owner
        self.claims = claims  # volumes and networks made before they carried the owner label
        self.adopted = adopted  # what engine.yaml lets it use although not its own
        self._name_lock = name_lock
        # Networks found this engine's (or adopted) by their labels during this sync: the
        # next rollouts skip the look-up, which each took a turn under one network's lock.
        self._usable_networks: set[str] = set()

    def forget(self) -> None:
        """Look every network up again (a new sync: one may have been removed meanwhile)."""
        self._usable_networks.clear()

    def __repr__(self) -> str:
        return f"VolumesAndNetworks(owner={self.owner!r})"

    def prune_volume(self, name: str, log: Log) -> None:
        """Remove a volume of a removed definition, only if this engine made it."""
        info = self._inspect_volume(name)
        if info is None:
            return
        labels = info.get("Labels") or {}
        claimed = self.claims.claimed(VOLUME, name)
        kept = None
        if self.adopted.has(VOLUME, name):
            kept = "adopted in engine.yaml"
        elif not ownership.deletable(
            VOLUME, name, labels, owner=self.owner, claimed=claimed, adopted=self.adopted
        ):
            kept = "not created by this engine"
        elif claimed and not all(self._users(VOLUME, name).values()):
            kept = "containers that are not this engine's use it"
        if kept is not None:
            log(f"kept volume {name}: {kept}, so prune_volumes does not delete it")
            return
        with docker_call(f"remove volume {name}"):
            self._api().remove_volume(name)
        self.claims.release(VOLUME, name)
        log(f"removed volume {name}")

    def ensure_network(self, network: str, log: Log) -> None:
        """Create the network, or check an existing one is this engine's or adopted."""
        if network == HOST_NETWORK:  # the host's own namespace (engine.yaml allow.host_network)
            return
        if network in self._usable_networks:
            return
        with self._name_lock(f"network:{network}"):
            if network in self._usable_networks:
                return  # another rollout of this sync looked it up while this one waited
            with docker_call(f"look up network {network}"):
                # The name filter matches substrings, so compare exactly here.
                found = [n for n in self._api().networks(names=[network]) if n["Name"] == network]
            standings = [
                self._check_usable(NETWORK, network, existing.get("Labels") or {}, log)
                for existing in found
            ]
            if found:
                # An unlabelled network's users decide each time; a label stays what it is.
                if all(s in _LABELLED_USABLE for s in standings):
                    self._usable_networks.add(network)
                return
            with docker_call(f"create network {network}"):
                self._api().create_network(
                    network,
                    driver="bridge",
                    labels={LABEL_MANAGED: "true", LABEL_OWNER: self.owner},
                    check_duplicate=True,  # two networks of one name would make joins ambiguous
                )
            log(f"created network {network}")
            self._usable_networks.add(network)

    def ensure_volumes(self, spec: ContainerSpec, log: Log) -> None:
        """Create the spec's volumes, or check existing ones are this engine's or adopted."""
        for volume in spec.volumes:
            info = self._inspect_volume(volume.name)
            if info is None:
                with docker_call(f"create volume {volume.name}"):
                    # Creating an existing volume returns it unchanged, so check what came
                    # back: another process may have made it since the look-up.
                    info = self._api().create_volume(
                        volume.name,
                        labels={
                            LABEL_MANAGED: "true",
                            LABEL_DEFINITION: spec.definition_id,
                            LABEL_OWNER: self.owner,
                        },
                    )
            self._check_usable(VOLUME, volume.name, info.get("Labels") or {}, log)

    def _inspect_volume(self, name: str) -> dict[str, Any] | None:
        try:
            with docker_call(f"inspect volume {name}"):
                info: dict[str, Any] = self._api().inspect_volume(name)
                return info
        except DriverError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return None
            raise

    def _check_usable(
        self, kind: str, name: str, labels: dict[str, str], log: Log
    ) -> ownership.Standing:
        """Its standing when this engine made the volume or network, or its operator adopted
        it; raise DriverError saying why not and which engine.yaml setting would allow it."""
        claimed = self.claims.claimed(kind, name)
        found = ownership.standing(
            kind, name, labels, owner=self.owner, claimed=claimed, adopted=self.adopted
        )
        if found in _LABELLED_USABLE:
            return found
        users: dict[str, bool] = {}
        if found in (ownership.Standing.CLAIMED, ownership.Standing.LEGACY):
            # No label says whose it is: who uses it decides, every time.
            users = self._users(kind, name)
            if ownership.unlabelled_is_ours(kind, users, claimed=claimed):
                if not claimed:
                    self._claim(kind, name, log)
                return found
        raise DriverError(ownership.refusal(kind, name, labels, shared=bool(users)))

    def _users(self, kind: str, name: str) -> dict[str, bool]:
        """The containers that use a volume or network: id -> whether it is this engine's."""
        with docker_call(f"list the containers using {kind} {name}"):
            rows = self._api().containers(all=True, filters={kind: name})
        return {row["Id"]: (row.get("Labels") or {}).get(LABEL_OWNER) == self.owner for row in rows}

    def _claim(self, kind: str, name: str, log: Log) -> None:
        # Docker cannot relabel a volume or network: the store remembers it is ours.
        why = "made by DeployAlly before it carried an owner; only this engine's containers use it"
        self.claims.claim(kind, name, why)
        log(f"claimed {kind} {name} as this engine's: {why}")

    def claim_legacy(self, log: Log) -> None:
        """Claim the volumes and networks this engine made before they carried its owner label:
        labelled by DeployAlly, with no owner, and used by this engine's containers alone."""
        managed = {"label": f"{LABEL_MANAGED}=true"}
        with docker_call("list volumes"):
            volumes = self._api().volumes(filters=managed).get("Volumes") or []
        with docker_call("list networks"):
            networks = self._api().networks(filters=managed)
        for kind, rows in ((VOLUME, volumes), (NETWORK, networks)):
            for row in rows:
                name = row["Name"]
                if (row.get("Labels") or {}).get(LABEL_OWNER) or self.claims.claimed(kind, name):
                    continue
                users = self._users(kind, name)
                if users and all(users.values()):  # its own containers show it is its own
                    self._claim(kind, name, log)
