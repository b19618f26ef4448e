"""Resource limits of one engine run: the byte budget all its sources share, and the
address-space limit of the engine child.

The budget counts decoded bytes (after Content-Encoding and a served `.gz`), so a gzip
bomb is charged at its inflated size and stops at the budget, not at the sum of every
source's `max_bytes`. The memory limit is `RLIMIT_AS`: allocations beyond it fail with
MemoryError inside the child, which the child turns into the run's one clear error; the
service and other runs never share the child's address space.
"""

from __future__ import annotations

import os
import resource
import threading
from typing import BinaryIO

MIB = 1024 * 1024


def describe_bytes(size: int) -> str:
    """`512 MiB` for whole MiB, else the exact number of bytes."""
    return f"{size // MIB} MiB" if size >= MIB and size % MIB == 0 else f"{size} bytes"


def memory_error(memory_mb: int | None) -> str:
    if memory_mb is None:
        return "out of memory"
    return f"memory limit of {memory_mb} MiB reached"


class BudgetExceeded(Exception):
    """The run's byte budget is spent; the message names the budget and the source."""


class ByteBudget:
    """Bytes every source of one run may hold together (None: unlimited).

    Charged from the event loop and from worker threads (file sources): hence the lock.
    The first source to go over is remembered: the run fails naming it."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0
        self.exceeded_at: str | None = None
        self._lock = threading.Lock()

    def remaining(self) -> int | None:
        if self.limit is None:
            return None
        with self._lock:
            return max(self.limit - self.used, 0)

    def charge(self, size: int, source: str) -> None:
        """Count `size` more bytes of `source`; raise BudgetExceeded when over the limit."""
        with self._lock:
            self.used += size
            if self.limit is None or self.used <= self.limit:
                return
            if self.exceeded_at is None:
                self.exceeded_at = source
        raise BudgetExceeded(f"run byte budget of {describe_bytes(self.limit)} reached")

    def refund(self, size: int) -> None:
        """Give back bytes no longer held (a `.gz` body once it is inflated)."""
        with self._lock:
            self.used = max(self.used - size, 0)

    def error(self) -> str | None:
        """The run's error once the budget was exceeded (naming the first source over)."""
        if self.limit is None or self.exceeded_at is None:
            return None
        return (
            f"run byte budget of {describe_bytes(self.limit)} reached at source "
            f"{self.exceeded_at}"
        )


def apply_memory_limit(memory_mb: int | None) -> None:
    """Cap this process's address space (the engine child calls it before any work).

    Never raises the hard limit (an unprivileged process cannot), only lowers the soft
    one to `memory_mb` (or to the hard limit when that is lower)."""
    if not memory_mb:
        return
    wanted = memory_mb * MIB
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))


def read_capped(handle: BinaryIO, cap: int) -> bytes:
    """At most `cap + 1` bytes of `handle` (one more than `cap` shows it is over).

    `read(n)` allocates n bytes before it reads: `read(cap + 1)` reserved a source's whole
    `max_bytes` of address space, so under the run's RLIMIT_AS a 10-line file with a
    512 MiB cap failed as "memory limit reached". Read what the file holds instead; a file
    that grew since `fstat` is read on, up to the cap (never cut short at the old size)."""
    size = os.fstat(handle.fileno()).st_size
    data = handle.read(min(cap, size) + 1)
    if len(data) > size and len(data) <= cap:
        data += handle.read(cap + 1 - len(data))
    return data
