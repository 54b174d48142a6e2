"""Property-based tests: no input to the configuration layer escapes as anything but a valid configuration or
our ConfigurationError naming a parameter the caller gave (or a URL part) -- through ``parse_config``, through
``connect()`` / ``get_connector()`` and through full URL strings given to ``sqlalchemy.create_engine``.

Never an AWS call (botocore's request path is tripwired and the emulator's call log must stay empty), never a
half-built engine (a failing ``create_engine`` registers nothing).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import botocore.endpoint
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam import aws, dbapi, plugin
from sqlalchemy_rs_iam.config import PARAMETERS, IamConfig, Service, parse_config
from sqlalchemy_rs_iam.errors import ConfigurationError
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

pytestmark = pytest.mark.integration

URL_PARTS = {"host", "port", "username", "password", "database", "user"}
SETTINGS = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

GOOD: dict[str, list[str]] = {
    "workgroup": ["analytics", "wg-01"],
    "custom_domain": ["sql.analytics.example.com", "a.bc"],
    "cluster": ["etl-cluster", "c"],
    "service": ["serverless", "provisioned", "Provisioned"],
    "db_user": ["alice", "Bob_1"],
    "auto_create": ["true", "false", "1", "No"],
    "db_groups": ["analysts", "analysts,loaders", "b, a"],
    "duration_seconds": ["900", "3600", "1200"],
    "region": ["us-east-1", "eu-west-1", "cn-north-1"],
    "aws_profile": ["rs-iam-a", "rs-iam-b", "rs-iam-etl"],
    "aws_endpoint_url": ["http://127.0.0.1:9", "https://example.com"],
    "role_arn": ["arn:aws:iam::123456789012:role/etl-role", "arn:aws-cn:iam::123456789012:role/a/b"],
    "role_session_name": ["nightly-load", "ab"],
    "external_id": ["ext-123", "shared:id/2"],
    "aws_connect_timeout": ["0.5", "5", "300"],
    "aws_read_timeout": ["10", "0.1"],
    "aws_max_attempts": ["1", "5", "20"],
    "iam": ["false", "0", "no"],
}
assert set(GOOD) == set(PARAMETERS)  # a new parameter must be fuzzed too

EDGE = ["", " ", "\t", "\x00", "-1", "0", "1e3", "10.0", "9" * 12, "NaN", "inf", "True ", "0x10", "\uff11\uff12",
        "ÿ", "a" * 300, "analytics\n", "%00", "../..", "' OR 1=1 --", "SELECT", "public", "PUBLIC", "arn:aws:iam::1:role/x",
        "http://", "http://user:pw@h", "ftp://h", "http://h:0", "http://h:99999", "us-east-1 "]  # fmt: skip

text_value = st.one_of(
    st.sampled_from(EDGE), st.text(max_size=40), st.from_regex(r"[a-z0-9.:/,-]{0,70}", fullmatch=True)
)


def url_value(name: str) -> st.SearchStrategy[Any]:
    one = st.one_of(st.sampled_from(GOOD[name]), text_value)
    return st.one_of(one, one, st.tuples(one, one))  # a repeated URL parameter arrives as a tuple


def typed_value(name: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        url_value(name), st.integers(-(2**40), 2**40), st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(), st.none(), st.lists(st.sampled_from(GOOD[name] + EDGE), max_size=3),
        st.binary(max_size=4), st.builds(object),
    )  # fmt: skip


def params(value: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={name: value(name) for name in PARAMETERS})


hosts = st.one_of(
    st.none(), st.sampled_from(["", "127.0.0.1", "sql.analytics.example.com",
                                "analytics.123456789012.us-east-1.redshift-serverless.amazonaws.com",
                                "etl-cluster.abc123xyz.eu-west-1.redshift.amazonaws.com"]), text_value,
)  # fmt: skip
names = st.one_of(st.none(), st.sampled_from(["dev", "alice", "Dev_2", "select", ""]), text_value)


@pytest.fixture
def no_aws(rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:  # fmt: skip
    """Fails the test on any botocore HTTP request; checks the emulator saw nothing."""
    attempted: list[str] = []

    def tripwire(self: Any, operation_model: Any, request_dict: Any) -> Any:
        attempted.append(operation_model.name)
        raise AssertionError(f"AWS call {operation_model.name} during configuration")

    monkeypatch.setattr(botocore.endpoint.Endpoint, "make_request", tripwire)
    yield attempted
    assert attempted == []
    assert rs_standin_clean.emulator.calls == []


def _check_config(cfg: IamConfig) -> None:
    targets = [cfg.target.workgroup, cfg.target.cluster, cfg.target.custom_domain]
    assert sum(t is not None for t in targets) == 1
    assert 900 <= cfg.duration_seconds <= 3600
    assert 0.1 <= cfg.aws.connect_timeout <= 300 and 0.1 <= cfg.aws.read_timeout <= 300
    assert 1 <= cfg.aws.max_attempts <= 20
    assert math.isfinite(cfg.aws.connect_timeout) and math.isfinite(cfg.aws.read_timeout)
    if cfg.target.service is Service.SERVERLESS:
        assert cfg.db_user is None and not cfg.db_groups and not cfg.auto_create
    assert cfg.port is None or 1 <= cfg.port <= 65535
    assert cfg.db_groups == tuple(sorted(set(cfg.db_groups)))


def _allowed(given: Any) -> set[str]:
    # A missing target is reported as "workgroup" (the first of workgroup / cluster / custom_domain).
    return set(given) | URL_PARTS | {"workgroup"}


@SETTINGS
@given(p=params(url_value), database=names, host=hosts, port=st.one_of(st.none(), st.integers(-5, 70000)),
       username=names, password=st.one_of(st.none(), st.just(""), text_value))  # fmt: skip
def test_parse_config_url_values(
    no_aws: list[str], p: dict[str, Any], database: Any, host: Any, port: Any, username: Any, password: Any
) -> None:
    try:
        cfg = parse_config(p, database=database, host=host, port=port, username=username, password=password)
    except ConfigurationError as exc:
        assert exc.parameter in _allowed(p), exc
        assert str(exc).startswith(f"{exc.parameter}: ")
    else:
        _check_config(cfg)


any_value = st.one_of(
    st.integers(-(2**40), 2**40), st.floats(), st.booleans(), st.binary(max_size=4), st.builds(object)
)


@SETTINGS
@given(p=params(typed_value), database=names, host=hosts,
       port=st.one_of(st.none(), st.integers(-5, 70000), text_value, any_value), user=names)  # fmt: skip
def test_connect_arguments(
    no_aws: list[str], p: dict[str, Any], database: Any, host: Any, port: Any, user: Any
) -> None:
    _connect_arguments(p, database, host, port, user)


# connect() hands database / host / user through as given: any type must give our ConfigurationError.
@settings(SETTINGS, max_examples=150, phases=[Phase.explicit, Phase.generate])  # no slow shrinking
@given(p=params(typed_value), database=st.one_of(names, any_value), host=st.one_of(hosts, any_value),
       port=st.one_of(st.none(), st.integers(-5, 70000), any_value), user=st.one_of(names, any_value))  # fmt: skip
def test_connect_arguments_of_any_type(
    no_aws: list[str], p: dict[str, Any], database: Any, host: Any, port: Any, user: Any
) -> None:
    _connect_arguments(p, database, host, port, user)


def _connect_arguments(p: dict[str, Any], database: Any, host: Any, port: Any, user: Any) -> None:
    before = len(dbapi._CONNECTORS)
    kw = dict(p, database=database, host=host, port=port, user=user)
    try:
        found = sqlalchemy_rs_iam.get_connector(**kw)
    except ConfigurationError as exc:
        assert exc.parameter in _allowed(p), exc
        assert len(dbapi._CONNECTORS) == before
        # connect() validates the same way before any network traffic.
        with pytest.raises(ConfigurationError) as again:
            sqlalchemy_rs_iam.connect(**kw)
        assert again.value.parameter == exc.parameter
    else:
        _check_config(found.config)


schemes = st.sampled_from(["redshift+redshift_connector", "redshift+psycopg2", "postgresql+psycopg2"])


@st.composite
def url_strings(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    p = draw(params(url_value))
    query: list[tuple[str, str]] = [("plugin", "rs_iam")]
    for name, value in p.items():
        for v in value if isinstance(value, tuple) else (value,):
            query.append((name, v))
    if draw(st.booleans()):
        query.append(("sslmode", "disable"))
    draw(st.randoms()).shuffle(query)
    user = draw(names)
    password = draw(st.one_of(st.none(), st.just(""), st.text(max_size=8)))
    host = draw(hosts) or ""
    port = draw(st.one_of(st.none(), st.integers(0, 70000)))
    netloc = quote(host, safe="") + (f":{port}" if port is not None else "")
    if user:
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
        netloc = f"{auth}@{netloc}"
    database = draw(names) or ""
    url = f"{draw(schemes)}://{netloc}/{quote(database, safe='')}?{urlencode(query)}"
    return url, p


@SETTINGS
@given(case=url_strings())
def test_create_engine_with_url_strings(no_aws: list[str], case: tuple[str, dict[str, Any]]) -> None:
    url, p = case
    parsed = sa.engine.make_url(url)  # SQLAlchemy's own parsing must accept what we built
    before = (len(plugin._CONNECTORS), len(aws._REGISTRY))
    for target in (url, parsed):
        try:
            engine = sa.create_engine(target)
        except ConfigurationError as exc:
            assert exc.parameter in _allowed(p), exc
            assert (len(plugin._CONNECTORS), len(aws._REGISTRY)) == before  # nothing half-built registered
        else:
            rs_connector = sqlalchemy_rs_iam.connector_for(engine)
            _check_config(rs_connector.config)
            assert not set(PARAMETERS) & set(engine.url.query)  # consumed before the dialect
            assert engine.url.password in (None, "")
            engine.dispose()


def test_known_parameter_spellings_are_all_fuzzed() -> None:
    # Each GOOD value really is accepted for its parameter (otherwise the fuzz would mostly test rejections).
    context: dict[str, dict[str, str]] = {
        "cluster": {}, "custom_domain": {}, "workgroup": {},
        "service": {"custom_domain": "sql.example.com"},
        "db_user": {"cluster": "etl-cluster"}, "auto_create": {"cluster": "etl-cluster", "db_user": "alice"},
        "db_groups": {"cluster": "etl-cluster", "db_user": "alice"},
        "role_session_name": {"workgroup": "analytics", "role_arn": GOOD["role_arn"][0]},
        "external_id": {"workgroup": "analytics", "role_arn": GOOD["role_arn"][0]},
    }  # fmt: skip
    for name, values in GOOD.items():
        for value in values:
            given = {**context.get(name, {"workgroup": "analytics"}), name: value}
            _check_config(parse_config(given, database="dev"))
