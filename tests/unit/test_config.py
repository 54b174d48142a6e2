"""Unit tests of the URL contract at the parsing level (pure, no I/O)."""

from __future__ import annotations

import pytest

from sqlalchemy_rs_iam.config import (
    DEFAULT_DURATION,
    PARAMETERS,
    AwsOptions,
    Service,
    Target,
    parse_bool,
    parse_config,
    parse_int,
)
from sqlalchemy_rs_iam.errors import ConfigurationError

SERVERLESS_HOST = "analytics.123456789012.us-west-2.redshift-serverless.amazonaws.com"
PROVISIONED_HOST = "etl-cluster.c1xyz2abc3.eu-west-1.redshift.amazonaws.com"


def cfg(database: str | None = "dev", **kw: object):  # type: ignore[no-untyped-def]
    url_parts = {k: kw.pop(k) for k in ("host", "port", "username", "password") if k in kw}
    return parse_config(kw, database=database, **url_parts)  # type: ignore[arg-type]


def error(**kw: object) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        cfg(**kw)
    return info.value


# --- targets -------------------------------------------------------------------------------------------


def test_workgroup_is_serverless_get_credentials() -> None:
    c = cfg(workgroup="analytics", region="us-east-1")
    assert c.target == Target(Service.SERVERLESS, workgroup="analytics")
    assert c.operation == "GetCredentials"
    assert c.host is None and c.port is None  # resolved by GetWorkgroup at connect time
    assert c.duration_seconds == DEFAULT_DURATION == 900
    assert c.aws.region == "us-east-1"


def test_custom_domain_defaults_to_serverless_and_is_the_host() -> None:
    c = cfg(custom_domain="sql.example.com")
    assert c.target == Target(Service.SERVERLESS, custom_domain="sql.example.com")
    assert (c.host, c.port) == ("sql.example.com", 5439)
    assert c.operation == "GetCredentials"


def test_custom_domain_provisioned_with_explicit_host_port() -> None:
    c = cfg(
        custom_domain="sql.example.com", service="provisioned", db_user="alice", host="127.0.0.1", port=6000
    )
    assert c.target.service is Service.PROVISIONED
    assert c.operation == "GetClusterCredentials"
    assert (c.host, c.port) == ("127.0.0.1", 6000)


def test_cluster_with_and_without_db_user() -> None:
    assert cfg(cluster="etl-cluster").operation == "GetClusterCredentialsWithIAM"
    with_user = cfg(cluster="etl-cluster", db_user="alice", auto_create="yes", db_groups="loaders,analysts")
    assert with_user.operation == "GetClusterCredentials"
    assert with_user.auto_create is True
    assert with_user.db_groups == ("analysts", "loaders")  # order-free: same credential, same cache key


def test_url_user_is_db_user() -> None:
    assert cfg(cluster="etl-cluster", username="alice").db_user == "alice"
    assert cfg(cluster="etl-cluster", username="alice", db_user="alice").db_user == "alice"
    assert error(cluster="etl-cluster", username="alice", db_user="bob").parameter == "db_user"


def test_serverless_endpoint_host_implies_workgroup_and_region() -> None:
    c = cfg(host=SERVERLESS_HOST)
    assert c.target == Target(Service.SERVERLESS, workgroup="analytics")
    assert c.aws.region == "us-west-2"
    assert (c.host, c.port) == (SERVERLESS_HOST, 5439)


def test_provisioned_endpoint_host_implies_cluster_and_region() -> None:
    c = cfg(host=PROVISIONED_HOST.upper(), port=5440)
    assert c.target == Target(Service.PROVISIONED, cluster="etl-cluster")
    assert c.aws.region == "eu-west-1"
    assert c.port == 5440


def test_explicit_target_matching_host_is_fine_and_contradiction_is_error() -> None:
    assert cfg(host=SERVERLESS_HOST, workgroup="analytics").target.workgroup == "analytics"
    assert error(host=SERVERLESS_HOST, workgroup="other-wg").parameter == "workgroup"
    assert error(host=SERVERLESS_HOST, cluster="etl-cluster").parameter == "cluster"
    assert error(host=SERVERLESS_HOST, region="us-east-1").parameter == "region"


def test_exactly_one_target() -> None:
    assert error().parameter == "workgroup"
    e = error(workgroup="analytics", cluster="etl-cluster")
    assert e.parameter == "cluster" and "exactly one" in str(e)
    assert error(workgroup="analytics", custom_domain="a.example.com").parameter == "custom_domain"


def test_service_must_match_target() -> None:
    assert error(workgroup="analytics", service="provisioned").parameter == "service"
    assert error(cluster="etl-cluster", service="serverless").parameter == "service"
    assert error(custom_domain="a.example.com", service="cloud").parameter == "service"
    assert cfg(workgroup="analytics", service="Serverless").target.service is Service.SERVERLESS


def test_non_aws_host_is_only_a_host() -> None:
    c = cfg(host="127.0.0.1", port=15439, workgroup="analytics")
    assert (c.host, c.port) == ("127.0.0.1", 15439)
    assert c.target.workgroup == "analytics"


# --- AWS constraints (../shared/seeds) -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["ab", "Analytics", "a_b_c", "x" * 65, "wg.1"])
def test_workgroup_pattern(name: str) -> None:
    e = error(workgroup=name)
    assert e.parameter == "workgroup" and "3-64 characters of a-z, 0-9 and '-'" in str(e)


@pytest.mark.parametrize("name", ["abc", "a-b-c", "0-wg", "x" * 64])
def test_workgroup_accepts(name: str) -> None:
    assert cfg(workgroup=name).target.workgroup == name


@pytest.mark.parametrize(
    "domain", ["localhost", "-a.example.com", "a-.example.com", "a..com", "a" * 64 + ".com"]
)
def test_custom_domain_pattern(domain: str) -> None:
    assert error(custom_domain=domain).parameter == "custom_domain"


@pytest.mark.parametrize("cluster", ["1abc", "Etl", "a--b", "abc-", "a" * 64])
def test_cluster_identifier_rules(cluster: str) -> None:
    assert error(cluster=cluster).parameter == "cluster"


@pytest.mark.parametrize("db", ["Dev", "dev_2", "a+b.c@d-e", "x" * 64])
def test_database_accepts_upper_case_per_newer_reference(db: str) -> None:
    assert cfg(database=db, workgroup="analytics").database == db


@pytest.mark.parametrize("db", ["1dev", "de:v", "de/v", "x" * 65, "select", "USER"])
def test_database_rules(db: str) -> None:
    assert error(database=db, workgroup="analytics").parameter == "database"


def test_database_required() -> None:
    e = error(database=None, workgroup="analytics")
    assert e.parameter == "database" and "/dev" in str(e)


@pytest.mark.parametrize("user", ["PUBLIC", "public", "1x", "a:b", "table"])
def test_db_user_rules(user: str) -> None:
    assert error(cluster="etl-cluster", db_user=user).parameter == "db_user"


@pytest.mark.parametrize("groups", ["Analysts", "a,,b", "1grp", "ok,BAD"])
def test_db_groups_lowercase_rules(groups: str) -> None:
    assert error(cluster="etl-cluster", db_user="alice", db_groups=groups).parameter == "db_groups"


def test_db_groups_repeated_parameter_and_dedup() -> None:
    c = cfg(cluster="etl-cluster", db_user="alice", db_groups=("b,a", "a"))
    assert c.db_groups == ("a", "b")


def test_db_groups_up_to_the_bound_are_accepted() -> None:
    names = [f"g{i:03d}" for i in range(100)]  # MAX_DB_GROUPS
    c = cfg(cluster="etl-cluster", db_user="alice", db_groups=", ".join(reversed(names)))
    assert c.db_groups == tuple(names)
    longest = ",".join(f"g{i:02d}" + "x" * 61 for i in range(100))  # 100 names of 64 characters
    assert len(cfg(cluster="etl-cluster", db_user="alice", db_groups=longest).db_groups) == 100


@pytest.mark.parametrize("value", ["899", "3601", "1e3", "900.0", " 900", "-900", "", "x"])
def test_duration_strict(value: str) -> None:
    assert error(workgroup="analytics", duration_seconds=value).parameter == "duration_seconds"


@pytest.mark.parametrize("value,expected", [("900", 900), ("3600", 3600), (1800, 1800)])
def test_duration_accepts(value: object, expected: int) -> None:
    assert cfg(workgroup="analytics", duration_seconds=value).duration_seconds == expected


# --- parameter interplay ---------------------------------------------------------------------------------


def test_serverless_rejects_provisioned_only_parameters() -> None:
    assert error(workgroup="analytics", db_user="alice").parameter == "db_user"
    assert error(workgroup="analytics", username="alice").parameter == "username"
    assert error(workgroup="analytics", auto_create="true").parameter == "auto_create"
    assert error(workgroup="analytics", db_groups="analysts").parameter == "db_groups"


def test_with_iam_takes_no_groups_or_auto_create() -> None:
    assert error(cluster="etl-cluster", db_groups="analysts").parameter == "db_groups"
    assert error(cluster="etl-cluster", auto_create="true").parameter == "auto_create"


def test_password_in_url_is_refused_without_echoing_it() -> None:
    e = error(workgroup="analytics", password="hunter2")
    assert e.parameter == "password" and "hunter2" not in str(e)


def test_query_password_is_refused_before_anything_that_echoes_input() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_config({"workgroup": "hunter2!", "role_arn": "hunter2", "password": "hunter2"}, database="dev")
    assert info.value.parameter == "password" and "hunter2" not in str(info.value)


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes"])
def test_iam_true_is_refused(value: str) -> None:
    assert error(workgroup="analytics", iam=value).parameter == "iam"


def test_iam_false_is_accepted_and_consumed() -> None:
    assert cfg(workgroup="analytics", iam="false").target.workgroup == "analytics"


def test_repeated_scalar_parameter() -> None:
    e = error(workgroup=("analytics", "other-wg"))
    assert e.parameter == "workgroup" and "more than once" in str(e)


def test_unknown_parameter() -> None:
    assert error(workgroup="analytics", workgroups="x").parameter == "workgroups"


def test_empty_value() -> None:
    assert error(workgroup="").parameter == "workgroup"


# --- AWS options -------------------------------------------------------------------------------------------


def test_aws_options() -> None:
    c = cfg(
        workgroup="analytics",
        region="eu-central-1",
        aws_profile="analytics-ro",
        aws_endpoint_url="http://127.0.0.1:4566",
        role_arn="arn:aws:iam::123456789012:role/etl-role",
        role_session_name="nightly",
        external_id="shared-ext-id",
        aws_connect_timeout="2.5",
        aws_read_timeout="7",
        aws_max_attempts="3",
    )
    assert c.aws == AwsOptions(
        region="eu-central-1",
        profile="analytics-ro",
        endpoint_url="http://127.0.0.1:4566",
        role_arn="arn:aws:iam::123456789012:role/etl-role",
        role_session_name="nightly",
        external_id="shared-ext-id",
        connect_timeout=2.5,
        read_timeout=7.0,
        max_attempts=3,
    )
    assert "shared-ext-id" not in repr(c) and "***" in repr(c.aws)


@pytest.mark.parametrize(
    "param,value",
    [
        ("region", "useast1"),
        ("region", "US-EAST-1"),
        ("aws_endpoint_url", "ftp://host"),
        ("aws_endpoint_url", "http://user:pw@host"),
        ("aws_endpoint_url", "http://host:99999"),
        ("role_arn", "arn:aws:iam::12:role/x"),
        ("aws_connect_timeout", "0"),
        ("aws_read_timeout", "abc"),
        ("aws_max_attempts", "0"),
        ("aws_max_attempts", "21"),
    ],
)
def test_aws_option_rules(param: str, value: str) -> None:
    assert error(workgroup="analytics", **{param: value}).parameter == param


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:4566",
        "https://redshift.eu-west-1.amazonaws.com",
        "HTTP://[::1]:4566/",
        "https://proxy.corp/aws/",
    ],
)
def test_endpoint_url_still_accepts_plain_endpoints(url: str) -> None:
    assert cfg(workgroup="analytics", aws_endpoint_url=url).aws.endpoint_url == url


def test_role_options_need_role_arn() -> None:
    assert error(workgroup="analytics", role_session_name="abc").parameter == "role_session_name"
    e = error(workgroup="analytics", role_arn="arn:aws:iam::123456789012:role/r", external_id="x")
    assert e.parameter == "external_id" and "'x'" not in str(e)


def test_port_range() -> None:
    assert error(workgroup="analytics", host="127.0.0.1", port=70000).parameter == "port"


# --- scalar parsers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected", [("true", True), ("No", False), ("1", True), ("0", False), (True, True)]
)
def test_parse_bool(text: object, expected: bool) -> None:
    assert parse_bool("p", text) is expected


@pytest.mark.parametrize("text", ["t", "on", "2", "", None, 1])
def test_parse_bool_rejects(text: object) -> None:
    with pytest.raises(ConfigurationError, match="true/false, 1/0 or yes/no"):
        parse_bool("p", text)


def test_parse_int_rejects_bool_and_float() -> None:
    for value in (True, 5.0, "5.0", "0x10"):
        with pytest.raises(ConfigurationError):
            parse_int("p", value, 0, 100)


def test_parameters_table_is_complete() -> None:
    # The URL contract of the core issue: these names are consumed by the plugin.
    for name in ("workgroup", "custom_domain", "cluster", "db_user", "auto_create", "db_groups", "duration_seconds",
                 "region", "aws_profile", "aws_endpoint_url", "role_arn", "role_session_name", "external_id",
                 "service"):  # fmt: skip
        assert name in PARAMETERS
