"""No secret of any AWS credential source reaches a log record, with every logger at DEBUG.

botocore logs request parameters and headers ("Making request ... with params"), the canonical request
(botocore.auth), raw response bodies (botocore.parsers) and metadata-endpoint errors (botocore.utils) at
DEBUG. For each credential source botocore supports that carries a secret -- environment keys, the shared
credentials file, AssumeRole with an external id, web identity, IAM Identity Center (SSO),
``credential_process``, container and instance metadata -- a real credential fetch runs through the real
chain against real HTTP: the stand-in's emulator, and for what it does not serve (STS web identity, the SSO
portal, the container and instance metadata endpoints) a tiny server on 127.0.0.1 in this file.

Each test proves it can fail: the secret *was* in a record botocore logged (captured before the package's
redacting filter rewrote it), and is in no formatted log line, nor in the error raised, if any.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import botocore.credentials
import pytest

from sqlalchemy_rs_iam import aws, errors
from sqlalchemy_rs_iam.dbapi import get_connector
from sqlalchemy_rs_iam.testing.emulator import _Identity
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn
from sqlalchemy_rs_iam.testing.store import IssuedCredential

pytestmark = pytest.mark.integration

Route = Callable[[str, str, dict[str, str], bytes], tuple[int, str, bytes]]


# --- a tiny HTTP server on 127.0.0.1 ------------------------------------------------------------------------


@dataclass
class TinyServer:
    """Answers every request with ``route(method, path, headers, body) -> (status, content type, body)``."""

    route: Route
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.requests.append((self.command, self.path, headers))
                status, ctype, payload = outer.route(self.command, self.path, headers, body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tiny() -> Iterator[Callable[[Route], TinyServer]]:
    servers: list[TinyServer] = []

    def start(route: Route) -> TinyServer:
        servers.append(TinyServer(route))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# --- logging at DEBUG, before and after the filter ---------------------------------------------------------


@dataclass
class Logs:
    shown: io.StringIO  # what a root handler printed (messages and tracebacks)
    raw: list[str]  # what records said before the redacting filter rewrote them

    def raw_text(self) -> str:
        return "\n".join(self.raw)


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Logs]:
    captured = Logs(io.StringIO(), [])
    original = aws._RedactingFilter.filter

    def spy(self: aws._RedactingFilter, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        captured.raw.append(text)
        return original(self, record)

    monkeypatch.setattr(aws._RedactingFilter, "filter", spy)
    handler = logging.StreamHandler(captured.shown)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    # Every logger at DEBUG: the root, botocore's, and any that already has a level of its own.
    loggers = [root] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield captured
    finally:
        root.removeHandler(handler)
        for logger, level in saved:
            logger.setLevel(level)


@pytest.fixture
def home(rs: RedshiftStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No AWS configuration but what a test writes: empty files, no keys, no metadata service."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    (tmp_path / ".aws").mkdir()
    for name in ("config", "credentials"):
        (tmp_path / ".aws" / name).write_text("")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / ".aws" / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / ".aws" / "credentials"))
    monkeypatch.setenv("AWS_REGION", rs.region)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


def fetch(rs: RedshiftStandIn, **params: Any) -> BaseException | None:
    """One GetCredentials through the plugin's connector; the error it raised, if any."""
    try:
        connector = get_connector(
            workgroup=rs.workgroup,
            database=rs.database,
            region=rs.region,
            aws_endpoint_url=rs.aws_endpoint_url,
            **params,
        )
        connector.credentials()
    except errors.RsIamError as exc:
        return exc
    return None


def temporary_keys(rs: RedshiftStandIn) -> tuple[str, str, str]:
    """Session keys the emulator accepts (as the stand-in's role), as an STS/SSO/metadata source hands out."""
    key_id = "ASIA" + secrets.token_hex(8).upper()
    secret, token = "tmp-secret-" + secrets.token_urlsafe(24), "tmp-token-" + secrets.token_urlsafe(48)
    ident = _Identity(
        key_id,
        secret,
        rs.role_principal,
        "role",
        rs.account_id,
        session_token=token,
        role_name=rs.role_principal,
    )
    with rs.emulator._lock:
        rs.emulator._identities[key_id] = ident
    return key_id, secret, token


def check(
    logs: Logs,
    error: BaseException | None,
    secret_values: dict[str, str],
    *,
    logged_by_botocore: list[str],
) -> None:
    shown = logs.shown.getvalue()
    leaks = [what for what, value in secret_values.items() if value in shown]
    assert leaks == [], f"secrets in DEBUG log output: {leaks}"
    if error is not None:
        text = "".join(traceback.format_exception(error)) + repr(error)
        assert [w for w, v in secret_values.items() if v in text] == [], text
    raw = logs.raw_text()
    missing = [what for what in logged_by_botocore if secret_values[what] not in raw]
    assert missing == [], f"botocore did not log {missing}: this test would not notice a leak"


def db_passwords(issued: list[IssuedCredential]) -> dict[str, str]:
    assert issued, "no database password was issued"
    return {f"db password #{i}": c.password for i, c in enumerate(issued)}


# --- one test per credential source ------------------------------------------------------------------------


def test_environment_keys(
    rs: RedshiftStandIn,
    home: Path,
    logs: Logs,
    issued: list[IssuedCredential],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ident = rs.identities["rs-iam-a"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ident.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ident.secret_access_key)
    assert fetch(rs) is None
    found = {"secret key": ident.secret_access_key, **db_passwords(issued)}
    check(logs, None, found, logged_by_botocore=["db password #0"])
    assert "Signature:\n" in logs.raw_text() and "Signature:\n***" in logs.shown.getvalue()


def test_shared_credentials_file(
    rs: RedshiftStandIn, home: Path, logs: Logs, issued: list[IssuedCredential]
) -> None:
    ident = rs.identities["rs-iam-b"]
    (home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = {ident.access_key_id}\naws_secret_access_key = {ident.secret_access_key}\n"
    )
    assert fetch(rs) is None
    found = {"secret key": ident.secret_access_key, **db_passwords(issued)}
    check(logs, None, found, logged_by_botocore=["db password #0"])


def test_assume_role_with_external_id(
    rs: RedshiftStandIn,
    home: Path,
    logs: Logs,
    issued: list[IssuedCredential],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ident = rs.identities["rs-iam-a"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ident.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ident.secret_access_key)
    external_id = "ext-" + secrets.token_hex(12)
    role_arn = f"arn:aws:iam::{rs.account_id}:role/{rs.role_principal}"
    rs.emulator.add_role(role_arn, rs.role_principal, external_id=external_id)
    assert fetch(rs, role_arn=role_arn, external_id=external_id) is None
    found = {"external id": external_id, "secret key": ident.secret_access_key, **db_passwords(issued)}
    for emulated in rs.emulator._identities.values():  # the role session AssumeRole handed out
        if emulated.session_token:
            found[f"session token {emulated.access_key_id}"] = emulated.session_token
            found[f"session secret {emulated.access_key_id}"] = str(emulated.secret)
    session_tokens = [w for w in found if w.startswith("session token")]
    assert session_tokens
    check(logs, None, found, logged_by_botocore=["external id", "db password #0", *session_tokens])


def test_rs_iam_cli_at_debug_masks_the_external_id(rs: RedshiftStandIn, home: Path) -> None:
    ident = rs.identities["rs-iam-a"]
    external_id = "ext-" + secrets.token_hex(12)
    role_arn = f"arn:aws:iam::{rs.account_id}:role/{rs.role_principal}"
    rs.emulator.add_role(role_arn, rs.role_principal, external_id=external_id)
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=ident.access_key_id,
        AWS_SECRET_ACCESS_KEY=ident.secret_access_key,
        PYTHONPATH=os.pathsep.join(
            p for p in (str(Path(aws.__file__).parents[1]), os.environ.get("PYTHONPATH")) if p
        ),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sqlalchemy_rs_iam",
            "-vv",
            "credentials",
            "--workgroup",
            rs.workgroup,
            "--database",
            rs.database,
            "--region",
            rs.region,
            "--aws-endpoint-url",
            rs.aws_endpoint_url,
            "--role-arn",
            role_arn,
            "--external-id",
            external_id,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert external_id not in result.stderr + result.stdout
    assert "'ExternalId': '***'" in result.stderr  # botocore logged the AssumeRole parameters, masked


def test_web_identity(
    rs: RedshiftStandIn,
    home: Path,
    logs: Logs,
    issued: list[IssuedCredential],
    tiny: Callable[[Route], TinyServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_id, secret, token = temporary_keys(rs)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))

    def sts(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        assert b"Action=AssumeRoleWithWebIdentity" in body
        xml = f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
          <AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{key_id}</AccessKeyId>
          <SecretAccessKey>{secret}</SecretAccessKey><SessionToken>{token}</SessionToken>
          <Expiration>{expires}</Expiration></Credentials>
          <AssumedRoleUser><Arn>arn:aws:sts::{rs.account_id}:assumed-role/{rs.role_principal}/s</Arn>
          <AssumedRoleId>AROAEXAMPLE:s</AssumedRoleId></AssumedRoleUser></AssumeRoleWithWebIdentityResult>
          <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>"""
        return 200, "text/xml", xml.encode()

    server = tiny(sts)
    jwt = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(60) + "." + secrets.token_urlsafe(40)
    (home / "token").write_text(jwt)
    monkeypatch.setenv("AWS_ROLE_ARN", f"arn:aws:iam::{rs.account_id}:role/{rs.role_principal}")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(home / "token"))
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "ci")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", server.url)
    error = fetch(rs)
    assert error is None and server.requests
    found = {"web identity token": jwt, "secret key": secret, "session token": token, **db_passwords(issued)}
    check(logs, error, found, logged_by_botocore=["web identity token", "secret key", "session token"])


def test_iam_identity_center_sso(
    rs: RedshiftStandIn,
    home: Path,
    logs: Logs,
    issued: list[IssuedCredential],
    tiny: Callable[[Route], TinyServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_id, secret, token = temporary_keys(rs)
    bearer = "aoa" + secrets.token_urlsafe(64)

    def portal(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        assert path.startswith("/federation/credentials") and headers.get("x-amz-sso_bearer_token") == bearer
        creds = {
            "accessKeyId": key_id,
            "secretAccessKey": secret,
            "sessionToken": token,
            "expiration": int((time.time() + 3600) * 1000),
        }
        return 200, "application/json", json.dumps({"roleCredentials": creds}).encode()

    server = tiny(portal)
    start_url = "https://rs-iam-test.awsapps.com/start"
    (home / ".aws" / "config").write_text(
        textwrap.dedent(f"""\
        [profile sso]
        sso_start_url = {start_url}
        sso_region = {rs.region}
        sso_account_id = {rs.account_id}
        sso_role_name = {rs.role_principal}
        region = {rs.region}
        """)
    )
    cache = home / ".aws" / "sso" / "cache"
    cache.mkdir(parents=True)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    (cache / (hashlib.sha1(start_url.encode()).hexdigest() + ".json")).write_text(
        json.dumps({"startUrl": start_url, "region": rs.region, "accessToken": bearer, "expiresAt": expires})
    )
    monkeypatch.setattr(
        botocore.credentials.SSOProvider, "_SSO_TOKEN_CACHE_DIR", str(cache)
    )  # read at import
    monkeypatch.setenv("AWS_PROFILE", "sso")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSO", server.url)
    error = fetch(rs)
    assert error is None and server.requests
    found = {"bearer token": bearer, "secret key": secret, "session token": token, **db_passwords(issued)}
    check(logs, error, found, logged_by_botocore=["bearer token", "secret key", "session token"])


def test_credential_process(
    rs: RedshiftStandIn,
    home: Path,
    logs: Logs,
    issued: list[IssuedCredential],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_id, secret, token = temporary_keys(rs)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    output = {
        "Version": 1,
        "AccessKeyId": key_id,
        "SecretAccessKey": secret,
        "SessionToken": token,
        "Expiration": expires,
    }
    script = home / "creds.py"
    script.write_text(f"import json\nprint(json.dumps({output!r}))\n")
    (home / ".aws" / "config").write_text(
        f"[default]\nregion = {rs.region}\ncredential_process = {sys.executable} {script}\n"
    )
    error = fetch(rs)
    assert error is None
    found = {"secret key": secret, "session token": token, **db_passwords(issued)}
    check(logs, error, found, logged_by_botocore=["session token", "db password #0"])


def _echo_then_credentials(header: str, key_id: str, secret: str, token: str) -> Route:
    """A metadata endpoint that fails once with a body echoing the request's ``header`` (as debugging
    proxies do; botocore logs such a body at DEBUG), then serves the credentials."""
    failed: list[bool] = []

    def route(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        if method == "PUT" and path == "/latest/api/token":
            return 200, "text/plain", b"imds-" + secrets.token_urlsafe(32).encode()
        if path == "/latest/meta-data/iam/security-credentials/":
            return 200, "text/plain", b"rs-iam-role"
        if not failed:
            failed.append(True)
            echoed = {name: value for name, value in headers.items() if name.lower() == header.lower()}
            return (
                500,
                "application/json",
                json.dumps({"error": "upstream", "request_headers": echoed}).encode(),
            )
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        creds = {
            "Code": "Success",
            "Type": "AWS-HMAC",
            "AccessKeyId": key_id,
            "SecretAccessKey": secret,
            "Token": token,
            "Expiration": expires,
        }
        return 200, "application/json", json.dumps(creds).encode()

    return route


def test_container_credentials(
    rs: RedshiftStandIn,
    home: Path,
    logs: Logs,
    issued: list[IssuedCredential],
    tiny: Callable[[Route], TinyServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_id, secret, token = temporary_keys(rs)
    server = tiny(_echo_then_credentials("Authorization", key_id, secret, token))
    auth = "container-" + secrets.token_urlsafe(32)
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{server.url}/v2/credentials/abc")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", auth)
    error = fetch(rs)
    assert error is None and len(server.requests) == 2
    assert server.requests[0][2].get("authorization") == auth
    found = {"container token": auth, "secret key": secret, "session token": token, **db_passwords(issued)}
    check(logs, error, found, logged_by_botocore=["container token", "session token"])


def test_instance_metadata_credentials(
    rs: RedshiftStandIn,
    home: Path,
    logs: Logs,
    issued: list[IssuedCredential],
    tiny: Callable[[Route], TinyServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_id, secret, token = temporary_keys(rs)
    server = tiny(_echo_then_credentials("X-aws-ec2-metadata-token", key_id, secret, token))
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url + "/")
    monkeypatch.setenv("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "2")
    error = fetch(rs)
    assert error is None, (error, server.requests)
    imds_tokens = {h.get("x-aws-ec2-metadata-token") for _, _, h in server.requests} - {None}
    assert len(imds_tokens) == 1
    found = {
        "metadata token": imds_tokens.pop(),
        "secret key": secret,
        "session token": token,
        **db_passwords(issued),
    }
    check(logs, error, found, logged_by_botocore=["metadata token", "session token"])
