"""Where credentials and endpoints come from, as one interface with two tiers behind it.

* :class:`ProcessTier` -- the process-wide single-flight caches (:mod:`sqlalchemy_rs_iam.cache`) and the
  refresh strategy chosen once from the configuration (:mod:`sqlalchemy_rs_iam.refresh`).
* :class:`HostTier` -- ``cache=host``: *wraps* a process tier. The process tier stays in front (a hit costs
  no file access); its misses read through the host store (:mod:`sqlalchemy_rs_iam.store`) and what the
  host tier adopts or fetches is published to both. Nothing on disk can fail a call: an unusable store is
  an absent entry, and the call goes on to AWS.

The connector talks to :class:`Tier` only and knows nothing of files. It asks for a *source* once per
signing identity (the key, the AWS call, a secret-free description and the counters store errors go to)
and hands it back on every use::

    tier = HostTier(ProcessTier(CredentialCache(), TtlCache(), Lazy()), HostStore.open())
    source = tier.credential_source(key, fetch_from_aws, "workgroup 'analytics' ... as profile dev", stats)
    creds = tier.credentials(source, stats, block=True)       # block=False: never waits (event loops)
    tier.refused(source, creds, stats)                        # the database refused it: drop it everywhere
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from .cache import CredentialCache, TtlCache
from .counters import CacheStats
from .credentials import DbCredentials
from .policy import RefreshPolicy
from .refresh import Background, RefreshMode, RefreshStrategy
from .store import HostStore, key_name

__all__ = ["Address", "HostTier", "ProcessTier", "Source", "Tier"]

V = TypeVar("V")
Address = tuple[str, int]


@dataclass(frozen=True, eq=False)
class Source(Generic[V]):
    """One key and how to get its value on a miss; made by a tier, opaque to the connector."""

    key: Hashable
    fetch: Callable[[], V]  # what a miss of the process tier calls (through the host store for cache=host)
    description: str = ""
    name: str = ""  # the host store's entry name ("" in the process tier)


class Tier(Protocol):
    """What the connector needs: credentials and endpoints by source, and how to drop a bad one."""

    @property
    def policy(self) -> RefreshPolicy: ...

    @property
    def refresh_mode(self) -> RefreshMode: ...

    def credential_source(
        self,
        key: Hashable,
        fetch: Callable[[], DbCredentials],
        description: str,
        stats: CacheStats | None = None,
    ) -> Source[DbCredentials]: ...

    def endpoint_source(
        self, key: Hashable, resolve: Callable[[], Address], description: str, stats: CacheStats | None = None
    ) -> Source[Address]: ...

    def credentials(
        self, source: Source[DbCredentials], stats: CacheStats | None, *, block: bool
    ) -> DbCredentials | None: ...

    def endpoint(
        self, source: Source[Address], stats: CacheStats | None, *, block: bool
    ) -> Address | None: ...

    def holds(self, source: Source[DbCredentials], creds: DbCredentials) -> bool: ...

    def refused(
        self, source: Source[DbCredentials], creds: DbCredentials | None, stats: CacheStats | None
    ) -> None: ...

    def unreachable(self, source: Source[Address]) -> None: ...


class ProcessTier:
    """The process-wide caches with one refresh strategy (``Background()`` or ``Lazy()``)."""

    def __init__(
        self,
        credentials: CredentialCache[Any],
        endpoints: TtlCache[Any, Address],
        refresh: RefreshStrategy | None = None,
    ) -> None:
        self.credential_cache, self.endpoint_cache = credentials, endpoints
        self.refresh: RefreshStrategy = refresh if refresh is not None else Background()

    def __repr__(self) -> str:
        return f"ProcessTier(refresh={self.refresh!r})"

    @property
    def policy(self) -> RefreshPolicy:
        return self.credential_cache.policy

    @property
    def refresh_mode(self) -> RefreshMode:
        return self.refresh.mode

    def credential_source(
        self,
        key: Hashable,
        fetch: Callable[[], DbCredentials],
        description: str,
        stats: CacheStats | None = None,
    ) -> Source[DbCredentials]:
        return Source(key, fetch, description)

    def endpoint_source(
        self, key: Hashable, resolve: Callable[[], Address], description: str, stats: CacheStats | None = None
    ) -> Source[Address]:
        return Source(key, resolve, description)

    def credentials(
        self, source: Source[DbCredentials], stats: CacheStats | None, *, block: bool
    ) -> DbCredentials | None:
        cache = self.credential_cache
        if block:
            return cache.get(source.key, source.fetch, stats, self.refresh)
        return cache.peek(source.key, source.fetch, stats, self.refresh)

    def endpoint(self, source: Source[Address], stats: CacheStats | None, *, block: bool) -> Address | None:
        cache = self.endpoint_cache
        return cache.get(source.key, source.fetch) if block else cache.peek(source.key, source.fetch)

    def holds(self, source: Source[DbCredentials], creds: DbCredentials) -> bool:
        return self.credential_cache.holds(source.key, creds)

    def refused(
        self, source: Source[DbCredentials], creds: DbCredentials | None, stats: CacheStats | None
    ) -> None:
        self.credential_cache.invalidate(source.key, creds)

    def unreachable(self, source: Source[Address]) -> None:
        self.endpoint_cache.invalidate(source.key)


class HostTier:
    """``cache=host``: the process tier in front, the host store of this OS user behind it.

    A miss of the process tier reads the store: a stored credential before its refresh point is adopted as
    it is; between refresh point and stale mark it is served while at most one process (whoever takes the
    key's lock without waiting) refreshes it; missing, stale or unusable, callers wait on the lock (at most
    the store's ``wait``) and the first one fetches and publishes. Single flight between the threads of a
    process is the process tier's; the lock only adds it between processes.
    """

    def __init__(self, process: ProcessTier, store: HostStore) -> None:
        self.process, self.store = process, store

    def __repr__(self) -> str:
        return f"HostTier({self.process!r}, {self.store!r})"

    @property
    def policy(self) -> RefreshPolicy:
        return self.process.policy

    @property
    def refresh_mode(self) -> RefreshMode:
        return self.process.refresh_mode

    def credential_source(
        self,
        key: Hashable,
        fetch: Callable[[], DbCredentials],
        description: str,
        stats: CacheStats | None = None,
    ) -> Source[DbCredentials]:
        name = key_name("credentials", key)
        return Source(key, lambda: self._shared(name, description, fetch, stats), description, name)

    def endpoint_source(
        self, key: Hashable, resolve: Callable[[], Address], description: str, stats: CacheStats | None = None
    ) -> Source[Address]:
        name = key_name("endpoint", key)
        ttl = self.process.endpoint_cache.ttl

        def shared() -> Address:
            store = self.store
            found = store.read_endpoint(name, stats)
            if found is not None:
                return found
            with store.lock(name, blocking=True, stats=stats):
                found = store.read_endpoint(name, stats)
                if found is not None:
                    return found
                address = resolve()
                store.write_endpoint(name, description, address, ttl, stats)
                return address

        return Source(key, shared, description, name)

    def credentials(
        self, source: Source[DbCredentials], stats: CacheStats | None, *, block: bool
    ) -> DbCredentials | None:
        return self.process.credentials(source, stats, block=block)

    def endpoint(self, source: Source[Address], stats: CacheStats | None, *, block: bool) -> Address | None:
        return self.process.endpoint(source, stats, block=block)

    def holds(self, source: Source[DbCredentials], creds: DbCredentials) -> bool:
        return self.process.holds(source, creds)

    def refused(
        self, source: Source[DbCredentials], creds: DbCredentials | None, stats: CacheStats | None
    ) -> None:
        self.process.refused(source, creds, stats)
        self.store.forget_credentials(source.name, creds, stats)

    def unreachable(self, source: Source[Address]) -> None:
        self.process.unreachable(source)
        self.store.forget_endpoint(source.name)

    def _shared(
        self, name: str, description: str, fetch: Callable[[], DbCredentials], stats: CacheStats | None
    ) -> DbCredentials:
        """A credential adopted from the host store, or fetched by one process for all and published."""
        store, policy = self.store, self.policy
        now = store.clock()
        stored = store.read_credentials(name, stats)
        if stored is not None and now < policy.refresh_at(stored):
            return stored  # fresh: no AWS call, no lock
        if stored is not None and now < policy.stale_at(stored):
            with store.lock(name, blocking=False, stats=stats) as mine:
                if not mine:
                    return stored  # another process is refreshing it; serve this one meanwhile
                return self._fetch_locked(name, description, fetch, stats, stale_only=False)
        with store.lock(name, blocking=True, stats=stats):  # False past the wait: fetch on our own
            return self._fetch_locked(name, description, fetch, stats, stale_only=True)

    def _fetch_locked(
        self,
        name: str,
        description: str,
        fetch: Callable[[], DbCredentials],
        stats: CacheStats | None,
        *,
        stale_only: bool,
    ) -> DbCredentials:
        store, policy = self.store, self.policy
        again = store.read_credentials(name, stats)  # another process may have just done it
        now = store.clock()
        if again is not None and now < (policy.stale_at(again) if stale_only else policy.refresh_at(again)):
            return again
        creds = fetch()
        store.write_credentials(name, description, creds, stats)  # False (logged, counted): still served
        return creds
