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
    OURS = "ours"  # made by this engine: labelled with its owner id, or claimed
    ADOPTED = "adopted"  # made elsewhere; engine.yaml lets this engine use it
    LEGACY = "legacy"  # made by some DeployAlly before resources carried an owner
    FOREIGN = "foreign"  # another engine's, or made outside DeployAlly


def standing(
    kind: str, name: str, labels: dict[str, str], *, owner: str, claimed: bool, adopted: Adopted
) -> Standing:
    """Whose the volume or network named `name`, with these Docker labels, is."""
    if labels.get(LABEL_OWNER) == owner or claimed:
        return Standing.OURS
    if adopted.has(kind, name):
        return Standing.ADOPTED
    if labels.get(LABEL_MANAGED) == "true" and not labels.get(LABEL_OWNER):
        return Standing.LEGACY
    return Standing.FOREIGN


def claimable(kind: str, users: dict[str, bool]) -> bool:
    """Whether a legacy volume or network, used by these containers (id -> this engine's?),
    is this engine's: its own containers use it and no other does. A network nobody uses
    is claimable too: joining it reaches no one. A volume nobody uses is not: it may hold
    another engine's data."""
    if not all(users.values()):
        return False
    return bool(users) or kind == NETWORK


def deletable(
    kind: str, name: str, labels: dict[str, str], *, owner: str, claimed: bool, adopted: Adopted
) -> bool:
    """Only what this engine made goes, and never what the operator adopted."""
    found = standing(kind, name, labels, owner=owner, claimed=claimed, adopted=adopted)
    return found is Standing.OURS and not adopted.has(kind, name)


def refusal(kind: str, name: str, labels: dict[str, str], *, shared: bool = False) -> str:
    """Why this engine will not use an existing volume or network, and what would let it."""
    other = labels.get(LABEL_OWNER)
    if other:
        whose = f"it belongs to another DeployAlly engine ({other})"
    elif labels.get(LABEL_MANAGED) == "true":
        whose = (
            "it was made by DeployAlly before volumes and networks carried an owner, and "
            + ("containers that are not this engine's use it" if shared else "no container of this engine uses it")
        )
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
