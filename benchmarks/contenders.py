"""The ways to log in to Amazon Redshift with IAM that the benchmarks compare, written as users write them.

* ``rc_iam``     -- redshift_connector's own IAM (``iam=True``): per connect it builds a ``boto3.Session`` and
  a client, then looks in its class-level credential dict (no lock, no margin: served until ``Expiration``).
* ``naive``      -- the SQLAlchemy ``do_connect`` recipe: one boto3 client, ``GetCredentials`` on every connect.
* ``ttl_lock`` / ``ttl_nolock`` -- a hand-rolled dict cache, reused until 60 s before ``expiration``, with a
  lock held around check-and-fetch or without one.
* ``plugin``     -- ``?plugin=rs_iam`` (this package).
* ``static`` / ``iam_fixed`` -- baselines without any IAM work per connect: the stand-in's static-password
  user, and an ``IAM:`` user whose issued password is fetched once and then put in the URL like a static one
  (same login path through the Redshift front as every IAM contender).

Every contender connects over TLS with redshift_connector's defaults (``ssl=True``), as against Redshift:
the stand-in's front terminates TLS with its own CA, which ``rs.aws_env()`` makes trusted (``SSL_CERT_FILE``).
So redshift_connector's ``iam=True`` runs exactly as shipped (it refuses ``ssl=False`` with IAM).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import boto3
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

Clock = Callable[[], float]


# --- the hand-rolled recipes -------------------------------------------------------------------------------


class HandRolledTtlCache:
    """What many teams write: credentials per (workgroup, database) in a dict, reused until ``safety``
    seconds before they expire. With ``lock=True`` one lock is held around check-and-fetch (callers for
    every key wait while one fetches); without it concurrent misses each call AWS."""

    def __init__(self, client: Any, *, safety: float = 60.0, lock: bool = True, clock: Clock = time.time):
        self.client = client
        self.safety = safety
        self.clock = clock
        self._cache: dict[tuple[str, str], tuple[str, str, float]] = {}
        self._lock: Any = threading.Lock() if lock else contextlib.nullcontext()

    def get(self, workgroup: str, database: str) -> tuple[str, str]:
        key = (workgroup, database)
        with self._lock:
            hit = self._cache.get(key)
            if hit is None or self.clock() >= hit[2] - self.safety:
                r = self.client.get_credentials(workgroupName=workgroup, dbName=database)
                hit = (r["dbUser"], r["dbPassword"], r["expiration"].timestamp())
                self._cache[key] = hit
            return hit[0], hit[1]

    def clear(self) -> None:
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)


def serverless_client(rs: RedshiftStandIn, endpoint_url: str | None = None) -> Any:
    return boto3.client(
        "redshift-serverless", region_name=rs.region, endpoint_url=endpoint_url or rs.aws_endpoint_url
    )


def _plain_url(rs: RedshiftStandIn, user: str | None = None, password: str | None = None) -> str:
    auth = ""
    if user is not None:
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None else "") + "@"
    return f"redshift+redshift_connector://{auth}{rs.host}:{rs.port}/{rs.database}"  # driver's TLS defaults


def naive_engine(rs: RedshiftStandIn, client: Any) -> Engine:
    """SQLAlchemy's documented token recipe, applied to Redshift Serverless: no cache at all."""
    engine = create_engine(_plain_url(rs), poolclass=NullPool)
    workgroup, database = rs.workgroup, rs.database

    @event.listens_for(engine, "do_connect")
    def provide_token(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        creds = client.get_credentials(workgroupName=workgroup, dbName=database)
        cparams["user"] = creds["dbUser"]
        cparams["password"] = creds["dbPassword"]

    return engine


def ttl_engine(rs: RedshiftStandIn, cache: HandRolledTtlCache) -> Engine:
    engine = create_engine(_plain_url(rs), poolclass=NullPool)
    workgroup, database = rs.workgroup, rs.database

    @event.listens_for(engine, "do_connect")
    def provide_token(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        cparams["user"], cparams["password"] = cache.get(workgroup, database)

    return engine


# --- redshift_connector iam=True ---------------------------------------------------------------------------


def rc_iam_kwargs(rs: RedshiftStandIn, endpoint_url: str | None = None) -> dict[str, Any]:
    """``redshift_connector.connect`` keywords for its own IAM against the stand-in's workgroup.

    ``host``/``port`` are given (as a user passes the workgroup endpoint), so it makes no GetWorkgroup call.
    """
    return {
        "iam": True,
        "ssl": True,
        "is_serverless": True,
        "serverless_work_group": rs.workgroup,
        "host": rs.host,
        "port": rs.port,
        "database": rs.database,
        "region": rs.region,
        "endpoint_url": endpoint_url or rs.aws_endpoint_url,
    }


def rc_iam_engine(rs: RedshiftStandIn) -> Engine:
    kwargs = rc_iam_kwargs(rs)
    return create_engine(
        f"redshift+redshift_connector://{rs.host}:{rs.port}/{rs.database}",
        connect_args={k: v for k, v in kwargs.items() if k not in ("host", "port", "database")},
        poolclass=NullPool,
    )


@contextlib.contextmanager
def redshift_connector_without_database() -> Iterator[None]:
    """``redshift_connector.connect`` does all its work (arguments, IAM) but opens no socket: returns None."""
    import redshift_connector

    original = redshift_connector.Connection
    redshift_connector.Connection = lambda *args, **kwargs: None
    try:
        yield
    finally:
        redshift_connector.Connection = original


@contextlib.contextmanager
def redshift_connector_in_fake_time(clock: Clock, client: Any) -> Iterator[None]:
    """For the simulated hours: redshift_connector's credential cache reads ``clock`` instead of the wall
    clock, and its per-connect boto3 client is replaced by ``client`` (built once: building it makes no API
    call, and its cost is measured separately, in real time)."""
    from redshift_connector import iam_helper

    class FakeDatetime(_dt.datetime):
        @classmethod
        def now(cls, tz: _dt.tzinfo | None = None) -> _dt.datetime:  # type: ignore[override]
            return _dt.datetime.fromtimestamp(clock(), tz)

    shim = types.SimpleNamespace(datetime=FakeDatetime, timedelta=_dt.timedelta, timezone=_dt.timezone)
    original_dt = iam_helper.datetime
    original_client = iam_helper.IamHelper.__dict__["get_boto3_redshift_client"]
    iam_helper.datetime = shim  # type: ignore[assignment]
    iam_helper.IamHelper.get_boto3_redshift_client = staticmethod(lambda provider, info: client)
    try:
        yield
    finally:
        iam_helper.datetime = original_dt
        iam_helper.IamHelper.get_boto3_redshift_client = original_client


def clear_rc_cache() -> None:
    from redshift_connector.iam_helper import IamHelper

    IamHelper.credentials_cache.clear()


# --- the line-up -------------------------------------------------------------------------------------------


@dataclass
class Contender:
    """One way to connect. ``step`` is its credential step alone (what runs before the DB login);
    ``reset`` forgets every credential it cached (a cold start)."""

    key: str
    label: str
    engine: Engine
    step: Callable[[], Any]
    reset: Callable[[], None]
    iam: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def plugin_reset() -> None:
    sqlalchemy_rs_iam.reset()


def build_contenders(rs: RedshiftStandIn, *, ttl_safety: float = 60.0) -> dict[str, Contender]:
    """Every contender against ``rs`` (with ``rs.aws_env()`` applied, which also makes its CA trusted)."""
    client = serverless_client(rs)
    out: dict[str, Contender] = {}
    out["static"] = Contender(
        "static", "static password (baseline)", create_engine(rs.static_url(), poolclass=NullPool),
        lambda: None, lambda: None, iam=False,
    )  # fmt: skip
    issued = client.get_credentials(workgroupName=rs.workgroup, dbName=rs.database)
    out["iam_fixed"] = Contender(
        "iam_fixed", "IAM user, password fixed in URL (baseline)",
        create_engine(_plain_url(rs, issued["dbUser"], issued["dbPassword"]), poolclass=NullPool),
        lambda: None, lambda: None, iam=False,
    )  # fmt: skip

    rc_kwargs = rc_iam_kwargs(rs)

    def rc_step() -> None:
        import redshift_connector

        with redshift_connector_without_database():
            redshift_connector.connect(**rc_kwargs)

    out["rc_iam"] = Contender(
        "rc_iam", "redshift_connector iam=True", rc_iam_engine(rs), rc_step, clear_rc_cache
    )
    out["naive"] = Contender(
        "naive", "do_connect, GetCredentials every connect", naive_engine(rs, client),
        lambda: client.get_credentials(workgroupName=rs.workgroup, dbName=rs.database), lambda: None,
    )  # fmt: skip
    for lock in (False, True):
        cache = HandRolledTtlCache(client, safety=ttl_safety, lock=lock)
        key = "ttl_lock" if lock else "ttl_nolock"
        label = f"hand-rolled TTL cache ({'lock' if lock else 'no lock'})"
        out[key] = Contender(
            key, label, ttl_engine(rs, cache),
            lambda cache=cache: cache.get(rs.workgroup, rs.database), cache.clear, extra={"cache": cache},
        )  # fmt: skip
    plugin = create_engine(rs.url(), poolclass=NullPool)
    connector = sqlalchemy_rs_iam.connector_for(plugin)
    out["plugin"] = Contender(
        "plugin", "sqlalchemy-rs-iam", plugin, connector.credentials, plugin_reset,
        extra={"connector": connector},
    )  # fmt: skip
    return out
