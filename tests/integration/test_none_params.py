"""``None`` connect values are absent, and redshift_connector's IAM names are refused, end to end.

A ``None`` TLS value (``connect_args={"sslmode": os.getenv("PGSSLMODE")}`` with the variable unset) must get the
verified-TLS default: the hostile servers of test_tls_transport (one declines TLS, one shows a trusted
certificate for another name) never receive the IAM-issued password from any driver, nor from
``sqlalchemy_rs_iam.connect(ssl=None)``. An explicit opt-out through ``connect_args`` does hand it over (so the
test can fail). And ``profile=`` (redshift_connector's name) never logs in as the default identity: it is
refused before any AWS call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
import test_tls_transport as tls
from sqlalchemy.ext.asyncio import create_async_engine
from test_tls_transport import HostileServer, hostile_url, issued_passwords

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam import errors
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

pytestmark = pytest.mark.integration

hostile = tls.hostile  # the hostile-server fixtures, shared
hostile_wrong_name = tls.hostile_wrong_name

#: form of test_tls_transport.URL_FORMS -> the connect_args that say "nothing" with a None.
NONE_ARGS = {
    "redshift_connector workgroup": [{"sslmode": None}, {"ssl": None}, {"ssl": None, "sslmode": None}],
    "postgresql+psycopg2 workgroup": [{"sslmode": None}, {"sslmode": None, "sslrootcert": None}],
    "postgresql+psycopg workgroup": [{"sslmode": None}],
    "postgresql+psycopg_async workgroup": [{"sslmode": None}],
    "postgresql+asyncpg workgroup": [{"ssl": None}],
}
CASES = [(form, args) for form, many in NONE_ARGS.items() for args in many]


def try_connect(url: str, connect_args: dict[str, Any]) -> BaseException | None:
    if "_async" in url or "asyncpg" in url:

        async def go() -> None:
            engine = create_async_engine(url, poolclass=sa.pool.NullPool, connect_args=connect_args)
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
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=connect_args)
    try:
        with engine.connect():
            pass
    except Exception as exc:
        return exc
    finally:
        engine.dispose()
    return None


@pytest.mark.parametrize(("form", "connect_args"), CASES)
def test_none_tls_value_refuses_a_server_that_declines_tls(
    rs: RedshiftStandIn, hostile: HostileServer, form: str, connect_args: dict[str, Any]
) -> None:
    assert try_connect(hostile_url(rs, form, hostile.port), connect_args) is not None
    assert hostile.connections >= 1
    assert hostile.passwords == []


@pytest.mark.parametrize(("form", "connect_args"), CASES)
def test_none_tls_value_checks_the_host_name(
    rs: RedshiftStandIn, hostile_wrong_name: HostileServer, form: str, connect_args: dict[str, Any]
) -> None:
    assert try_connect(hostile_url(rs, form, hostile_wrong_name.port), connect_args) is not None
    assert hostile_wrong_name.connections >= 1
    assert hostile_wrong_name.passwords == []


def test_an_explicit_opt_out_in_connect_args_does_send_the_password(
    rs: RedshiftStandIn, hostile: HostileServer
) -> None:
    url = hostile_url(rs, "postgresql+psycopg2 workgroup", hostile.port)
    assert try_connect(url, {"sslmode": "disable"}) is not None
    assert hostile.passwords and set(hostile.passwords) <= issued_passwords(rs)


def _connect_ssl_none(rs: RedshiftStandIn, port: int, **extra: Any) -> BaseException | None:
    try:
        sqlalchemy_rs_iam.connect(
            host="127.0.0.1",
            port=port,
            database=rs.database,
            workgroup="analytics",
            region=rs.region,
            aws_endpoint_url=rs.aws_endpoint_url,
            ssl=None,
            **extra,
        ).close()
    except Exception as exc:
        return exc
    return None


@pytest.mark.parametrize("extra", [{}, {"sslmode": None}])
def test_connect_ssl_none_is_verified_tls(
    rs: RedshiftStandIn, hostile: HostileServer, hostile_wrong_name: HostileServer, extra: dict[str, Any]
) -> None:
    for server in (hostile, hostile_wrong_name):
        assert _connect_ssl_none(rs, server.port, **extra) is not None
        assert server.connections >= 1
        assert server.passwords == []


def test_rc_profile_never_logs_in_as_another_identity(rs: RedshiftStandIn) -> None:
    # rc's profile= with plugin=rs_iam used to be ignored: the default identity logged in.
    before = issued_passwords(rs)
    url = rs.url(workgroup="analytics") + "&profile=other"
    with pytest.raises(errors.ConfigurationError, match="aws_profile=") as exc:
        sa.create_engine(url)
    assert exc.value.parameter == "profile"
    with pytest.raises(errors.ConfigurationError, match="aws_profile="):
        sa.create_engine(rs.url(workgroup="analytics"), connect_args={"profile": "other"})
    with pytest.raises(errors.ConfigurationError, match="aws_profile="):
        sqlalchemy_rs_iam.connect(
            database=rs.database, workgroup="analytics", region=rs.region, profile="other"
        )
    assert issued_passwords(rs) == before  # no credential was issued to anyone
