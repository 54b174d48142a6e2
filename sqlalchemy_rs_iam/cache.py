"""Single-flight keyed caches: the machinery behind the credential and endpoint caches.

One fetch per key at a time, however many callers want it; callers for other keys never wait (no lock is
held while fetching). What a value's windows are comes from :mod:`~sqlalchemy_rs_iam.policy` (credentials)
or a fixed TTL (endpoints). No I/O, neither boto3 nor SQLAlchemy; the clock and the way a refresh is run are
injected, so tests run it in fake time::

    cache: CredentialCache[str] = CredentialCache(clock=fake_clock, spawn=pending.append)
    creds = cache.get("wg/dev/alice", fetch, stats)   # hit, or one fetch for every waiting caller
    cache.invalidate("wg/dev/alice", creds)             # login refused: drop it unless already replaced

Failures:

* A refresh that fails while the value is still served changes nothing for callers: the old value is
  served and the refresh is retried with exponential backoff and full jitter (1 s doubling, capped at
  min(30 s, half the time left before ``serve_until``)), counted in ``failures``.
* A blocking fetch that fails raises to the caller that fetched and to every caller waiting on it (the
  same exception object). It is then remembered for a short *negative-cache* period (0.5 s doubling to
  10 s while AWS keeps failing, reset on success): during it ``get()`` re-raises that error at once.

Bounded (LRU, expired entries dropped first). Not fork-aware by itself: the owner of a cache (the
registry) calls :meth:`after_fork` in a forked child, which re-creates the lock, forgets fetches in
progress (their threads did not survive the fork) and keeps the values.

Method names ending in ``_locked`` run with the cache's lock held.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from types import TracebackType
from typing import Generic, TypeVar

from .counters import CacheStats, StatName
from .credentials import DbCredentials
from .policy import DEFAULT_POLICY, Clock, RefreshPolicy
from .refresh import Background, Lazy, RefreshStrategy, Spawn, as_strategy, spawn_thread

__all__ = ["CredentialCache", "Refresh", "Spawn", "TtlCache", "run_inline", "spawn_thread"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
#: How a refresh runs: a strategy (:mod:`~sqlalchemy_rs_iam.refresh`), or a bare spawn function (background
#: refreshes run by it). Until it has run, the key counts as being fetched.
Refresh = RefreshStrategy | Spawn

log = logging.getLogger(__name__)

_RETRY_BASE, _RETRY_CAP = 1.0, 30.0  # refresh failed, cached value still served (full jitter)
_NEGATIVE_BASE, _NEGATIVE_CAP = 0.5, 10.0  # blocking fetch failed: re-raise without fetching for this long
_SWEEP_INTERVAL = 60.0  # the O(n) sweep for expired entries runs at most this often (clock seconds)


def _count(stats: CacheStats | None, name: StatName) -> None:
    if stats is not None:
        stats.incr(name)


#: The lazy strategy, under the name earlier versions gave it (``spawn=run_inline``).
run_inline = Lazy()


class _Flight(Generic[V]):
    """One fetch in progress for one key; callers that need its outcome wait on ``done``."""

    __slots__ = ("done", "error", "result", "stats", "traceback")

    def __init__(self, stats: CacheStats | None) -> None:
        self.done = threading.Event()
        self.stats = stats  # the caller that started it: api_calls, refreshes and failures go there
        self.result: V | None = None
        self.error: Exception | None = None
        self.traceback: TracebackType | None = None
        # Neither result nor error once done: the fetching thread was interrupted; waiters try again.


class _Entry(Generic[V]):
    """Everything known about one key. Only touched with the owning cache's lock held."""

    __slots__ = (
        "drop_at", "error", "error_until", "errors", "flight", "refresh_at",
        "retries", "retry_at", "serve_until", "traceback", "value",
    )  # fmt: skip

    def __init__(self) -> None:
        self.value: V | None = None
        self.refresh_at = self.serve_until = self.drop_at = -math.inf  # windows of `value`
        self.flight: _Flight[V] | None = None
        self.retry_at, self.retries = -math.inf, 0  # backoff of background refreshes
        self.error: Exception | None = None  # negative cache of blocking fetches
        self.traceback: TracebackType | None = None
        self.error_until, self.errors = -math.inf, 0

    def forget_value(self) -> None:
        self.value = None
        self.refresh_at = self.serve_until = self.drop_at = self.retry_at = -math.inf
        self.retries = 0

    def forget_error(self) -> None:
        self.error, self.traceback, self.error_until, self.errors = None, None, -math.inf, 0


class _SingleFlightCache(Generic[K, V]):
    """Keyed cache with single-flight fetches; subclasses say how long a value is served (``_windows``)."""

    def __init__(
        self, *, clock: Clock, max_entries: int, spawn: Refresh | None, rng: random.Random | None
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock = clock
        self._max_entries = max_entries
        self._refresh = as_strategy(spawn, Background())
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (jitter, not crypto)
        self._lock = threading.Lock()  # guards _entries and every _Entry; never held while fetching
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()  # least recently used first
        self._next_sweep = -math.inf

    def _windows(self, value: V, now: float) -> tuple[float, float, float]:
        """(refresh_at, serve_until, drop_at) of a value stored at ``now``."""
        raise NotImplementedError

    # public API

    def get(
        self, key: K, fetch: Callable[[], V], stats: CacheStats | None = None, spawn: Refresh | None = None
    ) -> V:
        """The cached value for ``key``, or the result of ``fetch()`` (called once however many callers wait).

        Raises what ``fetch`` raised, also to the callers that waited for it, and for a short while after
        (negative cache) without calling ``fetch`` again. ``spawn`` overrides how a refresh this call starts
        is run (:class:`~sqlalchemy_rs_iam.refresh.Lazy` for ``refresh=lazy``).
        """
        while True:
            with self._lock:
                now = self._clock()
                entry = self._touch_locked(key)
                found = self._servable_locked(entry, now, stats)
                if found is None:
                    slot = entry if entry is not None else self._insert_locked(key, now)
                    mine = slot.flight is None
                    if mine and slot.error is not None and now < slot.error_until:
                        raise slot.error.with_traceback(slot.traceback)  # negative cache
                    flight = slot.flight = slot.flight or _Flight(stats)
            if found is not None:
                value = self._hand_out(key, found, fetch, stats, spawn)
                if value is not None:
                    return value
                continue  # a refresh run inline failed and the value went stale meanwhile: look again
            if mine:
                return self._fetch(key, slot, flight, fetch)
            flight.done.wait()
            if flight.error is not None:
                raise flight.error.with_traceback(flight.traceback)
            if flight.result is not None:
                _count(stats, "hits")
                return flight.result

    def peek(
        self, key: K, fetch: Callable[[], V], stats: CacheStats | None = None, spawn: Refresh | None = None
    ) -> V | None:
        """Like :meth:`get` but never blocks: the cached value (perhaps starting a background refresh with
        ``fetch``), or ``None`` when :meth:`get` would have to fetch, wait or raise -- or, when refreshes
        run inline (:class:`~sqlalchemy_rs_iam.refresh.Lazy`), when a refresh is due (the caller then
        refreshes off its loop)."""
        inline = as_strategy(spawn, self._refresh).inline
        with self._lock:
            now = self._clock()
            entry = self._touch_locked(key)
            found = self._servable_locked(entry, now, stats, may_refresh=not inline)
        return None if found is None else self._hand_out(key, found, fetch, stats, spawn)

    def holds(self, key: K, value: V) -> bool:
        """True if ``key`` still holds this very ``value`` (not one stored since)."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry.value is value

    def clear(self) -> None:
        """Forget every key. Fetches in progress still deliver to their waiters, but are not stored."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def keys(self) -> list[K]:
        """The keys held, least recently used first."""
        with self._lock:
            return list(self._entries)

    def time_left(self) -> list[tuple[K, float]]:
        """``(key, seconds until its value is no longer served)`` for each key holding a value (read-only;
        the metrics gauge)."""
        with self._lock:
            now = self._clock()
            return [(k, e.serve_until - now) for k, e in self._entries.items() if e.value is not None]

    # internals

    def _touch_locked(self, key: K) -> _Entry[V] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def _servable_locked(
        self, entry: _Entry[V] | None, now: float, stats: CacheStats | None, *, may_refresh: bool = True
    ) -> tuple[_Entry[V], V, _Flight[V] | None] | None:
        """(entry, value, refresh flight to start) if the value may be handed out now, else None."""
        if entry is None or entry.value is None or now >= entry.serve_until:
            return None
        refresh = None
        if now >= entry.refresh_at and entry.flight is None and now >= entry.retry_at:
            if not may_refresh:
                return None
            refresh = entry.flight = _Flight(stats)
        return entry, entry.value, refresh

    def _hand_out(
        self,
        key: K,
        found: tuple[_Entry[V], V, _Flight[V] | None],
        fetch: Callable[[], V],
        stats: CacheStats | None,
        spawn: Refresh | None,
    ) -> V | None:
        """``value``, or what a refresh run inline just got; ``None`` if that failed and ``value`` is now
        stale (the caller was frozen mid-refresh: never hand out what expired meanwhile)."""
        entry, value, refresh = found
        _count(stats, "hits")
        if refresh is not None:

            def run() -> None:
                with contextlib.suppress(Exception):  # _finish records it, logs it and schedules a retry
                    self._fetch(key, entry, refresh, fetch)

            strategy = as_strategy(spawn, self._refresh)
            try:
                strategy.run(run)
            except Exception as exc:  # e.g. no new threads at interpreter shutdown: retry later
                self._finish(key, entry, refresh, None, exc)
            if strategy.inline:
                if refresh.result is not None:
                    return refresh.result
                with self._lock:
                    if self._clock() >= entry.serve_until:
                        return None
        return value

    def _fetch(self, key: K, entry: _Entry[V], flight: _Flight[V], fetch: Callable[[], V]) -> V:
        try:
            value = fetch()
            if value is None:
                raise TypeError("fetch() returned None")
        except Exception as exc:
            _count(flight.stats, "api_calls")
            self._finish(key, entry, flight, None, exc)
            raise
        except BaseException:  # KeyboardInterrupt etc.: not AWS's fault; let a waiter fetch instead
            self._finish(key, entry, flight, None, None)
            raise
        # A value another process fetched (cache=host) cost this one no AWS call.
        _count(flight.stats, "hits" if getattr(value, "shared", False) else "api_calls")
        self._finish(key, entry, flight, value, None)
        return value

    def _finish(
        self, key: K, entry: _Entry[V], flight: _Flight[V], value: V | None, error: Exception | None
    ) -> None:
        replaced, retry_in = False, None
        with self._lock:
            now = self._clock()
            # Not ours to update if the key was cleared, evicted or invalidated-and-replaced meanwhile.
            current = entry.flight is flight and self._entries.get(key) is entry
            if current:
                entry.flight = None
            if value is not None:
                flight.result = value
                if current:
                    replaced = entry.value is not None
                    entry.value = value
                    entry.refresh_at, entry.serve_until, entry.drop_at = self._windows(value, now)
                    entry.retry_at, entry.retries = -math.inf, 0
                    entry.forget_error()
            elif error is not None:
                flight.error, flight.traceback = error, error.__traceback__
                if current:
                    retry_in = self._record_failure_locked(entry, error, now)
        flight.done.set()
        if replaced:
            _count(flight.stats, "refreshes")
        if error is not None:
            _count(flight.stats, "failures")
            if retry_in is not None:
                log.warning(
                    "background credential refresh failed (%s: %s); serving the cached value, retry in %.1f s",
                    type(error).__name__, error, retry_in,
                )  # fmt: skip

    def _record_failure_locked(self, entry: _Entry[V], error: Exception, now: float) -> float | None:
        """Backoff (returns the delay) if the cached value is still served, else the negative cache."""
        if entry.value is not None and now < entry.serve_until:
            entry.retries += 1
            cap = min(
                _RETRY_CAP, (entry.serve_until - now) / 2, _RETRY_BASE * 2.0 ** min(entry.retries - 1, 30)
            )
            delay = self._rng.uniform(0.0, cap)
            entry.retry_at = now + delay
            return delay
        entry.errors += 1
        entry.error, entry.traceback = error, error.__traceback__
        entry.error_until = now + min(_NEGATIVE_CAP, _NEGATIVE_BASE * 2.0 ** min(entry.errors - 1, 30))
        return None

    def _insert_locked(self, key: K, now: float) -> _Entry[V]:
        if len(self._entries) >= self._max_entries:
            self._make_room_locked(now)
        entry: _Entry[V] = _Entry()
        self._entries[key] = entry
        return entry

    def _make_room_locked(self, now: float) -> None:
        if now >= self._next_sweep:  # O(n): rate-limited so that a churn of keys stays O(1) per insert
            self._next_sweep = now + _SWEEP_INTERVAL
            expired = [
                k
                for k, e in self._entries.items()
                if e.flight is None and now >= e.drop_at and now >= e.error_until
            ]
            for k in expired:
                del self._entries[k]
        while len(self._entries) >= self._max_entries:
            # Least recently used first, sparing fetches in progress unless every entry has one.
            idle = (k for k, e in self._entries.items() if e.flight is None)
            del self._entries[next(idle, next(iter(self._entries)))]

    def _invalidate(self, key: K, value: V | None) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or (value is not None and entry.value is not value):
                return
            entry.forget_value()
            if value is None:
                entry.forget_error()
            if entry.flight is None and entry.error is None:
                del self._entries[key]
            # else: keep the entry so its fetch in progress (or its negative cache) still applies

    def after_fork(self) -> None:
        """In a forked child: a new lock, and no fetch in progress (its thread is not in this process)."""
        self._lock = threading.Lock()
        for entry in self._entries.values():
            entry.flight = None  # its fetching thread does not exist in this process


class CredentialCache(_SingleFlightCache[K, DbCredentials]):
    """Process-wide cache of :class:`DbCredentials` keyed by a hashable, secret-free key.

    ``get(key, fetch, stats)`` serves a cached credential until the policy's ``refresh_at``; from there until
    ``stale_at`` serves it and starts one background refresh (via ``spawn``; default: a daemon thread named
    ``rs-iam-refresh``); after ``stale_at`` blocks on one fetch per key (see the module docstring for
    failures). ``peek`` is the non-blocking variant for event loops; ``invalidate(key, creds)`` drops a
    credential the database refused::

        cache: CredentialCache[str] = CredentialCache(clock=fake_clock, spawn=pending.append)
        creds = cache.get("wg/dev/alice", fetch, stats)

    A just-fetched credential is served for at least ``policy.refetch_interval`` after it arrived, even if
    that reaches into its safety margin (or past its expiration on our clock when it arrived already
    expired): it is the credential the fetching caller got too, and re-fetching sooner would only get an
    equally short one. A refused login is the backstop: the adapter invalidates and fetches anew.

    At most ``max_entries`` keys are held; beyond that expired entries are dropped, then the least recently
    used ones. ``rng`` draws the backoff jitter.
    """

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        policy: RefreshPolicy = DEFAULT_POLICY,
        max_entries: int = 1024,
        spawn: Refresh | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(clock=clock, max_entries=max_entries, spawn=spawn, rng=rng)
        self.policy = policy

    def _windows(self, value: DbCredentials, now: float) -> tuple[float, float, float]:
        return self.policy.windows(value, now)

    def invalidate(self, key: K, credentials: DbCredentials | None = None) -> None:
        """Drop ``key``'s credential if it is still ``credentials`` (always if ``None``), so that a fresher one
        stored meanwhile by another caller survives. ``None`` also forgets a remembered failure."""
        self._invalidate(key, credentials)


class TtlCache(_SingleFlightCache[K, V]):
    """Values that rarely change (host and port of a workgroup or cluster), kept ``ttl`` seconds.

    Single-flight per key, negative cache on failure, bounded, fork-safe, like :class:`CredentialCache`;
    no refresh-ahead. ``fetch`` must not return ``None``::

        endpoints: TtlCache[str, tuple[str, int]] = TtlCache(ttl=3600)
        host, port = endpoints.get("wg-analytics", lambda: aws.resolve_endpoint(target))
        endpoints.invalidate("wg-analytics")  # connect failed: resolve again next time
    """

    def __init__(self, *, ttl: float = 3600.0, clock: Clock = time.time, max_entries: int = 256) -> None:
        if not ttl > 0:
            raise ValueError("ttl must be positive")
        super().__init__(clock=clock, max_entries=max_entries, spawn=None, rng=None)
        self.ttl = ttl

    def _windows(self, value: V, now: float) -> tuple[float, float, float]:
        until = now + self.ttl
        return until, until, until

    def invalidate(self, key: K, value: V | None = None) -> None:
        """Drop ``key`` (only if it still holds ``value``, when given) and any remembered failure."""
        self._invalidate(key, value)
