"""Error types whose messages a user can act on: they name the file, field and fix."""

from __future__ import annotations


class DeployAllyError(Exception):
    """Base of every error DeployAlly raises on purpose."""


class ValidationError(DeployAllyError):
    """Bad input in one file: names the file, the field (dotted path) and what to do."""

    def __init__(self, path: str, field: str, message: str, line: int | None = None) -> None:
        self.path = path
        self.field = field
        self.message = message
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        """JSON form for `--json` output and API error details."""
        return {"file": self.path, "field": self.field, "line": self.line, "message": self.message}


class ValidationErrors(DeployAllyError):
    """Several validation errors at once, so a user fixes them in one pass."""

    def __init__(self, errors: list[ValidationError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class RenderError(ValidationError):
    """A template's Jinja could not be rendered for a definition."""


class SecretError(DeployAllyError):
    """A secret is missing or cannot be read; raised at apply time, never with a value."""


class SecretKeyError(SecretError):
    """The key that encrypts secrets at rest is missing, wrong or unreadable: nothing can be decrypted."""


class UnstorableValue(DeployAllyError):
    """A value read from a file does not fit the state store (a number beyond SQLite's 64 bits)."""


class SourceError(DeployAllyError):
    """The git repository could not be read (missing, locked, bad revision)."""


class StoreUnavailable(DeployAllyError):
    """The state store cannot be written (locked by another process, disk full); nothing was recorded."""


class DriverError(DeployAllyError):
    """The container engine failed or could not be reached."""


class ServerLost(DriverError):
    """The server went away during a call (its agent restarted or stopped answering): what the
    call did is not known; the deployment waits for the server and the next sync looks again."""


class NotBegun(DeployAllyError):
    """An action was not begun: the engine is stopping; the next start carries it on."""


class NotFound(DeployAllyError):
    """The named thing does not exist."""


class Conflict(DeployAllyError):
    """The write conflicts with the current state (branch moved, name taken)."""
