"""The core contract end to end: engine URL -> AWS emulator (real HTTP, botocore) -> front -> PostgreSQL.

Every test uses the real drivers and the real sqlalchemy-redshift dialects against the local stand-in.
"""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from helpers import api_calls, current_user
from sqlalchemy.pool import NullPool
from together import run_together

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam import errors
from sqlalchemy_rs_iam.testing.front import RedshiftFront
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

pytestmark = pytest.mark.integration


# --- every target kind, every driver ------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["redshift_connector", "psycopg2", "postgresql+psycopg2"])
def test_serverless_workgroup(rs: RedshiftStandIn, driver: str) -> None:
    engine = sa.create_engine(rs.url(driver), poolclass=NullPool)
    assert current_user(engine) == "IAM:alice-dev"
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from sales")).scalar() == 3
    # Two connects: one GetWorkgroup, one GetCredentials (both cached).
    assert api_calls(rs, "GetCredentials") == 1
    assert api_calls(rs, "GetWorkgroup") == 1
    call = rs.emulator.calls_for("GetCredentials")[0]
    assert call.params["workgroupName"] == "analytics"
    assert call.params["dbName"] == "dev"
    assert call.params["durationSeconds"] == 900  # always sent, unlike redshift_connector's iam=True
    s = sqlalchemy_rs_iam.stats(engine)
    assert s["api_calls"] == 2 and s["hits"] >= 1 and s["failures"] == 0


def test_url_parameters_are_consumed_before_the_dialect(rs: RedshiftStandIn) -> None:
    engine = sa.create_engine(rs.url(duration_seconds=1800, sslmode="verify-full"))
    for name in ("plugin", "workgroup", "region", "aws_endpoint_url", "duration_seconds"):
        assert name not in engine.url.query
    assert engine.url.query["sslmode"] == "verify-full"  # driver parameters pass through
    current_user(engine)
    assert rs.emulator.calls_for("GetCredentials")[0].params["durationSeconds"] == 1800


def test_provisioned_cluster_with_db_user_and_groups(rs: RedshiftStandIn) -> None:
    engine = sa.create_engine(rs.url("psycopg2", cluster=rs.cluster, user="alice", db_groups="analysts"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("select current_user")).scalar() == "alice"
        assert conn.execute(sa.text("select pg_has_role('alice', 'analysts', 'member')")).scalar() is True
    call = rs.emulator.calls_for("GetClusterCredentials")[0]
    assert call.params["DbUser"] == "alice"
    assert call.params["ClusterIdentifier"] == rs.cluster
    assert call.params["AutoCreate"] == "false"  # the query protocol's wire form
    assert call.params["DbGroups"] == ["analysts"]
    assert api_calls(rs, "DescribeClusters") == 1


def test_provisioned_auto_create(rs: RedshiftStandIn) -> None:
    name = f"newbie{int(time.time() * 1000) % 100000}"
    engine = sa.create_engine(rs.url(cluster=rs.cluster, db_user=name, auto_create="true"))
    assert current_user(engine) == name
    assert rs.emulator.calls_for("GetClusterCredentials")[0].params["AutoCreate"] == "true"


def test_provisioned_without_db_user_uses_with_iam(rs: RedshiftStandIn) -> None:
    engine = sa.create_engine(rs.url(cluster=rs.cluster))
    assert current_user(engine) == "IAM:alice-dev"
    assert api_calls(rs, "GetClusterCredentialsWithIAM") == 1
    assert api_calls(rs, "GetClusterCredentials") == 0


def test_serverless_custom_domain(rs: RedshiftStandIn) -> None:
    engine = sa.create_engine(rs.url(custom_domain=rs.workgroup_domain))
    assert current_user(engine) == "IAM:alice-dev"
    assert rs.emulator.calls_for("GetCredentials")[0].params["customDomainName"] == rs.workgroup_domain
    assert api_calls(rs, "GetWorkgroup") == 0  # the URL host wins; nothing to resolve


def test_provisioned_custom_domain(rs: RedshiftStandIn) -> None:
    url = rs.url(custom_domain=rs.cluster_domain, service="provisioned", user="alice")
    assert current_user(sa.create_engine(url)) == "alice"
    call = rs.emulator.calls_for("GetClusterCredentials")[0]
    assert call.params["CustomDomainName"] == rs.cluster_domain


def test_assume_role(rs: RedshiftStandIn) -> None:
    engine = sa.create_engine(rs.url(role_arn=rs.role_arn, role_session_name="nightly-load"))
    assert current_user(engine) == "IAMR:etl-role"
    assert api_calls(rs, "AssumeRole") == 1


def test_profile_that_assumes_a_role(rs: RedshiftStandIn) -> None:
    assert current_user(sa.create_engine(rs.url(aws_profile="rs-iam-etl"))) == "IAMR:etl-role"


def test_programmatic_session_and_plugins_argument(rs: RedshiftStandIn) -> None:
    url = rs.url().replace("plugin=rs_iam&", "")
    session = boto3.Session(profile_name="rs-iam-b")
    engine = sa.create_engine(url, plugins=["rs_iam"], rs_iam_session=session)
    assert current_user(engine) == "IAM:bob-ops"


def test_dbapi_connect_uses_the_same_cache(rs: RedshiftStandIn) -> None:
    kw: dict[str, Any] = dict(workgroup=rs.workgroup, database="dev", region=rs.region,
                              aws_endpoint_url=rs.aws_endpoint_url)  # fmt: skip
    for _ in range(3):
        conn = sqlalchemy_rs_iam.connect(**kw)
        try:
            cur = conn.cursor()
            cur.execute("select current_user")
            assert cur.fetchone()[0] == "IAM:alice-dev"
        finally:
            conn.close()
    engine = sa.create_engine(rs.url())
    assert current_user(engine) == "IAM:alice-dev"
    assert api_calls(rs, "GetCredentials") == 1  # connect() and the engine share the process-wide cache
    assert sqlalchemy_rs_iam.get_connector(**kw).stats.snapshot()["hits"] >= 2


def test_redshift_connector_string_booleans_are_coerced(rs: RedshiftStandIn) -> None:
    # "false" is truthy; without coercion redshift_connector would attempt TLS and fail against the front.
    engine = sa.create_engine(rs.url(tcp_keepalive="no"))
    assert current_user(engine) == "IAM:alice-dev"
    with pytest.raises(errors.ConfigurationError, match="tcp_keepalive"):
        current_user(sa.create_engine(rs.url(tcp_keepalive="maybe")))


# --- validation at create_engine time, before any AWS call ----------------------------------------------------


@pytest.mark.parametrize(
    "params,parameter",
    [
        ({"workgroup": "Bad_Name"}, "workgroup"),
        ({"workgroup": "analytics", "cluster": "etl-cluster"}, "cluster"),
        ({"duration_seconds": "60"}, "duration_seconds"),
        ({"iam": "true"}, "iam"),
        ({"aws_profile": "no-such-profile"}, "aws_profile"),
    ],
)
def test_bad_url_fails_at_create_engine_without_aws_calls(
    rs: RedshiftStandIn, params: dict[str, str], parameter: str
) -> None:
    url = rs.url(**params)
    with pytest.raises(errors.ConfigurationError) as info:
        sa.create_engine(url)
    assert info.value.parameter == parameter
    assert rs.emulator.calls == []


# --- the cache ---------------------------------------------------------------------------------------------------


def test_32_concurrent_cold_connects_make_one_api_call(rs: RedshiftStandIn) -> None:
    rs.emulator.faults.latency("GetCredentials", 0.3)  # widen the race window
    engine = sa.create_engine(rs.url(), pool_size=32, max_overflow=0)
    users, failures = run_together(32, lambda: current_user(engine))
    assert failures == []
    assert users == ["IAM:alice-dev"] * 32
    assert api_calls(rs, "GetCredentials") == 1
    assert api_calls(rs, "GetWorkgroup") == 1


def test_connects_across_several_expirations_never_fail(rs: RedshiftStandIn) -> None:
    rs.emulator.max_lifetime = 3.0  # credentials die after 3 s: the front refuses them from then on
    engine = sa.create_engine(rs.url(), poolclass=NullPool)  # every checkout is a new login
    deadline = time.monotonic() + 10.0
    connects = 0
    while time.monotonic() < deadline:
        assert current_user(engine) == "IAM:alice-dev"
        connects += 1
        time.sleep(0.05)
    fetched = api_calls(rs, "GetCredentials")
    # ~10 s / (0.75 * 3 s) refresh windows: refreshed ahead of every expiry, far fewer calls than connects.
    assert 3 <= fetched <= 8, fetched
    assert connects > 5 * fetched
    assert sqlalchemy_rs_iam.stats(engine)["login_retries"] == 0


def test_revoked_password_is_recovered_once(rs: RedshiftStandIn) -> None:
    engine = sa.create_engine(rs.url(), poolclass=NullPool)
    assert current_user(engine) == "IAM:alice-dev"
    assert rs.emulator.revoke() >= 1
    assert current_user(engine) == "IAM:alice-dev"
    s = sqlalchemy_rs_iam.stats(engine)
    assert s["login_retries"] == 1
    assert api_calls(rs, "GetCredentials") == 2


def test_login_refused_twice_surfaces_the_driver_error(rs: RedshiftStandIn) -> None:
    engine = sa.create_engine(rs.url(), poolclass=NullPool)
    # Every credential issued from now on is refused by the database ('role does not exist').
    rs.emulator.max_lifetime = 0.001
    with pytest.raises(sa.exc.DBAPIError, match="password authentication failed"):
        current_user(engine)
    assert sqlalchemy_rs_iam.stats(engine)["login_retries"] == 1


def test_two_profiles_never_share_credentials(rs: RedshiftStandIn) -> None:
    a = sa.create_engine(rs.url(aws_profile="rs-iam-a"))
    b = sa.create_engine(rs.url(aws_profile="rs-iam-b"))
    assert current_user(a) == "IAM:alice-dev"
    assert current_user(b) == "IAM:bob-ops"
    assert current_user(a) == "IAM:alice-dev"
    assert api_calls(rs, "GetCredentials") == 2
    callers = {c.caller for c in rs.emulator.calls_for("GetCredentials")}
    assert callers == {"alice-dev", "bob-ops"}


def test_engines_with_same_configuration_share_one_credential(rs: RedshiftStandIn) -> None:
    e1, e2 = sa.create_engine(rs.url()), sa.create_engine(rs.url("psycopg2"))
    current_user(e1)
    current_user(e2)
    assert api_calls(rs, "GetCredentials") == 1


def test_resolved_host_is_re_resolved_when_it_stops_answering(rs: RedshiftStandIn) -> None:
    engine = sa.create_engine(rs.url(), poolclass=NullPool)
    second = RedshiftFront(
        rs.store, rs.postgres.host, rs.postgres.port, ssl_context=rs.server_ssl_context
    ).start()
    try:
        # Warm the endpoint cache with a front that will go away.
        first = RedshiftFront(
            rs.store, rs.postgres.host, rs.postgres.port, ssl_context=rs.server_ssl_context
        ).start()
        rs.emulator.add_workgroup(rs.workgroup, region=rs.region, address=first.host, port=first.port,
                                  account_id=rs.account_id)  # fmt: skip
        assert current_user(engine) == "IAM:alice-dev"
        first.stop()
        rs.emulator.add_workgroup(rs.workgroup, region=rs.region, address=second.host, port=second.port,
                                  account_id=rs.account_id)  # fmt: skip
        assert current_user(engine) == "IAM:alice-dev"
        assert api_calls(rs, "GetWorkgroup") == 2
        assert second.logins_accepted >= 1
    finally:
        second.stop()
        rs.emulator.add_workgroup(rs.workgroup, region=rs.region, address=rs.host, port=rs.port,
                                  account_id=rs.account_id)  # fmt: skip


# --- AWS errors become ours ------------------------------------------------------------------------------------


def test_workgroup_not_found_names_workgroup_and_region(rs: RedshiftStandIn) -> None:
    engine = sa.create_engine(rs.url(workgroup="no-such-wg"))
    with pytest.raises(errors.ResourceNotFoundError) as info:
        engine.connect()
    message = str(info.value)
    assert "workgroup 'no-such-wg'" in message and rs.region in message
    assert info.value.region == rs.region
    assert info.value.__cause__ is not None


def test_wrong_region_is_not_found(rs: RedshiftStandIn) -> None:
    engine = sa.create_engine(rs.url(region="eu-west-1"))
    with pytest.raises(errors.ResourceNotFoundError, match="eu-west-1"):
        engine.connect()


def test_access_denied(rs: RedshiftStandIn) -> None:
    rs.emulator.deny("GetCredentials")
    engine = sa.create_engine(rs.url(custom_domain=rs.workgroup_domain))
    with pytest.raises(errors.AccessDeniedError) as info:
        engine.connect()
    assert "GetCredentials" in str(info.value) and rs.workgroup_domain in str(info.value)


def test_throttling_is_absorbed_by_botocore_retries(rs: RedshiftStandIn) -> None:
    rs.emulator.faults.throttle("GetCredentials", 2)
    engine = sa.create_engine(rs.url())
    assert current_user(engine) == "IAM:alice-dev"
    assert api_calls(rs, "GetCredentials") == 3


def test_throttling_beyond_retries_is_service_unavailable(rs: RedshiftStandIn) -> None:
    rs.emulator.faults.throttle("GetCredentials", 10)
    engine = sa.create_engine(rs.url(aws_max_attempts="2"))
    with pytest.raises(errors.ServiceUnavailableError, match="analytics"):
        engine.connect()
    assert api_calls(rs, "GetCredentials") == 2


def test_different_aws_endpoints_never_share_credentials(rs: RedshiftStandIn) -> None:
    # Same profile and target; the second engine reaches AWS through another endpoint URL (here the same
    # emulator spelled differently): what one endpoint issued is never served for the other.
    other = rs.aws_endpoint_url.replace("127.0.0.1", "localhost")
    a = sa.create_engine(rs.url())
    b = sa.create_engine(rs.url(aws_endpoint_url=other))
    assert current_user(a) == current_user(b) == "IAM:alice-dev"
    assert api_calls(rs, "GetCredentials") == 2
    assert api_calls(rs, "GetWorkgroup") == 2
