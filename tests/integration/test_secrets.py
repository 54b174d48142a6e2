"""Secrets never leak, and one identity's credentials are never served to another.

The whole lifecycle runs with every logger at DEBUG (botocore prints raw request headers and response bodies
there), SQLAlchemy ``echo=True`` / ``echo_pool="debug"``, through successful, refreshed, retried and failing
connects. Everything a user or an operator could see -- log records (a root handler, ``caplog``), stdout /
stderr (``capfd``), reprs and ``str()`` of engines, URLs, connectors, credentials, cache keys, and the full
tracebacks with chained causes of every error -- is searched for every password the stand-in issued and every
AWS secret key and session token it knows.
"""

from __future__ import annotations

import io
import logging
import socket
import traceback
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from helpers import current_user
from sqlalchemy.pool import NullPool

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam import errors
from sqlalchemy_rs_iam.registry import REGISTRY
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn
from sqlalchemy_rs_iam.testing.store import IssuedCredential

pytestmark = pytest.mark.integration

_LOGGERS = ("", "botocore", "boto3", "urllib3", "sqlalchemy", "redshift_connector", "sqlalchemy_rs_iam")


@pytest.fixture
def debug_logs() -> Iterator[io.StringIO]:
    """Every logger at DEBUG into one buffer (tracebacks included); levels and handlers restored after."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    saved = {
        name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers)) for name in _LOGGERS
    }
    saved_engine = {
        name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers))
        for name in ("sqlalchemy.engine.Engine", "sqlalchemy.pool.impl.QueuePool", "sqlalchemy.pool")
    }
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        yield buffer
    finally:
        logging.getLogger().removeHandler(handler)
        for name, (level, handlers) in {**saved, **saved_engine}.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            for extra in [h for h in logger.handlers if h not in handlers]:  # echo=True adds stdout handlers
                logger.removeHandler(extra)


def _secrets(rs: RedshiftStandIn, issued: list[IssuedCredential]) -> dict[str, str]:
    found = {f"db password of {c.login_user} #{i}": c.password for i, c in enumerate(issued)}
    for ident in rs.identities.values():
        found[f"secret key of {ident.profile}"] = ident.secret_access_key
    # Every key the emulator knows, including the AssumeRole session keys and tokens it handed out.
    for ident in rs.emulator._identities.values():
        if ident.secret:
            found[f"secret key of {ident.access_key_id}"] = ident.secret
        if ident.session_token:
            found[f"session token of {ident.access_key_id}"] = ident.session_token
    return found


def _assert_no_secret(haystack: str, secrets: dict[str, str]) -> None:
    leaks = [what for what, value in secrets.items() if value and value in haystack]
    assert leaks == [], f"secrets leaked: {leaks}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_full_lifecycle_at_debug_leaks_no_secret(
    rs: RedshiftStandIn,
    issued: list[IssuedCredential],
    debug_logs: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []  # reprs, str()s and tracebacks
    raised: list[BaseException] = []
    echo: dict[str, Any] = {"echo": True, "echo_pool": "debug"}

    def expect_error(engine: sa.engine.Engine, kind: type[BaseException]) -> None:
        with pytest.raises(kind) as info:
            current_user(engine)
        raised.append(info.value)

    bob = rs.identities["rs-iam-b"]
    explicit = boto3.Session(
        aws_access_key_id=bob.access_key_id,
        aws_secret_access_key=bob.secret_access_key,
        region_name=rs.region,
    )
    engines = {
        "serverless": sa.create_engine(rs.url(), **echo),
        "provisioned": sa.create_engine(
            rs.url("psycopg2", cluster=rs.cluster, user=rs.db_user, db_groups=rs.db_group), **echo
        ),
        "with_iam": sa.create_engine(rs.url("psycopg", cluster=rs.cluster), **echo),
        "role_arn": sa.create_engine(rs.url(role_arn=rs.role_arn), **echo),
        "etl_profile": sa.create_engine(rs.url("psycopg2", aws_profile="rs-iam-etl"), **echo),
        "explicit_keys": sa.create_engine(rs.url(), rs_iam_session=explicit, poolclass=NullPool, **echo),
    }
    expected = {
        "serverless": "IAM:alice-dev",
        "provisioned": rs.db_user,
        "with_iam": "IAM:alice-dev",
        "role_arn": "IAMR:etl-role",
        "etl_profile": "IAMR:etl-role",
        "explicit_keys": "IAM:bob-ops",
    }
    for name, engine in engines.items():
        assert current_user(engine) == expected[name], name

    # DB-API connect() with the same logging.
    conn = sqlalchemy_rs_iam.connect(
        workgroup=rs.workgroup, database=rs.database, region=rs.region,
        aws_endpoint_url=rs.aws_endpoint_url,
    )  # fmt: skip
    seen.append(repr(conn))
    conn.close()

    # Short credentials: background refreshes and blocking refetches, logged by botocore at DEBUG.
    rs.emulator.max_lifetime = 2.0
    short = sa.create_engine(rs.url(duration_seconds=1200), poolclass=NullPool, **echo)
    for _ in range(3):
        assert current_user(short) == "IAM:alice-dev"
    rs.emulator.max_lifetime = None

    # Revoked on the server: one transparent refetch (logged at INFO by the connector).
    revoking = sa.create_engine(rs.url(), poolclass=NullPool, **echo)
    current_user(revoking)
    rs.emulator.revoke()
    assert current_user(revoking) == "IAM:alice-dev"
    assert sqlalchemy_rs_iam.stats(revoking)["login_retries"] == 1

    # Failures of every kind.
    rs.emulator.deny("GetClusterCredentials")
    expect_error(
        sa.create_engine(rs.url(cluster=rs.cluster, user=rs.db_user, duration_seconds=1800), **echo),
        errors.AccessDeniedError,
    )
    rs.emulator.allow()
    expect_error(
        sa.create_engine(rs.url(workgroup="no-such-workgroup"), **echo), errors.ResourceNotFoundError
    )
    rs.emulator.faults.throttle("GetCredentials", 5)
    expect_error(
        sa.create_engine(rs.url(aws_profile="rs-iam-b", aws_max_attempts="2"), **echo),
        errors.ServiceUnavailableError,
    )
    rs.emulator.faults.clear()
    expect_error(
        sa.create_engine(
            rs.url(
                aws_endpoint_url=f"http://127.0.0.1:{_closed_port()}",
                aws_max_attempts="1",
                duration_seconds=2400,
            ),
            **echo,
        ),
        errors.ServiceUnavailableError,
    )
    rs.emulator.max_lifetime = 0.001  # every login refused, also after the one retry
    expect_error(
        sa.create_engine(rs.url(duration_seconds=3600), poolclass=NullPool, **echo), sa.exc.DBAPIError
    )
    rs.emulator.max_lifetime = None
    with pytest.raises(errors.ConfigurationError) as config_error:
        sa.create_engine(rs.url(workgroup="Bad_Name"), **echo)
    raised.append(config_error.value)

    # Everything an operator could print.
    for exc in raised:
        seen.append("".join(traceback.format_exception(exc)))  # chained causes included
        seen.extend((str(exc), repr(exc)))
        logging.getLogger("test").exception("for the log", exc_info=exc)
    for engine in [*engines.values(), short, revoking]:
        rs_connector = sqlalchemy_rs_iam.connector_for(engine)
        seen.extend((repr(engine), repr(engine.url), str(engine.url), repr(engine.pool)))
        seen.extend((repr(rs_connector), repr(rs_connector.config), repr(rs_connector.stats)))
        seen.append(repr(vars(rs_connector.aws())))
        seen.append(engine.url.render_as_string(hide_password=False))
        creds = rs_connector.cached_credentials()
        if creds is not None:
            seen.extend((repr(creds), str(creds), f"{creds}", repr([creds])))
    keys = REGISTRY.credentials.keys()
    assert len(keys) >= 6
    seen.extend(repr(k) for k in keys)
    endpoint_keys = REGISTRY.endpoints.keys()  # a cache, not a dict: keys() is its API
    seen.extend(repr(k) for k in endpoint_keys)
    seen.extend(repr(c) for c in REGISTRY._clients.values())

    secrets = _secrets(rs, issued)
    assert len(issued) >= 10
    assert any("session token" in what for what in secrets)  # AssumeRole (role_arn, rs-iam-etl) happened
    logs = debug_logs.getvalue()
    out, err = capfd.readouterr()
    # The test must be able to fail: the secrets went through botocore's DEBUG output, masked.
    assert "Response body" in logs
    assert "***" in logs and "<SessionToken>***</SessionToken>" in logs and "<SecretAccessKey>***" in logs
    assert "x-amz-security-token:***" in logs.lower()
    assert "SELECT" in out.upper()  # echo=True printed statements

    haystack = "\n".join([logs, caplog.text, out, err, *seen])
    haystack += "\n".join(r.getMessage() for r in caplog.records)
    _assert_no_secret(haystack, secrets)
    for engine in [*engines.values(), short, revoking]:
        engine.dispose()


def test_external_id_is_never_echoed(rs: RedshiftStandIn) -> None:
    # The package treats cross-account external ids as secret-ish: a malformed one is not echoed, a valid one
    # is hashed into the cache key and masked in reprs. (botocore itself logs AssumeRole's request parameters
    # at DEBUG, ExternalId included; AWS does not class it as a secret, so that log is not checked here.)
    bad = "x" * 1300
    with pytest.raises(errors.ConfigurationError) as info:
        sa.create_engine(rs.url(role_arn=rs.role_arn, external_id=bad))
    assert info.value.parameter == "external_id" and bad not in str(info.value)
    good = "ext-id-shared-by-two-accounts"
    rs.emulator.add_role("arn:aws:iam::123456789012:role/ext-role", "ext-role", external_id=good)
    engine = sa.create_engine(rs.url(role_arn="arn:aws:iam::123456789012:role/ext-role", external_id=good))
    assert current_user(engine) == "IAMR:ext-role"
    rs_connector = sqlalchemy_rs_iam.connector_for(engine)
    for text in (repr(rs_connector.config), repr(rs_connector.credential_key), repr(rs_connector)):
        assert good not in text
    assert "ext=" in rs_connector.credential_key.identity  # ... but distinct ids are distinct keys


def test_cache_keys_and_state_hold_no_secret(rs: RedshiftStandIn, issued: list[IssuedCredential]) -> None:
    engine = sa.create_engine(rs.url(role_arn=rs.role_arn))
    current_user(engine)
    rs_connector = sqlalchemy_rs_iam.connector_for(engine)
    key = rs_connector.credential_key
    # The identity names the source access key id and the role: identifiers, not secrets.
    assert rs.identities["rs-iam-a"].access_key_id in key.identity
    assert rs.role_arn in key.identity
    held = REGISTRY.credentials.keys() + REGISTRY.endpoints.keys()  # caches, not dicts
    state = [repr(k) for k in held]
    state += [
        repr(vars(rs_connector)),
        repr(vars(rs_connector.config)),
        repr(rs_connector.identity),
    ]
    _assert_no_secret("\n".join(state), _secrets(rs, issued))
    # The credential object masks its password in every rendering, but still holds it for the driver.
    creds = rs_connector.credentials()
    assert creds.password in {c.password for c in issued}
    for text in (repr(creds), str(creds), f"{creds!r}", repr({"c": creds})):
        assert creds.password not in text and "***" in text


def test_redacting_filter_covers_botocore_loggers(debug_logs: io.StringIO) -> None:
    # The bodies and headers botocore logs at DEBUG, in each of its wire formats.
    samples = {
        "botocore.parsers": 'Response body:\nb\'{"dbUser":"IAM:a","dbPassword":"pw-json-1","expiration":1}\'',
        "botocore.endpoint": "Sending http request: <AWSPreparedRequest headers={'X-Amz-Security-Token': "
        "b'tok-header-2', 'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIAX/...'}>",
        "botocore.auth": "CanonicalRequest:\nPOST\n/\n\nhost:127.0.0.1\nx-amz-security-token:tok-canon-3\n",
        "botocore.credentials": "{'AccessKeyId': 'ASIA1', 'SecretAccessKey': 'sk-dict-4', 'SessionToken': 'tok-5'}",
        "botocore.hooks": "<Credentials><SecretAccessKey>sk-xml-6</SecretAccessKey>"
        "<SessionToken>tok-xml-7</SessionToken></Credentials><DbPassword>pw-xml-8</DbPassword>",
    }
    for name, message in samples.items():
        logging.getLogger(name).debug("%s", message)
    logs = debug_logs.getvalue()
    for secret in ("pw-json-1", "tok-header-2", "tok-canon-3", "sk-dict-4", "tok-5", "sk-xml-6", "tok-xml-7",
                   "pw-xml-8"):  # fmt: skip
        assert secret not in logs
    assert logs.count("***") >= 8
    assert "AKIAX" in logs  # key ids are identifiers, kept for debugging


def test_identities_never_share_credentials(rs: RedshiftStandIn) -> None:
    a, b = rs.identities["rs-iam-a"], rs.identities["rs-iam-b"]

    def keys_session(ident: Any) -> boto3.Session:
        return boto3.Session(
            aws_access_key_id=ident.access_key_id, aws_secret_access_key=ident.secret_access_key
        )

    engines = {
        "profile a": (sa.create_engine(rs.url(aws_profile="rs-iam-a")), "IAM:alice-dev"),
        "profile b": (sa.create_engine(rs.url(aws_profile="rs-iam-b")), "IAM:bob-ops"),
        "default profile": (sa.create_engine(rs.url()), "IAM:alice-dev"),
        "etl profile": (sa.create_engine(rs.url(aws_profile="rs-iam-etl")), "IAMR:etl-role"),
        "role_arn from a": (sa.create_engine(rs.url(role_arn=rs.role_arn)), "IAMR:etl-role"),
        "role_arn from b": (
            sa.create_engine(rs.url(role_arn=rs.role_arn, aws_profile="rs-iam-b")),
            "IAMR:etl-role",
        ),
        "keys of b": (sa.create_engine(rs.url(), rs_iam_session=keys_session(b)), "IAM:bob-ops"),
        "keys of a": (sa.create_engine(rs.url(), rs_iam_session=keys_session(a)), "IAM:alice-dev"),
        "cluster as b": (sa.create_engine(rs.url(cluster=rs.cluster, aws_profile="rs-iam-b")), "IAM:bob-ops"),
    }
    for _ in range(3):  # interleaved, warm and cold: each engine always logs in as its own identity
        for name, (engine, user) in engines.items():
            assert current_user(engine) == user, name
    keys = {sqlalchemy_rs_iam.connector_for(e).credential_key for e, _ in engines.values()}
    # "profile a" and "default profile" are the same keys in the same files, but the profile name is part
    # of the identity; every other pair differs in keys, role or source.
    assert len(keys) == len(engines)
    # Each identity fetched exactly once (no cross-serving, no refetch) and from its own principal.
    fetches = rs.emulator.calls_for("GetCredentials") + rs.emulator.calls_for("GetClusterCredentialsWithIAM")
    assert len(fetches) == len(engines)
    callers = sorted(c.caller for c in fetches)
    assert (
        callers.count("bob-ops") == 3 and callers.count("alice-dev") == 3 and callers.count("etl-role") == 3
    )
    # A region is part of the key too: the same workgroup name elsewhere is another resource.
    with pytest.raises(errors.ResourceNotFoundError):
        current_user(sa.create_engine(rs.url(region="eu-west-1")))
