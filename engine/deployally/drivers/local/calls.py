"""How the local driver calls Docker: every failure becomes a DriverError saying what it was doing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker.errors
import requests.exceptions

from deployally.errors import DriverError


@contextlib.contextmanager
def docker_call(doing: str) -> Iterator[None]:
    """Turn any docker-py or transport failure into a DriverError saying what we were doing."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise DriverError(f"Docker refused to {doing}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DriverError(
            f"could not {doing}: Docker engine unreachable ({exc}); is dockerd running?"
        ) from exc
