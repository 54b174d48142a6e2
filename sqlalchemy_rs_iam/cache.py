"""Time policy for temporary credentials: refresh-ahead, single-flight, serve-while-valid, backoff.

Pure logic: no I/O, neither boto3 nor SQLAlchemy. Every decision reads an injected clock (wall-clock epoch
seconds, like :func:`time.time`), so the tests run it in fake time. Usage::

    from sqlalchemy_rs_iam.cache import CacheStats, CredentialCache

    CREDENTIALS: CredentialCache[tuple[str, ...]] = CredentialCache()  # one per process
    stats = CacheStats()                                                # one per engine

    creds = CREDENTIALS.get(key, lambda: aws.get_credentials(target), stats)
    ...                                                                 # log in with creds
    CREDENTIALS.invalidate(key, creds)  # login refused: drop it, unless someone already replaced it

The life of one cached credential (local clock, ``L`` = its lifetime; see :class:`RefreshPolicy`)::

    fetched_at ......... refresh_at ................. stale_at ....... expiration
       |  served (hit)      |  served, plus ONE           |  never served: callers
       |                    |  background refresh         |  block on one fetch

Failures:

* A background refresh that fails while the credential is still valid changes nothing for callers: the
  old credential is served and the refresh is retried with exponential backoff and full jitter (1 s
  doubling, capped at min(30 s, half the time left before ``stale_at``)), counted in ``failures``.
* A blocking fetch that fails raises to the caller that fetched and to every caller waiting on it (the
  same exception object, so they share its traceback). It is then remembered for a short *negative-cache* period (0.5 s doubling to
  10 s while AWS keeps failing, reset on success): during it ``get()`` re-raises that error at once
  instead of calling AWS again, so an outage does not turn every connect into an API call.
* A credential that arrives already stale (tiny lifetime, skewed clock) is still returned to the caller
  that fetched it, stored, and handed out to others for ``RefreshPolicy.refetch_interval`` (0.5-1 s) after
  its arrival: a new fetch would only return another such credential, so at most one fetch per key per
  interval happens, whatever the call rate.

Single-flight: at most one fetch per key is in progress at any time; callers for that key wait for it,
callers for other keys are never blocked (no lock is held while fetching). The cache is bounded (LRU,
expired entries dropped first) and fork-safe: the child re-creates every lock, forgets fetches in progress
(their threads did not survive the fork) and keeps the cached values.

The clock is the wall clock because AWS expirations are epoch times. If it steps backwards a credential
looks fresher than it is; the safety margin and the adapters' refused-login -> ``invalidate`` -> retry cover
that.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, Literal, TypeVar

from .credentials import DbCredentials

__all__ = [
    "DEFAULT_POLICY",
    "CacheStats",
    "Clock",
    "CredentialCache",
    "RefreshPolicy",
    "Spawn",
    "StatName",
    "TtlCache",
    "local_expiration",
]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Clock = Callable[[], float]
#: Runs a background refresh, e.g. on a new thread; must run each callable exactly once, soon. Until it has
#: run, the key counts as being fetched (callers needing a fresh value wait for it).
Spawn = Callable[[Callable[[], None]], None]
StatName = Literal["api_calls", "hits", "refreshes", "failures", "login_retries"]

log = logging.getLogger(__name__)

_RETRY_BASE, _RETRY_CAP = 1.0, 30.0  # background refresh failed, cached value still valid (full jitter)
_NEGATIVE_BASE, _NEGATIVE_CAP = 0.5, 10.0  # blocking fetch failed: re-raise without fetching for this long
_SWEEP_INTERVAL = 60.0  # the O(n) sweep for expired entries runs at most this often (clock seconds)
_PLAUSIBLE_FRACTION = 0.5  # local_expiration: a shorter lifetime than this x requested means clock skew


# --- pure time functions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshPolicy:
    """When to refresh a credential (advisory) and when it must no longer be handed out (mandatory).

    Pure functions of a :class:`DbCredentials` (local clock, ``L = c.lifetime``)::

        >>> p = RefreshPolicy()
        >>> c = DbCredentials(user="u", password="p", fetched_at=0.0, expiration=900.0)
        >>> p.refresh_at(c), p.stale_at(c)
        (675.0, 840.0)

    * ``stale_at = expiration - M`` with the margin ``M = 10% of L``, clamped to
      ``[min(1 s, 25% of L), 60 s]``: a login never races the expiry, and short lifetimes keep most of their
      use (3 s -> 0.75 s, 60 s -> 6 s, 900 s and more -> 60 s).
    * ``refresh_at = fetched_at + 75% of L``, or AWS's ``next_refresh`` when that is earlier, but never before
      ``fetched_at + 25% of L`` (a ``next_refresh`` already past on our clock cannot cause a refresh storm),
      and never after ``stale_at``. For the usual 900 s credential this is one API call per ~675 s per key
      however many connections are opened (fixed windows refresh 15-minute credentials on every call, cf.
      botocore issue #2189). Why 75%: it leaves 165 s (900 s lifetime) to 840 s (3600 s) between the first
      background attempt and ``stale_at`` for retries with backoff, so one AWS hiccup never blocks a
      connect, while still costing at most 4/3 of the minimum number of calls.
    * Invariant for any positive ``L``: ``fetched_at + 25% L <= refresh_at <= stale_at < expiration``
      (the defaults satisfy ``margin_fraction, margin_floor_fraction <= 1 - refresh_fraction``).
    * ``refetch_interval`` = ``25% of L`` clamped to [0.5 s, 1 s]: the least time a freshly fetched
      credential is served (see :class:`CredentialCache`), i.e. the fastest a key can be re-fetched.
    """

    refresh_fraction: float = 0.75
    earliest_refresh_fraction: float = 0.25
    margin_fraction: float = 0.10
    margin_floor_fraction: float = 0.25
    min_margin: float = 1.0
    max_margin: float = 60.0
    min_refetch_interval: float = 0.5
    max_refetch_interval: float = 1.0

    def __post_init__(self) -> None:
        latest = 1.0 - max(self.margin_fraction, self.margin_floor_fraction)
        if not 0.0 < self.earliest_refresh_fraction <= self.refresh_fraction <= latest:
            raise ValueError("need 0 < earliest_refresh_fraction <= refresh_fraction <= 1 - margin fractions")
        if not (self.margin_fraction > 0.0 and self.margin_floor_fraction > 0.0):
            raise ValueError("margin fractions must be positive")
        if not 0.0 < self.min_margin <= self.max_margin:
            raise ValueError("need 0 < min_margin <= max_margin")
        if not 0.0 < self.min_refetch_interval <= self.max_refetch_interval:
            raise ValueError("need 0 < min_refetch_interval <= max_refetch_interval")

    def margin(self, c: DbCredentials) -> float:
        """Seconds before ``expiration`` from which ``c`` is no longer handed out."""
        life = max(c.lifetime, 0.0)
        floor = min(self.min_margin, self.margin_floor_fraction * life)
        return min(max(self.margin_fraction * life, floor), self.max_margin)

    def stale_at(self, c: DbCredentials) -> float:
        """Mandatory: from here on never hand ``c`` out; callers block on a refresh."""
        return c.expiration - self.margin(c)

    def refresh_at(self, c: DbCredentials) -> float:
        """Advisory: from here on serve ``c`` but start one background refresh."""
        life = max(c.lifetime, 0.0)
        at = c.fetched_at + self.refresh_fraction * life
        if c.next_refresh is not None and c.next_refresh < at:
            at = max(c.next_refresh, c.fetched_at + self.earliest_refresh_fraction * life)
        return min(at, self.stale_at(c))

    def refetch_interval(self, c: DbCredentials) -> float:
        """Least time a just-fetched ``c`` is served, even if it arrived (nearly) stale."""
        quarter = self.earliest_refresh_fraction * c.lifetime
        return min(self.max_refetch_interval, max(self.min_refetch_interval, quarter))


DEFAULT_POLICY = RefreshPolicy()


def local_expiration(
    expiration: float,
    *,
    server_date: float | None,
    received_at: float,
    requested_duration: float | None,
) -> float:
    """Map AWS's ``expiration`` (on AWS's clock) onto the local clock.

    * ``server_date`` known (the response's ``Date`` header, AWS's clock): keep AWS's lifetime and start it
      when the response arrived: ``received_at + (expiration - server_date)``.
    * unknown: trust ``expiration`` as is, unless the lifetime it implies on our clock is implausible
      (<= 0 or shorter than half of ``requested_duration``: our clock is ahead of AWS's); then assume AWS
      issued what was asked: ``received_at + requested_duration``.
    * either way never later than ``received_at + requested_duration`` (AWS issues no longer than asked;
      a clock behind AWS's would otherwise make us serve expired passwords).

    Example::

        >>> local_expiration(2000.0, server_date=1100.0, received_at=1000.0, requested_duration=900.0)
        1900.0
        >>> local_expiration(1300.0, server_date=None, received_at=1000.0, requested_duration=900.0)
        1900.0
        >>> local_expiration(1800.0, server_date=None, received_at=1000.0, requested_duration=900.0)
        1800.0
    """
    if server_date is not None:
        local = received_at + (expiration - server_date)
    else:
        local = expiration
        if requested_duration is not None and local - received_at < _PLAUSIBLE_FRACTION * requested_duration:
            local = received_at + requested_duration
    if requested_duration is not None:
        local = min(local, received_at + requested_duration)
    return local


# --- counters ------------------------------------------------------------------------------------------------

# One lock for every CacheStats: increments are rare and tiny. Re-created in a forked child (see below).
_stats_lock = threading.Lock()


class CacheStats:
    """Counters a user can read, one object per engine (the cache itself is process-wide).

    Attributes (ints): ``api_calls`` (fetches started on behalf of this owner, background ones included),
    ``hits`` (served without a fetch on the caller's thread, including callers that waited for another
    caller's fetch), ``refreshes`` (fetches that replaced a cached value, background or blocking),
    ``failures`` (fetches that raised), ``login_retries`` (incremented by the adapters)::

        >>> s = CacheStats()
        >>> s.incr("login_retries")
        >>> s.snapshot()["login_retries"]
        1
    """

    NAMES: ClassVar[tuple[StatName, ...]] = ("api_calls", "hits", "refreshes", "failures", "login_retries")

    def __init__(self) -> None:
        self.api_calls = self.hits = self.refreshes = self.failures = self.login_retries = 0

    def incr(self, name: StatName, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (thread-safe)."""
        if name not in self.NAMES:
            raise ValueError(f"unknown counter {name!r}")
        with _stats_lock:
            setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of all counters."""
        with _stats_lock:
            return {name: getattr(self, name) for name in self.NAMES}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.snapshot().items())
        return f"CacheStats({fields})"


def _count(stats: CacheStats | None, name: StatName) -> None:
    if stats is not None:
        stats.incr(name)


# --- the single-flight core ----------------------------------------------------------------------------------


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


def _spawn_thread(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="rs-iam-refresh", daemon=True).start()


# Every live cache, so that a forked child can re-create their locks.
_LIVE: weakref.WeakSet[_SingleFlightCache[Any, Any]] = weakref.WeakSet()


class _SingleFlightCache(Generic[K, V]):
    """Keyed cache with single-flight fetches; subclasses say how long a value is served (``_windows``)."""

    def __init__(
        self, *, clock: Clock, max_entries: int, spawn: Spawn | None, rng: random.Random | None
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock = clock
        self._max_entries = max_entries
        self._spawn = spawn if spawn is not None else _spawn_thread
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (jitter, not crypto)
        self._lock = threading.Lock()  # guards _entries and every _Entry; never held while fetching
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()  # least recently used first
        self._next_sweep = -math.inf
        _LIVE.add(self)

    def _windows(self, value: V, now: float) -> tuple[float, float, float]:
        """(refresh_at, serve_until, drop_at) of a value stored at ``now``."""
        raise NotImplementedError

    # public API

    def get(self, key: K, fetch: Callable[[], V], stats: CacheStats | None = None) -> V:
        """The cached value for ``key``, or the result of ``fetch()`` (called once however many callers wait).

        Raises what ``fetch`` raised, also to the callers that waited for it, and for a short while after
        (negative cache) without calling ``fetch`` again.
        """
        while True:
            with self._lock:
                now = self._clock()
                entry = self._touch(key)
                served = self._serve(entry, now, stats)
                if served is None:
                    slot = entry if entry is not None else self._insert(key, now)
                    mine = slot.flight is None
                    if mine and slot.error is not None and now < slot.error_until:
                        raise slot.error.with_traceback(slot.traceback)  # negative cache
                    flight = slot.flight = slot.flight or _Flight(stats)
            if served is not None:
                return self._served(key, served, fetch, stats)
            if mine:
                return self._fetch(key, slot, flight, fetch)
            flight.done.wait()
            if flight.error is not None:
                raise flight.error.with_traceback(flight.traceback)
            if flight.result is not None:
                _count(stats, "hits")
                return flight.result

    def peek(self, key: K, fetch: Callable[[], V], stats: CacheStats | None = None) -> V | None:
        """Like :meth:`get` but never blocks: the cached value (perhaps starting a background refresh with
        ``fetch``), or ``None`` when :meth:`get` would have to fetch, wait or raise."""
        with self._lock:
            now = self._clock()
            entry = self._touch(key)
            served = self._serve(entry, now, stats)
        return None if served is None else self._served(key, served, fetch, stats)

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

    # internals; names ending in _locked need self._lock held

    def _touch(self, key: K) -> _Entry[V] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def _serve(
        self, entry: _Entry[V] | None, now: float, stats: CacheStats | None
    ) -> tuple[_Entry[V], V, _Flight[V] | None] | None:
        """(entry, value, background flight to start) if the value may be handed out now, else None."""
        if entry is None or entry.value is None or now >= entry.serve_until:
            return None
        refresh = None
        if now >= entry.refresh_at and entry.flight is None and now >= entry.retry_at:
            refresh = entry.flight = _Flight(stats)
        return entry, entry.value, refresh

    def _served(
        self,
        key: K,
        served: tuple[_Entry[V], V, _Flight[V] | None],
        fetch: Callable[[], V],
        stats: CacheStats | None,
    ) -> V:
        entry, value, refresh = served
        _count(stats, "hits")
        if refresh is not None:

            def run() -> None:
                with contextlib.suppress(Exception):  # _finish records it, logs it and schedules a retry
                    self._fetch(key, entry, refresh, fetch)

            try:
                self._spawn(run)
            except Exception as exc:  # e.g. no new threads at interpreter shutdown: retry later
                self._finish(key, entry, refresh, None, exc)
        return value

    def _fetch(self, key: K, entry: _Entry[V], flight: _Flight[V], fetch: Callable[[], V]) -> V:
        _count(flight.stats, "api_calls")
        try:
            value = fetch()
            if value is None:
                raise TypeError("fetch() returned None")
        except Exception as exc:
            self._finish(key, entry, flight, None, exc)
            raise
        except BaseException:  # KeyboardInterrupt etc.: not AWS's fault; let a waiter fetch instead
            self._finish(key, entry, flight, None, None)
            raise
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

    def _insert(self, key: K, now: float) -> _Entry[V]:
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

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        for entry in self._entries.values():
            entry.flight = None  # its fetching thread does not exist in this process


def _reinit_after_fork() -> None:
    global _stats_lock
    _stats_lock = threading.Lock()
    for cache in list(_LIVE):
        cache._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


# --- the two caches ------------------------------------------------------------------------------------------


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
        spawn: Spawn | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(clock=clock, max_entries=max_entries, spawn=spawn, rng=rng)
        self.policy = policy

    def _windows(self, value: DbCredentials, now: float) -> tuple[float, float, float]:
        p = self.policy
        hold_until = now + p.refetch_interval(value)
        serve_until = max(p.stale_at(value), hold_until)
        refresh_at = min(serve_until, max(p.refresh_at(value), hold_until))
        return refresh_at, serve_until, max(value.expiration, serve_until)

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
