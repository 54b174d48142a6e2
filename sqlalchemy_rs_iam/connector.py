"""Glue between a validated configuration, the AWS layer and the process-wide caches.

One :class:`IamConnector` per engine (or per ``connect()`` configuration). Its :meth:`IamConnector.connect`
is what every adapter calls: resolve host/port (cached), take credentials from the cache, open the driver
connection, and recover once from a login the database refused (revoked password, clock skew) or from a
resolved host that no longer answers.

Example::

    connector = IamConnector(parse_config({"workgroup": "analytics", "region": "us-east-1"}, database="dev"))
    conn = connector.connect(lambda host, port, creds: redshift_connector.connect(
        host=host, port=port, database="dev", user=creds.user, password=creds.password))
    connector.stats.snapshot()   # {'api_calls': 1, 'hits': 0, ...}
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .aws import AwsClients, clients_for
from .cache import CacheStats, CredentialCache, TtlCache
from .config import IamConfig, Target
from .credentials import DbCredentials

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class CredentialKey:
    """What makes two credentials interchangeable. Names and ids only, never a secret."""

    identity: str
    region: str
    endpoint_url: str | None  # another AWS endpoint (a proxy, a local emulator) issues other credentials
    target: Target
    database: str
    db_user: str | None
    auto_create: bool
    db_groups: tuple[str, ...]
    duration_seconds: int


@dataclass(frozen=True)
class EndpointKey:
    identity: str
    region: str
    endpoint_url: str | None
    target: Target


#: Process-wide caches: every engine and connect() call in this process shares them.
CREDENTIALS: CredentialCache[CredentialKey] = CredentialCache()
ENDPOINTS: TtlCache[EndpointKey, tuple[str, int]] = TtlCache()

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
    asyncpg ``sqlstate``, redshift_connector's error dict) and falls back to the message.
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


class IamConnector:
    """Credentials and endpoint for one configuration, with the login-retry policy.

    ``stats`` counts on behalf of this connector's owner (an engine): API calls, cache hits, refreshes,
    failures and login retries.
    """

    def __init__(self, config: IamConfig, *, session: Any = None, stats: CacheStats | None = None) -> None:
        self.config = config
        self.clients: AwsClients = clients_for(config.aws, session)
        self.stats = stats if stats is not None else CacheStats()
        self._credential_key: CredentialKey | None = None
        self._endpoint_key_cached: EndpointKey | None = None

    def __repr__(self) -> str:
        return f"<IamConnector {self.config.target.describe()} in {self.clients.region} db={self.config.database!r}>"

    # --- keys ---------------------------------------------------------------------------------------------

    # Both keys are built once: the configuration is frozen and the identity, once computed, never changes
    # for these clients. Every connect then hashes a ready key instead of building and hashing a new one.
    def credential_key(self) -> CredentialKey:
        key = self._credential_key
        if key is None:
            c = self.config
            key = self._credential_key = CredentialKey(
                identity=self.clients.identity(),
                region=self.clients.region,
                endpoint_url=c.aws.endpoint_url,
                target=c.target,
                database=c.database,
                db_user=c.db_user,
                auto_create=c.auto_create,
                db_groups=c.db_groups,
                duration_seconds=c.duration_seconds,
            )
        return key

    def _endpoint_key(self) -> EndpointKey:
        key = self._endpoint_key_cached
        if key is None:
            key = self._endpoint_key_cached = EndpointKey(
                self.clients.identity(), self.clients.region, self.config.aws.endpoint_url, self.config.target
            )
        return key

    # --- credentials and endpoint ---------------------------------------------------------------------------

    def credentials(self) -> DbCredentials:
        """Cached credentials, fetched or refreshed as the cache's time policy says (may block on AWS)."""
        return CREDENTIALS.get(self.credential_key(), self._fetch, self.stats)

    def cached_credentials(self) -> DbCredentials | None:
        """Credentials if they can be had without blocking (for event loops); else None."""
        return CREDENTIALS.peek(self.credential_key(), self._fetch, self.stats)

    def _fetch(self) -> DbCredentials:
        return self.clients.fetch_credentials(self.config)

    def invalidate(self, credentials: DbCredentials | None = None) -> None:
        CREDENTIALS.invalidate(self.credential_key(), credentials)

    def endpoint(self) -> tuple[str, int]:
        """(host, port): the explicit one from the configuration, else GetWorkgroup / DescribeClusters (cached)."""
        c = self.config
        if c.host is not None:
            return c.host, c.port or 5439
        host, port = ENDPOINTS.get(self._endpoint_key(), self._resolve)
        return host, c.port or port

    def cached_endpoint(self) -> tuple[str, int] | None:
        """(host, port) if known without waiting on AWS (explicit, or resolved and cached); else None."""
        c = self.config
        if c.host is not None:
            return c.host, c.port or 5439
        found = ENDPOINTS.peek(self._endpoint_key(), self._resolve)
        return None if found is None else (found[0], c.port or found[1])

    def _resolve(self) -> tuple[str, int]:
        self.stats.incr("api_calls")
        return self.clients.resolve_endpoint(self.config.target)

    def endpoint_is_resolved(self) -> bool:
        return self.config.host is None

    # --- the one connect path every adapter uses --------------------------------------------------------------

    def connect(
        self,
        open_: Callable[[str, int, DbCredentials], T],
        *,
        call_blocking: Callable[[Callable[[], Any]], Any] | None = None,
    ) -> T:
        """Open a connection with ``open_(host, port, credentials)``.

        A login refused with cached credentials is retried once with freshly fetched ones; a resolved host
        that does not answer is re-resolved once. Any other error, or a second failure, propagates.
        ``call_blocking`` runs whatever may wait on AWS (asyncio adapters pass one that runs it in a worker
        thread, so the event loop never blocks); credentials the cache can hand out at once skip it.
        """
        run: Callable[[Callable[[], Any]], Any] = call_blocking or (lambda fn: fn())
        cached = self.cached_endpoint() if call_blocking is not None else None
        host, port = cached or (run(self.endpoint) if self.endpoint_is_resolved() else self.endpoint())
        creds = self.cached_credentials() if call_blocking is not None else None
        if creds is None:
            creds = run(self.credentials)
        try:
            return open_(host, port, creds)
        except Exception as exc:
            kind = classify_connect_error(exc)
            if kind == "auth":
                log.info(
                    "login as %s to %s refused; fetching new credentials and retrying once",
                    creds.user,
                    self.config.target.describe(),
                )
                self.stats.incr("login_retries")
                self.invalidate(creds)
                return open_(host, port, run(self.credentials))
            if kind == "network" and self.endpoint_is_resolved():
                ENDPOINTS.invalidate(self._endpoint_key())
                new_host, new_port = run(self.endpoint)
                if (new_host, new_port) != (host, port):
                    log.info(
                        "%s moved to %s:%s; reconnecting", self.config.target.describe(), new_host, new_port
                    )
                    return open_(new_host, new_port, creds)
            raise
