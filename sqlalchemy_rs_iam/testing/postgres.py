"""A real PostgreSQL server for the stand-in: found, or started and later removed without a trace.

:func:`provision_postgres` tries, in order:

1. ``RS_IAM_TEST_POSTGRES_DSN`` -- an existing server (superuser DSN, URL or ``key=value`` form). It is
   shared, so callers isolate themselves with :meth:`PostgresServer.create_database`; databases and roles
   created through this object are dropped again at :meth:`~PostgresServer.stop`.
2. Local server binaries (``initdb`` on ``PATH``, else the newest ``/usr/lib/postgresql/*/bin``) -- a
   throwaway cluster in a temp dir on a free 127.0.0.1 port, md5 auth (redshift_connector cannot do
   SCRAM), durability off for speed. Run as the ``postgres`` OS user when we are root (initdb refuses root).
3. A Docker engine -- testcontainers' ``PostgresContainer`` with md5 auth.

Otherwise it raises :class:`PostgresUnavailableError` saying how to get one.

Example::

    from sqlalchemy_rs_iam.testing.postgres import PostgresRoleAdmin, provision_postgres

    with provision_postgres() as pg:
        pg.execute("CREATE TABLE t (x int)")
        admin = PostgresRoleAdmin(pg)
        admin.ensure_login_role("IAMR:etl", "internal-password")
        print(pg.execute("SELECT rolname FROM pg_roles WHERE rolname = %s", ("IAMR:etl",)))

Cleanup: :meth:`PostgresServer.stop` is idempotent and also registered with :mod:`atexit`. A throwaway
cluster additionally gets a tiny *reaper* process that holds a pipe to us: if this process dies in any way
(SIGKILL, SIGTERM, ``os._exit``), the pipe closes and the reaper kills the server and deletes the temp dir.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

__all__ = [
    "DSN_ENV",
    "PostgresRoleAdmin",
    "PostgresServer",
    "PostgresUnavailableError",
    "Reaper",
    "docker_available",
    "find_postgres_bindir",
    "provision_postgres",
]

log = logging.getLogger(__name__)

DSN_ENV = "RS_IAM_TEST_POSTGRES_DSN"
IMAGE_ENV = "RS_IAM_TEST_POSTGRES_IMAGE"
_DEFAULT_IMAGE = "postgres:16-alpine"
_START_TIMEOUT = 60.0

# Server settings for a disposable test cluster: md5 so redshift_connector can log in, 127.0.0.1 only,
# no durability (nothing here must survive a crash), enough connections for pool and concurrency tests,
# and never log statement text (ALTER ROLE ... PASSWORD must not end up in a log file).
_SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "password_encryption": "md5",
    "max_connections": "300",
    "shared_buffers": "32MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
    "log_statement": "none",
    "logging_collector": "off",
    "timezone": "UTC",
}


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL could be found or started; the message says how to provide one."""


# ---------------------------------------------------------------------------------------------------------
# discovery


def _version_key(path: Path) -> tuple[int, ...]:
    nums = re.findall(r"\d+", path.parent.name)
    return tuple(int(n) for n in nums) or (0,)


def find_postgres_bindir() -> Path | None:
    """The directory holding ``initdb``, ``postgres`` and ``pg_ctl``, or ``None``.

    ``initdb`` on ``PATH`` wins (symlinks resolved); else the newest of ``/usr/lib/postgresql/*/bin``
    (Debian/Ubuntu), ``/usr/pgsql-*/bin`` (RHEL) and ``/usr/local/pgsql/bin``.
    """
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    globbed = [*Path("/usr/lib/postgresql").glob("*/bin"), *Path("/usr").glob("pgsql-*/bin")]
    candidates.extend(sorted(globbed, key=_version_key, reverse=True))
    candidates.append(Path("/usr/local/pgsql/bin"))
    for bindir in candidates:
        if all(os.access(bindir / exe, os.X_OK) for exe in ("initdb", "postgres")):
            return bindir
    return None


def docker_available() -> bool:
    """True if a Docker engine answers a ping within ~2 s (and the ``docker`` package is installed)."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure means "no usable engine"
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (callers retry if someone takes it in between)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def provision_postgres(*, port: int = 0) -> PostgresServer:
    """A running PostgreSQL with a superuser we know: env DSN, else local binaries, else Docker.

    ``port`` fixes the port of a server we start (0 = any free one); ignored for ``RS_IAM_TEST_POSTGRES_DSN``.
    """
    dsn = os.environ.get(DSN_ENV, "").strip()
    if dsn:
        return ExternalPostgres(dsn)
    bindir = find_postgres_bindir()
    if bindir is not None:
        return LocalPostgres(bindir, port=port)
    if docker_available():
        return DockerPostgres(port=port)
    raise PostgresUnavailableError(
        "no PostgreSQL server for the Redshift stand-in: no server binaries (initdb/postgres) on PATH or "
        "under /usr/lib/postgresql/*/bin, no Docker engine, and RS_IAM_TEST_POSTGRES_DSN is not set. "
        "Fix one of: `apt-get install -y postgresql` (Debian/Ubuntu; or your OS's PostgreSQL server "
        "package), set RS_IAM_TEST_POSTGRES_DSN=postgresql://SUPERUSER:PASSWORD@127.0.0.1:5432/postgres "
        "(an existing server with md5 auth), or start a Docker engine."
    )


# ---------------------------------------------------------------------------------------------------------
# servers

_LIVE: weakref.WeakSet[PostgresServer] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


class PostgresServer:
    """A PostgreSQL server reachable over TCP with a superuser login.

    Attributes: ``host``, ``port``, ``superuser``, ``superuser_password``, ``admin_database`` (the
    database superuser connections use by default), ``kind`` (``"local"``, ``"dsn"`` or ``"docker"``),
    ``owned`` (True if stopping it really stops a server). Use as a context manager or call :meth:`stop`.
    """

    kind = "abstract"
    owned = True

    def __init__(
        self, host: str, port: int, superuser: str, superuser_password: str, admin_database: str = "postgres"
    ) -> None:
        self.host = host
        self.port = port
        self.superuser = superuser
        self.superuser_password = superuser_password
        self.admin_database = admin_database
        self.created_databases: list[str] = []
        self.created_roles: list[str] = []
        self._stopped = False
        self._lock = threading.RLock()
        _LIVE.add(self)

    def __repr__(self) -> str:  # never the password
        return f"<{type(self).__name__} {self.superuser}@{self.host}:{self.port} kind={self.kind}>"

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- connection helpers ----------------------------------------------------------------------------
    def dsn_for(self, dbname: str) -> str:
        """A libpq ``key=value`` DSN for the superuser on ``dbname`` (contains the superuser password)."""
        return psycopg2.extensions.make_dsn(
            host=self.host,
            port=self.port,
            user=self.superuser,
            password=self.superuser_password,
            dbname=dbname,
        )

    @property
    def dsn(self) -> str:
        """Superuser DSN on :attr:`admin_database` (contains the superuser password)."""
        return self.dsn_for(self.admin_database)

    def connect_admin(self, dbname: str | None = None) -> psycopg2.extensions.connection:
        """A new autocommit psycopg2 connection as the superuser (caller closes it)."""
        conn = psycopg2.connect(self.dsn_for(dbname or self.admin_database), connect_timeout=10)
        conn.autocommit = True
        return conn

    def execute(
        self,
        statement: str | sql.Composable,
        params: Sequence[Any] | dict[str, Any] | None = None,
        *,
        dbname: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit); returns its rows, ``[]`` if it has none."""
        conn = self.connect_admin(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return list(cur.fetchall()) if cur.description is not None else []
        finally:
            conn.close()

    def create_database(self, name: str, *, owner: str | None = None) -> None:
        """Create a database (remembered, so a shared server drops it again at :meth:`stop`)."""
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner:
            stmt = sql.SQL("{} OWNER {}").format(stmt, sql.Identifier(owner))
        self.execute(stmt)
        with self._lock:
            self.created_databases.append(name)

    def drop_database(self, name: str) -> None:
        """Disconnect everyone from ``name`` and drop it (no error if it is gone)."""
        self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        self.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        with self._lock:
            if name in self.created_databases:
                self.created_databases.remove(name)

    def wait_ready(self, timeout: float = _START_TIMEOUT) -> None:
        """Block until a superuser login succeeds (or raise after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                self.connect_admin().close()
                return
            except psycopg2.OperationalError as exc:
                last = exc
                time.sleep(0.1)
        raise PostgresUnavailableError(f"{self!r} did not accept logins within {timeout:.0f}s: {last}")

    def _check_alive(self) -> None:
        """Raise if the server process is known to have died (subclasses that own a process)."""

    # -- lifecycle -------------------------------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        return self._stopped

    def restart(self) -> None:
        """Restart the server on the same port: existing connections break, new ones work afterwards."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server and remove everything it left on disk. Idempotent."""
        raise NotImplementedError


class LocalPostgres(PostgresServer):
    """A throwaway cluster from local binaries in a private temp dir (see the module docstring)."""

    kind = "local"

    def __init__(self, bindir: Path, *, port: int = 0, superuser: str = "postgres") -> None:
        self.bindir = bindir
        self.tempdir = Path(tempfile.mkdtemp(prefix="rs-iam-pg-"))
        self.datadir = self.tempdir / "data"
        self.logfile = self.tempdir / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaper: Reaper | None = None
        self._run_as = _postgres_os_user()
        super().__init__("127.0.0.1", port, superuser, secrets.token_hex(16))
        try:
            self._start_reaper()
            self._initdb()
            self._start(retry_ports=port == 0)
        except BaseException:
            self.stop()
            raise

    def _check_alive(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            raise PostgresUnavailableError(
                f"PostgreSQL exited with status {proc.returncode}; log tail:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 20) -> str:
        """Last lines of the server log (statement text is never logged, see _SERVER_SETTINGS)."""
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int | None:
        """PID of the postmaster while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _popen_user_kwargs(self) -> dict[str, Any]:
        if self._run_as is None:
            return {}
        return {"user": self._run_as[0], "group": self._run_as[1], "extra_groups": []}

    def _start_reaper(self) -> None:
        self._reaper = Reaper()
        self._reaper.add(self.tempdir)

    def _initdb(self) -> None:
        pwfile = self.tempdir / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        os.chmod(pwfile, 0o600)
        if self._run_as is not None:
            uid, gid = self._run_as
            os.chown(self.tempdir, uid, gid)
            os.chown(pwfile, uid, gid)
        try:
            result = subprocess.run(  # noqa: S603 - fixed argv
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    self.superuser,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",  # unix socket lives in our private 0700 temp dir
                    "--auth-host=md5",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                cwd=self.tempdir,
                check=False,
                timeout=120,
                **self._popen_user_kwargs(),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            out = result.stdout.decode(errors="replace")[-2000:]
            raise PostgresUnavailableError(f"initdb failed (status {result.returncode}):\n{out}")

    def _argv(self) -> list[str]:
        argv = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.datadir),
            "-p",
            str(self.port),
            "-k",
            str(self.tempdir),
        ]
        for key, value in _SERVER_SETTINGS.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _start(self, *, retry_ports: bool) -> None:
        attempts = 5 if retry_ports else 1
        for attempt in range(attempts):
            if retry_ports:
                self.port = free_port()
            log_fd = os.open(self.logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                if self._run_as is not None:
                    os.fchown(log_fd, *self._run_as)
                # New session: Ctrl-C in a terminal goes to our process group; we shut the server down
                # ourselves, in order, instead of it vanishing under open connections.
                self._proc = subprocess.Popen(  # noqa: S603 - fixed argv
                    self._argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=log_fd,
                    env=_child_env(),
                    cwd=self.tempdir,
                    start_new_session=True,
                    close_fds=True,
                    **self._popen_user_kwargs(),
                )
            finally:
                os.close(log_fd)
            try:
                self.wait_ready()
                return
            except PostgresUnavailableError:
                self._kill_server()
                if attempt + 1 >= attempts or "could not bind" not in self.log_tail(50):
                    raise

    def _kill_server(self, timeout: float = 15.0) -> None:
        proc = self._proc
        if proc is None:
            return
        # SIGINT = fast shutdown (disconnects clients, then a quick checkpoint); escalate if it hangs.
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
        self._proc = None

    def restart(self) -> None:
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"{self!r} is stopped")
            self._kill_server()
            self._start(retry_ports=False)

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                self._kill_server()
            finally:
                shutil.rmtree(self.tempdir, ignore_errors=True)
                reaper, self._reaper = self._reaper, None
                if reaper is not None:
                    reaper.close()  # finds nothing left and exits
                _LIVE.discard(self)


class ExternalPostgres(PostgresServer):
    """An existing server from a superuser DSN. Never stopped by us; what we created there is dropped."""

    kind = "dsn"
    owned = False
    #: seconds to keep retrying the first login (a server that is still starting up)
    connect_wait = 5.0

    def __init__(self, dsn: str) -> None:
        try:
            parts = psycopg2.extensions.parse_dsn(dsn)
        except psycopg2.ProgrammingError:
            # The DSN itself may contain a password: never echo it.
            raise PostgresUnavailableError(
                f"{DSN_ENV} is not a valid libpq DSN or postgresql:// URL"
            ) from None
        host = parts.get("host") or "127.0.0.1"
        if host.startswith("/"):
            raise PostgresUnavailableError(f"{DSN_ENV} must name a TCP host (the stand-in connects over TCP)")
        super().__init__(
            host=host,
            port=int(parts.get("port") or 5432),
            superuser=parts.get("user") or "postgres",
            superuser_password=parts.get("password") or "",
            admin_database=parts.get("dbname") or "postgres",
        )
        try:
            self.wait_ready(timeout=self.connect_wait)
        except (PostgresUnavailableError, psycopg2.Error):
            _LIVE.discard(self)
            raise PostgresUnavailableError(
                f"cannot log in to the server named by {DSN_ENV} ({self.superuser}@{host}:{self.port})"
            ) from None

    def restart(self) -> None:
        """We cannot restart a shared server: disconnect every session on the databases we created."""
        with self._lock:
            names = list(self.created_databases)
        if names:
            self.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
                (names,),
            )

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            _LIVE.discard(self)
            for name in list(self.created_databases):
                try:
                    self.drop_database(name)
                except psycopg2.Error as exc:
                    log.warning("could not drop database %r on %r: %s", name, self, exc.pgcode)
            for role in reversed(self.created_roles):
                try:
                    self.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
                except psycopg2.Error as exc:
                    log.warning("could not drop role %r on %r: %s", role, self, exc.pgcode)
            self.created_roles.clear()


class DockerPostgres(PostgresServer):
    """A ``postgres`` container via testcontainers (Ryuk removes it if this process dies)."""

    kind = "docker"

    def __init__(self, *, port: int = 0, image: str | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from testcontainers.postgres import PostgresContainer

        password = secrets.token_hex(16)
        host_port = port or free_port()
        settings = " ".join(
            f"-c {k}={v}"
            for k, v in _SERVER_SETTINGS.items()
            if k not in ("listen_addresses", "logging_collector")
        )
        container = (
            PostgresContainer(
                image or os.environ.get(IMAGE_ENV, _DEFAULT_IMAGE),
                username="postgres",
                password=password,
                dbname="postgres",
            )
            .with_env("POSTGRES_HOST_AUTH_METHOD", "md5")
            .with_env("POSTGRES_INITDB_ARGS", "--auth-host=md5")
            .with_command(f"postgres {settings}")
            # A fixed host port survives `docker restart`, so restart() keeps the port like the local kind.
            .with_bind_ports(5432, host_port)
        )
        container.start()
        self._container = container
        super().__init__("127.0.0.1", host_port, "postgres", password)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def restart(self) -> None:
        with self._lock:
            self._container.get_wrapped_container().restart(timeout=10)
            self.wait_ready()

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            _LIVE.discard(self)
            with contextlib.suppress(Exception):
                self._container.stop()


# ---------------------------------------------------------------------------------------------------------
# cleanup


class Reaper:
    """Deletes directories (killing a postmaster running in one) when this process ends, *however* it ends.

    A separate small process reads directory names from a pipe; when the pipe closes -- :meth:`close`, or
    our death by SIGKILL, SIGTERM, ``os._exit`` -- it cleans them up. Example::

        reaper = Reaper()
        reaper.add(tmpdir)
        ...
        shutil.rmtree(tmpdir); reaper.close()   # normal path: nothing left for the reaper to do
    """

    def __init__(self) -> None:
        # New session: a terminal's Ctrl-C must not kill the reaper before we have cleaned up ourselves.
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-c", _REAPER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )

    def add(self, path: str | os.PathLike[str]) -> None:
        """Have ``path`` deleted when this process ends (or at :meth:`close`)."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise RuntimeError("reaper is closed")
        proc.stdin.write(os.fsencode(os.fspath(path)) + b"\n")
        proc.stdin.flush()

    def close(self, timeout: float = 15.0) -> None:
        """Let the reaper clean up now and wait for it. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------------------
# roles


def md5_password_hash(role: str, password: str) -> str:
    """PostgreSQL's stored md5 form; sending it instead of the password keeps the password out of SQL text."""
    return "md5" + hashlib.md5((password + role).encode(), usedforsecurity=False).hexdigest()


class PostgresRoleAdmin:
    """:class:`~sqlalchemy_rs_iam.testing.store.RoleAdmin` on a :class:`PostgresServer`.

    Redshift users are PostgreSQL LOGIN roles, Redshift groups are NOLOGIN roles; names such as
    ``IAMR:etl-role`` are quoted as identifiers. Passwords are stored md5-hashed (sent pre-hashed, so they
    never appear in statement text) because redshift_connector only speaks md5. Thread-safe: one short
    superuser connection per call, which also survives :meth:`PostgresServer.restart`.
    """

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self._lock = threading.Lock()

    def _remember(self, role: str) -> None:
        with self._lock:
            if role not in self.server.created_roles:
                self.server.created_roles.append(role)

    def role_exists(self, role: str) -> bool:
        return bool(self.server.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)))

    def group_exists(self, group: str) -> bool:
        return bool(
            self.server.execute("SELECT 1 FROM pg_roles WHERE rolname = %s AND NOT rolcanlogin", (group,))
        )

    def ensure_login_role(self, role: str, password: str) -> None:
        """Create the LOGIN role if missing, else make it LOGIN; either way set its password."""
        hashed = md5_password_hash(role, password)
        ident = sql.Identifier(role)
        # Concurrent ALTER ROLEs of one role fail ("tuple concurrently updated"): serialize per role, also
        # across processes sharing a server, with a transaction-scoped advisory lock.
        lock_key = int.from_bytes(hashlib.sha256(role.encode()).digest()[:8], "big", signed=True)
        conn = self.server.connect_admin()
        try:
            conn.autocommit = False
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(ident), (hashed,))
                    created = True
                else:
                    cur.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD %s").format(ident), (hashed,))
                    created = False
            if created:
                self._remember(role)
        finally:
            conn.close()

    def ensure_group(self, group: str) -> None:
        """Create a NOLOGIN role standing for a Redshift group, if missing."""
        try:
            self.server.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
            self._remember(group)
        except (psycopg2.errors.DuplicateObject, psycopg2.errors.UniqueViolation):
            pass  # exists already, or a concurrent call created it first

    def grant_group(self, group: str, role: str) -> None:
        """Make ``role`` a member of ``group`` (no-op if it already is)."""
        self.server.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role)))

    def drop_role(self, role: str) -> None:
        """Drop a role and what it owns in the admin database (used by tests that clean up after themselves)."""
        ident = sql.Identifier(role)
        if self.role_exists(role):
            self.server.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            self.server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))


# ---------------------------------------------------------------------------------------------------------
# internals


def _postgres_os_user() -> tuple[int, int] | None:
    """(uid, gid) to run the server as: the ``postgres`` OS user if we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailableError(
            "running as root, but there is no `postgres` OS user to run the server as (initdb refuses root); "
            "create one (`useradd --system postgres`) or run the tests as an unprivileged user"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _child_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}


# Runs in a separate interpreter. Each stdin line names a directory. At EOF (our owner stopped normally, or
# died) it kills a postmaster found in <dir>/data/postmaster.pid -- only if its command line names <dir>, so a
# recycled PID is never touched -- and deletes every <dir>.
_REAPER_CODE = r"""
import os, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
roots = []
try:
    for line in sys.stdin.buffer:
        roots.append(line.decode().rstrip("\n"))
except Exception:
    pass
def alive(pid, root):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return root.encode() in f.read()
    except OSError:
        return False
for root in filter(None, roots):
    pid = 0
    try:
        with open(os.path.join(root, "data", "postmaster.pid")) as f:
            pid = int(f.readline().strip() or 0)
    except (OSError, ValueError):
        pass
    if pid > 0 and alive(pid, root):
        for sig, wait in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except OSError:
                break
            end = time.monotonic() + wait
            while alive(pid, root) and time.monotonic() < end:
                time.sleep(0.05)
            if not alive(pid, root):
                break
        time.sleep(0.2)
    shutil.rmtree(root, ignore_errors=True)
"""
