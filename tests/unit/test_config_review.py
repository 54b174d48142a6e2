"""Regression tests for input that slipped past validation (independent security review, December 2026).

Every test here failed against the code before the fix: each value was accepted at ``create_engine`` and
failed later (at the first connect, with a raw botocore / urllib error) or not at all. Now each is a
``ConfigurationError`` naming the parameter, raised by ``parse_config`` before any AWS call. No PostgreSQL, no network.
New names (``FORBIDDEN_QUERY_PARAMETERS``, ``MAX_DB_GROUPS`` ...) are read inside the tests that need them,
so against old code each test fails on its own instead of the whole module failing to import.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sqlalchemy_rs_iam import config
from sqlalchemy_rs_iam.config import parse_config
from sqlalchemy_rs_iam.errors import ConfigurationError

ROLE = "arn:aws:iam::123456789012:role/etl-role"


def rejected(params: dict[str, object], **url_parts: object) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        parse_config(params, **{"database": "dev", **url_parts})
    return info.value


# --- Unicode-aware \w / \d: AWS's patterns are ASCII ---------------------------------------------------------


@pytest.mark.parametrize(
    "param,value",
    [
        ("role_session_name", "ñandú"),
        ("role_session_name", "etl-rôle"),
        ("role_session_name", "night\u0663"),  # ARABIC-INDIC DIGIT THREE matched \w
        ("external_id", "ext-ñandú"),
        ("external_id", "shared-\u0661\u0662"),
        ("role_arn", "arn:aws:iam::123456789012:role/etl-rôle"),
        (
            "role_arn",
            "arn:aws:iam::\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661\u0662:role/x",
        ),
        ("region", "us-east-\u0661"),  # passed, then botocore's InvalidRegionError at the first connect
        ("region", "us-east-\uff11"),  # FULLWIDTH DIGIT ONE
        ("aws_profile", "prod\x00"),
        ("aws_profile", "pröd"),
        ("aws_profile", "prod\x7f"),
    ],
)
def test_non_ascii_and_control_characters_are_rejected(param: str, value: str) -> None:
    params: dict[str, object] = {"workgroup": "analytics", param: value}
    if param in ("role_session_name", "external_id"):
        params["role_arn"] = ROLE
    e = rejected(params)
    assert e.parameter == param
    if param == "external_id":
        assert value not in str(e)  # a shared secret: never echoed


@pytest.mark.parametrize(
    "host",
    [
        # Arabic-Indic account digits matched \d: the host implied workgroup 'analytics' in us-east-1.
        "analytics.\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661\u0662"
        ".us-east-1.redshift-serverless.amazonaws.com",
        # KELVIN SIGN lowercases to ASCII 'k': the host implied workgroup 'kanalytics'.
        "\u212aanalytics.123456789012.us-east-1.redshift-serverless.amazonaws.com",
        "127.0.0.1\r\nX-Injected: 1",
        "db.exämple.com",
        "\u3000",
    ],
)
def test_url_host_must_be_an_ascii_host_name_or_ip(host: str) -> None:
    assert rejected({"workgroup": "analytics"}, host=host).parameter == "host"
    assert rejected({"workgroup": "analytics"}, host=host, host_parameter="hostname").parameter == "hostname"


@pytest.mark.parametrize("value", ["analytics\u3000", "\u00a0analytics", "analytics\x1c"])
def test_only_ascii_whitespace_around_a_value_is_forgiven(value: str) -> None:
    # str.strip() removed Unicode spaces and the \x1c-\x1f separators too, so these were 'analytics'.
    assert rejected({"workgroup": value}).parameter == "workgroup"


@pytest.mark.parametrize("value", ["true\u3000", "\u00a0yes"])
def test_booleans_forgive_only_ascii_whitespace(value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        config.parse_bool("auto_create", value)
    assert info.value.parameter == "auto_create"


def test_every_module_pattern_is_compiled_ascii_only() -> None:
    patterns = {name: v for name, v in vars(config).items() if isinstance(v, type(config.WORKGROUP_RE))}
    assert len(patterns) >= 13  # the test really looks at the module's patterns
    for name, pattern in patterns.items():
        assert pattern.flags & config.re.ASCII, name


# --- aws_endpoint_url: only the user part of user info was checked; urlsplit drops CR/LF/TAB silently -----


@pytest.mark.parametrize(
    "url",
    [
        "http://exa\r\nmple.com",  # urlsplit removed CR/LF, botocore raised ValueError at the first connect
        "http://127.0.0.1:4566/\nX-Injected: 1",
        "http://exa\tmple.com",
        "http://example.com/a b",
        "http://example.com/\x00",
        "http://exämple.com",
        "https://example.com/#fragment",
        "https://example.com/?x=1",
        "https://example.com?",
        "http://example.com:",
    ],
)
def test_endpoint_url_rejects_control_characters_non_ascii_query_and_fragment(url: str) -> None:
    assert rejected({"workgroup": "analytics", "aws_endpoint_url": url}).parameter == "aws_endpoint_url"


@pytest.mark.parametrize(
    "url", ["http://:s3cr3t@127.0.0.1:4566", "https://@example.com", "http://h@x:s3cr3t@h"]
)
def test_endpoint_url_rejects_any_user_info_without_echoing_it(url: str) -> None:
    e = rejected({"workgroup": "analytics", "aws_endpoint_url": url})
    assert e.parameter == "aws_endpoint_url" and "user info" in str(e)
    assert "s3cr3t" not in str(e) and url not in str(e)


# --- ?password=... in the URL query was silently dropped (and still shown by repr(engine)) -------------------

QUERY_PASSWORD_URL = "redshift+redshift_connector:///dev?plugin=rs_iam&workgroup=analytics&password=hunter2"


@pytest.mark.parametrize("value", ["hunter2", "", ("hunter2", "again")])
def test_password_in_url_query_is_refused_without_echoing_it(value: object) -> None:
    # The adapters' contract: pass PARAMETERS + FORBIDDEN_QUERY_PARAMETERS found in the query.
    assert "password" in config.FORBIDDEN_QUERY_PARAMETERS
    e = rejected({"workgroup": "analytics", "password": value})
    assert e.parameter == "password" and "URL query" in str(e)
    assert "hunter2" not in str(e)


def test_adapter_contract_sees_the_query_password() -> None:
    url = sa.engine.make_url(QUERY_PASSWORD_URL)
    names = config.PARAMETERS + config.FORBIDDEN_QUERY_PARAMETERS
    params = {name: url.query[name] for name in names if name in url.query}
    e = rejected(params, host=url.host, port=url.port, username=url.username, password=url.password)
    assert e.parameter == "password" and "hunter2" not in str(e)


# Not a test of config.py alone: plugin.py passes FORBIDDEN_QUERY_PARAMETERS to parse_config.
def test_create_engine_refuses_a_query_password(offline_aws: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        sa.create_engine(QUERY_PASSWORD_URL).dispose()
    assert info.value.parameter == "password" and "hunter2" not in str(info.value)


# --- db_groups: unbounded, and de-duplication was quadratic (40,000 groups took 7 s to parse) ------------------

USER = {"cluster": "etl-cluster", "db_user": "alice"}


def many_groups(n: int) -> str:
    return ",".join(f"g{i}" for i in range(n))


@pytest.mark.parametrize(
    "value",
    [many_groups(101), (many_groups(60), many_groups(41)), ("grp",) * 101],
    ids=["101-names", "101-over-two-values", "101-values"],
)
def test_db_groups_count_is_bounded(value: object) -> None:
    e = rejected({**USER, "db_groups": value})
    assert e.parameter == "db_groups" and "at most 100" in str(e)


@pytest.mark.parametrize(
    "value",
    ["a" + " " * 8200, "a," + "b" * 8200, ("a", " " * 8200)],
    ids=["padded", "long-name", "two-values"],
)
def test_db_groups_total_length_is_bounded(value: object) -> None:
    e = rejected({**USER, "db_groups": value})
    assert e.parameter == "db_groups" and "8192" in str(e)


@pytest.mark.parametrize("value", [many_groups(40_000), ["grp"] * 40_000], ids=["one-value", "list"])
def test_40000_groups_are_refused_before_any_name_is_checked(
    value: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counting work, not wall time: the old code validated (and de-duplicated, in O(n^2)) every name first.
    checked: list[str] = []

    def counting_check(parameter: str, name: str) -> str:
        checked.append(name)
        return name

    monkeypatch.setattr(config, "check_db_group", counting_check)
    e = rejected({**USER, "db_groups": value})
    assert e.parameter == "db_groups"
    assert checked == []
