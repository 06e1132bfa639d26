"""The agent's HTTP(S) link to its engine: JSON posts with the server key, the engine's
certificate checked, each refusal of the key told apart from an engine that does not answer."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from deployally.errors import DeployAllyError


class KeyRefused(DeployAllyError):
    """The engine does not know this server key (rotated, its server removed, never registered)."""


class EngineUnreachable(DeployAllyError):
    """The engine did not answer, or answered with an error the agent cannot act on."""


class CallGone(DeployAllyError):
    """409: the engine no longer waits for the call (the agent drops what it would send), or
    refuses this agent's poll while another agent with the key is online."""


class SetupMistake(DeployAllyError):
    """The engine refused a request in a way trying again will not mend (a 4xx such as 404 for
    a --url with a wrong path)."""


TRANSIENT = frozenset({408, 425, 429})  # 4xx worth trying again


class EngineLink:
    """Posts JSON to one engine's agent endpoints as one server."""

    def __init__(self, url: str, key: str, *, context: ssl.SSLContext | None = None) -> None:
        self.url = url.rstrip("/")
        self._key = key
        self._context = context

    def __repr__(self) -> str:
        return f"EngineLink({self.url!r})"  # never the key

    def post(self, path: str, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """The `data` of the engine's answer to a POST of `body` to /api/v1`path`."""
        request = urllib.request.Request(
            self.url + "/api/v1" + path,
            data=json.dumps(body).encode("utf-8"),
            method="POST",
            headers={"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._context) as answer:
                raw = answer.read()
        except urllib.error.HTTPError as exc:
            message = _message(exc)
            if exc.code == 401:
                raise KeyRefused(f"the engine at {self.url} refused this server key: {message}") from None
            if exc.code == 409:
                raise CallGone(message) from None
            if 400 <= exc.code < 500 and exc.code not in TRANSIENT:
                raise SetupMistake(
                    f"the engine at {self.url} answered {exc.code} ({message}) to /api/v1{path}:"
                    " check --url (the engine's address, as `deployally serve` prints it, with no path)"
                ) from None
            raise EngineUnreachable(f"the engine at {self.url} answered {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLError):
                raise EngineUnreachable(
                    f"TLS with the engine at {self.url} failed: {reason}"
                    " (--ca-file names the CA certificate that signed the engine's)"
                ) from None
            raise EngineUnreachable(f"the engine at {self.url} does not answer: {reason}") from None
        try:
            data = json.loads(raw)["data"]
        except (ValueError, KeyError, TypeError):
            raise EngineUnreachable(f"the engine at {self.url} answered something other than JSON") from None
        return data if isinstance(data, dict) else {}


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(exc.reason)

