"""The time policy of temporary credentials: refresh point, stale mark, clock skew, forced-refresh budget.

Pure: no I/O, neither boto3 nor SQLAlchemy, every clock injected. The life of one credential (local
clock, ``L`` = its lifetime)::

    fetched_at ......... refresh_at ................. stale_at ....... expiration
       |  served (hit)      |  served, plus ONE           |  never served: callers
       |                    |  refresh                    |  block on one fetch

Example::

    >>> p = RefreshPolicy()
    >>> c = DbCredentials(user="u", password="p", fetched_at=0.0, expiration=900.0)
    >>> p.refresh_at(c), p.stale_at(c)
    (675.0, 840.0)
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .credentials import DbCredentials

__all__ = [
    "DEFAULT_POLICY",
    "SKEW_TOLERANCE",
    "Clock",
    "ForcedRefreshBudget",
    "RefreshPolicy",
    "local_expiration",
    "local_times",
]

K = TypeVar("K", bound=Hashable)
Clock = Callable[[], float]

#: Below this much disagreement between AWS's ``Date`` header and our clock, AWS's expiration is kept as it
#: is: the header has whole-second resolution, and correcting by a rounding error would shift expiry late.
SKEW_TOLERANCE = 2.0
#: ``local_expiration`` without a server date: a lifetime shorter than this x requested means clock skew.
_PLAUSIBLE_FRACTION = 0.5


@dataclass(frozen=True)
class RefreshPolicy:
    """When to refresh a credential (advisory) and when it must no longer be handed out (mandatory).

    * ``stale_at = expiration - M`` with the margin ``M = 10% of L``, clamped to
      ``[min(1 s, 25% of L), 60 s]``: a login never races the expiry, and short lifetimes keep most of their
      use (3 s -> 0.75 s, 60 s -> 6 s, 900 s and more -> 60 s).
    * ``refresh_at = fetched_at + 75% of L``, or AWS's ``next_refresh`` when that is earlier, but never before
      ``fetched_at + 25% of L`` (a ``next_refresh`` already past on our clock cannot cause a refresh storm),
      and never after ``stale_at``. 75 % leaves 165 s (900 s lifetime) to 840 s (3600 s) for retries with
      backoff before ``stale_at``, so one AWS hiccup never blocks a connect, at most 4/3 of the minimum calls.
    * Invariant for any positive ``L``: ``fetched_at + 25% L <= refresh_at <= stale_at < expiration``.
    * ``refetch_interval`` = ``25% of L`` clamped to [0.5 s, 1 s]: the least time a freshly fetched
      credential is served, i.e. the fastest one key can be fetched again.
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
        """Advisory: from here on serve ``c`` but start one refresh."""
        life = max(c.lifetime, 0.0)
        at = c.fetched_at + self.refresh_fraction * life
        if c.next_refresh is not None and c.next_refresh < at:
            at = max(c.next_refresh, c.fetched_at + self.earliest_refresh_fraction * life)
        return min(at, self.stale_at(c))

    def refetch_interval(self, c: DbCredentials) -> float:
        """Least time a just-fetched ``c`` is served, even if it arrived (nearly) stale."""
        quarter = self.earliest_refresh_fraction * c.lifetime
        return min(self.max_refetch_interval, max(self.min_refetch_interval, quarter))

    def windows(self, c: DbCredentials, now: float) -> tuple[float, float, float]:
        """``(refresh_at, serve_until, drop_at)`` of ``c`` stored at ``now``.

        A just-fetched credential is served for at least :meth:`refetch_interval` (even into its margin):
        the fetching caller got it too, and fetching again sooner would only get an equally short one.
        """
        hold_until = now + self.refetch_interval(c)
        serve_until = max(self.stale_at(c), hold_until)
        refresh_at = min(serve_until, max(self.refresh_at(c), hold_until))
        return refresh_at, serve_until, max(c.expiration, serve_until)


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


def local_times(
    expiration: float,
    next_refresh: float | None,
    *,
    server_date: float | None,
    received_at: float,
    requested_duration: float,
    sent_at: float | None = None,
) -> tuple[float, float | None]:
    """AWS's ``expiration`` and ``nextRefreshTime`` on the local clock, shifted by the same correction.

    When AWS's ``Date`` and our clock agree within :data:`SKEW_TOLERANCE`, AWS's times hold as they are
    (never beyond ``received_at + requested_duration``). With ``sent_at`` (when the request left), a
    ``Date`` anywhere between sending and receiving counts as agreement: a process frozen while the call was
    in flight (AWS Lambda, SIGSTOP) reads an old answer late, and its credential must keep its real expiry
    rather than be taken for clock skew and stretched past it::

        >>> local_times(1900.0, 1800.0, server_date=1000.5, received_at=1000.0, requested_duration=900.0)
        (1900.0, 1800.0)
        >>> local_times(2900.0, 2800.0, server_date=2000.0, received_at=1000.0, requested_duration=900.0)
        (1900.0, 1800.0)
        >>> local_times(1900.0, None, server_date=1000.0, received_at=2000.0, requested_duration=900.0,
        ...             sent_at=999.0)  # frozen 1000 s in flight: expired on arrival, as it really is
        (1900.0, None)
    """
    low = received_at if sent_at is None else min(sent_at, received_at)
    if server_date is not None and low - SKEW_TOLERANCE < server_date < received_at + SKEW_TOLERANCE:
        local_exp = min(expiration, received_at + requested_duration)  # AWS never issues longer than asked
    else:
        local_exp = local_expiration(
            expiration,
            server_date=server_date,
            received_at=received_at,
            requested_duration=requested_duration,
        )
    local_next = None if next_refresh is None else next_refresh + (local_exp - expiration)
    return local_exp, local_next


class ForcedRefreshBudget(Generic[K]):
    """A token bucket per key for *forced* refreshes (a refused login, a host that does not answer).

    Whatever keeps failing, a key gets ``burst`` forced refreshes at once and then one per ``interval``
    seconds; in between the caller fails fast with the real database error instead of calling AWS again.
    Bounded: at most ``max_keys`` keys are remembered (least recently used dropped; a dropped key starts
    with a full bucket, which is the same as a key not seen for ``burst * interval``)::

        >>> budget = ForcedRefreshBudget(clock=lambda: 0.0)
        >>> [budget.take("k") for _ in range(3)]
        [True, True, False]
    """

    def __init__(self, *, clock: Clock, burst: int = 2, interval: float = 30.0, max_keys: int = 1024) -> None:
        if burst < 1 or not interval > 0 or max_keys < 1:
            raise ValueError("need burst >= 1, interval > 0 and max_keys >= 1")
        self._clock = clock
        self.burst, self.interval, self._max_keys = burst, interval, max_keys
        self._buckets: OrderedDict[K, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: K) -> bool:
        """Spend one token of ``key`` if it has one (thread-safe)."""
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) / self.interval)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
            return allowed

    def next_token_in(self, key: K) -> float:
        """Seconds until ``key`` may be forced again (0 when it may now)."""
        found = self._buckets.get(key)
        if found is None:
            return 0.0
        tokens, at = found
        tokens = min(float(self.burst), tokens + max(0.0, self._clock() - at) / self.interval)
        return 0.0 if tokens >= 1.0 else math.ceil((1.0 - tokens) * self.interval * 1000) / 1000

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()

    def after_fork(self) -> None:
        """In a forked child: a new lock (the parent's may have been held by a thread that is gone)."""
        self._lock = threading.Lock()
