"""The Redshift front of the local stand-in: a PostgreSQL-wire proxy that enforces issued IAM credentials.

Clients (``redshift_connector``, psycopg2, psycopg 3, asyncpg) connect to the front as if it were an Amazon
Redshift endpoint. The front speaks the PostgreSQL v3 protocol and, per connection:

* with an ``ssl_context`` (what the stand-in passes), answers SSLRequest with ``S`` and terminates TLS
  (TLS 1.2 or newer) before reading the startup packet, as Redshift does; without one it answers ``N``
  (plain mode). GSSENCRequest is always answered ``N``. :attr:`RedshiftFront.connections` records, per
  login, the user and the negotiated TLS version (``None`` for a cleartext session);
* forwards a CancelRequest to the upstream PostgreSQL unchanged (the BackendKeyData the client saw is
  upstream's own, so cancellation just works);
* drops the Redshift-only startup parameters (``client_protocol_version``, ``driver_version``, ...) that
  PostgreSQL would reject, and negotiates protocol 3.0 itself;
* for a login user the AWS emulator issued credentials for (:meth:`CredentialStore.is_managed`), checks the
  client's MD5 password response against the *live* issued credentials, then logs in upstream as
  ``credential.role`` with the stand-in's internal password for that role (MD5, cleartext or SCRAM-SHA-256);
* for any other user, relays the authentication exchange untouched (plain passthrough);
* rewrites the ``server_version`` ParameterStatus to a Redshift-like version (``8.0.2``), because
  ``redshift_connector`` parses it with ``packaging`` and Debian's ``15.x (Debian ...)`` does not parse;
* after the first ReadyForQuery, copies bytes both ways without parsing for the session's lifetime. Only new
  logins are checked: a session opened with a credential keeps working after that credential expires.

The proxy runs an asyncio event loop in one background thread. Example::

    store = CredentialStore()
    with RedshiftFront(store, "127.0.0.1", pg_port, ssl_context=server_context) as front:
        conn = psycopg2.connect(host=front.host, port=front.port, dbname="dev", user="IAM:alice",
                                password=issued_password, sslmode="verify-full", sslrootcert=ca_file)
        assert front.connections[-1].tls_version in ("TLSv1.2", "TLSv1.3")

Passwords never appear in logs, reprs or exception messages; debug logs name users and roles only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import secrets
import ssl
import struct
import sys
import threading
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from sqlalchemy_rs_iam.testing.store import CredentialStore

__all__ = ["REDSHIFT_ONLY_STARTUP_PARAMETERS", "FrontConnection", "RedshiftFront"]

_log = logging.getLogger(__name__)

#: Startup parameters Redshift drivers send that PostgreSQL would reject as unknown configuration parameters
#: (see ``redshift_connector.core.Connection.__init__``: the always-sent ones, then the IdP plugin ones).
REDSHIFT_ONLY_STARTUP_PARAMETERS = frozenset(
    {
        b"client_protocol_version",
        b"driver_version",
        b"os_version",
        b"driver_discovery_version",
        b"plugin_name",
        b"idp_type",
        b"provider_name",
        b"token_type",
        b"identity_namespace",
        b"idc_client_display_name",
    }
)

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
_PROTOCOL_3_0 = 3 << 16
_MAX_STARTUP_PACKET = 10_000  # PostgreSQL's own limit
_MAX_STARTUP_MESSAGE = 1 << 20  # any single message before ReadyForQuery
_RELAY_CHUNK = 1 << 16

_AUTH_OK = 0
_AUTH_CLEARTEXT = 3
_AUTH_MD5 = 5
_AUTH_SASL = 10
_AUTH_SASL_CONTINUE = 11
_AUTH_SASL_FINAL = 12

_INT32 = struct.Struct("!i")


class _ProtocolViolation(Exception):
    """The peer sent something that is not valid PostgreSQL v3 protocol (message carries no secrets)."""


@dataclass
class _Startup:
    minor_version: int
    params: list[tuple[bytes, bytes]]

    def get(self, key: bytes) -> bytes | None:
        for k, v in self.params:
            if k == key:
                return v
        return None


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + _INT32.pack(len(body) + 4) + body


def _auth_request(code: int, extra: bytes = b"") -> bytes:
    return _message(b"R", _INT32.pack(code) + extra)


async def _start_tls(writer: asyncio.StreamWriter, context: ssl.SSLContext) -> None:
    """Upgrade a server-side stream to TLS in place: ``StreamWriter.start_tls`` where it exists (3.11+).

    Python 3.10 has only the loop's ``start_tls``; it returns a new transport, which the writer and its
    protocol must then write to (what 3.11's method does internally).
    """
    if sys.version_info >= (3, 11):
        await writer.start_tls(context)
        return
    await writer.drain()
    protocol = writer.transport.get_protocol()
    transport = await asyncio.get_running_loop().start_tls(
        writer.transport, protocol, context, server_side=True
    )
    if transport is None:  # the peer closed during the handshake
        raise ConnectionResetError("connection closed during the TLS handshake")
    writer._transport = transport  # type: ignore[attr-defined, unused-ignore]
    protocol._transport = transport  # type: ignore[attr-defined, unused-ignore]
    protocol._over_ssl = True  # type: ignore[attr-defined, unused-ignore]


def _error_response(sqlstate: str, text: str, severity: str = "FATAL") -> bytes:
    fields = b"".join(
        tag + value.encode() + b"\0"
        for tag, value in ((b"S", severity), (b"V", severity), (b"C", sqlstate), (b"M", text))
    )
    return _message(b"E", fields + b"\0")


def _startup_packet(params: list[tuple[bytes, bytes]]) -> bytes:
    body = _INT32.pack(_PROTOCOL_3_0) + b"".join(k + b"\0" + v + b"\0" for k, v in params) + b"\0"
    return _INT32.pack(len(body) + 4) + body


def _md5_response(password: bytes, user: bytes, salt: bytes) -> bytes:
    """The PasswordMessage payload of PostgreSQL's MD5 method: 'md5' + md5(md5(password + user) + salt)."""
    inner = hashlib.md5(password + user, usedforsecurity=False).hexdigest().encode()
    return b"md5" + hashlib.md5(inner + salt, usedforsecurity=False).hexdigest().encode()


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    (length,) = _INT32.unpack_from(header, 1)
    if length < 4 or length > _MAX_STARTUP_MESSAGE:
        raise _ProtocolViolation(f"invalid message length {length}")
    return header[:1], await reader.readexactly(length - 4)


class _ScramSha256Client:
    """Client side of SCRAM-SHA-256 (RFC 5802/7677) without channel binding, for upstream logins."""

    def __init__(self, password: str) -> None:
        self._password = password.encode()
        self._nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        # PostgreSQL ignores the SCRAM user name and uses the startup packet's user.
        self._first_bare = f"n=,r={self._nonce}"
        self._server_signature = b""

    def __repr__(self) -> str:
        return "<_ScramSha256Client>"

    def client_first(self) -> bytes:
        return f"n,,{self._first_bare}".encode()

    def client_final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(part.split("=", 1) for part in text.split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self._nonce):
            raise _ProtocolViolation("SCRAM server nonce does not extend the client nonce")
        salted = hashlib.pbkdf2_hmac("sha256", self._password, salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{text},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self._server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final: bytes) -> bool:
        attrs = dict(part.split("=", 1) for part in server_final.decode().split(","))
        got = base64.b64decode(attrs.get("v", ""))
        return bool(self._server_signature) and hmac.compare_digest(got, self._server_signature)


@dataclass(frozen=True)
class FrontConnection:
    """One login the front saw: the startup user and the TLS version (``None``: cleartext session)."""

    user: str | None
    tls_version: str | None


class _LoginRefused(Exception):
    """Ends a login with an ErrorResponse already built for the client (never contains a password)."""

    def __init__(self, error_message: bytes) -> None:
        super().__init__("login refused")
        self.error_message = error_message


class RedshiftFront:
    """A PostgreSQL-wire TCP proxy in front of a real PostgreSQL that enforces issued IAM credentials.

    ``store`` says which login users are managed and which passwords are live; ``upstream_host`` /
    ``upstream_port`` is the PostgreSQL server. ``port=0`` picks a free port; read :attr:`host` /
    :attr:`port` after :meth:`start`. ``server_version`` is what clients see in the ``server_version``
    ParameterStatus. ``ssl_context`` (a server-side context; the front raises its minimum to TLS 1.2) makes
    the front accept SSLRequest; ``require_tls`` then refuses logins that did not negotiate TLS, like a
    Redshift cluster with ``require_ssl`` set. The link to PostgreSQL stays cleartext (it is local).

    :attr:`connections` holds the most recent logins (:class:`FrontConnection`, up to 1000) in arrival
    order, so tests can assert that a session was encrypted.

    Counters (read them from any thread): :attr:`active_connections` is the number of logged-in sessions
    currently relayed; :attr:`logins_accepted` / :attr:`logins_refused` count logins that reached
    ReadyForQuery / ended in an ErrorResponse before it (refused by the front or by PostgreSQL).

    Example::

        with RedshiftFront(store, "127.0.0.1", 5432) as front:   # plain mode: no ssl_context
            psycopg2.connect(host=front.host, port=front.port, dbname="dev", user="IAM:alice",
                             password=issued_password, sslmode="disable")
    """

    def __init__(
        self,
        store: CredentialStore,
        upstream_host: str,
        upstream_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        server_version: str = "8.0.2",
        connect_timeout: float = 10.0,
        startup_timeout: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        require_tls: bool = False,
    ) -> None:
        if require_tls and ssl_context is None:
            raise ValueError("require_tls needs an ssl_context")
        if ssl_context is not None and ssl_context.minimum_version < ssl.TLSVersion.TLSv1_2:
            ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._store = store
        self._upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self._server_version = server_version.encode()
        self._connect_timeout = connect_timeout
        self._startup_timeout = startup_timeout
        self.active_connections = 0
        self.logins_accepted = 0
        self.logins_refused = 0
        self.connections: deque[FrontConnection] = deque(maxlen=1000)
        self._ssl_context = ssl_context
        self._require_tls = require_tls
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def tls(self) -> bool:
        """True if the front accepts TLS (it has an ``ssl_context``)."""
        return self._ssl_context is not None

    def __repr__(self) -> str:
        mode = "tls" if self.tls else "plain"
        return f"<RedshiftFront {self.host}:{self.port} ({mode}) -> {self._upstream[0]}:{self._upstream[1]}>"

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> RedshiftFront:
        """Bind the listener and serve in a background thread; returns self once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("RedshiftFront already started")
        self._ready.clear()
        self._start_error = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="RedshiftFront", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise self._start_error
        return self

    def stop(self) -> None:
        """Close the listener and every session (client and upstream sockets), and join the thread."""
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(event.set)
        thread.join()
        self._thread = None
        self._loop = None
        self._stop_event = None

    def __enter__(self) -> RedshiftFront:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(), or lost at shutdown: nothing else can catch it
            if not self._ready.is_set():
                self._start_error = exc
                self._ready.set()
            else:
                _log.exception("RedshiftFront event loop failed")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        server = await asyncio.start_server(self._handle, self.host, self.port)
        sockname = server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        threading.current_thread().name = f"RedshiftFront-{self.host}:{self.port}"
        self._ready.set()
        _log.debug("RedshiftFront listening on %s:%s", self.host, self.port)
        try:
            await self._stop_event.wait()
        finally:
            self._closing = True
            server.close()
            for task in list(self._sessions):
                task.cancel()
            if self._sessions:
                await asyncio.gather(*self._sessions, return_exceptions=True)
            await server.wait_closed()
            _log.debug("RedshiftFront on %s:%s stopped", self.host, self.port)

    # -- one client connection -------------------------------------------------------------------------------

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or self._closing:
            cwriter.transport.abort()
            return
        self._sessions.add(task)
        upstream: asyncio.StreamWriter | None = None
        aborted = True
        try:
            try:
                startup = await asyncio.wait_for(self._read_startup(creader, cwriter), self._startup_timeout)
                if startup is not None:
                    ureader, upstream = await asyncio.wait_for(
                        self._login(startup, creader, cwriter), self._startup_timeout
                    )
            except _LoginRefused as refused:
                self.logins_refused += 1
                cwriter.write(refused.error_message)
                await cwriter.drain()
            else:
                if upstream is not None:
                    await self._relay(creader, cwriter, ureader, upstream)
            aborted = False
        except asyncio.CancelledError:
            # stop(): end quietly (re-raising makes asyncio's stream callback log the cancellation as an error)
            pass
        except _ProtocolViolation as exc:
            _log.debug("protocol violation from a client or upstream: %s", exc)
            with contextlib.suppress(ConnectionError):
                cwriter.write(_error_response("08P01", "invalid startup or authentication message"))
            aborted = False
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, ssl.SSLError):
            aborted = False  # a peer went away, stalled or failed the TLS handshake; nothing to tell anyone
        finally:
            self._sessions.discard(task)
            for writer in (upstream, cwriter):
                if writer is not None:
                    await self._close(writer, aborted)

    @staticmethod
    async def _close(writer: asyncio.StreamWriter, abort: bool) -> None:
        if abort:
            writer.transport.abort()
            return
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2.0)
        writer.transport.abort()  # no-op if closed; drops data a stalled peer never read

    async def _read_startup(
        self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
    ) -> _Startup | None:
        """Read until a StartupMessage; answers encryption requests, forwards cancel requests (-> None)."""
        encrypted = False
        while True:
            header = await creader.readexactly(4)
            (length,) = _INT32.unpack(header)
            if length < 8 or length > _MAX_STARTUP_PACKET:
                raise _ProtocolViolation(f"invalid startup packet length {length}")
            body = await creader.readexactly(length - 4)
            (code,) = _INT32.unpack_from(body)
            if code == _SSL_REQUEST and self._ssl_context is not None:
                if encrypted:
                    raise _ProtocolViolation("SSLRequest inside a TLS session")
                cwriter.write(b"S")
                await cwriter.drain()
                if creader._buffer:  # type: ignore[attr-defined]  # bytes sent before 'S': CVE-2021-23222
                    raise _ProtocolViolation("unencrypted data after SSLRequest")
                # A failed handshake (wrong CA on the client, plain bytes) raises ssl.SSLError -> ends quietly.
                await _start_tls(cwriter, self._ssl_context)
                encrypted = True
                continue
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                cwriter.write(b"N")
                await cwriter.drain()
                continue
            if code == _CANCEL_REQUEST:
                await self._forward_cancel(header + body)
                return None
            if code >> 16 != 3:
                raise _LoginRefused(
                    _error_response("0A000", f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
                )
            return self._parse_startup(code & 0xFFFF, body[4:], cwriter)

    @staticmethod
    def _parse_startup(minor: int, data: bytes, cwriter: asyncio.StreamWriter) -> _Startup:
        parts = data.split(b"\0")
        # key\0value\0 ... \0  ->  [k, v, ..., b"", b""]
        if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"" or len(parts) % 2:
            raise _ProtocolViolation("malformed startup packet")
        pairs = list(zip(parts[0:-2:2], parts[1:-2:2], strict=True))
        options = [k for k, _ in pairs if k.startswith(b"_pq_.")]
        kept = [(k, v) for k, v in pairs if k not in REDSHIFT_ONLY_STARTUP_PARAMETERS and k not in options]
        if minor > 0 or options:
            # We talk 3.0 upstream, so negotiate the client down here, before authentication as PostgreSQL does.
            body = _INT32.pack(0) + _INT32.pack(len(options)) + b"".join(o + b"\0" for o in options)
            cwriter.write(_message(b"v", body))
        return _Startup(minor, kept)

    async def _forward_cancel(self, packet: bytes) -> None:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(*self._upstream), self._connect_timeout
            )
        except (OSError, asyncio.TimeoutError):
            _log.debug("could not forward a cancel request: upstream unreachable")
            return
        try:
            writer.write(packet)
            await writer.drain()
        finally:
            await self._close(writer, abort=False)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.wait_for(asyncio.open_connection(*self._upstream), self._connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            _log.debug("upstream %s:%s unreachable: %s", *self._upstream, type(exc).__name__)
            raise _LoginRefused(
                _error_response("08006", "could not connect to the database server behind the Redshift front")
            ) from None

    async def _login(
        self, startup: _Startup, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Authenticate (managed) or start passthrough; returns the upstream streams, auth still in flight."""
        raw_user = startup.get(b"user")
        user = raw_user.decode("utf-8", "replace") if raw_user is not None else None
        ssl_object = cwriter.get_extra_info("ssl_object")
        tls_version = ssl_object.version() if isinstance(ssl_object, ssl.SSLObject) else None
        self.connections.append(FrontConnection(user, tls_version))
        if self._require_tls and tls_version is None:
            _log.debug("login refused for user %r: TLS required", user)
            raise _LoginRefused(_error_response("28000", "this endpoint requires SSL (TLS) connections"))
        if user is None or not self._store.is_managed(user):
            _log.debug("passthrough login for user %r", user)
            ureader, uwriter = await self._open_upstream()
            uwriter.write(_startup_packet(startup.params))
            return ureader, uwriter

        role = await self._check_client_password(user, creader, cwriter)
        params = [(k, role.encode() if k == b"user" else v) for k, v in startup.params]
        ureader, uwriter = await self._open_upstream()
        try:
            uwriter.write(_startup_packet(params))
            await self._upstream_auth(role, ureader, uwriter)
        except BaseException:
            await self._close(uwriter, abort=True)
            raise
        cwriter.write(_auth_request(_AUTH_OK))
        _log.debug("login for user %r accepted as role %r", user, role)
        return ureader, uwriter

    async def _check_client_password(
        self, user: str, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
    ) -> str:
        salt = secrets.token_bytes(4)
        cwriter.write(_auth_request(_AUTH_MD5, salt))
        await cwriter.drain()
        kind, body = await _read_message(creader)
        if kind != b"p" or not body.endswith(b"\0"):
            raise _ProtocolViolation("expected a password message")
        response = body[:-1]
        user_bytes = user.encode()

        def matches(password: str) -> bool:
            return hmac.compare_digest(_md5_response(password.encode(), user_bytes, salt), response)

        credential = self._store.find_live(user, matches)
        if credential is None:
            _log.debug("login refused for user %r: no live credential matches", user)
            raise _LoginRefused(_error_response("28P01", f'password authentication failed for user "{user}"'))
        if credential.login_error is not None:
            _log.debug("login refused for user %r: %s", user, credential.login_error)
            # 28000 invalid_authorization_specification: what PostgreSQL says for a missing role, and the
            # closest class for a missing group (Redshift fails the login, not a later statement).
            raise _LoginRefused(_error_response("28000", credential.login_error))
        return credential.role

    async def _upstream_auth(
        self, role: str, ureader: asyncio.StreamReader, uwriter: asyncio.StreamWriter
    ) -> None:
        """Log in to PostgreSQL as ``role`` with its internal password; returns on AuthenticationOk."""
        password = self._store.role_password(role)
        scram: _ScramSha256Client | None = None
        while True:
            kind, body = await _read_message(ureader)
            if kind == b"E":
                _log.debug("upstream refused the login of role %r", role)
                raise _LoginRefused(_message(kind, body))
            if kind in (b"N", b"v"):  # a notice, or a protocol negotiation we cannot have asked for
                continue
            if kind != b"R" or len(body) < 4:
                raise _ProtocolViolation(f"unexpected upstream message {kind!r} during authentication")
            (code,) = _INT32.unpack_from(body)
            if code == _AUTH_OK:
                return
            if code == _AUTH_MD5:
                uwriter.write(
                    _message(b"p", _md5_response(password.encode(), role.encode(), body[4:8]) + b"\0")
                )
            elif code == _AUTH_CLEARTEXT:
                uwriter.write(_message(b"p", password.encode() + b"\0"))
            elif code == _AUTH_SASL:
                mechanisms = body[4:].split(b"\0")
                if b"SCRAM-SHA-256" not in mechanisms:
                    raise _LoginRefused(
                        _error_response(
                            "28000", "the Redshift front supports no upstream SASL mechanism offered"
                        )
                    )
                scram = _ScramSha256Client(password)
                first = scram.client_first()
                uwriter.write(_message(b"p", b"SCRAM-SHA-256\0" + _INT32.pack(len(first)) + first))
            elif code == _AUTH_SASL_CONTINUE and scram is not None:
                uwriter.write(_message(b"p", scram.client_final(body[4:])))
            elif code == _AUTH_SASL_FINAL and scram is not None:
                if not scram.verify_server_final(body[4:]):
                    raise _ProtocolViolation("upstream SCRAM server signature mismatch")
            else:
                raise _LoginRefused(
                    _error_response("28000", f"the Redshift front cannot answer upstream auth request {code}")
                )
            await uwriter.drain()

    # -- relaying ------------------------------------------------------------------------------------------

    async def _relay(
        self,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        ureader: asyncio.StreamReader,
        uwriter: asyncio.StreamWriter,
    ) -> None:
        """Relay both ways until either side closes; parses server messages only until ReadyForQuery."""
        client_to_server = asyncio.ensure_future(self._pump(creader, uwriter))
        server_to_client = asyncio.ensure_future(self._server_to_client(ureader, cwriter))
        try:
            await asyncio.wait((client_to_server, server_to_client), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in (client_to_server, server_to_client):
                pump.cancel()
            await asyncio.gather(client_to_server, server_to_client, return_exceptions=True)

    async def _server_to_client(self, ureader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        while True:
            kind, body = await _read_message(ureader)
            if kind == b"S" and body.startswith(b"server_version\0"):
                body = b"server_version\0" + self._server_version + b"\0"
            cwriter.write(_message(kind, body))
            if kind == b"E":
                self.logins_refused += 1
                await cwriter.drain()
                return  # PostgreSQL ends the connection after a startup error
            if kind == b"Z":
                break
        self.logins_accepted += 1
        self.active_connections += 1
        try:
            await self._pump(ureader, cwriter)
        finally:
            self.active_connections -= 1

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(_RELAY_CHUNK):
                writer.write(data)
                await writer.drain()
