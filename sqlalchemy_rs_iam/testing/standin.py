"""The local Redshift stand-in: real PostgreSQL + Redshift wire front + AWS API emulator, wired together.

What it sets up (all on 127.0.0.1, all removed again at :meth:`RedshiftStandIn.stop`):

* a PostgreSQL server (:func:`~sqlalchemy_rs_iam.testing.postgres.provision_postgres`) with database
  ``dev``, a small ``public.sales`` table everyone may read, DB user ``alice``, group ``analysts`` and a
  static-password user ``static_user`` (baseline without IAM);
* a :class:`~sqlalchemy_rs_iam.testing.front.RedshiftFront` in front of it that only lets IAM users in with
  live issued credentials, and speaks TLS with a throwaway CA made for this stand-in (``trustme``): the
  server certificate names ``localhost``, ``127.0.0.1``, ``::1``, the workgroup's and cluster's Redshift
  endpoint names and their custom domains. :attr:`RedshiftStandIn.ca_file` is the CA;
  :meth:`RedshiftStandIn.tls_env` the environment that makes every driver trust it (``tls=False`` starts a
  plain front instead);
* an :class:`~sqlalchemy_rs_iam.testing.emulator.AwsEmulator` (redshift-serverless, redshift, sts) knowing
  serverless workgroup ``analytics`` (custom domain ``sql.analytics.example.com``), provisioned cluster
  ``etl-cluster`` (custom domain ``sql.etl.example.com``) -- both endpoints point at the front -- two IAM
  users and the assumable role ``arn:aws:iam::123456789012:role/etl-role``;
* a shared AWS config + credentials file with profiles ``default`` (= ``rs-iam-a``), ``rs-iam-a`` (IAM user
  ``alice-dev``), ``rs-iam-b`` (IAM user ``bob-ops``) and ``rs-iam-etl`` (assumes ``etl-role`` from
  ``rs-iam-a``); :meth:`~RedshiftStandIn.aws_env` gives the environment that selects them.

Example::

    from sqlalchemy import create_engine, text
    from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

    with RedshiftStandIn() as rs:
        os.environ.update(rs.aws_env())                 # includes rs.tls_env(): SSL_CERT_FILE, PGSSLROOTCERT
        engine = create_engine(rs.url())                # serverless workgroup "analytics", driver TLS defaults
        engine2 = create_engine(rs.url("psycopg2", cluster="etl-cluster", user="alice", db_groups="analysts"))
        with engine.connect() as conn:
            conn.execute(text("select count(*) from sales"))
        rs.emulator.max_lifetime = 60                   # short-lived credentials from now on
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote, urlencode

from psycopg2 import sql

from .postgres import PostgresRoleAdmin, PostgresServer, Reaper, md5_password_hash, provision_postgres
from .store import CredentialStore

if TYPE_CHECKING:
    from .emulator import AwsEmulator
    from .front import RedshiftFront

__all__ = ["AwsIdentity", "RedshiftStandIn"]

log = logging.getLogger(__name__)

#: SQLAlchemy drivers :meth:`RedshiftStandIn.url` knows: URL scheme, the query parameter that names a CA file
#: for the driver (``None``: the driver reads the default store, i.e. ``SSL_CERT_FILE``), and the query that
#: turns TLS off (only used for a stand-in started with ``tls=False``).
DRIVERS: dict[str, tuple[str, str | None, dict[str, str]]] = {
    "redshift_connector": ("redshift+redshift_connector", None, {"ssl": "false"}),
    # sqlalchemy-redshift passes its own Redshift CA bundle as sslrootcert; a URL sslrootcert overrides it.
    "psycopg2": ("redshift+psycopg2", "sslrootcert", {"sslmode": "disable"}),
    "postgresql+psycopg2": ("postgresql+psycopg2", "sslrootcert", {"sslmode": "disable"}),
    "psycopg": ("postgresql+psycopg", "sslrootcert", {"sslmode": "disable"}),
    "asyncpg": ("postgresql+asyncpg", "sslrootcert", {"ssl": "disable"}),
}


@dataclass(frozen=True)
class AwsIdentity:
    """Long-term AWS keys the emulator accepts, and the profile name they have in the stand-in's files."""

    profile: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    principal: str
    kind: Literal["user", "role"] = "user"


class RedshiftStandIn:
    """A local Amazon Redshift (Serverless + provisioned) with IAM, for tests, demos and users' own tests.

    Parameters: ``region``; ``database`` (the database clients use; on a shared server from
    ``RS_IAM_TEST_POSTGRES_DSN`` a unique suffix is added -- read :attr:`database`); ``workgroup`` /
    ``cluster`` and their custom domains; ``aws_port`` / ``db_port`` (0 = free port) for the emulator and the
    front; ``tls`` (default True: the front terminates TLS with a stand-in CA; False: a plain front, and
    :meth:`url` then carries each driver's TLS opt-out); ``max_lifetime`` caps issued credential lifetimes (seconds); ``postgres`` to reuse a server you
    provisioned (then it is not stopped by us); ``clock`` for the emulator and the store.

    Attributes after :meth:`start`: :attr:`postgres`, :attr:`front`, :attr:`emulator`, :attr:`store`,
    :attr:`roles` (the :class:`PostgresRoleAdmin`), :attr:`region`, :attr:`workgroup`, :attr:`cluster`,
    :attr:`workgroup_domain`, :attr:`cluster_domain`, :attr:`database`, :attr:`account_id`,
    :attr:`identities` (profile -> :class:`AwsIdentity`), :attr:`role_arn`, :attr:`role_principal`,
    :attr:`db_user` (``alice``), :attr:`db_group` (``analysts``), :attr:`static_user`,
    :attr:`static_password`, :attr:`aws_config_file`, :attr:`aws_credentials_file`, :attr:`host` / :attr:`port`
    (the front), :attr:`aws_endpoint_url`, :attr:`ca_file` / :attr:`trust_file` (TLS mode).
    """

    account_id = "123456789012"
    role_arn = "arn:aws:iam::123456789012:role/etl-role"
    role_principal = "etl-role"
    db_user = "alice"
    db_group = "analysts"
    static_user = "static_user"

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        database: str = "dev",
        workgroup: str = "analytics",
        cluster: str = "etl-cluster",
        workgroup_domain: str = "sql.analytics.example.com",
        cluster_domain: str = "sql.etl.example.com",
        aws_port: int = 0,
        db_port: int = 0,
        max_lifetime: float | None = None,
        postgres: PostgresServer | None = None,
        clock: Callable[[], float] = time.time,
        tls: bool = True,
    ) -> None:
        self.region = region
        self.tls = tls
        self.requested_database = database
        self.database = database
        self.workgroup = workgroup
        self.cluster = cluster
        self.workgroup_domain = workgroup_domain
        self.cluster_domain = cluster_domain
        self._aws_port = aws_port
        self._db_port = db_port
        self._initial_max_lifetime = max_lifetime
        self._clock = clock
        self._own_postgres = postgres is None
        self._given_postgres = postgres
        self.store = CredentialStore(clock=clock)
        self.static_password = secrets.token_hex(12)
        self.identities: dict[str, AwsIdentity] = {
            "rs-iam-a": AwsIdentity(
                "rs-iam-a", "AKIARSIAMA" + _key_suffix(), secrets.token_hex(20), "alice-dev"
            ),
            "rs-iam-b": AwsIdentity(
                "rs-iam-b", "AKIARSIAMB" + _key_suffix(), secrets.token_hex(20), "bob-ops"
            ),
        }
        self._postgres: PostgresServer | None = None
        self._front: RedshiftFront | None = None
        self._emulator: AwsEmulator | None = None
        self.roles: PostgresRoleAdmin | None = None
        #: The front's server-side TLS context (TLS mode, after start): for extra fronts a test builds that
        #: should present the same certificate.
        self.server_ssl_context: ssl.SSLContext | None = None
        self._tmpdir: Path | None = None
        self._reaper: Reaper | None = None
        self._lock = threading.RLock()
        self._started = False
        self._created_database = False

    def __repr__(self) -> str:
        state = f"front={self.host}:{self.port} aws={self.aws_endpoint_url}" if self._started else "stopped"
        return f"<RedshiftStandIn region={self.region} workgroup={self.workgroup} cluster={self.cluster} {state}>"

    # -- accessors (raise clearly before start) ------------------------------------------------------------
    @property
    def postgres(self) -> PostgresServer:
        return _need(self._postgres, "postgres")

    @property
    def front(self) -> RedshiftFront:
        return _need(self._front, "front")

    @property
    def emulator(self) -> AwsEmulator:
        return _need(self._emulator, "emulator")

    @property
    def host(self) -> str:
        """Host of the Redshift front (what workgroup / cluster endpoints resolve to)."""
        return self.front.host

    @property
    def port(self) -> int:
        """Port of the Redshift front."""
        return self.front.port

    @property
    def aws_endpoint_url(self) -> str:
        """Base URL of the AWS emulator (all three services answer there)."""
        return self.emulator.url

    @property
    def aws_config_file(self) -> Path:
        return _need(self._tmpdir, "aws files") / "config"

    @property
    def aws_credentials_file(self) -> Path:
        return _need(self._tmpdir, "aws files") / "credentials"

    @property
    def ca_file(self) -> Path:
        """PEM file of the stand-in's throwaway CA (TLS mode): what ``sslrootcert=`` should name."""
        if not self.tls:
            raise RuntimeError("this stand-in runs a plain front (tls=False): there is no CA")
        return _need(self._tmpdir, "CA file") / "standin-ca.pem"

    @property
    def trust_file(self) -> Path:
        """PEM file with the stand-in CA plus certifi's public roots: a drop-in ``SSL_CERT_FILE`` that keeps
        other HTTPS in the process working while it makes the stand-in trusted."""
        if not self.tls:
            raise RuntimeError("this stand-in runs a plain front (tls=False): there is no CA")
        return _need(self._tmpdir, "trust file") / "trust-bundle.pem"

    @property
    def endpoint_names(self) -> tuple[str, ...]:
        """Every name the front's certificate carries (the first two are what URLs use)."""
        return (
            "127.0.0.1",
            "localhost",
            "::1",
            f"{self.workgroup}.{self.account_id}.{self.region}.redshift-serverless.amazonaws.com",
            f"{self.cluster}.{_CLUSTER_ID_SUFFIX}.{self.region}.redshift.amazonaws.com",
            self.workgroup_domain,
            self.cluster_domain,
        )

    @property
    def started(self) -> bool:
        return self._started

    # -- lifecycle -----------------------------------------------------------------------------------------
    def __enter__(self) -> RedshiftStandIn:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> RedshiftStandIn:
        """Provision PostgreSQL, start the front and the emulator, seed everything. Returns self."""
        from .emulator import AwsEmulator
        from .front import RedshiftFront

        with self._lock:
            if self._started:
                return self
            try:
                self._tmpdir = Path(tempfile.mkdtemp(prefix="rs-iam-standin-"))
                self._reaper = Reaper()  # removes the AWS files even if this process is killed
                self._reaper.add(self._tmpdir)
                self._postgres = self._given_postgres or provision_postgres()
                self.roles = PostgresRoleAdmin(self._postgres)
                self._seed_database()
                self._front = RedshiftFront(
                    self.store,
                    self._postgres.host,
                    self._postgres.port,
                    port=self._db_port,
                    ssl_context=self._make_tls() if self.tls else None,
                ).start()
                self._emulator = AwsEmulator(self.store, self.roles, port=self._aws_port, clock=self._clock)
                self._emulator.start()
                self._seed_aws()
                self._write_aws_files()
                self._started = True
            except BaseException:
                self._teardown()
                raise
        return self

    def stop(self) -> None:
        """Stop everything started by :meth:`start` and delete its temp files. Idempotent."""
        with self._lock:
            self._teardown()

    def _teardown(self) -> None:
        self._started = False
        errors: list[BaseException] = []
        emulator, self._emulator = self._emulator, None
        front, self._front = self._front, None
        pg, self._postgres = self._postgres, None
        if emulator is not None:
            _collect(errors, emulator.stop)
        if front is not None:
            _collect(errors, front.stop)
        if pg is not None:
            if self._own_postgres:
                _collect(errors, pg.stop)
            elif self._created_database:
                _collect(errors, lambda: pg.drop_database(self.database))
        self._created_database = False
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.close()
        if errors:
            raise errors[0]

    def _make_tls(self) -> ssl.SSLContext:
        """A fresh CA and server certificate for this stand-in; writes :attr:`ca_file` and :attr:`trust_file`."""
        import certifi
        import trustme

        ca = trustme.CA(organization_name="sqlalchemy-rs-iam stand-in")
        cert = ca.issue_cert(*self.endpoint_names)
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.trust_file.write_bytes(ca.cert_pem.bytes() + b"\n" + Path(certifi.where()).read_bytes())
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        cert.configure_cert(context)
        self.server_ssl_context = context
        return context

    # -- seeding -------------------------------------------------------------------------------------------
    def _seed_database(self) -> None:
        pg = _need(self._postgres, "postgres")
        roles = _need(self.roles, "roles")
        # A shared server (env DSN, or one passed in that others use) gets a private database name.
        if pg.owned and self._own_postgres:
            self.database = self.requested_database
        else:
            self.database = f"{self.requested_database}_{secrets.token_hex(4)}"
        pg.create_database(self.database)
        self._created_database = True
        roles.ensure_group(self.db_group)
        roles.ensure_login_role(self.db_user, self.store.role_password(self.db_user))
        # The static user logs in straight through the front (not managed), so it needs a real password.
        pg.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(self.static_user))
            if not roles.role_exists(self.static_user)
            else sql.SQL("ALTER ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(self.static_user)),
            (md5_password_hash(self.static_user, self.static_password),),
        )
        if self.static_user not in pg.created_roles:
            pg.created_roles.append(self.static_user)
        # Redshift lets every user create tables in public; PostgreSQL 15 no longer does.
        self.sql(
            """
            GRANT ALL ON SCHEMA public TO PUBLIC;
            CREATE TABLE public.sales (id int PRIMARY KEY, region text NOT NULL, amount numeric(10, 2));
            INSERT INTO public.sales VALUES (1, 'us-east-1', 100.00), (2, 'eu-west-1', 250.50),
                                            (3, 'us-east-1', 75.25);
            GRANT SELECT ON public.sales TO PUBLIC;
            """
        )

    def _seed_aws(self) -> None:
        emu = _need(self._emulator, "emulator")
        front = _need(self._front, "front")
        for ident in self.identities.values():
            emu.add_identity(
                ident.access_key_id,
                ident.secret_access_key,
                ident.principal,
                kind=ident.kind,
                account_id=self.account_id,
            )
        emu.add_role(self.role_arn, self.role_principal)
        emu.add_workgroup(
            self.workgroup,
            region=self.region,
            address=front.host,
            port=front.port,
            custom_domains=(self.workgroup_domain,),
            account_id=self.account_id,
        )
        emu.add_cluster(
            self.cluster,
            region=self.region,
            address=front.host,
            port=front.port,
            custom_domains=(self.cluster_domain,),
        )
        if self._initial_max_lifetime is not None:
            emu.max_lifetime = self._initial_max_lifetime

    def _write_aws_files(self) -> None:
        tmp = _need(self._tmpdir, "aws files")
        default = self.identities["rs-iam-a"]
        creds = [
            f"[default]\naws_access_key_id = {default.access_key_id}\n"
            f"aws_secret_access_key = {default.secret_access_key}\n"
        ]
        config = [f"[default]\nregion = {self.region}\n"]
        for ident in self.identities.values():
            creds.append(
                f"[{ident.profile}]\naws_access_key_id = {ident.access_key_id}\n"
                f"aws_secret_access_key = {ident.secret_access_key}\n"
            )
            config.append(f"[profile {ident.profile}]\nregion = {self.region}\n")
        config.append(
            f"[profile rs-iam-etl]\nregion = {self.region}\nrole_arn = {self.role_arn}\n"
            "source_profile = rs-iam-a\nrole_session_name = rs-iam-standin\n"
        )
        for name, parts in (("credentials", creds), ("config", config)):
            path = tmp / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(parts))

    # -- helpers for tests ---------------------------------------------------------------------------------
    def aws_env(self, profile: str | None = None) -> dict[str, str]:
        """Environment variables that point boto3 at the stand-in's files and emulator.

        Selects the ``default`` profile unless ``profile`` is given (``rs-iam-a``, ``rs-iam-b``,
        ``rs-iam-etl``). ``AWS_ENDPOINT_URL`` sends every AWS call to the emulator even from code that
        does not pass ``aws_endpoint_url``. Remove every other ``AWS_*`` variable (see
        :data:`AWS_ENV_TO_CLEAR`) so real credentials cannot leak in -- the ``rs_iam_env`` fixture does.
        """
        if not self._started:
            raise RuntimeError("RedshiftStandIn is not started")
        env = {
            "AWS_CONFIG_FILE": str(self.aws_config_file),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.aws_credentials_file),
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        if profile is not None:
            if profile not in (*self.identities, "default", "rs-iam-etl"):
                raise ValueError(f"unknown profile {profile!r}")
            env["AWS_PROFILE"] = profile
        env.update(self.tls_env())
        return env

    def tls_env(self) -> dict[str, str]:
        """Environment variables that make the drivers trust the stand-in's CA ({} for a plain front).

        ``SSL_CERT_FILE`` (:attr:`trust_file`) is OpenSSL's default store, which redshift_connector loads
        next to its Redshift bundle; ``PGSSLROOTCERT`` (:attr:`ca_file`) is libpq's (psycopg2, psycopg 3)
        and asyncpg's default root file, which the rs_iam plugin also honours. :meth:`url` additionally
        names the CA with ``sslrootcert=``, because sqlalchemy-redshift's psycopg2 dialect passes its own
        bundle otherwise.
        """
        if not self.tls:
            return {}
        return {"SSL_CERT_FILE": str(self.trust_file), "PGSSLROOTCERT": str(self.ca_file)}

    def url(
        self,
        driver: str = "redshift_connector",
        *,
        workgroup: str | None = None,
        cluster: str | None = None,
        custom_domain: str | None = None,
        database: str | None = None,
        user: str | None = None,
        **params: Any,
    ) -> str:
        """An engine URL that logs in through the rs_iam plugin.

        Target: ``workgroup`` / ``cluster`` / ``custom_domain`` (default: the serverless workgroup). Use
        ``custom_domain=rs.workgroup_domain`` or ``rs.cluster_domain`` (plus ``service="provisioned"`` for
        the cluster's); since those names do not resolve, the URL then carries the front's host:port.
        ``user`` becomes the URL user name (the DbUser for clusters). Other keyword arguments become plugin
        or driver query parameters; booleans are written ``true``/``false``, sequences comma-joined.

        TLS: the URL carries no TLS setting, so each driver uses its default (redshift_connector
        ``ssl=True, sslmode=verify-full``; sqlalchemy-redshift's psycopg2 dialect ``verify-full``; the rs_iam
        plugin's ``verify-full`` for the ``postgresql+`` dialects). Libpq-style drivers get
        ``sslrootcert=`` naming :attr:`ca_file`; redshift_connector needs :meth:`tls_env` (part of
        :meth:`aws_env`). A plain stand-in (``tls=False``) adds the driver's TLS opt-out instead.

        >>> rs.url()  # doctest: +SKIP
        'redshift+redshift_connector:///dev?plugin=rs_iam&workgroup=analytics&region=us-east-1&aws_endpoint_url=http%3A%2F%2F127.0.0.1%3A41234'
        """
        scheme, tls = self._driver_query(driver)
        if not (workgroup or cluster or custom_domain):
            workgroup = self.workgroup
        query: dict[str, str] = {"plugin": "rs_iam"}
        for key, value in (("workgroup", workgroup), ("cluster", cluster), ("custom_domain", custom_domain)):
            if value:
                query[key] = value
        query["region"] = self.region
        query["aws_endpoint_url"] = self.aws_endpoint_url
        query.update(tls)
        query.update({k: _param(v) for k, v in params.items() if v is not None})
        netloc = f"{self.host}:{self.port}" if custom_domain else ""
        if user:
            netloc = f"{quote(user, safe='')}@{netloc}"
        return f"{scheme}://{netloc}/{quote(database or self.database, safe='')}?{urlencode(query)}"

    def static_url(self, driver: str = "redshift_connector", *, database: str | None = None) -> str:
        """URL of the static-password user through the front, without the plugin (baseline comparisons).

        In TLS mode it asks for ``verify-full`` explicitly where the driver's default is weaker (there is no
        plugin to do it)."""
        scheme, tls = self._driver_query(driver, plugin=False)
        user = quote(self.static_user, safe="")
        pw = quote(self.static_password, safe="")
        return (
            f"{scheme}://{user}:{pw}@{self.host}:{self.port}/{quote(database or self.database, safe='')}"
            f"?{urlencode(tls)}"
        )

    def _driver_query(self, driver: str, *, plugin: bool = True) -> tuple[str, dict[str, str]]:
        """URL scheme and the TLS query for ``driver`` on this stand-in."""
        scheme, root_param, opt_out = _driver(driver)
        if not self.tls:
            return scheme, dict(opt_out)
        query: dict[str, str] = {}
        if driver == "asyncpg" and not plugin:
            # asyncpg takes no sslrootcert argument (the plugin translates it); it reads PGSSLROOTCERT.
            return scheme, {"ssl": "verify-full"}
        if root_param is not None:
            query[root_param] = str(self.ca_file)
        if not plugin and scheme.startswith("postgresql+"):
            query["sslmode"] = "verify-full"
        return scheme, query

    def sql(
        self,
        statement: str | sql.Composable,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        database: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run admin SQL as the PostgreSQL superuser in the stand-in database (``database`` to override)."""
        return self.postgres.execute(
            statement, params if params is None else _params(params), dbname=database or self.database
        )

    def reset(self) -> None:
        """Back to a quiet emulator between tests: no faults or denials, the initial lifetime cap, an empty
        call log, and the stand-in's workgroup, cluster, identities and role as :meth:`start` made them
        (tests may have re-pointed or replaced them)."""
        emu = self.emulator
        emu.faults.clear()
        emu.faults.release_hangs()
        emu.max_lifetime = self._initial_max_lifetime
        emu.next_refresh_after = None
        emu.allow()
        self._seed_aws()
        emu.reset_calls()

    def live_postgres_pids(self) -> list[int]:
        """PIDs of processes (not zombies) belonging to a server this stand-in started; for leak tests."""
        pg = self._postgres
        return [] if pg is None else _server_pids(pg)


# ---------------------------------------------------------------------------------------------------------


_T = TypeVar("_T")


def _need(value: _T | None, what: str) -> _T:
    if value is None:
        raise RuntimeError(f"RedshiftStandIn is not started ({what} unavailable)")
    return value


def _key_suffix() -> str:
    return secrets.token_hex(5).upper()


def _collect(errors: list[BaseException], fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as exc:
        log.warning("stand-in cleanup step failed: %s", type(exc).__name__)
        errors.append(exc)


#: The random part of a provisioned cluster's endpoint name (``<cluster>.<this>.<region>.redshift.amazonaws.com``).
_CLUSTER_ID_SUFFIX = "c1a2b3c4d5e6"


def _driver(driver: str) -> tuple[str, str | None, dict[str, str]]:
    try:
        return DRIVERS[driver]
    except KeyError:
        raise ValueError(f"unknown driver {driver!r} (known: {', '.join(DRIVERS)})") from None


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value)
    return str(value)


def _params(params: Sequence[Any] | Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
    return dict(params) if isinstance(params, Mapping) else params


def _server_pids(pg: PostgresServer) -> list[int]:
    marker = getattr(pg, "tempdir", None)
    if marker is None:
        return []
    return find_live_pids(str(marker))


def find_live_pids(marker: str, names: Iterable[str] = ("postgres",)) -> list[int]:
    """PIDs of live (non-zombie) processes named like ``names`` whose command line or cwd contains ``marker``."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            state = stat.rsplit(")", 1)[1].split()[0]
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            if state in ("Z", "X") or not any(comm.startswith(n) for n in names):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = ""
            with contextlib.suppress(OSError):
                cwd = os.readlink(entry / "cwd")
            if marker in cmdline or marker in cwd:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found
