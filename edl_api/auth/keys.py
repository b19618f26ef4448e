"""API key format, hashing and the verified-key cache.

A key is `<prefix>_<key_id:12><secret:32><checksum:6>` in base62. The key id is public
(an indexed lookup column), the secret is bcrypt-hashed at rest, and the checksum lets
us refuse a mistyped or forged key without touching the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import string
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from pwdlib import PasswordHash
from pwdlib.hashers.bcrypt import BcryptHasher

from edl_api.auth.principal import Principal

ADMIN_PREFIX = "edla"
PROFILE_PREFIX = "edlp"
FEED_PREFIX = "edlf"
PREFIXES = (ADMIN_PREFIX, PROFILE_PREFIX, FEED_PREFIX)

_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
_ID_LEN, _SECRET_LEN, _CHECK_LEN = 12, 32, 6
_KEY_RE = re.compile(
    rf"^({'|'.join(PREFIXES)})_([0-9A-Za-z]{{{_ID_LEN}}})([0-9A-Za-z]{{{_SECRET_LEN}}})"
    rf"([0-9A-Za-z]{{{_CHECK_LEN}}})$"
)

_hashers: dict[int, PasswordHash] = {}
DEFAULT_ROUNDS = 12
# Longer than any key we issue or accept as a legacy key: refused before any hashing.
MAX_KEY_LENGTH = 256


def _hasher(rounds: int = DEFAULT_ROUNDS) -> PasswordHash:
    if rounds not in _hashers:
        _hashers[rounds] = PasswordHash((BcryptHasher(rounds=rounds),))
    return _hashers[rounds]


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def _random(width: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(width))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECK_LEN)


@dataclass(frozen=True)
class ParsedKey:
    prefix: str
    key_id: str
    secret: str


@dataclass(frozen=True)
class NewKey:
    plaintext: str
    key_id: str
    key_hash: str


def generate_key(prefix: str, rounds: int = DEFAULT_ROUNDS) -> NewKey:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown key prefix {prefix!r}")
    key_id, secret = _random(_ID_LEN), _random(_SECRET_LEN)
    return NewKey(format_key(prefix, key_id, secret), key_id, hash_secret(secret, rounds))


def format_key(prefix: str, key_id: str, secret: str) -> str:
    """The key for these parts, checksum appended (what `parse_key` splits again)."""
    body = f"{prefix}_{key_id}{secret}"
    return body + _checksum(body)


def random_secret() -> str:
    """A secret part of the issued length and alphabet."""
    return _random(_SECRET_LEN)


def parse_key(key: str) -> ParsedKey | None:
    """The key's parts, or None for a malformed or bad-checksum key (no DB query needed)."""
    match = _KEY_RE.match(key)
    if match is None:
        return None
    prefix, key_id, secret, check = match.groups()
    if not hmac.compare_digest(_checksum(f"{prefix}_{key_id}{secret}"), check):
        return None
    return ParsedKey(prefix, key_id, secret)


def extract_key(headers: Mapping[str, str], allow_basic: bool) -> str | None:
    """The key a request carries: X-API-Key, Bearer, or (feeds) HTTP Basic's password.

    `headers` maps lower-case names to values (Starlette's `Headers`, or the fast path's
    dict of the few headers it reads)."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization")
    if not auth:
        return None
    scheme, _, value = auth.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip()
    if scheme == "basic" and allow_basic:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        # Firewalls can only send user:password; the key is the password.
        return decoded.partition(":")[2].strip() or None
    return None


def hash_secret(secret: str, rounds: int = DEFAULT_ROUNDS) -> str:
    return _hasher(rounds).hash(secret)


def verify_secret(secret: str, key_hash: str) -> bool:
    try:
        # The cost is read from the hash itself, whatever rounds made it.
        return _hasher().verify(secret, key_hash)
    except Exception:  # a corrupt hash must fail closed, not raise
        return False


V = TypeVar("V")


class VerifiedKeyCache(Generic[V]):
    """Maps MAC(process secret, key) → what the key resolved to, for a short TTL.

    bcrypt runs once per key per process; the MAC means the cache never holds a
    plaintext key. A revocation or scope change drops its key id (`drop_key_id`): after
    its commit in this process (`feeds.hooks`), within a poll elsewhere (`auth.revocation`).
    """

    def __init__(self, ttl_seconds: float, max_entries: int) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._pepper = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[float, str, V]] = OrderedDict()
        self._lock = threading.Lock()

    def digest(self, key: str) -> bytes:
        """A keyed BLAKE2b MAC under this process's secret (a third of HMAC-SHA256's cost
        on the feed fast path, with the same property: no plaintext key is kept)."""
        return hashlib.blake2b(key.encode(), key=self._pepper, digest_size=32).digest()

    def get(self, key: str) -> V | None:
        return self.get_by_digest(self.digest(key))

    def get_by_digest(self, digest: bytes) -> V | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            expires, _key_id, value = entry
            if expires < time.monotonic():
                # Kept (the LRU bound still holds) for `get_stale` during a database outage.
                return None
            self._entries.move_to_end(digest)
            return value

    def get_stale(self, key: str) -> V | None:
        """What `key` last resolved to, however long ago, unless its key id was dropped
        (revoked or re-scoped): only for when the database cannot be asked (stale-if-error,
        so a firewall keeps its feed through an outage longer than the TTL)."""
        with self._lock:
            entry = self._entries.get(self.digest(key))
            return None if entry is None else entry[2]

    def put(self, key: str, key_id: str, value: V) -> None:
        if self._ttl <= 0:
            return
        digest = self.digest(key)
        with self._lock:
            self._entries[digest] = (time.monotonic() + self._ttl, key_id, value)
            self._entries.move_to_end(digest)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def drop_key_id(self, key_id: str) -> None:
        with self._lock:
            for digest in [d for d, (_, kid, _) in self._entries.items() if kid == key_id]:
                del self._entries[digest]

    def drop_matching(self, predicate: Callable[[V], bool]) -> None:
        """Forget every entry whose value matches (e.g. all keys of one rotated profile)."""
        with self._lock:
            for digest in [d for d, (_, _, v) in self._entries.items() if predicate(v)]:
                del self._entries[digest]


class RejectedKeyCache(VerifiedKeyCache[bool]):
    """MAC(process secret, key) of well-formed keys that just failed (unknown id, revoked,
    wrong secret), for `ttl_seconds`: a firewall that keeps polling with an old or mistyped
    token costs one bcrypt per TTL instead of one per poll. Same bounded, TTL'd,
    plaintext-free store as the verified keys.

    A cached rejection stays right for its TTL: a key's secret never changes, a revoked key
    stays revoked, and no client can hold a key id before it exists."""

    def rejected(self, key: str) -> bool:
        return self.get(key) is not None

    def reject(self, key: str) -> None:
        self.put(key, "", True)


class CachedPrincipals:
    """Who a key is, when that is known without the database: a legacy key from the
    settings, or a key that passed `parse_key` + bcrypt within the verified-key TTL.

    One keyed digest of the key (the verified-key cache's MAC under its per-process
    secret) looks up both: no plaintext kept, and no timing signal on a legacy secret (a
    caller cannot aim at a digest it cannot compute). `authenticate` and the feed fast
    path both ask here, so they cannot disagree on who a key is."""

    def __init__(
        self, verified: VerifiedKeyCache[Principal], legacy: Iterable[tuple[str, Principal]]
    ) -> None:
        self.verified = verified
        self._legacy: dict[bytes, Principal] = {}
        for secret, principal in legacy:  # the first listed wins (super, operator, reader)
            self._legacy.setdefault(verified.digest(secret), principal)

    def get(self, key: str) -> Principal | None:
        digest = self.verified.digest(key)
        found = self._legacy.get(digest)
        if found is not None:
            return found
        return self.verified.get_by_digest(digest)
