"""The tiers and refresh strategies as types, in fake time: a fake host store (no files) for the host
tier's policy, the real process caches behind both, no PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from sqlalchemy_rs_iam.cache import CredentialCache, TtlCache
from sqlalchemy_rs_iam.counters import CacheStats
from sqlalchemy_rs_iam.credentials import DbCredentials
from sqlalchemy_rs_iam.refresh import Background, Lazy, as_strategy, strategy_for
from sqlalchemy_rs_iam.tiers import HostTier, ProcessTier


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


class Aws:
    def __init__(self, clock: Clock) -> None:
        self.clock, self.calls = clock, 0

    def __call__(self) -> DbCredentials:
        self.calls += 1
        return DbCredentials("IAM:a", f"pw{self.calls}", self.clock.t + 900, None, self.clock.t)


class FakeStore:
    """The host store's primitives in memory: ``busy`` says another process holds the lock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.entries: dict[str, Any] = {}
        self.busy = False
        self.writable = True
        self.locks = 0

    def read_credentials(self, name: str, stats: CacheStats | None = None) -> DbCredentials | None:
        found = self.entries.get(name)
        return None if found is None or self.clock() >= found.expiration else found

    def write_credentials(self, name: str, description: str, creds: DbCredentials, stats: Any = None) -> bool:
        if not self.writable:
            if stats is not None:
                stats.incr("host_errors")
            return False
        self.entries[name] = DbCredentials(
            creds.user, creds.password, creds.expiration, None, creds.fetched_at, True
        )
        return True

    def forget_credentials(self, name: str, refused: DbCredentials | None, stats: Any = None) -> None:
        found = self.entries.get(name)
        if found is not None and (refused is None or found.password == refused.password):
            del self.entries[name]

    def read_endpoint(self, name: str, stats: Any = None) -> tuple[str, int] | None:
        return self.entries.get(name)

    def write_endpoint(
        self, name: str, d: str, address: tuple[str, int], ttl: float, stats: Any = None
    ) -> bool:
        self.entries[name] = address
        return True

    def forget_endpoint(self, name: str) -> None:
        self.entries.pop(name, None)

    @contextlib.contextmanager
    def lock(self, name: str, *, blocking: bool, stats: Any = None) -> Iterator[bool]:
        self.locks += 1
        yield not self.busy


def process_tier(clock: Clock, refresh: Background | Lazy) -> ProcessTier:
    return ProcessTier(CredentialCache(clock=clock), TtlCache(clock=clock), refresh)


def test_strategies_are_chosen_once_by_type_not_by_function_identity() -> None:
    assert isinstance(strategy_for("auto", {}), Background)
    assert isinstance(strategy_for("auto", {"AWS_LAMBDA_FUNCTION_NAME": "f"}), Lazy)
    inline_spawn = as_strategy(lambda fn: fn(), Background())  # a test's own inline spawn: still background
    assert isinstance(inline_spawn, Background) and not inline_spawn.inline
    assert Lazy().inline and Lazy().mode == "lazy" and Background().mode == "background"


@pytest.mark.parametrize("refresh", [Background(spawn=lambda fn: None), Lazy()], ids=["background", "lazy"])
def test_process_tier_single_flight_and_both_strategies_in_fake_time(refresh: Background | Lazy) -> None:
    clock = Clock()
    aws = Aws(clock)
    tier = process_tier(clock, refresh)
    source = tier.credential_source("k", aws, "d")
    stats = CacheStats()
    assert tier.credentials(source, stats, block=False) is None  # cold: a non-blocking call never fetches
    first = tier.credentials(source, stats, block=True)
    assert first is not None and aws.calls == 1
    assert tier.credentials(source, stats, block=True) is first and aws.calls == 1
    clock.t += 700  # past the refresh point, before the stale mark
    got = tier.credentials(source, stats, block=True)
    if isinstance(refresh, Lazy):  # this caller ran the refresh and left with its result
        assert got is not None and got.password == "pw2" and aws.calls == 2
    else:  # the refresh was handed to the spawn (which drops it here); the cached value is served
        assert got is first and aws.calls == 1
    assert tier.refresh_mode == refresh.mode


def test_lazy_peek_never_refreshes_on_an_event_loop() -> None:
    clock = Clock()
    aws = Aws(clock)
    tier = process_tier(clock, Lazy())
    source = tier.credential_source("k", aws, "d")
    tier.credentials(source, None, block=True)
    clock.t += 700
    assert tier.credentials(source, None, block=False) is None and aws.calls == 1


def host_tier(clock: Clock) -> tuple[HostTier, FakeStore, Aws]:
    store = FakeStore(clock)
    return HostTier(process_tier(clock, Lazy()), store), store, Aws(clock)  # type: ignore[arg-type]


def test_host_tier_reads_through_the_process_tier_and_publishes_to_it() -> None:
    clock = Clock()
    tier, store, aws = host_tier(clock)
    source = tier.credential_source("k", aws, "d")
    first = tier.credentials(source, CacheStats(), block=True)
    assert first is not None and aws.calls == 1 and store.entries[source.name].password == "pw1"
    locks = store.locks
    assert tier.credentials(source, None, block=True) is first and store.locks == locks  # process tier hit

    # another process of this user: a new process tier over the same store adopts the entry, no AWS call
    other = HostTier(process_tier(clock, Lazy()), store)  # type: ignore[arg-type]
    stats = CacheStats()
    adopted = other.credentials(other.credential_source("k", aws, "d"), stats, block=True)
    assert adopted is not None and adopted.shared and adopted.password == "pw1" and aws.calls == 1
    assert stats.hits == 1 and stats.api_calls == 0


def test_host_tier_refresh_window_one_refresher_and_stale_blocks() -> None:
    clock = Clock()
    tier, store, aws = host_tier(clock)
    source = tier.credential_source("k", aws, "d")
    tier.credentials(source, None, block=True)
    fresh = HostTier(process_tier(clock, Lazy()), store)  # type: ignore[arg-type]
    src = fresh.credential_source("k", aws, "d")
    clock.t += 700  # refresh window: another process holds the lock -> serve the stored one
    store.busy = True
    got = fresh.credentials(src, None, block=True)
    assert got is not None and got.password == "pw1" and aws.calls == 1
    store.busy = False
    fresh2 = HostTier(process_tier(clock, Lazy()), store)  # type: ignore[arg-type]
    got = fresh2.credentials(fresh2.credential_source("k", aws, "d"), None, block=True)
    assert got is not None and got.password == "pw2" and aws.calls == 2
    clock.t += 900  # stale everywhere: a lock that cannot be had is waited for, then fetched anyway
    store.busy = True
    fresh3 = HostTier(process_tier(clock, Lazy()), store)  # type: ignore[arg-type]
    got = fresh3.credentials(fresh3.credential_source("k", aws, "d"), None, block=True)
    assert got is not None and got.password == "pw3" and aws.calls == 3


def test_host_tier_serves_what_it_fetched_when_the_store_cannot_take_it() -> None:
    clock = Clock()
    tier, store, aws = host_tier(clock)
    store.writable = False
    stats = CacheStats()
    source = tier.credential_source("k", aws, "d", stats)
    got = tier.credentials(source, stats, block=True)
    assert got is not None and got.password == "pw1" and stats.host_errors == 1 and store.entries == {}
    assert (
        tier.credentials(source, stats, block=True) is got and aws.calls == 1
    )  # process tier still holds it


def test_host_tier_refused_and_unreachable_drop_both_tiers() -> None:
    clock = Clock()
    tier, store, aws = host_tier(clock)
    source = tier.credential_source("k", aws, "d")
    creds = tier.credentials(source, None, block=True)
    assert creds is not None and tier.holds(source, creds)
    tier.refused(source, creds, None)
    assert not tier.holds(source, creds) and source.name not in store.entries
    resolved: list[int] = []
    endpoint = tier.endpoint_source("e", lambda: (resolved.append(1), ("h", 1))[1], "d")
    assert tier.endpoint(endpoint, None, block=True) == ("h", 1)
    tier.unreachable(endpoint)
    assert endpoint.name not in store.entries
    assert tier.endpoint(endpoint, None, block=True) == ("h", 1) and len(resolved) == 2


def test_the_connector_knows_nothing_of_files() -> None:
    import ast
    from pathlib import Path

    import sqlalchemy_rs_iam.connector as connector

    tree = ast.parse(Path(connector.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert not imported & {"store", "hostdir", "os", "fcntl", "json"}, imported
