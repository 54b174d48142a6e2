"""Property-based tests: no input to the configuration layer escapes as anything but a valid configuration or
our ConfigurationError naming a parameter the caller gave (or a URL part) -- through ``parse_config``, through
``connect()`` / ``get_connector()`` and through full URL strings given to ``sqlalchemy.create_engine``.

Values include non-ASCII and control characters for every parameter and URL part: a configuration that is
accepted holds printable ASCII only (AWS's patterns are ASCII), and a valid value with one such character
inserted is refused with a ConfigurationError naming exactly that parameter.

Pure: no PostgreSQL, no HTTP. boto3 reads temporary files only and any AWS call fails the test
(``offline_aws``, tests/unit/conftest.py); a failing ``create_engine`` registers nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam.config import MAX_DB_GROUPS, PARAMETERS, IamConfig, Service, parse_config
from sqlalchemy_rs_iam.errors import ConfigurationError
from sqlalchemy_rs_iam.registry import REGISTRY

URL_PARTS = {"host", "port", "username", "password", "database", "user"}
SETTINGS = settings(
    max_examples=150,
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
    "aws_profile": ["rs-iam-a", "rs-iam-b", "rs-iam-etl"],  # in offline_aws's config file
    "aws_endpoint_url": ["http://127.0.0.1:9", "https://example.com"],
    "role_arn": ["arn:aws:iam::123456789012:role/etl-role", "arn:aws-cn:iam::123456789012:role/a/b"],
    "role_session_name": ["nightly-load", "ab"],
    "external_id": ["ext-123", "shared:id/2"],
    "aws_connect_timeout": ["0.5", "5", "300"],
    "aws_read_timeout": ["10", "0.1"],
    "aws_max_attempts": ["1", "5", "20"],
    "iam": ["false", "0", "no"],
    "cache": ["process", "host", "Host"],
    "refresh": ["auto", "background", "lazy"],
}
assert set(GOOD) == set(PARAMETERS)  # a new parameter must be fuzzed too

EDGE = ["", " ", "\t", "\x00", "-1", "0", "1e3", "10.0", "9" * 12, "NaN", "inf", "True ", "0x10", "\uff11\uff12",
        "ÿ", "a" * 300, "analytics\n", "%00", "../..", "' OR 1=1 --", "SELECT", "public", "PUBLIC", "arn:aws:iam::1:role/x",
        "http://", "http://user:pw@h", "ftp://h", "http://h:0", "http://h:99999", "us-east-1 ", "ñandú", "etl-rôle",
        "us-east-\u0661", "\u212a", "a\u3000", "http://h\r\n", "http://:pw@h", "x\x1cy", "\u202e"]  # fmt: skip

# Characters outside every AWS pattern: non-ASCII (letters, digits of other scripts, Unicode spaces,
# look-alikes such as the Kelvin sign) and control characters, DEL included.
bad_char = st.one_of(
    st.characters(min_codepoint=0x80, exclude_categories=["Cs"]),
    st.characters(max_codepoint=0x1F),
    st.just("\x7f"),
    st.sampled_from(["\u0661", "\uff11", "\u212a", "\u0130", "\u00a0", "\u2028", "\u3000", "\ufeff"]),
)


@st.composite
def poisoned(draw: st.DrawFn, good: str) -> str:
    """``good`` with one bad character inserted strictly inside it (never at an end, where ASCII whitespace
    would be trimmed)."""
    at = draw(st.integers(1, len(good) - 1))
    return good[:at] + draw(bad_char) + good[at:]


text_value = st.one_of(
    st.sampled_from(EDGE),
    st.text(max_size=40),
    st.text(st.characters(max_codepoint=0x7F), max_size=40),
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789.:/,-"), max_size=70),  # from_regex is slow
)


def url_value(name: str) -> st.SearchStrategy[Any]:
    good = st.sampled_from(GOOD[name])
    one = st.one_of(good, text_value, good.flatmap(lambda g: poisoned(g) if len(g) > 1 else st.just(g)))
    return st.one_of(one, one, st.tuples(one, one))  # a repeated URL parameter arrives as a tuple


def typed_value(name: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        url_value(name), st.integers(-(2**40), 2**40), st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(), st.none(), st.lists(st.sampled_from(GOOD[name] + EDGE), max_size=3),
        st.binary(max_size=4), st.builds(object),
    )  # fmt: skip


def params(value: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={name: value(name) for name in PARAMETERS})


GOOD_HOSTS = ["127.0.0.1", "sql.analytics.example.com", "::1",
              "analytics.123456789012.us-east-1.redshift-serverless.amazonaws.com",
              "etl-cluster.abc123xyz.eu-west-1.redshift.amazonaws.com"]  # fmt: skip
hosts = st.one_of(
    st.none(),
    st.sampled_from(["", *GOOD_HOSTS]),
    text_value,
    st.sampled_from(GOOD_HOSTS).flatmap(poisoned),
)
names = st.one_of(
    st.none(),
    st.sampled_from(["dev", "alice", "Dev_2", "select", ""]),
    text_value,
    st.sampled_from(["dev", "alice", "Dev_2"]).flatmap(poisoned),
)


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text


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
    assert cfg.db_groups == tuple(sorted(set(cfg.db_groups))) and len(cfg.db_groups) <= MAX_DB_GROUPS
    # Whatever was accepted is printable ASCII: AWS's patterns are ASCII, and so are the URL parts we pass on.
    o = cfg.aws
    texts = [*targets, cfg.database, cfg.db_user, *cfg.db_groups, cfg.host, o.region, o.profile, o.endpoint_url,
             o.role_arn, o.role_session_name, o.external_id]  # fmt: skip
    for text in texts:
        assert text is None or _printable_ascii(text), text


def _assert_nothing_registered(before: Mapping[str, int]) -> None:
    # A refused configuration leaves nothing half-built behind. (Engines are held weakly, so counts may
    # drop when earlier examples' engines are collected; they must not grow.)
    after = REGISTRY.sizes()
    assert all(after[name] <= count for name, count in before.items()), (before, after)


def _allowed(given: Any) -> set[str]:
    # A missing target is reported as "workgroup" (the first of workgroup / cluster / custom_domain).
    return set(given) | URL_PARTS | {"workgroup"}


@SETTINGS
@given(p=params(url_value), database=names, host=hosts, port=st.one_of(st.none(), st.integers(-5, 70000)),
       username=names, password=st.one_of(st.none(), st.just(""), text_value))  # fmt: skip
def test_parse_config_url_values(
    p: dict[str, Any], database: Any, host: Any, port: Any, username: Any, password: Any
) -> None:
    try:
        cfg = parse_config(p, database=database, host=host, port=port, username=username, password=password)
    except ConfigurationError as exc:
        assert exc.parameter in _allowed(p), exc
        assert str(exc).startswith(f"{exc.parameter}: ")
    else:
        _check_config(cfg)


# --- one bad character in one otherwise valid value: refused, naming exactly that parameter ---------------

# For each parameter, a valid configuration in which it is used, and the good values to spoil.
CONTEXT: dict[str, dict[str, str]] = {
    "cluster": {}, "custom_domain": {}, "workgroup": {},
    "service": {"custom_domain": "sql.example.com"},
    "db_user": {"cluster": "etl-cluster"}, "auto_create": {"cluster": "etl-cluster", "db_user": "alice"},
    "db_groups": {"cluster": "etl-cluster", "db_user": "alice"},
    "role_session_name": {"workgroup": "analytics", "role_arn": GOOD["role_arn"][0]},
    "external_id": {"workgroup": "analytics", "role_arn": GOOD["role_arn"][0]},
}  # fmt: skip
# Single names: a bad character next to a comma in "a, b" would only be spaces trimmed around a name.
SPOILABLE = {**GOOD, "db_groups": ["analysts", "loaders"]}
# URL parts: plugin parameters, the other URL parts, and the good values to spoil.
URL_CONTEXT: dict[str, tuple[dict[str, str], dict[str, str], list[str]]] = {
    "database": ({"workgroup": "analytics"}, {}, ["dev", "Dev_2"]),
    "host": ({"workgroup": "analytics"}, {}, GOOD_HOSTS[:3]),
    "username": ({"cluster": "etl-cluster"}, {}, ["alice", "Bob_1"]),
    "port": (
        {"workgroup": "analytics"},
        {"host": "127.0.0.1"},
        ["5439", "15439"],
    ),  # connect() may give a str
}


def _valid_case(name: str, value: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Plugin parameters and URL parts of a valid configuration, with ``value`` for ``name``."""
    if name in URL_CONTEXT:
        p, parts, _ = URL_CONTEXT[name]
        return dict(p), {"database": "dev", **parts, name: value}
    return {**CONTEXT.get(name, {"workgroup": "analytics"}), name: value}, {"database": "dev"}


@st.composite
def one_spoiled(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, Any]]:
    name = draw(st.sampled_from(sorted([*SPOILABLE, *URL_CONTEXT])))
    good = URL_CONTEXT[name][2] if name in URL_CONTEXT else SPOILABLE[name]
    value = draw(st.sampled_from([g for g in good if len(g) > 1]).flatmap(poisoned))
    return (name, *_valid_case(name, value))


@settings(SETTINGS, max_examples=250)
@given(case=one_spoiled())
def test_one_bad_character_is_refused_naming_its_parameter(
    case: tuple[str, dict[str, Any], dict[str, Any]],
) -> None:
    name, p, parts = case
    with pytest.raises(ConfigurationError) as info:
        parse_config(p, **parts)
    assert info.value.parameter == name, info.value
    if name == "external_id":
        assert p[name] not in str(info.value)  # a shared secret: never echoed


def test_every_parameter_and_url_part_is_spoiled_from_a_valid_value() -> None:
    assert set(SPOILABLE) == set(PARAMETERS)
    assert {"database", "host", "username", "port"} <= set(URL_CONTEXT)
    for name in [*SPOILABLE, *URL_CONTEXT]:
        good = URL_CONTEXT[name][2] if name in URL_CONTEXT else SPOILABLE[name]
        for value in good:
            p, parts = _valid_case(name, value)
            _check_config(parse_config(p, **parts))


# --- connect() / get_connector() ---------------------------------------------------------------------------

any_value = st.one_of(
    st.integers(-(2**40), 2**40), st.floats(), st.booleans(), st.binary(max_size=4), st.builds(object)
)


@settings(SETTINGS, max_examples=100)
@given(p=params(typed_value), database=names, host=hosts,
       port=st.one_of(st.none(), st.integers(-5, 70000), text_value, any_value), user=names)  # fmt: skip
def test_connect_arguments(
    offline_aws: list[str], p: dict[str, Any], database: Any, host: Any, port: Any, user: Any
) -> None:
    _connect_arguments(p, database, host, port, user)


# connect() hands database / host / user through as given: any type must give our ConfigurationError.
@settings(SETTINGS, max_examples=75, phases=[Phase.explicit, Phase.generate])  # no slow shrinking
@given(p=params(typed_value), database=st.one_of(names, any_value), host=st.one_of(hosts, any_value),
       port=st.one_of(st.none(), st.integers(-5, 70000), any_value), user=st.one_of(names, any_value))  # fmt: skip
def test_connect_arguments_of_any_type(
    offline_aws: list[str], p: dict[str, Any], database: Any, host: Any, port: Any, user: Any
) -> None:
    _connect_arguments(p, database, host, port, user)


def _connect_arguments(p: dict[str, Any], database: Any, host: Any, port: Any, user: Any) -> None:
    before = REGISTRY.sizes()
    kw = dict(p, database=database, host=host, port=port, user=user)
    try:
        found = sqlalchemy_rs_iam.get_connector(**kw)
    except ConfigurationError as exc:
        assert exc.parameter in _allowed(p), exc
        _assert_nothing_registered(before)
        # connect() validates the same way before any network traffic.
        with pytest.raises(ConfigurationError) as again:
            sqlalchemy_rs_iam.connect(**kw)
        assert again.value.parameter == exc.parameter
    else:
        _check_config(found.config)


# --- full URL strings through sqlalchemy.create_engine -------------------------------------------------------

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


@settings(SETTINGS, max_examples=60)  # each example builds two engines (boto3 sessions): the slow part
@given(case=url_strings())
def test_create_engine_with_url_strings(offline_aws: list[str], case: tuple[str, dict[str, Any]]) -> None:
    url, p = case
    parsed = sa.engine.make_url(url)  # SQLAlchemy's own parsing must accept what we built
    before = REGISTRY.sizes()
    for target in (url, parsed):
        try:
            engine = sa.create_engine(target)
        except ConfigurationError as exc:
            assert exc.parameter in _allowed(p), exc
            _assert_nothing_registered(before)
        else:
            rs_connector = sqlalchemy_rs_iam.connector_for(engine)
            _check_config(rs_connector.config)
            assert not set(PARAMETERS) & set(engine.url.query)  # consumed before the dialect
            assert engine.url.password in (None, "")
            engine.dispose()


def test_known_parameter_spellings_are_all_fuzzed() -> None:
    # Each GOOD value really is accepted for its parameter (otherwise the fuzz would mostly test rejections).
    for name, values in GOOD.items():
        for value in values:
            given = {**CONTEXT.get(name, {"workgroup": "analytics"}), name: value}
            _check_config(parse_config(given, database="dev"))
