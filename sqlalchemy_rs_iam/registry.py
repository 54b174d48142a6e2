"""The one owner of process-wide state: caches, AWS clients, connectors, the fork hook and ``reset()``.

Everything this package keeps between connects lives in :data:`REGISTRY`, and every map is bounded by one
rule, least recently used first:

============================  ===========================================================================
credential cache              1,024 keys (expired entries are dropped first)
endpoint cache                256 keys, each kept one hour
AWS clients                   32 signing identities x AWS options (a boto3 session and its clients each)
connectors of ``connect()``   256 configurations x identities / boto3 sessions
connectors of engines         held weakly: gone with the engine
boto3 sessions passed in      held weakly, with their clients (4) and connect() connectors (16); a serial
                              number names each session in cache keys and is never reused
forced-refresh budgets        1,024 keys
============================  ===========================================================================

In a forked child the registry re-creates its locks, forgets fetches in progress and AWS clients (their
sockets are the parent's) and keeps the cached credentials. :func:`reset` forgets everything: call it after
rotating keys by hand, in a Lambda SnapStart after-restore hook, or between tests::

    import sqlalchemy_rs_iam

    sqlalchemy_rs_iam.reset()
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import counters
from .cache import CredentialCache, TtlCache
from .config import AwsOptions, IamConfig
from .connector import AwsApi, CacheKey, IamConnector
from .counters import CacheStats
from .identity import Identity, IdentityResolver
from .policy import ForcedRefreshBudget
from .refresh import RefreshStrategy, strategy_for
from .store import HostStore, default_cache_dir
from .tiers import HostTier, ProcessTier, Tier

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["REGISTRY", "Registry", "connector_for", "reset", "stats"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A bounded map, least recently used dropped first. Callers hold the registry's lock."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[K, V] = OrderedDict()

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        found = self._items.get(key)
        if found is None:
            found = make()
            self._items[key] = found
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        return found

    def find(self, key: K) -> V | None:
        return self._items.get(key)

    def values(self) -> list[V]:
        return list(self._items.values())

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def refresh_strategy(config: IamConfig, environ: Mapping[str, str] = os.environ) -> RefreshStrategy:
    """How this configuration's refreshes run, chosen once: ``Background()`` or ``Lazy()``.

    ``refresh=auto`` is lazy inside AWS Lambda (``AWS_LAMBDA_FUNCTION_NAME`` set), where the environment is
    frozen between invocations and a background thread may be frozen mid-call; background elsewhere.
    """
    return strategy_for(config.refresh, environ)


class _SessionState:
    """What belongs to one caller-supplied boto3 session (held by the registry, weakly keyed)."""

    __slots__ = ("clients", "connectors", "serial")

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self.clients: _Lru[tuple[str, AwsOptions], Any] = _Lru(4)
        self.connectors: _Lru[IamConfig, IamConnector] = _Lru(16)


class Registry:
    """Process-wide state of sqlalchemy-rs-iam. There is one, :data:`REGISTRY`; tests may make their own."""

    MAX_CLIENTS = 32
    MAX_CONNECTORS = 256

    def __init__(self) -> None:
        self.credentials: CredentialCache[CacheKey] = CredentialCache()
        self.endpoints: TtlCache[CacheKey, tuple[str, int]] = TtlCache()
        self.budget: ForcedRefreshBudget[Hashable] = ForcedRefreshBudget(clock=time.monotonic)
        self.identities = IdentityResolver()
        self._lock = threading.Lock()
        self._clients: _Lru[tuple[str, AwsOptions], Any] = _Lru(self.MAX_CLIENTS)
        self._connectors: _Lru[IamConfig, IamConnector] = _Lru(self.MAX_CONNECTORS)
        self._engines: weakref.WeakKeyDictionary[Any, IamConnector] = weakref.WeakKeyDictionary()
        # A caller's boto3 session -> its serial, clients and connect() connectors; nothing in a state refers
        # to the session, so the state goes when the caller drops the session.
        self._sessions: weakref.WeakKeyDictionary[Any, _SessionState] = weakref.WeakKeyDictionary()
        self._next_serial = 0
        self._stores: dict[str, HostStore] = {}  # cache=host: one per directory

    # --- connectors --------------------------------------------------------------------------------------------

    def new_connector(self, config: IamConfig, session: Any = None) -> IamConnector:
        """A connector with its own counters, wired to the shared caches (one per engine).

        An engine's connector keeps a boto3 ``session`` passed in alive (the engine needs it); the
        connectors of ``connect()`` hold it weakly (see :meth:`connector`).
        """
        return self._make_connector(config, session, strong=True)

    def connector(self, config: IamConfig, session: Any = None) -> IamConnector:
        """The shared connector of ``connect()`` calls with this configuration (and boto3 session)."""
        connectors = self._connectors if session is None else self._state_of(session).connectors
        with self._lock:
            found = connectors.find(config)
        if found is None:
            made = self._make_connector(config, session, strong=False)  # unlocked: reads AWS config files
            with self._lock:
                found = connectors.get_or_make(config, lambda: made)
        return found

    def _make_connector(self, config: IamConfig, session: Any, *, strong: bool) -> IamConnector:
        options = config.aws
        identify: Callable[[], Identity]
        clients: Callable[[Identity], AwsApi]
        if session is None:
            identify = lambda: self.identities.identify(options)  # noqa: E731
            clients = lambda who: self.clients(who, options)  # noqa: E731
        else:
            serial = self._state_of(session).serial
            ref = weakref.ref(session)
            kept = session if strong else None  # an engine keeps its session alive; connect() does not

            def live_session() -> Any:
                alive = kept if kept is not None else ref()
                if alive is None:  # only reachable through a connector whose session was dropped
                    raise ValueError("the boto3 session this connector was made for no longer exists")
                return alive

            identify = lambda: self.identities.for_session(options, serial, live_session().region_name)  # noqa: E731
            clients = lambda who: self.clients(who, options, live_session())  # noqa: E731
        return IamConnector(
            config, identify=identify, clients=clients, budget=self.budget, tier=self.tier(config)
        )

    def tier(self, config: IamConfig) -> Tier:
        """The process tier with this configuration's refresh strategy; for ``cache=host`` wrapped by the
        host tier (whose directory is checked here: an unsafe one raises ``ConfigurationError``)."""
        process = ProcessTier(self.credentials, self.endpoints, refresh_strategy(config))
        return HostTier(process, self.host_store(config)) if config.cache == "host" else process

    def host_store(self, config: IamConfig | None = None) -> HostStore:
        """The host cache (``cache=host``) of this OS user; its directory is checked when first opened."""
        directory = default_cache_dir()
        with self._lock:
            store = self._stores.get(str(directory))
        if store is None:
            # Waiting for another process's fetch is bounded by what that fetch may take at most.
            wait = (
                30.0
                if config is None
                else (config.aws.max_attempts * (config.aws.connect_timeout + config.aws.read_timeout) + 5.0)
            )
            made = HostStore(directory, wait=wait)
            with self._lock:
                store = self._stores.setdefault(str(directory), made)
        return store

    def register_engine(self, engine: Engine, connector: IamConnector) -> None:
        with self._lock:
            self._engines[engine] = connector

    def connector_for(self, engine: Engine | AsyncEngine) -> IamConnector:
        """The :class:`IamConnector` behind an engine created with ``plugin=rs_iam``."""
        target = getattr(engine, "sync_engine", engine)  # AsyncEngine wraps a sync Engine
        try:
            return self._engines[target]
        except (KeyError, TypeError):
            raise ValueError("this engine was not created with plugin=rs_iam") from None

    # --- identities and AWS clients ---------------------------------------------------------------------------

    def _state_of(self, session: Any) -> _SessionState:
        with self._lock:
            state = self._sessions.get(session)
            if state is None:
                self._next_serial += 1
                state = self._sessions[session] = _SessionState(self._next_serial)
            return state

    def clients(self, identity: Identity, options: AwsOptions, session: Any = None) -> AwsApi:
        """The AWS clients that sign as ``identity`` (built on first use; boto3 is imported here).

        Clients of a caller's boto3 session live exactly as long as that session.
        """
        from .aws import AwsClients  # boto3 loads on the first AWS call, not at import

        if session is None:
            with self._lock:
                return self._clients.get_or_make(  # type: ignore[no-any-return]
                    (identity.key, options), lambda: AwsClients(options, identity)
                )
        state = self._state_of(session)
        with self._lock:
            return state.clients.get_or_make(  # type: ignore[no-any-return]
                (identity.key, options), lambda: AwsClients(options, identity, weakref.ref(session))
            )

    # --- lifecycle --------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every cached credential, endpoint, AWS session and connector of ``connect()``.

        Engines keep working: their next connect reads the AWS configuration again and fetches anew.
        """
        with self._lock:
            self._clients.clear()
            self._connectors.clear()
            self._sessions.clear()
            self._stores.clear()
        self.credentials.clear()
        self.endpoints.clear()
        self.budget.clear()
        self.identities.clear()

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self.credentials.after_fork()
        self.endpoints.after_fork()
        self.budget.after_fork()
        self.identities.after_fork()
        for clients in self._clients.values():
            clients.after_fork()
        for store in self._stores.values():
            store.after_fork()
        for state in list(self._sessions.values()):
            for clients in state.clients.values():
                clients.after_fork()

    def sizes(self) -> Mapping[str, int]:
        """How many entries each map holds (for tests and ``rs-iam``)."""
        with self._lock:
            return {
                "credentials": len(self.credentials),
                "endpoints": len(self.endpoints),
                "clients": len(self._clients),
                "connectors": len(self._connectors),
                "engines": len(self._engines),
            }


REGISTRY = Registry()


def _after_fork_in_child() -> None:
    counters.after_fork()
    REGISTRY.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)  # the package's only fork hook


def reset() -> None:
    """Forget every cached credential, endpoint and AWS session in this process (see :class:`Registry`)."""
    REGISTRY.reset()


def connector_for(engine: Engine | AsyncEngine) -> IamConnector:
    """The :class:`IamConnector` behind an engine (or async engine) created with ``plugin=rs_iam``."""
    return REGISTRY.connector_for(engine)


def stats(engine: Engine | AsyncEngine) -> Mapping[str, int]:
    """Counters of an rs_iam engine: ``api_calls``, ``hits``, ``refreshes``, ``failures``, ``login_retries``.

    >>> stats(engine)["api_calls"]   # doctest: +SKIP
    1
    """
    result: CacheStats = REGISTRY.connector_for(engine).stats
    return result.snapshot()
