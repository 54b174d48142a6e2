"""Per-connector counters a user can read with ``sqlalchemy_rs_iam.stats(engine)``.

One :class:`CacheStats` per engine (or per ``connect()`` configuration); the caches it counts for are
process-wide. Example::

    >>> s = CacheStats()
    >>> s.incr("login_retries")
    >>> s.snapshot()["login_retries"]
    1
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import ClassVar, Literal

from . import metrics

__all__ = ["CacheStats", "StatName", "after_fork"]

StatName = Literal["api_calls", "hits", "refreshes", "failures", "login_retries", "host_errors"]

# One lock for every CacheStats: increments are rare and tiny. The registry's fork hook calls after_fork().
_lock = threading.Lock()


class CacheStats:
    """Counters of one owner (an engine):

    ``api_calls`` (AWS calls started on its behalf, background refreshes included), ``hits`` (served without
    a fetch on the caller's thread, including callers that waited for another caller's fetch),
    ``refreshes`` (fetches that replaced a cached value), ``failures`` (fetches that raised),
    ``login_retries`` (refused logins retried with new credentials), ``host_errors`` (``cache=host``: store
    errors -- an unusable entry, a failed write, a lock not had -- each of which made an entry absent).
    """

    NAMES: ClassVar[tuple[StatName, ...]] = (
        "api_calls", "hits", "refreshes", "failures", "login_retries", "host_errors",
    )  # fmt: skip

    def __init__(self) -> None:
        self.api_calls = self.hits = self.refreshes = self.failures = self.login_retries = 0
        self.host_errors = 0
        self.attributes: Mapping[str, str] | None = None  # metric attributes of the owner (metrics.bind)

    def incr(self, name: StatName, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (thread-safe)."""
        if name not in self.NAMES:
            raise ValueError(f"unknown counter {name!r}")
        with _lock:
            setattr(self, name, getattr(self, name) + n)
        recorder = metrics.ACTIVE
        if recorder is not None:
            recorder.stat(name, n, self.attributes)

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of all counters."""
        with _lock:
            return {name: getattr(self, name) for name in self.NAMES}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.snapshot().items())
        return f"CacheStats({fields})"


def after_fork() -> None:
    """In a forked child: a new lock (a thread of the parent may have held the old one)."""
    global _lock
    _lock = threading.Lock()
