"""A local AWS API emulator for the Redshift stand-in: real HTTP that botocore talks to via ``endpoint_url``.

It answers, with the wire formats botocore expects (signatures verified, errors parsed as real ones):

* ``redshift-serverless`` (JSON 1.1): ``GetCredentials``, ``GetWorkgroup``;
* ``redshift`` (query/XML): ``GetClusterCredentials``, ``GetClusterCredentialsWithIAM``, ``DescribeClusters``;
* ``sts`` (query/XML): ``AssumeRole``, ``GetCallerIdentity``.

It checks requests as AWS does: the SigV4 signature over the body that actually arrived (a claimed
``x-amz-content-sha256`` is not trusted), an ``X-Amz-Date`` within 15 minutes of the emulator's clock
("Signature expired" / "Signature not yet current", with the signature error code of each protocol),
``Content-Length`` or chunked bodies (read to the end, so keep-alive connections stay in sync), and the
parameter constraints of the API references, transcribed here independently of the client's
``sqlalchemy_rs_iam.config`` so that a wrong client pattern is caught. Answers carry the members AWS
returns (VPC endpoints, versions, capacities, cluster nodes); ``DescribeClusters`` pages with
``MaxRecords`` (20-100) and ``Marker``.

Every database credential it issues is real: it is recorded in the shared
:class:`~sqlalchemy_rs_iam.testing.store.CredentialStore` (which the Redshift front enforces) and, when a
:class:`~sqlalchemy_rs_iam.testing.store.RoleAdmin` is given, the PostgreSQL role behind it is created or
updated. Faults (throttling, 500s, hangs, latency), IAM denials and a call log let tests drive the client's
error handling.

Example::

    store = CredentialStore()
    with AwsEmulator(store, roles=None) as aws:
        aws.add_identity("AKIDEXAMPLE", "secret", "alice")
        aws.add_workgroup("wg", address="127.0.0.1", port=5439)
        client = boto3.client("redshift-serverless", region_name="us-east-1", endpoint_url=aws.url,
                              aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")
        client.get_credentials(workgroupName="wg")["dbUser"]      # -> "IAM:alice"
        aws.faults.throttle("GetCredentials", 2)                   # the next two calls are throttled
        aws.calls_for("GetCredentials")                            # -> [Call(...), ...]
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import hashlib
import json
import logging
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, TypeVar

from sqlalchemy_rs_iam.testing.emulator_wire import (
    JSON_TARGET_PREFIX,
    SERVICE_PROTOCOLS,
    AwsError,
    Members,
    Protocol,
    Rendered,
    SigV4Auth,
    check_request_time,
    common_error,
    iso8601,
    loggable_params,
    parse_authorization,
    parse_query_params,
    render_error,
    render_success,
    signature_matches,
)
from sqlalchemy_rs_iam.testing.store import CredentialStore, IssuedCredential, RoleAdmin

__all__ = ["AwsEmulator", "Call", "Faults"]

logger = logging.getLogger(__name__)

DEFAULT_ACCOUNT = "123456789012"

# AWS's constraints, transcribed here from the AWS API references (GetCredentials, GetClusterCredentials) and botocore's
# service models -- deliberately NOT imported from sqlalchemy_rs_iam.config, so that a wrong client-side
# pattern fails against the emulator instead of agreeing with itself. AWS's patterns are ASCII (Java regex
# classes), hence re.ASCII; lengths are checked separately, as AWS reports them separately.
_A = re.ASCII
_WORKGROUP_RE = re.compile(r"[a-z0-9-]+", _A)  # WorkgroupName: ^[a-z0-9-]+$, length 3-64
_WORKGROUP_LEN = (3, 64)
_DOMAIN_RE = re.compile(  # CustomDomainName, length 1-253
    r"(((?!-)[A-Za-z0-9-]{0,62}[A-Za-z0-9])\.)+((?!-)[A-Za-z0-9-]{1,62}[A-Za-z0-9])", _A
)
_DOMAIN_SHOWN = r"^(((?!-)[A-Za-z0-9-]{0,62}[A-Za-z0-9])\.)+((?!-)[A-Za-z0-9-]{1,62}[A-Za-z0-9])$"
_DOMAIN_LEN = (1, 253)
# dbName / DbName / DbUser: 1-64; first a letter; letters of either case, digits, _ + . @ - (so no : or /)
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_+.@-]{0,63}", _A)
# DbGroups: the same, lower-case letters only
_GROUP_RE = re.compile(r"[a-z][a-z0-9_+.@-]{0,63}", _A)
_SESSION_NAME_RE = re.compile(r"[\w+=,.@-]*", _A)  # RoleSessionName, length 2-64
_MAX_RECORDS = (20, 100)  # DescribeClusters MaxRecords: "minimum 20, maximum 100", default 100
_ROLE_ARN_RE = re.compile(r"arn:aws[a-z-]*:iam::(?P<account>\d{12}):role/(?:[^/]+/)*(?P<name>[\w+=,.@-]+)")
DB_DURATION_RANGE = (900, 3600)
ROLE_MAX_SESSION = 3600  # IAM's default MaxSessionDuration


@dataclass(frozen=True)
class Call:
    """One API call the emulator received (never holds a password, secret key or session token).

    ``caller`` is the principal the request was signed as ("" if it could not be authenticated);
    ``status`` / ``error_code`` are filled in once the answer is known (``status`` 0 while in progress).
    """

    operation: str
    service: str
    region: str
    caller: str
    access_key_id: str
    params: dict[str, object]
    at: float
    status: int = 0
    error_code: str | None = None


@dataclass(frozen=True)
class _Identity:
    access_key_id: str
    secret: str | None = field(repr=False)  # None: not verified (strict_identities=False)
    principal: str
    kind: Literal["user", "role"]
    account_id: str
    session_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    session_name: str = "emulator"
    role_name: str | None = None

    @property
    def arn(self) -> str:
        if self.kind == "user":
            return f"arn:aws:iam::{self.account_id}:user/{self.principal}"
        return f"arn:aws:sts::{self.account_id}:assumed-role/{self.role_name or self.principal}/{self.session_name}"

    @property
    def user_id(self) -> str:
        digest = hashlib.sha256(f"{self.account_id}/{self.principal}".encode()).hexdigest()[:17].upper()
        if self.kind == "user":
            return f"AIDA{digest}"
        return f"AROA{digest}:{self.session_name}"


@dataclass(frozen=True)
class _Workgroup:
    name: str
    region: str
    address: str
    port: int
    custom_domains: tuple[str, ...]
    account_id: str
    workgroup_id: str
    created_at: float


@dataclass(frozen=True)
class _Cluster:
    identifier: str
    region: str
    address: str
    port: int
    custom_domains: tuple[str, ...]
    account_id: str
    created_at: float


_R = TypeVar("_R", _Workgroup, _Cluster)


@dataclass(frozen=True)
class _Role:
    arn: str
    principal: str
    external_id: str | None = field(repr=False)
    account_id: str
    name: str


@dataclass
class _Context:
    service: str
    protocol: Protocol
    operation: str
    region: str
    identity: _Identity
    params: dict[str, object]


class Faults:
    """Injected failures, per operation name (``"GetCredentials"``, ``"AssumeRole"``, ... or ``"*"``).

    Example::

        faults.throttle("GetCredentials", 2)    # next 2 calls answer Throttling(Exception)
        faults.server_error("*", 1)             # next call of any operation answers HTTP 500
        faults.hang("DescribeClusters", 30)     # calls sleep 30 s before answering (release_hangs() ends it)
        faults.latency("*", 0.05)               # every call takes 50 ms longer
        faults.clear()
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._throttle: dict[str, int] = {}
        self._server_error: dict[str, int] = {}
        self._hang: dict[str, tuple[float, int | None]] = {}
        self._latency: dict[str, float] = {}
        self._waiting: set[threading.Event] = set()
        self._closed = False

    def throttle(self, operation: str, n: int = 1) -> None:
        """Answer the next ``n`` calls of ``operation`` with a throttling error (400)."""
        with self._lock:
            self._throttle[operation] = self._throttle.get(operation, 0) + n

    def server_error(self, operation: str, n: int = 1) -> None:
        """Answer the next ``n`` calls of ``operation`` with an internal error (500)."""
        with self._lock:
            self._server_error[operation] = self._server_error.get(operation, 0) + n

    def hang(self, operation: str, seconds: float, n: int | None = None) -> None:
        """Sleep ``seconds`` before answering calls of ``operation`` (the next ``n``, or all if ``None``)."""
        with self._lock:
            self._hang[operation] = (seconds, n)

    def latency(self, operation: str, seconds: float) -> None:
        """Add ``seconds`` to every call of ``operation``."""
        with self._lock:
            self._latency[operation] = seconds

    def release_hangs(self) -> None:
        """Wake every call currently sleeping in a hang or latency (they then answer normally)."""
        with self._lock:
            waiting = list(self._waiting)
        for event in waiting:
            event.set()

    def clear(self) -> None:
        """Remove every fault (calls already hanging keep sleeping unless released)."""
        with self._lock:
            self._throttle.clear()
            self._server_error.clear()
            self._hang.clear()
            self._latency.clear()

    # -- used by the emulator ---------------------------------------------------------------------------
    def _open(self) -> None:
        with self._lock:
            self._closed = False

    def _close(self) -> None:
        with self._lock:
            self._closed = True
        self.release_hangs()

    def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        event = threading.Event()
        with self._lock:
            if self._closed:
                return
            self._waiting.add(event)
        try:
            event.wait(seconds)
        finally:
            with self._lock:
                self._waiting.discard(event)

    def _take(self, counters: dict[str, int], operation: str) -> bool:
        for key in (operation, "*"):
            if counters.get(key, 0) > 0:
                counters[key] -= 1
                return True
        return False

    def _apply(self, operation: str) -> str | None:
        """Sleep as configured, then return ``"throttle"``, ``"internal"`` or ``None``."""
        delay = 0.0
        with self._lock:
            delay += self._latency.get(operation, 0.0) + self._latency.get("*", 0.0)
            for key in (operation, "*"):
                hang = self._hang.get(key)
                if hang is None:
                    continue
                seconds, remaining = hang
                if remaining is not None:
                    if remaining <= 0:
                        continue
                    self._hang[key] = (seconds, remaining - 1)
                delay += seconds
                break
        self._sleep(delay)
        with self._lock:
            if self._take(self._throttle, operation):
                return "throttle"
            if self._take(self._server_error, operation):
                return "internal"
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # many clients connecting at once must not overflow the listen backlog

    def __init__(self, address: tuple[str, int], emulator: AwsEmulator) -> None:
        self.emulator = emulator
        self._conn_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._conns.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conn_lock:
                self._conns.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (read timeouts, stop()) are routine; never print tracebacks to stderr.
        logger.debug("AWS emulator: connection from %s ended with an error", client_address, exc_info=False)

    def close_connections(self, timeout: float) -> None:
        """Shut down keep-alive connections so their handler threads end, waiting up to ``timeout``."""
        with self._conn_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._conn_lock:
                if not self._conns:
                    return
            time.sleep(0.01)


_MAX_BODY = 1 << 20  # far above any request botocore sends to these APIs
_MAX_LINE = 1 << 12


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes; avoid the 40 ms delayed-ACK stall
    server: _Server

    def _handle(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            # A body we cannot delimit leaves the connection unusable: answer and close it.
            self.close_connection = True
            self.send_error(400, "Bad request body")
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, payload = self.server.emulator._dispatch(self.command, self.path, headers, body)
        self.send_response(status)
        for name, value in out_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes:
        """The request body, delimited by Content-Length or by chunked transfer coding (RFC 9112 7.1).

        Chunked bodies are read to their end, trailers included, so no byte is left on a keep-alive connection
        to be mistaken for the next request. Raises ValueError for a malformed or oversized body.
        """
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size_line = self.rfile.readline(_MAX_LINE)
                if not size_line.endswith(b"\n"):
                    raise ValueError("truncated chunk size line")
                size = int(size_line.split(b";", 1)[0].strip(), 16)  # ValueError if not hex
                if size == 0:
                    break
                total += size
                if total > _MAX_BODY:
                    raise ValueError("request body too large")
                data = self.rfile.read(size)
                if len(data) != size or self.rfile.read(2) != b"\r\n":
                    raise ValueError("truncated chunk")
                chunks.append(data)
            while self.rfile.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields: none matter here
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    do_POST = _handle
    do_GET = _handle

    def date_time_string(self, timestamp: float | None = None) -> str:
        # Real AWS stamps its Date header and its expirations with one clock; so does the emulator, which
        # makes a skewed emulator clock look to botocore exactly like a host whose clock is off.
        now = self.server.emulator.clock() if timestamp is None else timestamp
        return email.utils.formatdate(now, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines carry no secrets (botocore POSTs), but stay quiet unless asked.
        logger.debug("AWS emulator: " + format, *args)


class AwsEmulator:
    """The AWS side of the local Redshift stand-in (see the module docstring for an example).

    ``clock`` drives credential times (issue, expiry, STS token expiry) and the call log; the store should
    use the same clock. With ``strict_identities=False`` an unknown access key is accepted unverified as
    the IAM user named by the key.
    """

    def __init__(
        self,
        store: CredentialStore,
        roles: RoleAdmin | None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        strict_identities: bool = True,
    ) -> None:
        self.store = store
        self.roles = roles
        self.host = host
        self.port = port
        self.clock = clock
        self.strict_identities = strict_identities
        self.max_lifetime: float | None = None
        self.next_refresh_after: float | None = None
        #: AWS refuses a request signed more than 15 minutes off its clock. Only a simulation whose ``clock``
        #: runs ahead of real time (while botocore signs with the real one) turns this off.
        self.check_request_time = True
        self.faults = Faults()
        self._lock = threading.Lock()
        self._roles_lock = threading.Lock()  # RoleAdmin implementations need not be thread-safe
        self._identities: dict[str, _Identity] = {}
        self._workgroups: dict[tuple[str, str], _Workgroup] = {}
        self._clusters: dict[tuple[str, str], _Cluster] = {}
        self._iam_roles: dict[str, _Role] = {}
        self._denied: set[tuple[str, str | None]] = set()
        self._calls: list[Call] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> AwsEmulator:
        """Bind and serve in a daemon thread; ``url`` is valid afterwards."""
        if self._server is not None:
            return self
        self.faults._open()
        server = _Server((self.host, self.port), self)
        self._server = server
        self.port = int(server.server_address[1])
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="aws-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; returns promptly even while calls hang (they are released first)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self.faults._close()
        server.shutdown()
        server.close_connections(timeout=2.0)
        server.server_close()
        if thread is not None:
            thread.join(timeout=2.0)

    def __enter__(self) -> AwsEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"AwsEmulator(url={self.url!r})"

    # -- configuration -----------------------------------------------------------------------------------
    def add_identity(
        self,
        access_key_id: str,
        secret_access_key: str,
        principal: str,
        kind: Literal["user", "role"] = "user",
        account_id: str = DEFAULT_ACCOUNT,
    ) -> None:
        """Register static AWS keys; requests signed with them act as ``principal`` (an IAM user or role)."""
        ident = _Identity(access_key_id, secret_access_key, principal, kind, account_id, role_name=principal)
        with self._lock:
            self._identities[access_key_id] = ident

    def add_workgroup(
        self,
        name: str,
        *,
        region: str = "us-east-1",
        address: str,
        port: int,
        custom_domains: Sequence[str] = (),
        account_id: str = DEFAULT_ACCOUNT,
    ) -> None:
        """A Redshift Serverless workgroup in ``region`` whose endpoint is ``address:port``."""
        wg = _Workgroup(
            name, region, address, port, tuple(custom_domains), account_id, str(uuid.uuid4()), self.clock()
        )
        with self._lock:
            self._workgroups[(region, name)] = wg

    def add_cluster(
        self,
        identifier: str,
        *,
        region: str = "us-east-1",
        address: str,
        port: int,
        custom_domains: Sequence[str] = (),
        account_id: str = DEFAULT_ACCOUNT,
    ) -> None:
        """A provisioned Redshift cluster in ``region`` whose endpoint is ``address:port``."""
        cluster = _Cluster(identifier, region, address, port, tuple(custom_domains), account_id, self.clock())
        with self._lock:
            self._clusters[(region, identifier)] = cluster

    def add_role(self, role_arn: str, principal: str, external_id: str | None = None) -> None:
        """An IAM role assumable with ``sts:AssumeRole``; the session keys act as role ``principal``."""
        m = _ROLE_ARN_RE.fullmatch(role_arn)
        if m is None:
            raise ValueError(f"not an IAM role ARN: {role_arn!r}")
        with self._lock:
            self._iam_roles[role_arn] = _Role(role_arn, principal, external_id, m["account"], m["name"])

    def deny(self, operation: str, principal: str | None = None) -> None:
        """Answer AccessDenied(Exception) to ``operation`` for ``principal`` (all principals if ``None``)."""
        with self._lock:
            self._denied.add((operation, principal))

    def allow(self, operation: str | None = None, principal: str | None = None) -> None:
        """Undo :meth:`deny` (for one operation/principal pair, or every denial if ``operation`` is None)."""
        with self._lock:
            if operation is None:
                self._denied.clear()
            else:
                self._denied.discard((operation, principal))

    def revoke(self, login_user: str | None = None) -> int:
        """Revoke issued database credentials (see :meth:`CredentialStore.revoke`)."""
        return self.store.revoke(login_user)

    # -- call log ----------------------------------------------------------------------------------------
    @property
    def calls(self) -> list[Call]:
        """A snapshot of every call received, oldest first."""
        with self._lock:
            return list(self._calls)

    def calls_for(self, operation: str) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.operation == operation]

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def _record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def _finish(self, call: Call, status: int, error_code: str | None) -> None:
        done = dataclasses.replace(call, status=status, error_code=error_code)
        with self._lock:
            for i in range(len(self._calls) - 1, -1, -1):
                if self._calls[i] is call:
                    self._calls[i] = done
                    return

    # -- request handling --------------------------------------------------------------------------------
    def _dispatch(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Rendered:
        request_id = str(uuid.uuid4())
        target = headers.get("x-amz-target")
        auth = parse_authorization(headers.get("authorization"))
        service = auth.service if auth is not None else ("redshift-serverless" if target else "sts")
        protocol: Protocol = SERVICE_PROTOCOLS.get(service, "json" if target else "query")
        if auth is None:
            return render_error(protocol, service, common_error("missing_auth", protocol), request_id)
        if service not in SERVICE_PROTOCOLS:
            err = AwsError("UnknownService", f"The emulator does not serve {service!r}.", 400)
            return render_error(protocol, service, err, request_id)
        try:
            operation, params = self._parse(service, protocol, method, target, raw_path, body)
        except AwsError as err:
            return render_error(protocol, service, err, request_id)
        call = Call(
            operation, service, auth.region, "", auth.access_key_id, loggable_params(params), self.clock()
        )
        self._record(call)
        try:
            identity = self._authenticate(auth, protocol, method, raw_path, headers, body)
            call = self._with_caller(call, identity.principal)
            ctx = _Context(service, protocol, operation, auth.region, identity, params)
            result = self._execute(ctx)
        except AwsError as err:
            self._finish(call, err.status, err.code)
            return render_error(protocol, service, err, request_id)
        except Exception as exc:  # a bug or a RoleAdmin failure: answer 500 like AWS would
            logger.warning("AWS emulator: %s failed internally (%s)", operation, type(exc).__name__)
            internal = common_error("internal", protocol)
            self._finish(call, internal.status, internal.code)
            return render_error(protocol, service, internal, request_id)
        self._finish(call, 200, None)
        return render_success(protocol, service, operation, result, request_id)

    def _with_caller(self, call: Call, caller: str) -> Call:
        updated = dataclasses.replace(call, caller=caller)
        with self._lock:
            for i in range(len(self._calls) - 1, -1, -1):
                if self._calls[i] is call:
                    self._calls[i] = updated
                    break
        return updated

    def _parse(
        self, service: str, protocol: Protocol, method: str, target: str | None, raw_path: str, body: bytes
    ) -> tuple[str, dict[str, object]]:
        if protocol == "json":
            prefix = JSON_TARGET_PREFIX[service] + "."
            if not target or not target.startswith(prefix):
                raise common_error("unknown_operation", protocol)
            operation = target[len(prefix) :]
            try:
                decoded = json.loads(body or b"{}")
            except ValueError:
                raise common_error("malformed", protocol) from None
            if not isinstance(decoded, dict):
                raise common_error("malformed", protocol)
            params: dict[str, object] = decoded
        else:
            query = raw_path.partition("?")[2]
            try:
                params = parse_query_params(body if method == "POST" else b"", query)
            except UnicodeDecodeError:
                raise common_error("malformed", protocol) from None
            action = params.get("Action")
            if not isinstance(action, str) or not action:
                raise common_error("unknown_operation", protocol, "Missing Action")
            operation = action
        if (service, operation) not in _HANDLERS:
            raise common_error("unknown_operation", protocol)
        return operation, params

    def _authenticate(
        self,
        auth: SigV4Auth,
        protocol: Protocol,
        method: str,
        raw_path: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> _Identity:
        with self._lock:
            ident = self._identities.get(auth.access_key_id)
        token = headers.get("x-amz-security-token")
        if ident is None:
            if self.strict_identities:
                raise common_error("unknown_key", protocol)
            return _Identity(auth.access_key_id, None, auth.access_key_id, "user", DEFAULT_ACCOUNT)
        if ident.secret is not None and not signature_matches(
            auth, ident.secret, method, raw_path, headers, body
        ):
            raise common_error("bad_signature", protocol)
        # A valid signature is only good for 15 minutes either side of AWS's clock (replay protection).
        if self.check_request_time:
            check_request_time(headers.get("x-amz-date", ""), self.clock(), protocol)
        if ident.session_token is None:
            if token is not None:
                raise common_error("unknown_key", protocol)
            return ident
        if token is None or not secrets.compare_digest(token, ident.session_token):
            raise common_error("unknown_key", protocol)
        if ident.expires_at is not None and ident.expires_at <= self.clock():
            raise common_error("expired_token", protocol)
        return ident

    def _execute(self, ctx: _Context) -> Mapping[str, object]:
        fault = self.faults._apply(ctx.operation)
        if fault is not None:
            raise common_error(fault, ctx.protocol)
        with self._lock:
            denied = (ctx.operation, None) in self._denied or (
                ctx.operation,
                ctx.identity.principal,
            ) in self._denied
        if denied:
            action = f"{ctx.service}:{ctx.operation}"
            raise common_error(
                "denied",
                ctx.protocol,
                f"User: {ctx.identity.arn} is not authorized to perform: {action} because no "
                f"identity-based policy allows the {action} action",
            )
        return _HANDLERS[(ctx.service, ctx.operation)](self, ctx)

    # -- credential issuing ------------------------------------------------------------------------------
    def _issue(
        self,
        ctx: _Context,
        login_user: str,
        role: str,
        *,
        auto_create: bool,
        groups: Sequence[str],
        duration: int,
    ) -> IssuedCredential:
        login_error: str | None = None
        if self.roles is not None:
            with self._roles_lock:
                if auto_create or self.roles.role_exists(role):
                    self.roles.ensure_login_role(role, self.store.role_password(role))
                else:
                    login_error = f'role "{role}" does not exist'
                for group in groups:
                    if not self.roles.group_exists(group):
                        login_error = login_error or f'group "{group}" does not exist'
                    elif login_error is None:
                        self.roles.grant_group(group, role)
        now = self.clock()
        lifetime = float(duration) if self.max_lifetime is None else min(float(duration), self.max_lifetime)
        cred = IssuedCredential(
            login_user=login_user,
            password=secrets.token_urlsafe(32),
            role=role,
            expires_at=now + lifetime,
            issued_at=now,
            caller=ctx.identity.principal,
            groups=tuple(groups),
            login_error=login_error,
        )
        self.store.add(cred)
        return cred

    def _next_refresh(self, cred: IssuedCredential) -> float:
        if self.next_refresh_after is None:
            return cred.expires_at
        return cred.issued_at + self.next_refresh_after

    @staticmethod
    def _iam_login(identity: _Identity) -> str:
        return f"IAMR:{identity.principal}" if identity.kind == "role" else f"IAM:{identity.principal}"

    def _lookup(
        self, resources: Mapping[tuple[str, str], _R], region: str, name: str | None, domain: str | None
    ) -> _R | None:
        """A workgroup or cluster of ``region`` by its name, else by one of its custom domains."""
        with self._lock:
            if name is not None:
                return resources.get((region, name))
            return next(
                (r for (reg, _), r in resources.items() if reg == region and domain in r.custom_domains), None
            )

    # -- redshift-serverless -----------------------------------------------------------------------------
    def _find_workgroup(self, ctx: _Context, name: str | None, domain: str | None) -> _Workgroup:
        wg = self._lookup(self._workgroups, ctx.region, name, domain)
        if wg is None:
            what = f"Workgroup {name}" if name is not None else f"Custom domain name {domain}"
            raise AwsError(
                "ResourceNotFoundException",
                f"{what} not found.",
                400,
                extra={"resourceName": str(name or domain)},
            )
        return wg

    def _get_credentials(self, ctx: _Context) -> Mapping[str, object]:
        p = ctx.params
        name = _opt_str(p, "workgroupName", ctx)
        domain = _opt_str(p, "customDomainName", ctx)
        if name is None and domain is None:
            raise _validation("Either workgroupName or customDomainName must be specified.")
        if name is not None and domain is not None:
            raise _validation("Specify either workgroupName or customDomainName, not both.")
        if name is not None:
            _check_string(name, "workgroupName", *_WORKGROUP_LEN, _WORKGROUP_RE, r"^[a-z0-9-]+$")
        if domain is not None:
            _check_string(domain, "customDomainName", *_DOMAIN_LEN, _DOMAIN_RE, _DOMAIN_SHOWN)
        db_name = _opt_str(p, "dbName", ctx)
        if db_name is not None and not _NAME_RE.fullmatch(db_name):
            raise _validation(_name_rule("dbName", db_name))
        duration = _duration(p.get("durationSeconds"), "durationSeconds", ctx)
        self._find_workgroup(ctx, name, domain)
        login = self._iam_login(ctx.identity)
        cred = self._issue(ctx, login, login, auto_create=True, groups=(), duration=duration)
        return {
            "dbUser": cred.login_user,
            "dbPassword": cred.password,
            "expiration": round(cred.expires_at, 3),
            "nextRefreshTime": round(self._next_refresh(cred), 3),
        }

    def _get_workgroup(self, ctx: _Context) -> Mapping[str, object]:
        name = _opt_str(ctx.params, "workgroupName", ctx)
        if name is None:
            raise _validation(
                "1 validation error detected: Value null at 'workgroupName' failed to satisfy "
                "constraint: Member must not be null"
            )
        _check_string(name, "workgroupName", *_WORKGROUP_LEN, _WORKGROUP_RE, r"^[a-z0-9-]+$")
        wg = self._find_workgroup(ctx, name, None)
        created = iso8601(wg.created_at)
        net = _network(f"{wg.region}/{wg.account_id}/{wg.name}", wg.region)
        workgroup: dict[str, object] = {
            "workgroupName": wg.name,
            "workgroupId": wg.workgroup_id,
            "workgroupArn": f"arn:aws:redshift-serverless:{wg.region}:{wg.account_id}:workgroup/{wg.workgroup_id}",
            "namespaceName": "default-namespace",
            "status": "AVAILABLE",
            "baseCapacity": 8,
            "maxCapacity": 512,
            "enhancedVpcRouting": False,
            "publiclyAccessible": True,
            "port": wg.port,
            "endpoint": {
                "address": wg.address,
                "port": wg.port,
                "vpcEndpoints": [
                    {
                        "vpcEndpointId": net["vpce"],
                        "vpcId": net["vpc"],
                        "networkInterfaces": [
                            {
                                "networkInterfaceId": net["eni"],
                                "subnetId": net["subnet"],
                                "privateIpAddress": net["ip"],
                                "availabilityZone": net["az"],
                            }
                        ],
                    }
                ],
            },
            "creationDate": created,
            "configParameters": [
                {"parameterKey": "require_ssl", "parameterValue": "true"},
                {"parameterKey": "enable_user_activity_logging", "parameterValue": "true"},
            ],
            "securityGroupIds": [net["sg"]],
            "subnetIds": [net["subnet"]],
            "workgroupVersion": "1.0.85",
            "patchVersion": "patch 186",
            "trackName": "current",
            "ipAddressType": "ipv4",
        }
        if wg.custom_domains:
            workgroup["customDomainName"] = wg.custom_domains[0]
        return {"workgroup": workgroup}

    # -- redshift (provisioned) --------------------------------------------------------------------------
    def _find_cluster(self, ctx: _Context) -> _Cluster:
        p = ctx.params
        identifier = _opt_str(p, "ClusterIdentifier", ctx)
        domain = _opt_str(p, "CustomDomainName", ctx)
        if identifier is None and domain is None:
            raise AwsError(
                "MissingParameter", "Either ClusterIdentifier or CustomDomainName must be specified."
            )
        if identifier is not None and domain is not None:
            raise AwsError(
                "InvalidParameterCombination",
                "ClusterIdentifier and CustomDomainName cannot both be specified.",
            )
        cluster = self._lookup(self._clusters, ctx.region, identifier, domain)
        if cluster is None:
            what = (
                f"Cluster {identifier}" if identifier is not None else f"Cluster with custom domain {domain}"
            )
            raise AwsError("ClusterNotFound", f"{what} not found.", 404)
        return cluster

    def _cluster_common(self, ctx: _Context) -> tuple[_Cluster, int]:
        db_name = _opt_str(ctx.params, "DbName", ctx)
        if db_name is not None and not _NAME_RE.fullmatch(db_name):
            raise AwsError("InvalidParameterValue", _name_rule("DbName", db_name))
        duration = _duration(ctx.params.get("DurationSeconds"), "DurationSeconds", ctx)
        return self._find_cluster(ctx), duration

    def _get_cluster_credentials(self, ctx: _Context) -> Mapping[str, object]:
        p = ctx.params
        db_user = _opt_str(p, "DbUser", ctx)
        if db_user is None:
            raise AwsError("MissingParameter", "The request must contain the parameter DbUser.")
        if not _NAME_RE.fullmatch(db_user):
            raise AwsError("InvalidParameterValue", _name_rule("DbUser", db_user))
        if db_user.lower() == "public":
            raise AwsError("InvalidParameterValue", "DbUser can't be PUBLIC.")
        groups_raw = p.get("DbGroups", [])
        groups = [str(g) for g in groups_raw] if isinstance(groups_raw, list) else [str(groups_raw)]
        groups = [g for g in groups if g != ""]  # botocore sends "DbGroups=" for an empty list
        for group in groups:
            if not _GROUP_RE.fullmatch(group):
                raise AwsError(
                    "InvalidParameterValue",
                    f"Invalid DbGroup '{group}': must be 1 to 64 characters, start with a lower-case letter, "
                    "and contain only lower-case letters, digits, underscore, plus sign, period, at symbol or "
                    "hyphen.",
                )
        auto_create_raw = p.get("AutoCreate", "false")
        if auto_create_raw not in ("true", "false"):
            raise AwsError("InvalidParameterValue", "AutoCreate must be true or false.")
        auto_create = auto_create_raw == "true"
        _, duration = self._cluster_common(ctx)
        login = ("IAMA:" if auto_create else "IAM:") + db_user
        cred = self._issue(ctx, login, db_user, auto_create=auto_create, groups=groups, duration=duration)
        return {
            "DbUser": cred.login_user,
            "DbPassword": cred.password,
            "Expiration": iso8601(cred.expires_at),
        }

    def _get_cluster_credentials_with_iam(self, ctx: _Context) -> Mapping[str, object]:
        _, duration = self._cluster_common(ctx)
        login = self._iam_login(ctx.identity)
        cred = self._issue(ctx, login, login, auto_create=True, groups=(), duration=duration)
        return {
            "DbUser": cred.login_user,
            "DbPassword": cred.password,
            "Expiration": iso8601(cred.expires_at),
            "NextRefreshTime": iso8601(self._next_refresh(cred)),
        }

    def _describe_clusters(self, ctx: _Context) -> Mapping[str, object]:
        identifier = _opt_str(ctx.params, "ClusterIdentifier", ctx)
        with self._lock:
            clusters = [
                c
                for (r, i), c in sorted(self._clusters.items())
                if r == ctx.region and (identifier is None or i == identifier)
            ]
        if identifier is not None and not clusters:
            raise AwsError("ClusterNotFound", f"Cluster {identifier} not found.", 404)
        low, high = _MAX_RECORDS
        raw = ctx.params.get("MaxRecords")
        try:
            max_records = high if raw is None else int(str(raw))
        except ValueError:
            raise AwsError("InvalidParameterValue", "MaxRecords must be an integer.") from None
        if not low <= max_records <= high:
            raise AwsError("InvalidParameterValue", f"MaxRecords must be between {low} and {high}.")
        start = 0
        marker = _opt_str(ctx.params, "Marker", ctx)
        if marker:
            ids = [c.identifier for c in clusters]
            if marker not in ids:  # the marker is the identifier of the first cluster of the next page
                raise AwsError("InvalidParameterValue", "Invalid marker.")
            start = ids.index(marker)
        page = clusters[start : start + max_records]
        out: dict[str, object] = {"Clusters": Members("Cluster", [_cluster_xml(c) for c in page])}
        if start + max_records < len(clusters):
            out["Marker"] = clusters[start + max_records].identifier
        return out

    # -- sts ---------------------------------------------------------------------------------------------
    def _assume_role(self, ctx: _Context) -> Mapping[str, object]:
        p = ctx.params
        arn = _opt_str(p, "RoleArn", ctx) or ""
        session = _opt_str(p, "RoleSessionName", ctx) or ""
        if not (2 <= len(session) <= 64) or not _SESSION_NAME_RE.fullmatch(session):
            raise AwsError(
                "ValidationError",
                f"1 validation error detected: Value '{session}' at 'roleSessionName' failed to satisfy "
                r"constraint: Member must satisfy regular expression pattern: [\w+=,.@-]*",
            )
        duration_raw = p.get("DurationSeconds", str(ROLE_MAX_SESSION))
        try:
            duration = int(str(duration_raw))
        except ValueError:
            raise AwsError("ValidationError", "DurationSeconds must be an integer.") from None
        if duration < 900:
            raise AwsError(
                "ValidationError",
                f"1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy "
                "constraint: Member must have value greater than or equal to 900",
            )
        with self._lock:
            role = self._iam_roles.get(arn)
        external_id = _opt_str(p, "ExternalId", ctx)
        if role is None or (
            role.external_id is not None
            and (external_id is None or not secrets.compare_digest(external_id, role.external_id))
        ):
            raise AwsError(
                "AccessDenied",
                f"User: {ctx.identity.arn} is not authorized to perform: sts:AssumeRole on resource: {arn}",
                403,
            )
        if duration > ROLE_MAX_SESSION:
            raise AwsError(
                "ValidationError",
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            )
        now = self.clock()
        ident = _Identity(
            access_key_id="ASIA" + secrets.token_hex(8).upper(),
            secret=secrets.token_urlsafe(30),
            principal=role.principal,
            kind="role",
            account_id=role.account_id,
            session_token=secrets.token_urlsafe(96),
            expires_at=now + duration,
            session_name=session,
            role_name=role.name,
        )
        with self._lock:
            self._identities[ident.access_key_id] = ident
        return {
            "Credentials": {
                "AccessKeyId": ident.access_key_id,
                "SecretAccessKey": ident.secret,
                "SessionToken": ident.session_token,
                "Expiration": iso8601(now + duration),
            },
            "AssumedRoleUser": {"AssumedRoleId": ident.user_id, "Arn": ident.arn},
        }

    def _get_caller_identity(self, ctx: _Context) -> Mapping[str, object]:
        ident = ctx.identity
        return {"UserId": ident.user_id, "Account": ident.account_id, "Arn": ident.arn}


_HANDLERS: dict[tuple[str, str], Callable[[AwsEmulator, _Context], Mapping[str, object]]] = {
    ("redshift-serverless", "GetCredentials"): AwsEmulator._get_credentials,
    ("redshift-serverless", "GetWorkgroup"): AwsEmulator._get_workgroup,
    ("redshift", "GetClusterCredentials"): AwsEmulator._get_cluster_credentials,
    ("redshift", "GetClusterCredentialsWithIAM"): AwsEmulator._get_cluster_credentials_with_iam,
    ("redshift", "DescribeClusters"): AwsEmulator._describe_clusters,
    ("sts", "AssumeRole"): AwsEmulator._assume_role,
    ("sts", "GetCallerIdentity"): AwsEmulator._get_caller_identity,
}


# -- validation helpers ---------------------------------------------------------------------------------------
def _validation(message: str) -> AwsError:
    return AwsError("ValidationException", message, 400)


def _invalid(ctx: _Context, message: str) -> AwsError:
    if ctx.protocol == "json":
        return _validation(message)
    code = "ValidationError" if ctx.service == "sts" else "InvalidParameterValue"
    return AwsError(code, message, 400)


def _opt_str(params: Mapping[str, object], name: str, ctx: _Context) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(ctx, f"{name} must be a string.")
    return value


def _check_string(
    value: str, name: str, min_len: int, max_len: int, pattern: re.Pattern[str], shown: str
) -> None:
    prefix = f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy constraint: "
    if len(value) < min_len:
        raise _validation(prefix + f"Member must have length greater than or equal to {min_len}")
    if len(value) > max_len:
        raise _validation(prefix + f"Member must have length less than or equal to {max_len}")
    if not pattern.fullmatch(value):
        raise _validation(prefix + f"Member must satisfy regular expression pattern: {shown}")


def _name_rule(name: str, value: str) -> str:
    return (
        f"Invalid {name} '{value}': must be 1 to 64 characters, start with a letter, and contain only letters, "
        "digits, underscore, plus sign, period, at symbol or hyphen."
    )


def _duration(raw: object, name: str, ctx: _Context) -> int:
    low, high = DB_DURATION_RANGE
    if raw is None:
        return low
    try:
        value = raw if isinstance(raw, int) and not isinstance(raw, bool) else int(str(raw))
    except ValueError:
        raise _invalid(ctx, f"{name} must be an integer.") from None
    if not low <= value <= high:
        raise _invalid(ctx, f"{name} must be between {low} and {high} seconds; got {value}.")
    return value


def _network(seed: str, region: str) -> dict[str, str]:
    """Stable, AWS-shaped network identifiers for one workgroup or cluster (made up, never real)."""
    h = hashlib.sha256(seed.encode()).hexdigest()
    return {
        "vpc": f"vpc-{h[:17]}",
        "vpce": f"vpce-{h[17:34]}",
        "eni": f"eni-{h[34:51]}",
        "subnet": f"subnet-{h[51:64]}{h[:4]}",
        "sg": f"sg-{h[4:21]}",
        "ip": f"10.0.{int(h[:2], 16)}.{int(h[2:4], 16) % 250 + 4}",
        "az": f"{region}a",
    }


def _cluster_xml(c: _Cluster) -> dict[str, object]:
    net = _network(f"{c.region}/{c.account_id}/{c.identifier}", c.region)
    out: dict[str, object] = {
        "ClusterIdentifier": c.identifier,
        "NodeType": "ra3.xlplus",
        "ClusterStatus": "available",
        "ClusterAvailabilityStatus": "Available",
        "MasterUsername": "awsuser",
        "DBName": "dev",
        "Endpoint": {
            "Address": c.address,
            "Port": c.port,
            "VpcEndpoints": Members(
                "VpcEndpoint",
                [
                    {
                        "VpcEndpointId": net["vpce"],
                        "VpcId": net["vpc"],
                        "NetworkInterfaces": Members(
                            "NetworkInterface",
                            [
                                {
                                    "NetworkInterfaceId": net["eni"],
                                    "SubnetId": net["subnet"],
                                    "PrivateIpAddress": net["ip"],
                                    "AvailabilityZone": net["az"],
                                }
                            ],
                        ),
                    }
                ],
            ),
        },
        "ClusterCreateTime": iso8601(c.created_at),
        "AutomatedSnapshotRetentionPeriod": 1,
        "ManualSnapshotRetentionPeriod": -1,
        "VpcSecurityGroups": Members(
            "VpcSecurityGroup", [{"VpcSecurityGroupId": net["sg"], "Status": "active"}]
        ),
        "ClusterParameterGroups": Members(
            "ClusterParameterGroup",
            [{"ParameterGroupName": "default.redshift-1.0", "ParameterApplyStatus": "in-sync"}],
        ),
        "ClusterSubnetGroupName": "default",
        "VpcId": net["vpc"],
        "PreferredMaintenanceWindow": "sun:06:00-sun:06:30",
        "ClusterVersion": "1.0",
        "ClusterRevisionNumber": "86493",
        "AllowVersionUpgrade": True,
        "ClusterNodes": Members(
            "member",
            [{"NodeRole": "SHARED", "PrivateIPAddress": net["ip"], "PublicIPAddress": c.address}],
        ),
        "EnhancedVpcRouting": False,
        "MaintenanceTrackName": "current",
        "IpAddressType": "ipv4",
        "MultiAZ": "Disabled",
        "NumberOfNodes": 1,
        "PubliclyAccessible": True,
        "Encrypted": False,
        "AvailabilityZone": f"{c.region}a",
        "ClusterNamespaceArn": f"arn:aws:redshift:{c.region}:{c.account_id}:namespace:"
        + str(uuid.uuid5(uuid.NAMESPACE_URL, f"{c.region}/{c.identifier}")),
    }
    if c.custom_domains:
        out["CustomDomainName"] = c.custom_domains[0]
    return out
