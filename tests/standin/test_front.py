"""The Redshift front against a real PostgreSQL, with the real drivers.

A PostgreSQL server is provisioned for this module (:func:`provision_postgres`, md5 auth); roles get the
store's internal passwords through :class:`PostgresRoleAdmin` and credentials are added to the store by hand,
so no AWS emulator is involved. The module's front terminates TLS with a throwaway CA (trustme); the drivers
connect with verify-full.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psycopg
import psycopg2
import psycopg2.errors
import pytest
import redshift_connector
import trustme
from packaging.version import Version
from psycopg2 import sql
from redshift_connector.error import InterfaceError, ProgrammingError

from sqlalchemy_rs_iam.testing.front import FrontConnection, RedshiftFront
from sqlalchemy_rs_iam.testing.postgres import (
    PostgresRoleAdmin,
    PostgresServer,
    PostgresUnavailableError,
    provision_postgres,
)
from sqlalchemy_rs_iam.testing.store import CredentialStore, IssuedCredential

DB = f"front_{uuid.uuid4().hex[:8]}"  # unique, so a shared server (RS_IAM_TEST_POSTGRES_DSN) works too


# -- fixtures -------------------------------------------------------------------------------------------------


@dataclass
class PG:
    """The provisioned server with this module's database, and the stand-in's role admin."""

    server: PostgresServer
    roles: PostgresRoleAdmin

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    def admin(self) -> Any:
        return self.server.connect_admin(DB)

    def create_role(self, role: str, password: str, *, scram: bool = False) -> None:
        if not scram:
            self.roles.ensure_login_role(role, password)  # md5, as the stand-in does
            return
        with contextlib.closing(self.admin()) as conn, conn.cursor() as cur:
            cur.execute("SET password_encryption = 'scram-sha-256'")
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(role)), (password,))
        self.server.created_roles.append(role)  # dropped again if the server is shared

    def backends_of(self, role: str) -> int:
        with contextlib.closing(self.admin()) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,))
            return int(cur.fetchone()[0])


@pytest.fixture(scope="module")
def pg() -> Iterator[PG]:
    try:
        server = provision_postgres()
    except PostgresUnavailableError as exc:
        pytest.skip(str(exc))
    try:
        server.create_database(DB)
        yield PG(server, PostgresRoleAdmin(server))
    finally:
        server.stop()


@dataclass
class TLS:
    ca_file: Path  # the throwaway CA, for sslrootcert= / SSL_CERT_FILE
    server: ssl.SSLContext  # the front's side: a certificate for 127.0.0.1 and localhost

    def client(self) -> ssl.SSLContext:
        """What asyncpg gets: verify the chain and the host name against the throwaway CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


_TLS: list[TLS] = []  # set by the autouse module fixture; the driver helpers read it


@pytest.fixture(scope="module", autouse=True)
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLS]:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("front-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    # redshift_connector trusts the default store (plus its Redshift bundle): point the store at our CA.
    saved = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(ca_file)
    _TLS.append(TLS(ca_file, server))
    try:
        yield _TLS[-1]
    finally:
        _TLS.clear()
        if saved is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = saved


def tls_front(store: CredentialStore, host: str, port: int, **kw: Any) -> RedshiftFront:
    """A (not yet started) front that terminates TLS with the module's certificate."""
    return RedshiftFront(store, host, port, ssl_context=_TLS[-1].server, **kw)


@pytest.fixture(scope="module")
def store() -> CredentialStore:
    return CredentialStore()


@pytest.fixture(scope="module")
def front(pg: PG, store: CredentialStore) -> Iterator[RedshiftFront]:
    with tls_front(store, pg.host, pg.port) as f:
        yield f


@pytest.fixture
def new_user(pg: PG, store: CredentialStore) -> Callable[..., tuple[str, str, str]]:
    """Create a fresh role and issue a credential for it: returns (login_user, password, role)."""

    def make(
        *, ttl: float = 900.0, login_error: str | None = None, prefix: str = "IAM:", scram: bool = False
    ) -> tuple[str, str, str]:
        role = f"u{uuid.uuid4().hex[:10]}"
        login_user = prefix + role
        pg.create_role(role, store.role_password(role), scram=scram)
        return login_user, issue(store, login_user, role, ttl=ttl, login_error=login_error), role

    return make


def issue(
    store: CredentialStore, login_user: str, role: str, *, ttl: float = 900.0, login_error: str | None = None
) -> str:
    password = uuid.uuid4().hex
    now = time.time()
    store.add(
        IssuedCredential(
            login_user=login_user,
            password=password,
            role=role,
            expires_at=now + ttl,
            issued_at=now,
            caller="AKIDEXAMPLE",
            login_error=login_error,
        )
    )
    return password


# -- driver helpers -------------------------------------------------------------------------------------------


def rs_connect(front: RedshiftFront, user: str, password: str, **kw: Any) -> Any:
    """redshift_connector with its TLS defaults (ssl=True), the host name checked (sslmode=verify-full)."""
    kw.setdefault("sslmode", "verify-full")
    return redshift_connector.connect(
        host=front.host, port=front.port, database=DB, user=user, password=password, timeout=30, **kw
    )


def pg2_connect(front: RedshiftFront, user: str, password: str, **kw: Any) -> Any:
    kw.setdefault("sslmode", "verify-full")
    kw.setdefault("sslrootcert", str(_TLS[-1].ca_file))
    return psycopg2.connect(
        host=front.host, port=front.port, dbname=DB, user=user, password=password, connect_timeout=30, **kw
    )


def pg3_connect(front: RedshiftFront, user: str, password: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=front.host,
        port=front.port,
        dbname=DB,
        user=user,
        password=password,
        sslmode="verify-full",
        sslrootcert=str(_TLS[-1].ca_file),
        connect_timeout=30,
    )


def current_user(conn: Any) -> str:
    cur = conn.cursor()
    cur.execute("select current_user")
    value = cur.fetchone()[0]
    cur.close()
    return str(value)


def asyncpg_current_user(front: RedshiftFront, user: str, password: str) -> str:
    async def go() -> str:
        conn = await asyncpg.connect(
            host=front.host,
            port=front.port,
            database=DB,
            user=user,
            password=password,
            ssl=_TLS[-1].client(),
            timeout=30,
        )
        try:
            return str(await conn.fetchval("select current_user"))
        finally:
            await conn.close()

    return asyncio.run(go())


def rs_sqlstate(exc: BaseException) -> str:
    info = exc.args[0]
    assert isinstance(info, dict), exc
    return str(info["C"])


# -- managed (IAM) logins ---------------------------------------------------------------------------------------


def test_redshift_connector_logs_in_as_the_credential_role(front: RedshiftFront, new_user: Any) -> None:
    user, password, role = new_user()
    before = front.logins_accepted
    conn = rs_connect(front, user, password)
    try:
        assert current_user(conn) == role
        # what the driver parsed from the rewritten ParameterStatus
        assert conn._server_version == Version("8.0.2")
        assert (b"server_version", b"8.0.2") in conn.parameter_statuses
    finally:
        conn.close()
    assert front.logins_accepted == before + 1


def test_psycopg2_logs_in_and_sees_rewritten_server_version(front: RedshiftFront, new_user: Any) -> None:
    user, password, role = new_user(prefix="IAMR:")
    with contextlib.closing(pg2_connect(front, user, password)) as conn:
        assert current_user(conn) == role
        assert conn.get_parameter_status("server_version") == "8.0.2"
        # the upstream is untouched: SHOW goes through to PostgreSQL 15
        with conn.cursor() as cur:
            cur.execute("show server_version")
            assert cur.fetchone()[0].startswith("15")


def test_psycopg2_with_sslmode_prefer_gets_tls(front: RedshiftFront, new_user: Any) -> None:
    user, password, role = new_user()
    with contextlib.closing(pg2_connect(front, user, password, sslmode="prefer")) as conn:
        assert current_user(conn) == role
        assert conn.info.ssl_in_use
    assert front.connections[-1].tls_version in ("TLSv1.2", "TLSv1.3")


def test_psycopg3_logs_in(front: RedshiftFront, new_user: Any) -> None:
    user, password, role = new_user()
    with pg3_connect(front, user, password) as conn:
        assert current_user(conn) == role
        assert conn.info.parameter_status("server_version") == "8.0.2"


def test_asyncpg_logs_in(front: RedshiftFront, new_user: Any) -> None:
    user, password, role = new_user()
    assert asyncpg_current_user(front, user, password) == role


def test_upstream_scram_role(front: RedshiftFront, new_user: Any) -> None:
    user, password, role = new_user(scram=True)
    with contextlib.closing(pg2_connect(front, user, password)) as conn:
        assert current_user(conn) == role


def test_wrong_password_is_28P01_in_every_driver(front: RedshiftFront, new_user: Any) -> None:
    user, password, _ = new_user()
    wrong = password[::-1]
    expected = f'password authentication failed for user "{user}"'
    before = front.logins_refused

    with pytest.raises(ProgrammingError) as rs_err:
        rs_connect(front, user, wrong)
    assert rs_sqlstate(rs_err.value) == "28P01"
    assert rs_err.value.args[0]["M"] == expected

    with pytest.raises(psycopg2.OperationalError, match=expected):
        pg2_connect(front, user, wrong)
    with pytest.raises(psycopg.OperationalError, match=expected):
        pg3_connect(front, user, wrong)
    with pytest.raises(asyncpg.InvalidPasswordError, match=expected) as apg_err:
        asyncpg_current_user(front, user, wrong)
    assert apg_err.value.sqlstate == "28P01"

    assert front.logins_refused == before + 4
    # a credential of another user is no key to this one
    other_user, other_password, _ = new_user()
    with pytest.raises(psycopg2.OperationalError, match=expected):
        pg2_connect(front, user, other_password)
    with contextlib.closing(pg2_connect(front, other_user, other_password)):
        pass


def test_expired_credential_refuses_new_logins_but_open_sessions_keep_running(
    front: RedshiftFront, new_user: Any
) -> None:
    user, password, role = new_user(ttl=2.5)
    deadline = time.time() + 2.5
    old = pg2_connect(front, user, password)
    try:
        assert current_user(old) == role
        time.sleep(max(0.0, deadline - time.time()) + 0.3)
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            pg2_connect(front, user, password)
        with pytest.raises(ProgrammingError) as err:
            rs_connect(front, user, password)
        assert rs_sqlstate(err.value) == "28P01"
        with old.cursor() as cur:
            cur.execute("select 40 + 2, current_user")
            assert cur.fetchone() == (42, role)
    finally:
        old.close()


def test_two_live_credentials_for_one_user_both_work(
    front: RedshiftFront, store: CredentialStore, new_user: Any
) -> None:
    user, first, role = new_user()
    second = issue(store, user, role)
    assert first != second
    for password in (first, second):
        with contextlib.closing(pg2_connect(front, user, password)) as conn:
            assert current_user(conn) == role
        conn2 = rs_connect(front, user, password)
        try:
            assert current_user(conn2) == role
        finally:
            conn2.close()


def test_login_error_refuses_the_right_password(front: RedshiftFront, new_user: Any) -> None:
    message = 'group "analysts" does not exist'
    user, password, _ = new_user(login_error=message)
    with pytest.raises(InterfaceError) as err:  # the driver maps 28000 to InterfaceError
        rs_connect(front, user, password)
    assert rs_sqlstate(err.value) == "28000"
    assert err.value.args[0]["M"] == message
    with pytest.raises(psycopg2.OperationalError, match=message):
        pg2_connect(front, user, password)


def test_upstream_refusal_is_relayed(front: RedshiftFront, pg: PG, store: CredentialStore) -> None:
    # the emulator issued a credential, but the role's internal password was never set in PostgreSQL
    role = f"u{uuid.uuid4().hex[:10]}"
    pg.create_role(role, "not-the-internal-password")
    user = f"IAM:{role}"
    password = issue(store, user, role)
    with pytest.raises(ProgrammingError) as err:
        rs_connect(front, user, password)
    assert rs_sqlstate(err.value) == "28P01"
    assert role in err.value.args[0]["M"]


# -- passthrough ----------------------------------------------------------------------------------------------


def test_passthrough_user_with_static_password(front: RedshiftFront, pg: PG, store: CredentialStore) -> None:
    role = f"static_{uuid.uuid4().hex[:8]}"
    pg.create_role(role, "static-pw")
    assert not store.is_managed(role)
    with contextlib.closing(pg2_connect(front, role, "static-pw")) as conn:
        assert current_user(conn) == role
        assert conn.get_parameter_status("server_version") == "8.0.2"
    conn2 = rs_connect(front, role, "static-pw")
    try:
        assert current_user(conn2) == role
        assert conn2._server_version == Version("8.0.2")
    finally:
        conn2.close()
    with pg3_connect(front, role, "static-pw") as conn3:
        assert current_user(conn3) == role
    assert asyncpg_current_user(front, role, "static-pw") == role
    # and PostgreSQL's own refusal reaches the client
    with pytest.raises(ProgrammingError) as err:
        rs_connect(front, role, "wrong")
    assert rs_sqlstate(err.value) == "28P01"
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        pg2_connect(front, role, "wrong")


def test_superuser_passthrough(front: RedshiftFront, pg: PG) -> None:
    with contextlib.closing(pg2_connect(front, pg.server.superuser, pg.server.superuser_password)) as conn:
        assert current_user(conn) == pg.server.superuser


# -- wire details ---------------------------------------------------------------------------------------------


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def _recv_message(sock: socket.socket) -> tuple[bytes, bytes]:
    header = _recv_exactly(sock, 5)
    (length,) = struct.unpack("!i", header[1:])
    return header[:1], _recv_exactly(sock, length - 4)


def test_tls_terminated_and_protocol_negotiated(front: RedshiftFront, new_user: Any) -> None:
    user, _, _ = new_user()
    with socket.create_connection((front.host, front.port), timeout=10) as raw:
        raw.sendall(struct.pack("!ii", 8, 80877104))  # GSSENCRequest: no
        assert _recv_exactly(raw, 1) == b"N"
        raw.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest: yes
        assert _recv_exactly(raw, 1) == b"S"
        sock = _TLS[-1].client().wrap_socket(raw, server_hostname="127.0.0.1")
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        params = (
            b"user\0" + user.encode() + b"\0database\0dev\0_pq_.made_up\0x\0"
            b"client_protocol_version\x002\0driver_version\0test\0\0"
        )
        body = struct.pack("!i", (3 << 16) | 2) + params
        sock.sendall(struct.pack("!i", len(body) + 4) + body)
        kind, msg = _recv_message(sock)  # type: ignore[arg-type]
        assert kind == b"v"
        assert struct.unpack("!ii", msg[:8]) == (0, 1)
        assert msg[8:] == b"_pq_.made_up\0"
        kind, msg = _recv_message(sock)  # type: ignore[arg-type]
        assert kind == b"R"
        assert struct.unpack("!i", msg[:4]) == (5,)  # MD5 only, with a 4-byte salt
        assert len(msg) == 8
    assert front.connections[-1] == FrontConnection(user, sock.version())


def test_plaintext_sent_after_ssl_request_is_refused(front: RedshiftFront, new_user: Any) -> None:
    # Bytes that arrive before the handshake must not be read as if they came through TLS (CVE-2021-23222).
    user, _, _ = new_user()
    body = struct.pack("!i", 3 << 16) + b"user\0" + user.encode() + b"\0\0"
    with socket.create_connection((front.host, front.port), timeout=10) as sock:
        sock.sendall(struct.pack("!ii", 8, 80877103) + struct.pack("!i", len(body) + 4) + body)
        assert _recv_exactly(sock, 1) == b"S"
        rest = b""
        while chunk := sock.recv(4096):
            rest += chunk
        assert rest.startswith(b"E") and b"08P01" in rest  # a protocol error, then the front hangs up
    assert all(c.user != user for c in front.connections)


def test_every_driver_session_is_encrypted(front: RedshiftFront, new_user: Any) -> None:
    user, password, role = new_user()
    seen: list[FrontConnection] = []
    conn = rs_connect(front, user, password)
    try:
        assert current_user(conn) == role
    finally:
        conn.close()
    seen.append(front.connections[-1])
    with contextlib.closing(pg2_connect(front, user, password)) as conn:
        assert current_user(conn) == role
    seen.append(front.connections[-1])
    with pg3_connect(front, user, password) as conn:
        assert current_user(conn) == role
    seen.append(front.connections[-1])
    assert asyncpg_current_user(front, user, password) == role
    seen.append(front.connections[-1])
    assert [c.user for c in seen] == [user] * 4
    assert all(c.tls_version in ("TLSv1.2", "TLSv1.3") for c in seen), seen


def test_a_wrong_ca_is_refused_by_every_driver(
    front: RedshiftFront, new_user: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password, _ = new_user()
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    accepted = front.logins_accepted
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        pg2_connect(front, user, password, sslrootcert=str(other))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(host=front.host, port=front.port, dbname=DB, user=user, password=password,
                        sslmode="verify-full", sslrootcert=str(other), connect_timeout=30)  # fmt: skip

    async def asyncpg_connect() -> None:
        await asyncpg.connect(host=front.host, port=front.port, database=DB, user=user, password=password,
                              ssl=ssl.create_default_context(cafile=str(other)), timeout=30)  # fmt: skip

    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(asyncpg_connect())
    monkeypatch.setenv(
        "SSL_CERT_FILE", str(other)
    )  # redshift_connector: the default store + Redshift's bundle
    with pytest.raises(InterfaceError) as err:
        rs_connect(front, user, password)
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)
    assert front.logins_accepted == accepted
    assert all(c.user != user for c in front.connections)  # no startup packet ever arrived


def test_host_name_is_checked(front: RedshiftFront, new_user: Any) -> None:
    # The certificate names 127.0.0.1 and localhost; the same address under another name must not pass.
    user, password, _ = new_user()
    with pytest.raises(psycopg2.OperationalError, match=r"does not match host name|certificate"):
        psycopg2.connect(host="127.0.0.2", hostaddr=front.host, port=front.port, dbname=DB, user=user,
                         password=password, sslmode="verify-full", sslrootcert=str(_TLS[-1].ca_file),
                         connect_timeout=30)  # fmt: skip


def test_plain_front_answers_no(pg: PG, store: CredentialStore, new_user: Any) -> None:
    user, password, role = new_user()
    with RedshiftFront(store, pg.host, pg.port) as plain:
        assert not plain.tls
        with contextlib.closing(pg2_connect(plain, user, password, sslmode="prefer")) as conn:
            assert current_user(conn) == role
            assert not conn.info.ssl_in_use
        assert plain.connections[-1] == FrontConnection(user, None)
        with pytest.raises(psycopg2.OperationalError, match="server does not support SSL"):
            pg2_connect(plain, user, password)  # verify-full


def test_require_tls_refuses_cleartext_logins(pg: PG, store: CredentialStore, new_user: Any) -> None:
    user, password, role = new_user()
    with tls_front(store, pg.host, pg.port, require_tls=True) as strict:
        with pytest.raises(psycopg2.OperationalError, match="requires SSL"):
            pg2_connect(strict, user, password, sslmode="disable")
        assert strict.logins_refused == 1
        with contextlib.closing(pg2_connect(strict, user, password)) as conn:
            assert current_user(conn) == role
    with pytest.raises(ValueError, match="require_tls needs an ssl_context"):
        RedshiftFront(store, pg.host, pg.port, require_tls=True)


def _wait_until_active(pg: PG, role: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.closing(pg.admin()) as admin, admin.cursor() as cur:
            cur.execute(
                "select count(*) from pg_stat_activity where usename = %s and state = 'active'", (role,)
            )
            if cur.fetchone()[0]:
                return
        time.sleep(0.05)
    raise AssertionError(f"no active query of {role} seen")


# psycopg2's conn.cancel() calls libpq's blocking PQcancel while holding the GIL, so against a front running in
# the *same* process it deadlocks (the front's thread needs the GIL to forward the request). Cancellation is
# therefore proven with psycopg 3's cancel_safe() and asyncpg, which wait for the cancel without the GIL.
def test_cancel_request_reaches_upstream_psycopg3(front: RedshiftFront, pg: PG, new_user: Any) -> None:
    user, password, role = new_user()
    conn = pg3_connect(front, user, password)
    outcome: list[BaseException | None] = []

    def sleeper() -> None:
        try:
            conn.execute("select pg_sleep(60)")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=sleeper)
    try:
        worker.start()
        _wait_until_active(pg, role)
        conn.cancel_safe(timeout=20)
        worker.join(30)
        assert not worker.is_alive()
        assert len(outcome) == 1
        assert isinstance(outcome[0], psycopg.errors.QueryCanceled)
        conn.rollback()
        assert current_user(conn) == role  # the session survives the cancel
    finally:
        worker.join(60)
        conn.close()


def test_cancel_request_reaches_upstream_asyncpg(front: RedshiftFront, pg: PG, new_user: Any) -> None:
    user, password, role = new_user()

    async def go() -> None:
        conn = await asyncpg.connect(
            host=front.host,
            port=front.port,
            database=DB,
            user=user,
            password=password,
            ssl=_TLS[-1].client(),
            timeout=30,
        )
        try:
            # On timeout asyncpg sends a CancelRequest on a new connection; the session stays usable only if
            # the backend really stopped sleeping (otherwise the next query waits out the 60 s).
            with pytest.raises(asyncio.TimeoutError):
                await conn.execute("select pg_sleep(60)", timeout=1.0)
            assert await conn.fetchval("select current_user") == role
        finally:
            await conn.close()

    start = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - start < 50  # generous: the 60 s sleep was cancelled upstream
    assert pg.backends_of(role) == 0


def test_upstream_unreachable_gives_error_not_hang(store: CredentialStore, pg: PG) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = int(probe.getsockname()[1])
    role = f"u{uuid.uuid4().hex[:10]}"
    user = f"IAM:{role}"
    password = issue(store, user, role)
    with tls_front(store, "127.0.0.1", dead_port) as dead:
        with pytest.raises(ProgrammingError) as err:
            rs_connect(dead, user, password)
        assert rs_sqlstate(err.value) == "08006"
        with pytest.raises(psycopg2.OperationalError, match="could not connect to the database server"):
            pg2_connect(dead, "postgres", "whatever")  # passthrough too
        assert dead.logins_refused == 2
        assert dead.logins_accepted == 0


def test_passwords_never_logged(
    front: RedshiftFront, store: CredentialStore, new_user: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sqlalchemy_rs_iam.testing.front")
    user, password, role = new_user()
    with contextlib.closing(pg2_connect(front, user, password)):
        pass
    with pytest.raises(psycopg2.OperationalError):
        pg2_connect(front, user, "wrong-" + password)
    # records are emitted by the front's thread; the login above was logged by user name
    deadline = time.monotonic() + 5
    while user not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert user in caplog.text
    assert password not in caplog.text
    assert store.role_password(role) not in caplog.text
    assert password not in repr(front)


# -- load and lifecycle ---------------------------------------------------------------------------------------


def test_64_concurrent_sessions(pg: PG, store: CredentialStore, new_user: Any) -> None:
    n = 64
    users = [new_user() for _ in range(4)]
    opened = threading.Barrier(n + 1, timeout=120)
    release = threading.Barrier(n + 1, timeout=120)

    with tls_front(store, pg.host, pg.port) as f:

        def session(i: int) -> str:
            user, password, _ = users[i % len(users)]
            conn = rs_connect(f, user, password) if i % 2 else pg2_connect(f, user, password)
            try:
                who = current_user(conn)
                opened.wait()
                release.wait()
                return who
            finally:
                conn.close()

        with ThreadPoolExecutor(max_workers=n) as pool:
            futures = [pool.submit(session, i) for i in range(n)]
            try:
                opened.wait()
                assert f.active_connections == n
            finally:
                release.wait()
            results = [fut.result(timeout=120) for fut in futures]
        assert results == [users[i % len(users)][2] for i in range(n)]
        assert f.logins_accepted == n
        assert f.logins_refused == 0
        deadline = time.monotonic() + 10
        while f.active_connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f.active_connections == 0


def _own_tcp_ports() -> list[tuple[int, int]]:
    """(local port, remote port) of every TCP socket this process holds open (Linux /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in list(fh)[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.append((int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)))
    return ports


def test_stop_with_open_sessions_leaves_nothing_behind(pg: PG, store: CredentialStore, new_user: Any) -> None:
    user, password, role = new_user()
    f = tls_front(store, pg.host, pg.port).start()
    port = f.port
    threads = [t.name for t in threading.enumerate()]
    assert f"RedshiftFront-127.0.0.1:{port}" in threads
    rs = rs_connect(f, user, password)
    p2 = pg2_connect(f, user, password)
    half = socket.create_connection((f.host, port))  # stuck mid-startup
    try:
        assert current_user(rs) == role and current_user(p2) == role
        assert f.active_connections == 2
        assert pg.backends_of(role) == 2
        assert any(local == port for local, _ in _own_tcp_ports())

        f.stop()

        assert f"RedshiftFront-127.0.0.1:{port}" not in [t.name for t in threading.enumerate()]
        assert f.active_connections == 0
        assert not [local for local, _ in _own_tcp_ports() if local == port]  # listener and sessions closed
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((f.host, port), timeout=5).close()
        half.settimeout(5)
        assert half.recv(1) == b""  # the front closed it
        with pytest.raises(psycopg2.Error):
            current_user(p2)
        deadline = time.monotonic() + 10
        while pg.backends_of(role) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pg.backends_of(role) == 0  # the upstream sessions were closed as well
        f.stop()  # idempotent
    finally:
        half.close()
        p2.close()
        with contextlib.suppress(Exception):
            rs.close()
        gc.collect()
