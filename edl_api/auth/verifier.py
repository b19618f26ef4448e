"""bcrypt off the event loop, bounded, and refused for key ids under attack.

Anyone who knows a key id (every firewall holding a feed token does) can send forgeries
with a valid checksum; each would cost a bcrypt. So an uncached key:

- first asks the per-key-id `FailureLimiter`: after `max_failures` failures within a
  minute, that key id answers 401 without bcrypt (nor a query) for `cooldown_seconds`.
  A key that already passed bcrypt for that id in this process is still let through
  (the limiter keeps its keyed digest, never the key), so a forger cannot lock a working
  firewall out when its verified-key cache entry expires; a correct key never seen here
  before is refused until the cool-down ends (plain 401: a body saying why would tell a
  forger which ids are worth attacking);
- then takes a slot: at most `max_pending` verifications (queued or running) at once;
  beyond that it answers 401 at once instead of queueing without bound;
- then runs bcrypt on this verifier's own small pool, never the event loop's default
  executor that log reads and feed rendering share. An unknown key id costs one bcrypt
  too (against a dummy hash of the configured cost), so its timing matches a known one.

A key answered from the verified-key cache never gets here (`auth.deps.authenticate`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType

from edl_api.auth import keys

WINDOW_SECONDS = 60.0
# Digests of keys that passed, per key id (a profile key shared by a few firewalls).
MAX_GOOD_DIGESTS = 8


class Refused(Exception):
    """Answered without bcrypt: the key id is cooling down, or the queue is full."""


@dataclass(slots=True)
class _Record:
    window_start: float
    failures: int = 0
    blocked_until: float = 0.0
    good: set[bytes] = field(default_factory=set)


class FailureLimiter:
    """Failures per key id in a fixed one-minute window; bounded (least recently used
    key ids are forgotten first, so random ids cannot grow it)."""

    def __init__(
        self,
        max_failures: int,
        cooldown_seconds: float,
        max_tracked: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_failures = max_failures
        self._cooldown = cooldown_seconds
        self._max_tracked = max_tracked
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def allows(self, key_id: str, digest: bytes) -> bool:
        with self._lock:
            record = self._records.get(key_id)
            if record is None or record.blocked_until <= self._clock():
                return True
            return digest in record.good

    def failed(self, key_id: str, digest: bytes) -> None:
        now = self._clock()
        with self._lock:
            record = self._record(key_id, now)
            record.good.discard(digest)
            if now - record.window_start >= WINDOW_SECONDS:
                record.window_start, record.failures = now, 0
            record.failures += 1
            if record.failures >= self._max_failures:
                # Counting starts afresh once the cool-down is over.
                record.blocked_until = now + self._cooldown
                record.window_start, record.failures = record.blocked_until, 0

    def succeeded(self, key_id: str, digest: bytes) -> None:
        with self._lock:
            good = self._record(key_id, self._clock()).good
            if len(good) >= MAX_GOOD_DIGESTS:
                good.pop()
            good.add(digest)

    def _record(self, key_id: str, now: float) -> _Record:
        record = self._records.get(key_id)
        if record is None:
            record = self._records[key_id] = _Record(window_start=now)
            while len(self._records) > self._max_tracked:
                self._records.popitem(last=False)
        self._records.move_to_end(key_id)
        return record


class KeyVerifier:
    """The app's bcrypt pool and the admission rules in front of it (one per app,
    closed by the lifespan)."""

    def __init__(
        self, *, workers: int, max_pending: int, limiter: FailureLimiter, dummy_rounds: int
    ) -> None:
        self.limiter = limiter
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None  # threads start on first use
        self._max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()
        self._dummy_rounds = dummy_rounds
        self._dummy: str | None = None
        self._dummy_lock = threading.Lock()  # not `_lock`: admit() must never wait on bcrypt

    @property
    def pending(self) -> int:
        return self._pending

    def admit(self, limit_id: str, digest: bytes) -> Attempt:
        """A slot for one verification of `limit_id` (prefix + key id), or `Refused`."""
        if not self.limiter.allows(limit_id, digest):
            raise Refused(limit_id)
        with self._lock:
            if self._pending >= self._max_pending:
                raise Refused(limit_id)
            self._pending += 1
        return Attempt(self, limit_id, digest)

    async def hash_new(self, prefix: str, rounds: int) -> keys.NewKey:
        """A new key, hashed on this pool (a rotation must not stall the event loop)."""
        return await asyncio.wrap_future(self._executor().submit(keys.generate_key, prefix, rounds))

    def close(self) -> None:
        """Stop the pool (lifespan shutdown); a later use starts a new one."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="edl-bcrypt")
            return self._pool

    def _release(self, _: object = None) -> None:
        with self._lock:
            self._pending -= 1

    def _submit(self, secret: str, key_hash: str | None) -> Future[bool]:
        future = self._executor().submit(self._check, secret, key_hash)
        # The slot is held until bcrypt is done, even if the request was abandoned.
        future.add_done_callback(self._release)
        return future

    def _check(self, secret: str, key_hash: str | None) -> bool:
        if key_hash is None:
            keys.verify_secret(secret, self._dummy_hash())
            return False
        return keys.verify_secret(secret, key_hash)

    def _dummy_hash(self) -> str:
        with self._dummy_lock:
            if self._dummy is None:
                self._dummy = keys.hash_secret(keys.random_secret(), self._dummy_rounds)
            return self._dummy


class Attempt:
    """One admitted verification: `check` once; leaving the block frees an unused slot."""

    def __init__(self, verifier: KeyVerifier, limit_id: str, digest: bytes) -> None:
        self._verifier = verifier
        self._limit_id = limit_id
        self._digest = digest
        self._submitted = False

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._submitted:
            self._verifier._release()

    async def check(self, secret: str, key_hash: str | None) -> bool:
        """bcrypt on the verifier's pool; `key_hash` None (no such key) costs a dummy one."""
        if self._submitted:
            raise RuntimeError("an attempt verifies once")
        future = self._verifier._submit(secret, key_hash)
        self._submitted = True  # from here the future's callback frees the slot
        ok = await asyncio.wrap_future(future)
        limiter = self._verifier.limiter
        if ok:
            limiter.succeeded(self._limit_id, self._digest)
        else:
            limiter.failed(self._limit_id, self._digest)
        return ok
