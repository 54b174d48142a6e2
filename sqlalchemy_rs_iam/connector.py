"""The one connect path every adapter uses: endpoint + credentials -> open -> recover once.

An :class:`IamConnector` holds one configuration and is handed its collaborators: how to tell which AWS
identity would sign now, how to reach AWS as that identity, the credential and endpoint caches, the budget
for forced refreshes and the counters of its owner. The adapters get them from the registry
(:mod:`sqlalchemy_rs_iam.registry`); unit tests pass fakes::

    connector = IamConnector(
        config,
        identify=lambda: Identity("test", "a test identity", "us-east-1"),
        clients=lambda identity: FakeAws(),            # fetch_credentials(config), resolve_endpoint(target)
        credentials=CredentialCache(), endpoints=TtlCache(),   # or tier=HostTier(ProcessTier(...), store)
        budget=ForcedRefreshBudget(clock=time.monotonic),
    )
    conn = connector.connect(lambda host, port, creds: redshift_connector.connect(
        host=host, port=port, database="dev", user=creds.user, password=creds.password))

Cache keys are the signing identity plus the configuration itself (see :class:`CacheKey`): two engines
share a credential only if they sign as the same identity and agree on every other parameter.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import threading
import traceback
from collections.abc import Callable, Hashable
from typing import Any, Literal, Protocol, TypeVar

from . import metrics
from .cache import CredentialCache, TtlCache
from .config import IamConfig, Target
from .counters import CacheStats
from .credentials import DbCredentials
from .identity import Identity
from .policy import ForcedRefreshBudget
from .refresh import RefreshMode, RefreshStrategy
from .tiers import Address, ProcessTier, Source, Tier

__all__ = ["AwsApi", "CacheKey", "IamConnector", "classify_connect_error"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class AwsApi(Protocol):
    """What the connector needs from AWS (:class:`sqlalchemy_rs_iam.aws.AwsClients`, or a fake)."""

    def fetch_credentials(self, config: IamConfig) -> DbCredentials: ...

    def resolve_endpoint(self, target: Target) -> tuple[str, int]: ...


class CacheKey:
    """A secret-free cache key: the signing identity, its region and a scope taken whole from the config.

    The hash is computed once, because a key is hashed on every connect.
    """

    __slots__ = ("_hash", "identity", "region", "scope")

    def __init__(self, identity: str, region: str, scope: Hashable) -> None:
        self.identity, self.region, self.scope = identity, region, scope
        self._hash = hash((identity, region, scope))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CacheKey)
            and self._hash == other._hash
            and (self.identity, self.region, self.scope) == (other.identity, other.region, other.scope)
        )

    def __repr__(self) -> str:
        return f"CacheKey({self.identity!r}, {self.region!r}, {self.scope!r})"


def credential_scope(config: IamConfig) -> Hashable:
    """Everything in the configuration except where to connect and how refreshes are scheduled: any
    parameter that may change what AWS issues (and any added later) separates credentials by default."""
    return dataclasses.replace(config, host=None, port=None, refresh="auto")


def endpoint_scope(config: IamConfig) -> Hashable:
    return ("endpoint", config.aws, config.target)


@dataclasses.dataclass(frozen=True)
class _Binding:
    """The keys and AWS calls of one identity, rebuilt only when the identity changes."""

    identity: Identity
    credential_key: CacheKey
    endpoint_key: CacheKey
    credential_source: Source[DbCredentials]  # the tier's handle on the key and its AWS call
    endpoint_source: Source[Address]


ConnectErrorKind = Literal["auth", "network"]

# SQLSTATE class 28 = invalid authorization (28P01 wrong/expired password, 28000 e.g. role missing).
_AUTH_SQLSTATES = ("28P01", "28000")
_AUTH_MESSAGE = re.compile(r"password authentication failed|authentication failed for user", re.IGNORECASE)
_NETWORK_MESSAGE = re.compile(
    r"connection refused|could not connect|could not translate host name|name or service not known|"
    r"no route to host|network is unreachable|timed out|timeout expired|communication error",
    re.IGNORECASE,
)


def classify_connect_error(exc: BaseException) -> ConnectErrorKind | None:
    """``auth`` if the database refused the credentials, ``network`` if the host did not answer, else None.

    Driver-agnostic: reads the SQLSTATE where the driver exposes one (psycopg2 ``pgcode``, psycopg 3 /
    asyncpg ``sqlstate``, redshift_connector's error dict) and falls back to the message::

        >>> classify_connect_error(ConnectionRefusedError(111, "Connection refused"))
        'network'
    """
    code: Any = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)
    if code is None and exc.args and isinstance(exc.args[0], dict):
        code = exc.args[0].get("C")
    if code in _AUTH_SQLSTATES:
        return "auth"
    message = str(exc)
    if _AUTH_MESSAGE.search(message) or any(f"'{c}'" in message for c in _AUTH_SQLSTATES):
        return "auth"
    if isinstance(exc, OSError) or _NETWORK_MESSAGE.search(message):
        return "network"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc and isinstance(cause, OSError):
        return "network"
    return None


def _call(fn: Callable[[], Any]) -> Any:
    return fn()


def scrub_traceback(exc: BaseException, stop: BaseException | None = None) -> None:
    """Clear the local variables of every finished frame in ``exc``'s traceback and chained causes.

    A failed login leaves the password in the frames below the connector: the adapter's parameter dict, and
    the drivers' own copies (psycopg2's and psycopg's DSN string, redshift_connector's encoded password).
    Error reporters that record locals (Sentry, ``pytest -l``, ``capture_locals=True``) would show them.
    Frames still running (the connector's and its callers') are left alone; ``stop`` is the exception that
    was already being handled when the connect started, whose frames are not ours to clear. Type, message,
    cause and the traceback's lines are kept::

        try:
            conn = open_(host, port, creds)
        except Exception as exc:
            scrub_traceback(exc)
            raise
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or e is stop or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)  # skips (RuntimeError) frames that are still executing
        todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]  # exception groups too


class IamConnector:
    """Credentials and endpoint for one configuration, with the recovery policy of a failed login.

    ``stats`` counts on behalf of this connector's owner (an engine): API calls, cache hits, refreshes,
    failures and login retries. The identity is read when the connector is made and again whenever its
    cache entry is cold (and on :meth:`recheck_identity`); a warm entry is served without reading it.
    """

    def __init__(
        self,
        config: IamConfig,
        *,
        identify: Callable[[], Identity],
        clients: Callable[[Identity], AwsApi],
        budget: ForcedRefreshBudget[Hashable],
        tier: Tier | None = None,
        credentials: CredentialCache[Any] | None = None,
        endpoints: TtlCache[Any, tuple[str, int]] | None = None,
        refresh: RefreshStrategy | None = None,
        stats: CacheStats | None = None,
    ) -> None:
        self.config = config
        if tier is None:  # the process tier over the given caches (unit tests, benchmarks)
            tier = ProcessTier(
                CredentialCache() if credentials is None else credentials,  # (an empty cache is falsy)
                TtlCache() if endpoints is None else endpoints,
                refresh,
            )
        self._tier = tier
        self.stats = stats if stats is not None else CacheStats()
        self._identify = identify
        self._clients = clients
        self._budget = budget
        self._credential_scope = credential_scope(config)
        self._endpoint_scope = endpoint_scope(config)
        self._binding = self._bind(identify())  # a missing profile or region fails here, not at connect
        metrics.bind(self.stats, config, self._binding.identity.region)

    def __repr__(self) -> str:
        b = self._binding
        return (
            f"<IamConnector {self.config.target.describe()} in {b.identity.region} "
            f"db={self.config.database!r} as {b.identity.label}>"
        )

    # --- identity and keys -----------------------------------------------------------------------------------

    @property
    def identity(self) -> Identity:
        """The AWS identity this connector currently signs as."""
        return self._binding.identity

    @property
    def credential_key(self) -> CacheKey:
        return self._binding.credential_key

    @property
    def refresh_mode(self) -> RefreshMode:
        """How refreshes run: ``background`` (a thread) or ``lazy`` (on the caller's thread)."""
        return self._tier.refresh_mode

    def aws(self) -> AwsApi:
        """The AWS clients calls go through now (they sign as :attr:`identity`)."""
        return self._clients(self._binding.identity)

    def recheck_identity(self) -> Identity:
        """Read the AWS configuration again; later calls sign as (and are keyed by) what it names now."""
        return self._rebind().identity

    def _rebind(self) -> _Binding:
        who = self._identify()
        current = self._binding
        if who == current.identity:
            return current
        log.info("AWS identity for %s is now %s", self.config.target.describe(), who.label)
        self._binding = self._bind(who)
        return self._binding

    def _bind(self, who: Identity) -> _Binding:
        config, clients, stats, tier = self.config, self._clients, self.stats, self._tier

        def fetch() -> DbCredentials:
            creds = clients(who).fetch_credentials(config)
            if creds.expiration <= creds.fetched_at + tier.policy.refetch_interval(creds):
                # Answered while this process was frozen (SIGSTOP, AWS Lambda), expired before we read it.
                log.info("credentials for %s expired in flight; fetching again", config.target.describe())
                creds = clients(who).fetch_credentials(config)
            return creds

        def resolve() -> tuple[str, int]:
            stats.incr("api_calls")
            return clients(who).resolve_endpoint(config.target)

        credential_key = CacheKey(who.key, who.region, self._credential_scope)
        endpoint_key = CacheKey(who.key, who.region, self._endpoint_scope)
        where = f"{config.target.describe()} in {who.region}"  # secret-free: what `rs-iam cache list` shows
        return _Binding(
            who,
            credential_key,
            endpoint_key,
            tier.credential_source(
                credential_key,
                fetch,
                f"credentials: {where}, database {config.database!r}, as {who.label}",
                stats,
            ),
            tier.endpoint_source(endpoint_key, resolve, f"endpoint: {where}, as {who.label}", stats),
        )

    # --- credentials and endpoint ---------------------------------------------------------------------------

    def credentials(self) -> DbCredentials:
        """Cached credentials, fetched or refreshed as the time policy says (may block on AWS)."""
        found = self._tier.credentials(self._binding.credential_source, self.stats, block=False)
        if found is not None:
            return found
        b = self._rebind()  # a cold entry sees the AWS configuration as it is now
        creds = self._tier.credentials(b.credential_source, self.stats, block=True)
        assert creds is not None  # a blocking call returns a value or raises
        return creds

    def cached_credentials(self) -> DbCredentials | None:
        """Credentials if they can be had without blocking (for event loops); else None."""
        return self._tier.credentials(self._binding.credential_source, self.stats, block=False)

    def invalidate(self, credentials: DbCredentials | None = None) -> None:
        """Drop the cached credential (only if it is still ``credentials``, when given), in every tier."""
        self._tier.refused(self._binding.credential_source, credentials, self.stats)

    @property
    def needs_lookup(self) -> bool:
        """True when host and port come from GetWorkgroup / DescribeClusters (no explicit host)."""
        return self.config.host is None

    def endpoint(self) -> tuple[str, int]:
        """(host, port): the explicit one from the configuration, else looked up (cached)."""
        c = self.config
        if c.host is not None:
            return c.host, c.port or 5439
        found = self._tier.endpoint(self._binding.endpoint_source, self.stats, block=False)
        if found is None:
            found = self._tier.endpoint(self._rebind().endpoint_source, self.stats, block=True)
            assert found is not None
        return found[0], c.port or found[1]

    def cached_endpoint(self) -> tuple[str, int] | None:
        """(host, port) if known without waiting on AWS (explicit, or looked up and cached); else None."""
        c = self.config
        if c.host is not None:
            return c.host, c.port or 5439
        found = self._tier.endpoint(self._binding.endpoint_source, self.stats, block=False)
        return None if found is None else (found[0], c.port or found[1])

    def _both(self) -> tuple[tuple[str, int], DbCredentials]:
        """Look the endpoint up on a helper thread while fetching the credential on this one."""
        found: list[tuple[str, int]] = []
        failed: list[BaseException] = []

        def lookup() -> None:
            try:
                found.append(self.endpoint())
            except BaseException as exc:  # re-raised below, on the caller's thread
                failed.append(exc)

        helper = threading.Thread(target=lookup, name="rs-iam-lookup", daemon=True)
        helper.start()
        try:
            creds = self.credentials()
        finally:
            helper.join()
            if failed:  # the lookup's error first, as if it had run first: a missing target explains most
                raise failed[0]
        return found[0], creds

    def _may_replace(self, b: _Binding, refused: DbCredentials) -> bool:
        """A refused credential that is still cached costs a forced refresh from the budget; one already
        replaced by another caller (concurrent refusals of the same password) is retried for free."""
        key = b.credential_key
        if not self._tier.holds(b.credential_source, refused):
            return True
        if self._budget.take(("login", key)):
            return True
        log.info(
            "login to %s refused again; not fetching new credentials for %.0f s (forced-refresh budget)",
            self.config.target.describe(),
            self._budget.next_token_in(("login", key)),
        )
        return False

    # --- the one connect path ---------------------------------------------------------------------------------

    def connect(
        self,
        open_: Callable[[str, int, DbCredentials], T],
        *,
        call_blocking: Callable[[Callable[[], Any]], Any] | None = None,
    ) -> T:
        """Open a connection with ``open_(host, port, credentials)``.

        A login refused with cached credentials is retried once with freshly fetched ones; a looked-up host
        that does not answer is looked up again once. Both are forced refreshes, limited per key by the
        budget (2 at once, then 1 per 30 s): past it the database's error is raised at once, without an AWS
        call. Any other error, or a second failure, propagates. ``call_blocking`` runs whatever may wait on
        AWS (asyncio adapters pass one that runs it in a worker thread); what the caches can hand out at
        once skips it.
        """
        run = call_blocking or _call
        outer = sys.exc_info()[1]  # being handled by a caller: its frames are not this connect's to clear
        try:
            return self._connect(open_, run)
        except Exception as exc:
            # Every failure below has the password in some frame's locals (see scrub_traceback).
            scrub_traceback(exc, outer)
            raise

    def _connect(
        self,
        open_: Callable[[str, int, DbCredentials], T],
        run: Callable[[Callable[[], Any]], Any],
    ) -> T:
        endpoint, creds = self.cached_endpoint(), self.cached_credentials()
        if endpoint is None and creds is None and self.needs_lookup:
            endpoint, creds = run(self._both)  # cold: one AWS round trip, not two in a row
        if endpoint is None:
            endpoint = run(self.endpoint) if self.needs_lookup else self.endpoint()
        if creds is None:
            creds = run(self.credentials)
        host, port = endpoint
        try:
            return open_(host, port, creds)
        except Exception as exc:
            kind = classify_connect_error(exc)
            b = self._binding
            if kind == "auth" and self._may_replace(b, creds):
                log.info(
                    "login as %s to %s refused; retrying once with new credentials",
                    creds.user,
                    self.config.target.describe(),
                )
                self.stats.incr("login_retries")
                self._tier.refused(b.credential_source, creds, self.stats)
                return open_(host, port, run(self.credentials))
            if kind == "network" and self.needs_lookup and self._budget.take(("lookup", b.endpoint_key)):
                self._tier.unreachable(b.endpoint_source)
                new_host, new_port = run(self.endpoint)
                if (new_host, new_port) != (host, port):
                    log.info(
                        "%s moved to %s:%s; reconnecting", self.config.target.describe(), new_host, new_port
                    )
                    return open_(new_host, new_port, creds)
            raise
