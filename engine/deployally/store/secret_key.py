"""The key that encrypts secret values at rest: where it lives, made once, kept apart from the store.

Fernet (`cryptography`: AES-128-CBC with an HMAC-SHA256, a random IV per value). A
key file holds one key a line: the first encrypts, every one decrypts (MultiFernet),
which is how a key is rotated. `DEPLOYALLY_SECRET_KEY`, when set, holds the keys
instead (comma-separated) and no file is read or made.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from deployally.errors import SecretKeyError

KEY_ENV = "DEPLOYALLY_SECRET_KEY"
KEYS_DIR = ("deployally", "keys")


def default_key_file(engine_id: str) -> Path:
    """`$XDG_CONFIG_HOME/deployally/keys/<engine id>.key` (~/.config by default): outside the
    state directory, so a backup or copy of the store does not carry its key along."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base.joinpath(*KEYS_DIR, f"{engine_id}.key")


def key_id(key: bytes) -> str:
    """A short public name for a key, stored beside each value it encrypted (not the key)."""
    return hashlib.sha256(b"deployally secret key\x00" + key).hexdigest()[:16]


@dataclass(frozen=True)
class SecretKeys:
    """The keys one store uses: the first encrypts, any decrypts a value it encrypted."""

    keys: tuple[bytes, ...]
    source: str  # "$DEPLOYALLY_SECRET_KEY" or the key file's path, for messages

    def __repr__(self) -> str:
        return f"SecretKeys({self.source}, ids={list(self.ids)})"  # never the keys

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(key_id(k) for k in self.keys)

    @property
    def primary_id(self) -> str:
        return key_id(self.keys[0])

    def encrypt(self, plaintext: bytes) -> tuple[str, str]:
        """The token of `plaintext` under the first key, and that key's id."""
        return Fernet(self.keys[0]).encrypt(plaintext).decode("ascii"), self.primary_id

    def decrypt(self, token: str, used: str, what: str) -> bytes:
        """Open a token made with the key `used`; SecretKeyError names what to do when it fails."""
        if used not in self.ids:
            raise SecretKeyError(
                f"{what} is encrypted with key {used}, which {self.source} does not hold "
                f"(it holds {', '.join(self.ids)}): restore that key (see README, Secrets)"
            )
        try:
            return Fernet(self.keys[self.ids.index(used)]).decrypt(token.encode("ascii"))
        except InvalidToken:
            raise SecretKeyError(
                f"{what} does not decrypt with key {used}: the state store was altered or damaged"
            ) from None

    def reencrypt(self, token: str) -> str:
        """`token` (under any of the keys) encrypted again under the first one."""
        return MultiFernet([Fernet(k) for k in self.keys]).rotate(token.encode("ascii")).decode(
            "ascii"
        )


def _parse(lines: Sequence[str], source: str) -> SecretKeys:
    keys: list[bytes] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            Fernet(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            where = f"{source}, line {number}" if len(lines) > 1 or number > 1 else source
            raise SecretKeyError(
                f"{where} is not a secret key (a Fernet key: 44 characters of URL-safe "
                "base64, as `deployally secret key --new` prints); restore the key from your backup"
            ) from None
        keys.append(text.encode("ascii"))
    if not keys:
        raise SecretKeyError(f"{source} holds no key; restore the key from your backup")
    return SecretKeys(tuple(keys), source)


@dataclass(frozen=True)
class KeyFile:
    """Where one store's keys come from: $DEPLOYALLY_SECRET_KEY when set, else this file."""

    path: Path

    @property
    def from_env(self) -> bool:
        return bool(os.environ.get(KEY_ENV))

    @property
    def source(self) -> str:
        return f"${KEY_ENV}" if self.from_env else str(self.path)

    def signature(self) -> object:
        """Changes whenever the keys may have, or who may read them: the variable's value, or
        the file's inode, mtime, size, mode and owner (a chmod is checked again at the next read)."""
        if self.from_env:
            return ("env", os.environ.get(KEY_ENV))
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode, st.st_uid, st.st_ctime_ns)

    def load(self) -> SecretKeys | None:
        """The keys, or None when neither the variable nor the file exists."""
        if self.from_env:
            return _parse(os.environ.get(KEY_ENV, "").split(","), self.source)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretKeyError(f"cannot read the secret key {self.path}: {exc.strerror}") from None
        with os.fdopen(fd, encoding="ascii", errors="replace") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                # As ssh does with a private key: a key others can read protects nothing.
                raise SecretKeyError(
                    f"{self.path} can be read by others (mode {stat.S_IMODE(mode):04o}); "
                    f"run: chmod 600 {self.path}"
                )
            return _parse(fh.read().splitlines(), self.source)

    def create(self) -> SecretKeys:
        """Make a new key file (0600, its directory 0700); if another process just made one, use it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self._written([Fernet.generate_key()])
        try:
            os.link(tmp, self.path)  # never over an existing key
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        keys = self.load()
        assert keys is not None  # it exists now
        return keys

    def replace(self, keys: Sequence[bytes]) -> SecretKeys:
        """Write `keys` (the first one encrypting) over the file, atomically."""
        tmp = self._written(keys)
        try:
            os.replace(tmp, self.path)
        except OSError:
            os.unlink(tmp)
            raise
        written = self.load()
        assert written is not None
        return written

    def _written(self, keys: Sequence[bytes]) -> str:
        """A new file beside the key file holding `keys`, flushed to disk; its path."""
        fd, tmp = tempfile.mkstemp(prefix=".key-", dir=self.path.parent)  # mode 0600
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write("".join(k.decode("ascii") + "\n" for k in keys))
            fh.flush()
            os.fsync(fh.fileno())
        return tmp


def new_key() -> str:
    """A fresh key, as text (for DEPLOYALLY_SECRET_KEY)."""
    return Fernet.generate_key().decode("ascii")
