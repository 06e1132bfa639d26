"""Whose a Docker volume or network is: this engine's, adopted by its operator, or someone else's.

DeployAlly uses only what it made (labelled with this engine's owner id, or claimed in
the store for what it made before that label existed) and what engine.yaml adopts, and
deletes only what it made. Pure: labels, the claim and the adoption in; a standing and
the refusal's words out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from deployally.types import LABEL_MANAGED, LABEL_OWNER

VOLUME = "volume"
NETWORK = "network"


class Claims(Protocol):
    """Where an engine records the volumes and networks it made before they carried its label."""

    def claimed(self, kind: str, name: str) -> bool:
        """True when this engine recorded the resource as its own."""
        ...

    def claim(self, kind: str, name: str, why: str) -> None:
        """Record the resource as this engine's own, with the evidence."""
        ...

    def release(self, kind: str, name: str) -> None:
        """Forget the claim (the resource is gone)."""
        ...


@dataclass(frozen=True)
class Adopted:
    """What the operator lets this engine use although it did not make it (engine.yaml `adopt`)."""

    volumes: frozenset[str] = field(default_factory=frozenset)
    networks: frozenset[str] = field(default_factory=frozenset)

    def has(self, kind: str, name: str) -> bool:
        """Whether the operator adopted this volume or network."""
        return name in (self.volumes if kind == VOLUME else self.networks)


class Standing(enum.Enum):
    OURS = "ours"  # made by this engine: labelled with its owner id
    CLAIMED = "claimed"  # made by this engine before the label existed, as its store records
    ADOPTED = "adopted"  # made elsewhere; engine.yaml lets this engine use it
    LEGACY = "legacy"  # made by some DeployAlly before resources carried an owner
    FOREIGN = "foreign"  # another engine's, or made outside DeployAlly


def standing(
    kind: str, name: str, labels: dict[str, str], *, owner: str, claimed: bool, adopted: Adopted
) -> Standing:
    """Whose the volume or network named `name`, with these Docker labels, is."""
    if labels.get(LABEL_OWNER) == owner:
        return Standing.OURS
    unowned = labels.get(LABEL_MANAGED) == "true" and not labels.get(LABEL_OWNER)
    if unowned and claimed:
        return Standing.CLAIMED
    if adopted.has(kind, name):
        return Standing.ADOPTED
    return Standing.LEGACY if unowned else Standing.FOREIGN


def unlabelled_is_ours(kind: str, users: dict[str, bool], *, claimed: bool) -> bool:
    """Whether an unowned DeployAlly volume or network (LEGACY or CLAIMED), used by these
    containers (id -> this engine's?), is this engine's to use now. Never while any other
    container uses it. Then: its own containers using it prove it; so does an earlier claim.
    With neither, a network nobody uses reaches no one and may be taken; a volume may hold
    another engine's data and may not."""
    if not all(users.values()):
        return False
    return bool(users) or claimed or kind == NETWORK


def deletable(
    kind: str, name: str, labels: dict[str, str], *, owner: str, claimed: bool, adopted: Adopted
) -> bool:
    """Only what this engine made goes, and never what the operator adopted."""
    found = standing(kind, name, labels, owner=owner, claimed=claimed, adopted=adopted)
    return found in (Standing.OURS, Standing.CLAIMED) and not adopted.has(kind, name)


def refusal(kind: str, name: str, labels: dict[str, str], *, shared: bool = False) -> str:
    """Why this engine will not use an existing volume or network, and what would let it."""
    other = labels.get(LABEL_OWNER)
    if other:
        whose = f"it belongs to another DeployAlly engine ({other})"
    elif labels.get(LABEL_MANAGED) == "true":
        users = "containers that are not this engine's use it" if shared else "no container uses it"
        whose = f"it was made by DeployAlly before volumes and networks carried an owner, and {users}"
    else:
        whose = "it was made outside DeployAlly"
    if kind == VOLUME:
        return (
            f"volume {name} exists and this engine did not create it ({whose}); DeployAlly "
            "mounts only volumes it created. To mount it anyway, the engine's operator adds "
            f"it to engine.yaml: `adopt: {{volumes: [{name}]}}` (an adopted volume is never "
            "deleted, even with prune_volumes); otherwise rename the definition or remove "
            "the volume"
        )
    return (
        f"network {name} exists and this engine did not create it ({whose}); joining it "
        "would let these containers reach its other containers, and be reached by them. "
        "To join it anyway, the engine's operator adds it to engine.yaml: "
        f"`adopt: {{networks: [{name}]}}`; otherwise set another `network` in deployally.yaml"
    )
