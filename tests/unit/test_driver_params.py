"""redshift_connector's IAM names refused with a hint, near-misses of ours caught, None read as absent.

Pure (no PostgreSQL): create_engine and get_connector/connect validation only, no AWS call.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from sqlalchemy import create_engine

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam.config import PARAMETERS
from sqlalchemy_rs_iam.driver_params import RC_IAM_PARAMETERS, check_driver_params
from sqlalchemy_rs_iam.errors import ConfigurationError
from sqlalchemy_rs_iam.transport import secure_connect_params

URL = "redshift+redshift_connector:///dev?plugin=rs_iam&workgroup=analytics&region=us-east-1"
HINTS = {
    "profile": "aws_profile=",
    "cluster_identifier": "cluster=",
    "serverless_work_group": "workgroup=",
    "serverless_acct_id": "workgroup=",
    "is_serverless": "workgroup=",
    "endpoint_url": "aws_endpoint_url=",
    "iam_duration": "duration_seconds=",
    "access_key_id": "rs_iam_session",
    "secret_access_key": "credential chain",
    "session_token": "rs_iam_session",
    "credentials_provider": "credential_process",
    "idp_host": "sso",
    "plugin_name": None,
}


def _rc_iam_names() -> set[str]:
    import redshift_connector

    names = set(inspect.signature(redshift_connector.connect).parameters)
    # Everything of the driver's that is not TLS/socket/session plumbing, and not one of our own names.
    plumbing = {
        "user", "database", "password", "port", "host", "source_address", "unix_sock", "ssl", "sslmode",
        "timeout", "max_prepared_statements", "tcp_keepalive", "tcp_keepalive_idle", "tcp_keepalive_interval",
        "tcp_keepalive_count", "application_name", "client_protocol_version", "database_metadata_current_db_only",
        "enable_table_types", "ssl_insecure", "numeric_to_float",
    }  # fmt: skip
    return names - plumbing - set(PARAMETERS)


def test_table_covers_every_iam_parameter_of_the_installed_driver() -> None:
    assert _rc_iam_names() - set(RC_IAM_PARAMETERS) == set()


SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("name", sorted(RC_IAM_PARAMETERS))
def test_rc_name_refused_in_url_query(name: str) -> None:
    with pytest.raises(ConfigurationError) as exc:
        create_engine(f"{URL}&{name}={SECRET}")
    assert exc.value.parameter == name
    assert "redshift_connector" in str(exc.value) and SECRET not in str(exc.value)
    hint = HINTS.get(name)
    if hint:
        assert hint in str(exc.value).lower() or hint in str(exc.value)


@pytest.mark.parametrize("name", sorted(RC_IAM_PARAMETERS))
def test_rc_name_refused_in_connect_args(name: str) -> None:
    with pytest.raises(ConfigurationError) as exc:
        create_engine(URL, connect_args={name: SECRET})
    assert exc.value.parameter == name and SECRET not in str(exc.value)


@pytest.mark.parametrize("name", sorted(RC_IAM_PARAMETERS))
def test_rc_name_refused_as_connect_keyword(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import redshift_connector

    def never(**kw: Any) -> Any:
        raise AssertionError("the driver must not be reached")

    monkeypatch.setattr(redshift_connector, "connect", never)
    with pytest.raises(ConfigurationError) as exc:
        sqlalchemy_rs_iam.connect(workgroup="analytics", region="us-east-1", database="dev", **{name: SECRET})
    assert exc.value.parameter == name and SECRET not in str(exc.value)


@pytest.mark.parametrize(
    ("connect_args", "name"),
    [({"iam": True}, "iam"), ({"db_user": "alice"}, "db_user"), ({"db_groups": ["a"]}, "db_groups"),
     ({"auto_create": True}, "auto_create"), ({"region": "us-west-2"}, "region"),
     ({"role_arn": "arn:aws:iam::123456789012:role/x"}, "role_arn")],
)  # fmt: skip
def test_our_parameters_in_connect_args_refused_with_url_hint(
    connect_args: dict[str, Any], name: str
) -> None:
    with pytest.raises(ConfigurationError) as exc:
        create_engine(URL, connect_args=connect_args)
    assert exc.value.parameter == name and "URL query" in str(exc.value)


def test_harmless_connect_args_accepted() -> None:
    create_engine(URL, connect_args={"iam": False, "sslmode": None, "timeout": 5, "application_name": "x"})


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("workgrop", "workgroup"), ("duraton_seconds", "duration_seconds"), ("aws_profil", "aws_profile")],
)
def test_near_miss_gets_did_you_mean(typo: str, meant: str) -> None:
    with pytest.raises(ConfigurationError, match=f"did you mean {meant}=") as exc:
        create_engine(f"{URL}&{typo}=x")
    assert exc.value.parameter == typo
    with pytest.raises(ConfigurationError, match=f"did you mean {meant}="):
        sqlalchemy_rs_iam.connect(workgroup="analytics", region="us-east-1", database="dev", **{typo: "x"})


@pytest.mark.parametrize(
    "scheme",
    ["redshift+redshift_connector", "postgresql+psycopg2", "postgresql+psycopg", "postgresql+asyncpg"],
)
@pytest.mark.parametrize(
    "name",
    ["connect_timeout", "sslmode", "sslrootcert", "application_name", "options", "keepalives", "timeout"],
)
def test_real_driver_parameters_pass(scheme: str, name: str) -> None:
    import sqlalchemy

    if scheme == "postgresql+psycopg" and sqlalchemy.__version__.startswith("1."):
        pytest.skip("SQLAlchemy 1.4 has no psycopg 3 dialect")
    if "asyncpg" in scheme and name in ("connect_timeout", "keepalives", "options", "sslmode"):
        pytest.skip("not an asyncpg parameter")
    create_engine(f"{scheme}:///dev?plugin=rs_iam&workgroup=analytics&region=us-east-1&{name}=5")
    check_driver_params([name], where="URL query")


@pytest.mark.parametrize(
    ("driver", "params", "key"),
    [("psycopg2", {"sslmode": None}, "sslmode"), ("psycopg", {"sslmode": None}, "sslmode"),
     ("asyncpg", {"ssl": None}, "ssl"), ("redshift_connector", {"sslmode": None}, "sslmode"),
     ("redshift_connector", {"ssl": None}, "sslmode"), ("psycopg2", {"sslrootcert": None}, "sslrootcert")],
)  # fmt: skip
def test_none_tls_values_are_absent(
    driver: str, params: dict[str, Any], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stand-in's pytest plugin exports PGSSLROOTCERT for the whole run; with it set, libpq reads the
    # CA itself and no sslrootcert is added, so this case needs the variable unset.
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    absent: dict[str, Any] = {}
    secure_connect_params(driver, "postgresql", absent)
    secure_connect_params(driver, "postgresql", params)
    assert params.keys() == absent.keys() and params[key] is not None
    if driver != "asyncpg":
        assert params == absent


def test_none_plugin_keyword_is_absent() -> None:
    a = sqlalchemy_rs_iam.get_connector(workgroup="analytics", region="us-east-1", database="dev")
    b = sqlalchemy_rs_iam.get_connector(
        workgroup="analytics", region="us-east-1", database="dev", aws_profile=None, iam=None
    )
    assert a.config == b.config


def test_no_parameter_of_the_installed_drivers_is_taken_for_a_typo() -> None:
    import asyncpg
    import psycopg
    import redshift_connector

    names = {d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults()}
    names |= set(inspect.signature(asyncpg.connect).parameters)
    names |= set(inspect.signature(redshift_connector.connect).parameters) - set(RC_IAM_PARAMETERS)
    check_driver_params(names, where="URL query")  # raises on the first one refused
