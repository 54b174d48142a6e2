"""Unit tests of the single-flight caches, in fake time (plus a few with real threads)."""

from __future__ import annotations

import random
import threading
import time
import traceback

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from together import run_together

from sqlalchemy_rs_iam.cache import CredentialCache, TtlCache
from sqlalchemy_rs_iam.counters import CacheStats
from sqlalchemy_rs_iam.credentials import DbCredentials
from sqlalchemy_rs_iam.policy import RefreshPolicy

T0 = 1_700_000_000.0
POLICY = RefreshPolicy()


class FakeClock:
    """Callable like time.time; moves only when told. Counts calls (the cache reads it under its lock)."""

    def __init__(self, t: float = T0) -> None:
        self.t = t
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class Pending(list):
    """A spawn that records background refreshes; the test runs them when it wants."""

    def __call__(self, fn) -> None:
        self.append(fn)

    def run_all(self) -> int:
        n = 0
        while self:
            self.pop(0)()
            n += 1
        return n


class Fetcher:
    """fetch() for the cache: issues `lifetime`-second credentials on the fake clock, or raises `fail`."""

    def __init__(
        self, clock: FakeClock, lifetime: float = 900.0, next_refresh_in: float | None = None
    ) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.next_refresh_in = next_refresh_in
        self.fetched_at_offset = 0.0  # > 0: the credential arrives this much "older" than now
        self.fail: BaseException | None = None
        self.calls: list[float] = []
        self.issued: list[DbCredentials] = []
        self._lock = threading.Lock()

    def __call__(self) -> DbCredentials:
        now = self.clock.t
        with self._lock:
            self.calls.append(now)
        if self.fail is not None:
            raise self.fail
        fetched = now - self.fetched_at_offset
        nr = None if self.next_refresh_in is None else fetched + self.next_refresh_in
        c = DbCredentials(
            user=f"IAM:u{len(self.calls)}",
            password="s3cr3t",
            expiration=fetched + self.lifetime,
            next_refresh=nr,
            fetched_at=fetched,
        )
        self.issued.append(c)
        return c


def creds(
    fetched_at: float = T0, lifetime: float = 900.0, next_refresh: float | None = None
) -> DbCredentials:
    return DbCredentials(
        user="u",
        password="p",
        expiration=fetched_at + lifetime,
        next_refresh=next_refresh,
        fetched_at=fetched_at,
    )


def make(clock: FakeClock | None = None, **kw):
    clock = clock or FakeClock()
    pending = Pending()
    kw.setdefault("spawn", pending)
    return CredentialCache(clock=clock, **kw), clock, pending


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


# --- hits, windows, background refresh --------------------------------------------------------------------------


def test_hit_and_miss_counts():
    cache, clock, _ = make()
    fetch, stats = Fetcher(clock), CacheStats()
    first = cache.get("k", fetch, stats)
    assert stats.snapshot() == {
        "api_calls": 1,
        "hits": 0,
        "refreshes": 0,
        "failures": 0,
        "login_retries": 0,
        "host_errors": 0,
    }
    for _ in range(5):
        clock.advance(10)
        assert cache.get("k", fetch, stats) is first
    assert (stats.api_calls, stats.hits) == (1, 5)
    assert len(fetch.calls) == 1
    other = CacheStats()
    cache.get("k", fetch, other)  # the cache is shared, counters are per owner
    assert other.snapshot()["hits"] == 1 and other.api_calls == 0


def test_900s_credentials_one_fetch_per_refresh_window_over_hours():
    cache, clock, pending = make()
    fetch, stats = Fetcher(clock), CacheStats()
    served = set()
    for _ in range(int(4 * 3600 / 5)):  # a connect every 5 s for 4 simulated hours
        served.add(cache.get("k", fetch, stats))
        pending.run_all()  # background refresh completes promptly
        clock.advance(5)
    gaps = [b - a for a, b in zip(fetch.calls, fetch.calls[1:], strict=False)]
    assert all(675 <= g < 680 for g in gaps), gaps
    assert len(fetch.calls) == 1 + (4 * 3600 - 5) // 675  # 22 calls for 2880 connects
    assert stats.api_calls == len(fetch.calls) and stats.refreshes == len(fetch.calls) - 1
    assert stats.hits == 2880 - 1 and stats.failures == 0
    assert served == set(fetch.issued)


def test_many_connects_within_a_window_do_not_refetch():
    # botocore #2189: a fixed 15-minute advisory window refreshes 900 s credentials on every call.
    cache, clock, pending = make()
    fetch = Fetcher(clock)
    for _ in range(1000):
        cache.get("k", fetch)
        clock.advance(0.6)
    assert len(fetch.calls) == 1 and not pending


@pytest.mark.parametrize(
    ("lifetime", "refresh_after", "stale_after"),
    [(3.0, 2.25, 2.25), (60.0, 45.0, 54.0), (900.0, 675.0, 840.0), (3600.0, 2700.0, 3540.0)],
)
def test_served_until_stale_at_then_callers_block(lifetime, refresh_after, stale_after):
    cache, clock, pending = make(rng=MaxRandom())
    fetch, stats = Fetcher(clock, lifetime=lifetime), CacheStats()
    first = cache.get("k", fetch, stats)
    assert cache.policy.stale_at(first) == pytest.approx(T0 + stale_after)
    clock.t = cache.policy.stale_at(first) - 0.01
    fetch.fail = RuntimeError("throttled")
    assert cache.get("k", fetch, stats) is first  # advisory window (if any): served, refresh queued
    pending.run_all()  # ... and it fails: still served, retried after half the time left
    assert cache.get("k", fetch, stats) is first and not pending
    fetch.fail = None
    clock.t = cache.policy.stale_at(first)
    second = cache.get("k", fetch, stats)  # stale: this caller blocks on a fetch of its own
    assert second is fetch.issued[-1] and second is not first
    assert len(fetch.calls) == 2 + (refresh_after < stale_after)
    assert stats.api_calls == len(fetch.calls) and stats.refreshes == 1


def test_next_refresh_time_is_honoured_by_the_cache():
    cache, clock, pending = make()
    fetch = Fetcher(clock, next_refresh_in=300.0)
    cache.get("k", fetch)
    clock.t = T0 + 299.9
    cache.get("k", fetch)
    assert not pending
    clock.t = T0 + 300
    cache.get("k", fetch)
    assert len(pending) == 1


def test_next_refresh_time_in_the_past_does_not_cause_a_storm():
    cache, clock, pending = make()
    fetch = Fetcher(clock, next_refresh_in=-3600.0)
    for _ in range(224):
        cache.get("k", fetch)
        clock.advance(1)
    assert not pending and len(fetch.calls) == 1
    clock.advance(1)
    cache.get("k", fetch)
    assert len(pending) == 1  # at 25% of the lifetime


def test_background_refresh_serves_old_credential_meanwhile():
    cache, clock, pending = make()
    fetch, stats = Fetcher(clock), CacheStats()
    old = cache.get("k", fetch, stats)
    clock.advance(700)
    assert cache.get("k", fetch, stats) is old
    assert cache.get("k", fetch, stats) is old  # no second refresh while one is running
    assert len(pending) == 1 and len(fetch.calls) == 1
    assert stats.api_calls == 1  # counted when the fetch starts
    pending.run_all()
    new = cache.get("k", fetch, stats)
    assert new is not old and new is fetch.issued[-1]
    assert stats.snapshot() == {
        "api_calls": 2,
        "hits": 3,
        "refreshes": 1,
        "failures": 0,
        "login_retries": 0,
        "host_errors": 0,
    }


def test_background_refresh_is_attributed_to_the_caller_that_triggered_it():
    cache, clock, pending = make()
    fetch = Fetcher(clock)
    a, b = CacheStats(), CacheStats()
    cache.get("k", fetch, a)
    clock.advance(700)
    cache.get("k", fetch, b)
    pending.run_all()
    assert (a.api_calls, a.refreshes) == (1, 0)
    assert (b.api_calls, b.refreshes, b.hits) == (1, 1, 1)


# --- failures ---------------------------------------------------------------------------------------------------


class MaxRandom(random.Random):
    """Jitter always at its upper bound, so backoff delays are exact."""

    def uniform(self, a, b):
        return b


class RecordingRandom(random.Random):
    def __init__(self, seed) -> None:
        super().__init__(seed)
        self.draws: list[tuple[float, float, float]] = []

    def uniform(self, a, b):
        x = super().uniform(a, b)
        self.draws.append((a, b, x))
        return x


def test_background_failure_keeps_serving_and_backs_off_exponentially():
    cache, clock, pending = make(rng=MaxRandom())
    fetch, stats = Fetcher(clock), CacheStats()
    old = cache.get("k", fetch, stats)
    clock.t = T0 + 675
    fetch.fail = RuntimeError("AWS is down")
    assert cache.get("k", fetch, stats) is old
    pending.run_all()  # fails at T0+675; stale_at is T0+840
    gaps, last = [], clock.t
    while clock.t < T0 + 839:  # a connect every 0.25 s
        clock.advance(0.25)
        assert cache.get("k", fetch, stats) is old
        if pending:
            gaps.append(clock.t - last)
            pending.run_all()
            last = clock.t
    # 1 s doubling, capped at 30 s, then at half the time left before stale_at
    assert gaps[:10] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 22.0, 11.0]
    assert stats.failures == len(gaps) + 1 == len(fetch.calls) - 1
    clock.t = T0 + 840  # stale: now the error reaches the caller
    with pytest.raises(RuntimeError, match="AWS is down"):
        cache.get("k", fetch, stats)


def test_background_backoff_jitter_bounds():
    rng = RecordingRandom(7)
    cache, clock, pending = make(rng=rng)
    fetch = Fetcher(clock, lifetime=3600.0)
    old = cache.get("k", fetch)
    clock.t = T0 + 2700
    fetch.fail = RuntimeError("throttled")
    cache.get("k", fetch)
    for _ in range(8):
        pending.run_all()
        a, b, delay = rng.draws[-1]
        assert a == 0.0 and 0.0 <= delay <= b
        assert b == min(30.0, 2.0 ** (len(rng.draws) - 1), (T0 + 3540 - clock.t) / 2)
        if delay > 0.002:
            clock.advance(delay - 0.001)
            assert cache.get("k", fetch) is old and not pending  # not before the drawn delay
        clock.t = clock.t + 0.002 if delay > 0.002 else clock.t + delay
        assert cache.get("k", fetch) is old and len(pending) == 1  # retried once it is due
    assert [b for _, b, _ in rng.draws] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_spawn_failure_is_treated_as_a_failed_refresh():
    def broken_spawn(fn):
        raise RuntimeError("can't start new thread")

    cache, clock, _ = make(spawn=broken_spawn, rng=MaxRandom())
    fetch, stats = Fetcher(clock), CacheStats()
    old = cache.get("k", fetch, stats)
    clock.advance(700)
    assert cache.get("k", fetch, stats) is old
    assert cache.get("k", fetch, stats) is old  # backoff: not tried again at once
    assert stats.failures == 1 and len(fetch.calls) == 1


def test_blocking_failure_raises_negative_cache_suppresses_storm_then_recovers():
    cache, clock, _ = make()
    fetch, stats = Fetcher(clock), CacheStats()
    error = ConnectionError("endpoint unreachable")
    fetch.fail = error
    with pytest.raises(ConnectionError) as first:
        cache.get("k", fetch, stats)
    assert first.value is error
    t_fail, attempts = clock.t, 1
    for backoff in (0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0):
        for _ in range(50):  # a burst of connects during the negative period: no AWS call
            with pytest.raises(ConnectionError) as again:
                cache.get("k", fetch, stats)
            assert again.value is error
        clock.t = t_fail + backoff - 0.01
        with pytest.raises(ConnectionError):
            cache.get("k", fetch, stats)
        assert len(fetch.calls) == attempts
        clock.t = t_fail + backoff
        with pytest.raises(ConnectionError):
            cache.get("k", fetch, stats)
        attempts += 1
        assert len(fetch.calls) == attempts
        t_fail = clock.t
    assert stats.failures == attempts and stats.api_calls == attempts
    clock.advance(10)
    fetch.fail = None
    good = cache.get("k", fetch, stats)  # AWS is back
    assert good is fetch.issued[-1] and cache.get("k", fetch, stats) is good
    # the backoff was reset by the success: the next outage starts at 0.5 s again
    clock.advance(900)
    fetch.fail = error
    with pytest.raises(ConnectionError):
        cache.get("k", fetch, stats)
    clock.advance(0.5)
    n = len(fetch.calls)
    with pytest.raises(ConnectionError):
        cache.get("k", fetch, stats)
    assert len(fetch.calls) == n + 1


def test_negative_cache_reraise_does_not_grow_the_traceback():
    cache, clock, _ = make()
    fetch = Fetcher(clock)
    fetch.fail = RuntimeError("down")
    depths = []
    for _ in range(50):
        try:
            cache.get("k", fetch)
        except RuntimeError as exc:
            depths.append(len(traceback.extract_tb(exc.__traceback__)))
    assert len(fetch.calls) == 1 and max(depths) == depths[1]


def test_stale_negative_entry_is_not_served():
    cache, clock, _ = make()
    fetch = Fetcher(clock)
    old = cache.get("k", fetch)
    clock.advance(840)
    fetch.fail = RuntimeError("down")
    for _ in range(3):
        with pytest.raises(RuntimeError):
            cache.get("k", fetch)
    assert len(fetch.calls) == 2 and cache.peek("k", fetch) is None
    fetch.fail = None
    clock.advance(0.5)
    assert cache.get("k", fetch) is not old


def test_interrupted_fetch_is_not_negatively_cached():
    cache, clock, _ = make()
    fetch = Fetcher(clock)
    fetch.fail = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        cache.get("k", fetch)
    fetch.fail = None
    assert cache.get("k", fetch) is fetch.issued[-1] and len(fetch.calls) == 2


def test_fetch_returning_none_is_an_error():
    cache, _, _ = make()
    with pytest.raises(TypeError):
        cache.get("k", lambda: None)


# --- credentials that arrive stale: no fetch storm --------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "older_by", "max_fetches"),
    [
        (1010.0, 1000.0, 11),  # arrives 50 s past stale_at (fetched_at far in the past): served 1 s
        (-1.0, 0.0, 21),  # arrives already expired on our clock: served 0.5 s
        (0.2, 0.0, 21),  # lifetime shorter than any margin
        (900.0, 800.0, 11),  # arrives inside the advisory window: background refreshes 1 s apart
    ],
)
def test_credential_stale_on_arrival_causes_no_fetch_storm(lifetime, older_by, max_fetches):
    cache, clock, pending = make()
    fetch = Fetcher(clock, lifetime=lifetime)
    fetch.fetched_at_offset = older_by
    first = cache.get("k", fetch)
    assert first is fetch.issued[0]  # the caller that fetched it gets it (one login)
    for _ in range(1000):  # 100 connects per second for 10 s
        clock.advance(0.01)
        cache.get("k", fetch)
        pending.run_all()
    assert 5 <= len(fetch.calls) <= max_fetches


@settings(max_examples=150, deadline=None)
@given(lifetime=st.floats(-100.0, 4000.0), older_by=st.floats(0.0, 8000.0), step=st.floats(0.001, 0.2))
def test_property_at_most_one_fetch_per_refetch_interval(lifetime, older_by, step):
    cache, clock, pending = make()
    fetch = Fetcher(clock, lifetime=lifetime)
    fetch.fetched_at_offset = older_by
    start = clock.t
    while clock.t - start < 5.0:
        cache.get("k", fetch)
        pending.run_all()
        clock.advance(step)
    assert len(fetch.calls) <= 5.0 / 0.5 + 1


# --- single-flight with real threads ----------------------------------------------------------------------------


def test_32_threads_cold_get_fetch_once():
    cache = CredentialCache()  # real clock, real spawn
    calls = []

    def fetch():
        calls.append(1)
        time.sleep(0.2)
        now = time.time()
        return DbCredentials(user="u", password="p", expiration=now + 900, fetched_at=now)

    stats = CacheStats()
    results, errors = run_together(32, lambda: cache.get("k", fetch, stats))
    assert errors == [] and len(results) == 32 and len({id(r) for r in results}) == 1
    assert len(calls) == 1
    assert (stats.api_calls, stats.hits) == (1, 31)


def test_waiters_get_the_same_exception_without_fetching():
    cache, clock, _ = make()
    started, go = threading.Event(), threading.Event()
    error = RuntimeError("AccessDenied")
    calls = []

    def fetch():
        calls.append(1)
        started.set()
        go.wait(10)
        raise error

    caught = []

    def worker():
        try:
            cache.get("k", fetch)
        except RuntimeError as exc:
            caught.append(exc)

    owner = threading.Thread(target=worker)
    owner.start()
    assert started.wait(10)
    calls_before = clock.calls
    waiters = [threading.Thread(target=worker) for _ in range(5)]
    for t in waiters:
        t.start()
    wait_until(lambda: clock.calls >= calls_before + 5)  # each has joined the fetch in progress
    go.set()
    for t in [owner, *waiters]:
        t.join(10)
    assert len(caught) == 6 and all(exc is error for exc in caught)
    assert len(calls) == 1


def test_a_hanging_fetch_for_one_key_does_not_block_other_keys():
    cache, clock, _ = make()
    started, release = threading.Event(), threading.Event()

    def hanging():
        started.set()
        release.wait(30)
        return creds(clock.t)

    a = threading.Thread(target=cache.get, args=("a", hanging))
    a.start()
    try:
        assert started.wait(10)
        done = []
        b = threading.Thread(target=lambda: done.append(cache.get("b", Fetcher(clock))))
        b.start()
        b.join(10)
        assert done and done[0].user == "IAM:u1"
        assert cache.peek("a", hanging) is None  # non-blocking while a's fetch is in progress
        assert sorted(cache.keys()) == ["a", "b"]
    finally:
        release.set()
        a.join(10)
    assert cache.peek("a", hanging) is not None


def test_real_spawn_refreshes_on_a_daemon_thread():
    clock = FakeClock()
    cache = CredentialCache(clock=clock)
    fetch = Fetcher(clock)
    seen = []
    done = threading.Event()

    def tracking_fetch():
        seen.append((threading.current_thread().name, threading.current_thread().daemon))
        c = fetch()
        if len(seen) == 2:
            done.set()
        return c

    old = cache.get("k", tracking_fetch)
    clock.advance(700)
    assert cache.get("k", tracking_fetch) is old
    assert done.wait(10)
    wait_until(lambda: cache.get("k", tracking_fetch) is not old)
    assert seen[1] == ("rs-iam-refresh", True)
    assert len(fetch.calls) == 2


def test_caller_joins_a_background_refresh_once_the_credential_went_stale():
    cache, clock, pending = make()
    fetch, stats = Fetcher(clock), CacheStats()
    old = cache.get("k", fetch, stats)
    clock.advance(700)
    cache.get("k", fetch, stats)
    cache.invalidate("k", old)  # e.g. the database refused it, while the refresh is still queued
    got = []
    before = clock.calls
    t = threading.Thread(target=lambda: got.append(cache.get("k", fetch, stats)))
    t.start()
    wait_until(lambda: clock.calls > before)  # it has found the refresh in progress and waits for it
    pending.run_all()
    t.join(10)
    assert got == [fetch.issued[-1]] and len(fetch.calls) == 2  # waited for the refresh, no own fetch


# --- peek, invalidate, clear, bound -----------------------------------------------------------------------------


def test_peek_never_fetches_synchronously():
    cache, clock, pending = make()
    fetch, stats = Fetcher(clock), CacheStats()
    assert cache.peek("k", fetch, stats) is None and not fetch.calls and len(cache) == 0
    c = cache.get("k", fetch, stats)
    assert cache.peek("k", fetch, stats) is c
    clock.advance(700)
    assert cache.peek("k", fetch, stats) is c and len(pending) == 1  # schedules the refresh
    clock.advance(200)
    assert cache.peek("k", fetch, stats) is None


def test_invalidate_only_drops_the_same_credential():
    cache, clock, _ = make()
    fetch = Fetcher(clock)
    old = cache.get("k", fetch)
    cache.invalidate("k", creds())  # another credential object (equal values): not ours, ignored
    assert cache.get("k", fetch) is old
    cache.invalidate("k", old)
    new = cache.get("k", fetch)
    assert new is not old and len(fetch.calls) == 2
    cache.invalidate("k", old)  # a late invalidate of the old one must not drop the fresh one
    assert cache.get("k", fetch) is new
    cache.invalidate("k")
    assert cache.get("k", fetch) is not new and len(fetch.calls) == 3
    cache.invalidate("missing")


def test_unconditional_invalidate_forgets_the_negative_cache():
    cache, clock, _ = make()
    fetch = Fetcher(clock)
    fetch.fail = RuntimeError("down")
    with pytest.raises(RuntimeError):
        cache.get("k", fetch)
    fetch.fail = None
    cache.invalidate("k")
    assert cache.get("k", fetch) is fetch.issued[-1]


def test_clear_len_keys():
    cache, clock, _ = make()
    fetch = Fetcher(clock)
    for k in "abc":
        cache.get(k, fetch)
    cache.get("a", fetch)
    assert len(cache) == 3 and cache.keys() == ["b", "c", "a"]
    cache.clear()
    assert len(cache) == 0 and cache.keys() == []


def test_lru_bound_with_10000_keys():
    cache, clock, _ = make(max_entries=100)
    fetch = Fetcher(clock)
    hot = cache.get("hot", fetch)
    for i in range(10_000):
        cache.get(("user", i), fetch)
        assert cache.get("hot", fetch) is hot  # recently used: never evicted
        assert len(cache) <= 100
        clock.advance(0.01)
    assert len(cache) == 100
    assert cache.keys()[:-1] == [("user", i) for i in range(9901, 10_000)]


def test_eviction_drops_expired_entries_first():
    cache, clock, _ = make(max_entries=3)
    short, long = Fetcher(clock, lifetime=10.0), Fetcher(clock, lifetime=900.0)
    cache.get("short1", short)
    cache.get("short2", short)
    cache.get("long", long)
    clock.advance(20)
    cache.get("new", long)
    assert cache.keys() == ["long", "new"]
    cache.get("short3", short)  # the sweep is rate-limited (O(n)), but runs again a minute later
    clock.advance(61)
    cache.get("new2", long)
    assert cache.keys() == ["long", "new", "new2"]


def test_eviction_spares_a_fetch_in_progress():
    cache, clock, pending = make(max_entries=2)
    fetch, stats = Fetcher(clock), CacheStats()
    cache.get("a", fetch, stats)
    clock.advance(700)
    cache.get("b", fetch, stats)
    cache.get("a", fetch, stats)  # a: least recently used no more, and its refresh is queued
    cache.get("b", fetch, stats)
    cache.get("c", fetch, stats)  # evicts b although a is older: a's refresh must land somewhere
    assert cache.keys() == ["a", "c"]
    pending.run_all()
    assert stats.refreshes == 1 and cache.get("a", fetch) is fetch.issued[-1]


# --- TtlCache ---------------------------------------------------------------------------------------------------


def test_ttl_cache_keeps_values_for_ttl_and_invalidates():
    clock = FakeClock()
    endpoints: TtlCache[str, tuple[str, int]] = TtlCache(ttl=3600, clock=clock)
    calls = []

    def resolve():
        calls.append(clock.t)
        return ("wg.example", 5439 + len(calls))

    first = endpoints.get("wg", resolve)
    clock.advance(3599)
    assert endpoints.get("wg", resolve) is first and len(calls) == 1
    clock.advance(1)
    second = endpoints.get("wg", resolve)
    assert second == ("wg.example", 5441)
    endpoints.invalidate("wg", first)  # no longer the cached value: ignored
    assert endpoints.get("wg", resolve) is second
    endpoints.invalidate("wg")  # connect failed: resolve again
    assert endpoints.get("wg", resolve)[1] == 5442 and len(calls) == 3


def test_ttl_cache_negative_cache_and_bound():
    clock = FakeClock()
    c: TtlCache[int, int] = TtlCache(clock=clock, max_entries=10)
    calls = []

    def failing():
        calls.append(1)
        raise LookupError("no such workgroup")

    for _ in range(20):
        with pytest.raises(LookupError):
            c.get(-1, failing)
    assert len(calls) == 1
    for i in range(1000):
        assert c.get(i, lambda i=i: i * 2) == i * 2
    assert len(c) == 10


def test_ttl_cache_single_flight_with_threads():
    c: TtlCache[str, object] = TtlCache()
    calls = []

    def resolve():
        calls.append(1)
        time.sleep(0.1)
        return object()

    results, errors = run_together(8, lambda: c.get("wg", resolve))
    assert errors == [] and len(calls) == 1 and len(results) == 8 and len({id(r) for r in results}) == 1


def test_constructor_validation():
    with pytest.raises(ValueError):
        CredentialCache(max_entries=0)
    with pytest.raises(ValueError):
        TtlCache(ttl=0)


def test_stats_counters():
    s = CacheStats()
    s.incr("login_retries")
    s.incr("hits", 3)
    assert s.snapshot() == {
        "api_calls": 0,
        "hits": 3,
        "refreshes": 0,
        "failures": 0,
        "login_retries": 1,
        "host_errors": 0,
    }
    assert "hits=3" in repr(s)
    with pytest.raises(ValueError):
        s.incr("bogus")  # type: ignore[arg-type]


# --- refresh=lazy: refreshes run on the caller's thread ------------------------------------------------------


def test_lazy_refresh_runs_on_the_callers_thread_once_and_others_are_served_meanwhile():
    from sqlalchemy_rs_iam.cache import run_inline

    clock = FakeClock()
    cache = CredentialCache(clock=clock, spawn=lambda fn: pytest.fail("no background thread in lazy mode"))
    fetch, stats = Fetcher(clock), CacheStats()
    first = cache.get("k", fetch, stats, spawn=run_inline)
    clock.advance(700)  # past refresh_at (675 s), before stale_at (840 s)
    assert cache.peek("k", fetch, stats, spawn=run_inline) is None  # an event loop must not refresh inline
    threads_seen = []
    real_fetch = fetch

    def recording_fetch():
        threads_seen.append(threading.get_ident())
        return real_fetch()

    second = cache.get("k", recording_fetch, stats, spawn=run_inline)
    assert threads_seen == [threading.get_ident()]  # refreshed right here
    assert second is fetch.issued[-1] and second is not first  # the caller that refreshed gets the new one
    assert cache.get("k", recording_fetch, stats, spawn=run_inline) is second  # and so does the next
    assert len(fetch.calls) == 2


def test_lazy_mode_past_the_stale_mark_blocks_on_one_fetch():
    from sqlalchemy_rs_iam.cache import run_inline

    clock = FakeClock()
    cache = CredentialCache(clock=clock, spawn=lambda fn: pytest.fail("no thread"))
    fetch = Fetcher(clock)
    cache.get("k", fetch, spawn=run_inline)
    clock.advance(2 * 900)  # frozen for twice the lifetime: never serve the expired one
    again = cache.get("k", fetch, spawn=run_inline)
    assert again is fetch.issued[-1] and again.expiration > clock.t
    assert len(fetch.calls) == 2


def test_refresh_mode_auto_is_lazy_in_lambda_only():
    from sqlalchemy_rs_iam.config import parse_config
    from sqlalchemy_rs_iam.refresh import Background, Lazy
    from sqlalchemy_rs_iam.registry import refresh_strategy

    def cfg(mode):
        return parse_config({"workgroup": "analytics", "refresh": mode}, database="dev")

    assert isinstance(refresh_strategy(cfg("auto"), {}), Background)
    assert isinstance(refresh_strategy(cfg("auto"), {"AWS_LAMBDA_FUNCTION_NAME": "f"}), Lazy)
    assert isinstance(refresh_strategy(cfg("lazy"), {}), Lazy)
    assert isinstance(refresh_strategy(cfg("background"), {"AWS_LAMBDA_FUNCTION_NAME": "f"}), Background)


def test_lazy_refresh_that_fails_after_the_caller_was_frozen_never_hands_out_the_stale_value():
    from sqlalchemy_rs_iam.cache import run_inline
    from sqlalchemy_rs_iam.errors import ServiceUnavailableError

    clock = FakeClock()
    cache = CredentialCache(clock=clock, spawn=lambda fn: pytest.fail("no thread"))
    fetch = Fetcher(clock)
    cache.get("k", fetch, spawn=run_inline)
    clock.advance(700)  # refresh due: this caller runs it inline ...

    def frozen_then_failing():
        clock.advance(2 * 900)  # ... is frozen mid-call past the expiry, and the call then fails
        raise ServiceUnavailableError("timed out", operation="GetCredentials", resource="wg", region="r")

    with pytest.raises(ServiceUnavailableError):
        cache.get("k", frozen_then_failing, spawn=run_inline)  # not the credential that expired meanwhile


def test_time_left_lists_each_served_key_with_seconds_until_it_goes_stale():
    clock = FakeClock()
    cache = CredentialCache(clock=clock)
    cache.get("a", Fetcher(clock))
    clock.advance(100)
    assert cache.time_left() == [("a", 740.0)]  # stale mark 840 s after the fetch
    clock.advance(800)
    assert cache.time_left() == [("a", -60.0)]
