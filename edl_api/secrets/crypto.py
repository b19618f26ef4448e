"""The master key that encrypts profile secrets at rest (Fernet: AES-128-CBC + HMAC-SHA256).

Where the keys come from, first match wins:
- `EDL_SECRETS_KEY`: one or more Fernet keys, comma-separated. The first encrypts, every
  one decrypts (MultiFernet), so a new key can be put in front of the old one while
  `edl-api rotate-secrets-key` re-encrypts every value under it.
- else `EDL_DATA_DIR/secrets.key`: one key a line (first encrypts), created once with mode
  0600 when missing and never overwritten at start; `rotate-secrets-key` rewrites it.

A value that no key opens is an error (`SecretsKeyError`), never an empty string.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from edl_api.settings import Settings

logger = logging.getLogger("edl_api.secrets")

KEY_FILE_NAME = "secrets.key"


class SecretsKeyError(Exception):
    """No configured master key opens a stored value (or the key material is unusable)."""


def parse_keys(text: str, separator: str) -> list[bytes]:
    """Fernet keys from `text` (blank parts ignored); a malformed key is an error."""
    keys = [part.strip().encode("ascii") for part in text.split(separator) if part.strip()]
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise SecretsKeyError(
                "a secrets master key must be a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
    return keys


def key_file(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE_NAME


def write_key_file(path: Path, keys: list[bytes], *, replace: bool) -> None:
    """Write `keys` (one a line) with mode 0600. `replace=False`: only if `path` does not
    exist yet (atomically: a concurrent first start never sees a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"".join(key + b"\n" for key in keys))
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # fails if another process made it first: keep theirs
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def read_key_file(path: Path) -> list[bytes]:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        logger.warning("%s is readable by others (mode %o); chmod 600 it", path, mode)
    keys = parse_keys(path.read_text(encoding="ascii"), "\n")
    if not keys:
        raise SecretsKeyError(f"{path} holds no key")
    return keys


class Keyring:
    """Encrypts and decrypts secret values with the configured master key(s)."""

    def __init__(self, keys: list[bytes], path: Path | None = None) -> None:
        if not keys:
            raise SecretsKeyError("no secrets master key")
        self._keys = keys
        self._fernet = MultiFernet([Fernet(key) for key in keys])
        self._path = path  # a key file is re-read once when no key opens a value
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        if settings.secrets_key is not None:
            return cls(parse_keys(settings.secrets_key.get_secret_value(), ","))
        path = key_file(settings)
        if not path.exists():
            write_key_file(path, [Fernet.generate_key()], replace=False)
            logger.info("generated the secrets master key in %s (mode 0600)", path)
        return cls(read_key_file(path), path)

    @property
    def primary(self) -> bytes:
        return self._keys[0]

    @property
    def source(self) -> str:
        return str(self._path) if self._path is not None else "EDL_SECRETS_KEY"

    def encrypt(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode("utf-8")
        except InvalidToken:
            if not self._reload():
                raise SecretsKeyError(f"no key in {self.source} opens this secret") from None
        try:
            return self._fernet.decrypt(token).decode("utf-8")
        except InvalidToken:
            raise SecretsKeyError(f"no key in {self.source} opens this secret") from None

    def rotate(self, token: bytes) -> bytes:
        """The same value encrypted under the primary key (any configured key may open it)."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise SecretsKeyError(f"no key in {self.source} opens this secret") from None

    def _reload(self) -> bool:
        """Another process rotated the key file: pick up its keys. True if they changed."""
        if self._path is None:
            return False
        with self._lock:
            try:
                keys = read_key_file(self._path)
            except (OSError, SecretsKeyError):
                return False
            if keys == self._keys:
                return False
            self._keys = keys
            self._fernet = MultiFernet([Fernet(key) for key in keys])
            return True


_cache: dict[tuple[str | None, str], Keyring] = {}
_cache_lock = threading.Lock()


def keyring(settings: Settings) -> Keyring:
    """This process's keyring for these settings (made, and the key file created, once)."""
    env = settings.secrets_key.get_secret_value() if settings.secrets_key else None
    cache_key = (env, str(key_file(settings).resolve()))
    with _cache_lock:
        found = _cache.get(cache_key)
        if found is None:
            found = _cache[cache_key] = Keyring.from_settings(settings)
        return found
