"""The transport rule end to end: a hostile "Redshift" that declines TLS (or offers TLS with a certificate
from a CA nobody trusts) and asks for a cleartext password never receives the IAM-issued password from any
supported driver under default settings -- and does receive it when the URL opts out (so the test can fail).

Credentials come from the stand-in's emulator for real (workgroup ``analytics`` / cluster ``etl-cluster``);
only the database host in the URL points at the hostile server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trustme
from sqlalchemy.ext.asyncio import create_async_engine

from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

pytestmark = pytest.mark.integration

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


class HostileServer:
    """Declines TLS ('N') -- or, with ``cert``, completes TLS with it -- then asks for a cleartext password
    and records every password message that arrives."""

    def __init__(self, cert: trustme.LeafCert | None = None) -> None:
        self.passwords: list[bytes] = []
        self.connections = 0
        self._context: ssl.SSLContext | None = None
        if cert is not None:
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert.configure_cert(self._context)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)  # closing a socket does not wake a thread blocked in accept()
        self.port = self._sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        self._thread.join(10)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(20)
        sock: Any = conn
        try:
            while True:
                length = struct.unpack("!i", _read(sock, 4))[0]
                body = _read(sock, length - 4)
                code = struct.unpack("!i", body[:4])[0]
                if code == _SSL_REQUEST and self._context is not None:
                    sock.sendall(b"S")
                    sock = self._context.wrap_socket(sock, server_side=True)
                elif code in (_SSL_REQUEST, _GSSENC_REQUEST):
                    sock.sendall(b"N")
                else:
                    break  # the startup message
            sock.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
            kind = _read(sock, 1)
            length = struct.unpack("!i", _read(sock, 4))[0]
            body = _read(sock, length - 4)
            if kind == b"p":
                self.passwords.append(body.rstrip(b"\0"))
            error = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0"
            sock.sendall(b"E" + struct.pack("!i", len(error) + 4) + error)
        except (OSError, ssl.SSLError, struct.error):
            pass  # the client gave up: what a safe client does
        finally:
            with contextlib.suppress(OSError):
                sock.close()


def _read(sock: Any, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("peer closed")
        data += chunk
    return data


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def hostile_tls(tmp_path: Path) -> Iterator[HostileServer]:
    # A proper certificate for 127.0.0.1 -- from a CA the client was never told to trust.
    server = HostileServer(trustme.CA().issue_cert("127.0.0.1", "localhost"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def hostile_wrong_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    # A certificate from a CA the drivers DO trust (as SSL_CERT_FILE / PGSSLROOTCERT), for another host name.
    ca = trustme.CA()
    ca_file = tmp_path / "trusted-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    monkeypatch.setenv("PGSSLROOTCERT", str(ca_file))
    server = HostileServer(ca.issue_cert("not-this-host.example.com"))
    try:
        yield server
    finally:
        server.close()


# The URL forms of the README and docs/recipes.md; the host is replaced by the hostile server.
URL_FORMS = {
    "redshift_connector workgroup": ("redshift+redshift_connector", "", "workgroup=analytics"),
    "redshift_connector cluster": ("redshift+redshift_connector", "", "cluster=etl-cluster"),
    "redshift_connector custom domain": (
        "redshift+redshift_connector",
        "",
        "custom_domain=sql.analytics.example.com",
    ),
    "redshift+psycopg2 cluster db user": (
        "redshift+psycopg2",
        "alice@",
        "cluster=etl-cluster&db_groups=analysts",
    ),
    "postgresql+psycopg2 workgroup": ("postgresql+psycopg2", "", "workgroup=analytics"),
    "postgresql+psycopg workgroup": ("postgresql+psycopg", "", "workgroup=analytics"),
    "postgresql+psycopg_async workgroup": ("postgresql+psycopg_async", "", "workgroup=analytics"),
    "postgresql+asyncpg workgroup": ("postgresql+asyncpg", "", "workgroup=analytics"),
}

#: Each driver's explicit opt-out, which must still hand the password over (proves the server records it).
OPT_OUTS = {
    "redshift+redshift_connector": "ssl=false",
    "redshift+psycopg2": "sslmode=disable",
    "postgresql+psycopg2": "sslmode=disable",
    "postgresql+psycopg": "sslmode=disable",
    "postgresql+psycopg_async": "sslmode=disable",
    "postgresql+asyncpg": "ssl=disable",
}


def hostile_url(rs: RedshiftStandIn, form: str, port: int, extra: str = "") -> str:
    scheme, user, target = URL_FORMS[form]
    query = f"plugin=rs_iam&{target}&region={rs.region}&aws_endpoint_url={rs.aws_endpoint_url}"
    if "custom_domain" in target and scheme.startswith("redshift+redshift_connector"):
        query += "&service=serverless"
    return f"{scheme}://{user}127.0.0.1:{port}/{rs.database}?{query}{'&' + extra if extra else ''}"


def try_connect(url: str) -> BaseException | None:
    """Connect once through a real engine; the exception, or None if it (wrongly) succeeded."""
    if "_async" in url or "asyncpg" in url:

        async def go() -> None:
            engine = create_async_engine(url, poolclass=sa.pool.NullPool)
            try:
                async with engine.connect():
                    pass
            finally:
                await engine.dispose()

        try:
            asyncio.run(go())
        except Exception as exc:
            return exc
        return None
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect():
            pass
    except Exception as exc:
        return exc
    finally:
        engine.dispose()
    return None


def issued_passwords(rs: RedshiftStandIn) -> set[bytes]:
    return {c.password.encode() for user in rs.store.login_users() for c in rs.store.live(user)}


@pytest.mark.parametrize("form", list(URL_FORMS))
def test_default_settings_never_send_the_password_to_a_server_that_declines_tls(
    rs: RedshiftStandIn, hostile: HostileServer, form: str
) -> None:
    error = try_connect(hostile_url(rs, form, hostile.port))
    assert error is not None, "connected to a server that declined TLS"
    assert hostile.connections >= 1  # the driver did reach the hostile server
    assert hostile.passwords == []


@pytest.mark.parametrize("form", list(URL_FORMS))
def test_default_settings_refuse_a_certificate_from_an_untrusted_ca(
    rs: RedshiftStandIn, hostile_tls: HostileServer, form: str
) -> None:
    error = try_connect(hostile_url(rs, form, hostile_tls.port))
    assert error is not None
    assert hostile_tls.connections >= 1
    assert hostile_tls.passwords == []


@pytest.mark.parametrize("form", list(URL_FORMS))
def test_an_explicit_opt_out_does_send_the_password(
    rs: RedshiftStandIn, hostile: HostileServer, form: str
) -> None:
    scheme = URL_FORMS[form][0]
    error = try_connect(hostile_url(rs, form, hostile.port, OPT_OUTS[scheme]))
    assert error is not None  # the hostile server refuses after reading the password
    assert hostile.passwords, "the opt-out did not reach the password exchange"
    assert set(hostile.passwords) <= issued_passwords(rs)  # it really was the IAM-issued password


@pytest.mark.parametrize("form", list(URL_FORMS))
def test_default_settings_check_the_host_name(
    rs: RedshiftStandIn, hostile_wrong_name: HostileServer, form: str
) -> None:
    # redshift_connector only warns on a name mismatch unless sslmode is set; the plugin sets verify-full.
    error = try_connect(hostile_url(rs, form, hostile_wrong_name.port))
    assert error is not None
    assert hostile_wrong_name.connections >= 1
    assert hostile_wrong_name.passwords == []
