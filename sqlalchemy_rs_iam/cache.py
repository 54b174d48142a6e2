"""Time policy for temporary credentials: refresh-ahead, single-flight, serve-while-valid, backoff.

CONTRACT (skeleton; to be implemented). No I/O, no boto3, no SQLAlchemy imports. Takes a clock so the
tests run it in fake time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from .credentials import DbCredentials

K = TypeVar("K", bound=Hashable)
Clock = Callable[[], float]


class CacheStats:
    """Counters a user can read, one object per engine (the cache itself is process-wide).

    Attributes (ints): ``api_calls`` (fetches started on behalf of this owner), ``hits`` (served from
    cache without a fetch on the caller's thread), ``refreshes`` (fetches that replaced an existing entry,
    background or blocking), ``failures`` (fetches that raised), ``login_retries`` (logins retried after
    the database refused cached credentials; incremented by the adapters).
    """


class CredentialCache(Generic[K]):
    """Process-wide cache of DbCredentials keyed by a hashable, secret-free key."""

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        max_entries: int = 1024,
        spawn: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        raise NotImplementedError

    def get(self, key: K, fetch: Callable[[], DbCredentials], stats: CacheStats | None = None) -> DbCredentials:
        raise NotImplementedError

    def peek(self, key: K, fetch: Callable[[], DbCredentials], stats: CacheStats | None = None) -> DbCredentials | None:
        raise NotImplementedError

    def invalidate(self, key: K, credentials: DbCredentials | None = None) -> None:
        raise NotImplementedError
