"""The identity that signs is the identity that keys: changes of the AWS configuration, caller sessions,
and memory per role configuration (the review's findings 1-3), against the stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from helpers import current_user

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam import errors
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

ALICE, BOB = "IAM:alice-dev", "IAM:bob-ops"
DRIVER_KW: dict[str, object] = {}  # redshift_connector's defaults: verified TLS to the stand-in's front


def signers(rs: RedshiftStandIn, operation: str = "GetCredentials") -> list[str]:
    return [c.caller for c in rs.emulator.calls_for(operation)]


def principal(rs: RedshiftStandIn, profile: str) -> str:
    return rs.identities[profile].principal


def keys_env(rs: RedshiftStandIn, profile: str) -> dict[str, str]:
    ident = rs.identities[profile]
    return {"AWS_ACCESS_KEY_ID": ident.access_key_id, "AWS_SECRET_ACCESS_KEY": ident.secret_access_key}


def test_switching_environment_keys_is_seen_by_the_next_engine(
    rs: RedshiftStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "rs-iam-b")  # the fallback once the keys are gone: bob's profile
    for name, value in keys_env(rs, "rs-iam-a").items():
        monkeypatch.setenv(name, value)
    assert current_user(sa.create_engine(rs.url())) == ALICE
    for name, value in keys_env(rs, "rs-iam-b").items():
        monkeypatch.setenv(name, value)
    rs.emulator.reset_calls()
    assert current_user(sa.create_engine(rs.url())) == BOB
    assert signers(rs) == [principal(rs, "rs-iam-b")]  # signed by the new keys, not served A's credential
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_PROFILE", "rs-iam-a")
    rs.emulator.reset_calls()
    assert current_user(sa.create_engine(rs.url())) == ALICE  # keys removed: the profile's identity
    assert signers(rs) == [principal(rs, "rs-iam-a")]


def test_switching_aws_profile_and_an_explicit_profile(
    rs: RedshiftStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "rs-iam-a")
    assert current_user(sa.create_engine(rs.url())) == ALICE
    monkeypatch.setenv("AWS_PROFILE", "rs-iam-b")
    rs.emulator.reset_calls()
    assert current_user(sa.create_engine(rs.url())) == BOB
    assert signers(rs) == [principal(rs, "rs-iam-b")]
    # aws_profile=default in the URL: the default profile (alice), even with bob's keys in the environment
    for name, value in keys_env(rs, "rs-iam-b").items():
        monkeypatch.setenv(name, value)
    assert current_user(sa.create_engine(rs.url(aws_profile="default"))) == ALICE


def test_another_credentials_file_with_the_same_profile_name(
    rs: RedshiftStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert current_user(sa.create_engine(rs.url())) == ALICE  # [default] of the stand-in's file: alice
    bob = rs.identities["rs-iam-b"]
    other = tmp_path / "credentials"
    other.write_text(
        f"[default]\naws_access_key_id = {bob.access_key_id}\naws_secret_access_key = {bob.secret_access_key}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(other))
    rs.emulator.reset_calls()
    assert current_user(sa.create_engine(rs.url())) == BOB
    assert signers(rs) == [principal(rs, "rs-iam-b")]


def test_connect_sees_a_switch_on_its_next_call(rs: RedshiftStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    def who() -> str:
        conn = sqlalchemy_rs_iam.connect(
            workgroup=rs.workgroup, database=rs.database, region=rs.region,
            aws_endpoint_url=rs.aws_endpoint_url, **DRIVER_KW,
        )  # fmt: skip
        try:
            cur = conn.cursor()
            cur.execute("select current_user")
            return str(cur.fetchone()[0])
        finally:
            conn.close()

    monkeypatch.setenv("AWS_PROFILE", "rs-iam-a")
    assert who() == ALICE
    monkeypatch.setenv("AWS_PROFILE", "rs-iam-b")
    assert who() == BOB
    monkeypatch.setenv("AWS_PROFILE", "rs-iam-a")
    rs.emulator.reset_calls()
    assert who() == ALICE
    assert signers(rs) == []  # alice's credential is still cached: no call, and never bob's


def test_60_alternating_per_request_sessions_with_a_role_never_cross(rs: RedshiftStandIn) -> None:
    # Tenant A may assume the role; tenant B is denied. Sessions are made per request and dropped at once,
    # so CPython hands their memory (and id()) to the next one.
    rs.emulator.deny("AssumeRole", principal(rs, "rs-iam-b"))
    wrong = denied = 0
    for i in range(60):
        tenant = "rs-iam-a" if i % 2 == 0 else "rs-iam-b"
        ident = rs.identities[tenant]
        session = boto3.Session(
            aws_access_key_id=ident.access_key_id,
            aws_secret_access_key=ident.secret_access_key,
            region_name=rs.region,
        )
        try:
            conn = sqlalchemy_rs_iam.connect(
                workgroup=rs.workgroup, database=rs.database, aws_endpoint_url=rs.aws_endpoint_url,
                role_arn=rs.role_arn, session=session, **DRIVER_KW,
            )  # fmt: skip
        except errors.AwsError as exc:  # the role refused this tenant's own identity
            assert "AssumeRole" in str(exc), exc
            denied += 1
            wrong += tenant == "rs-iam-a"
        else:
            cur = conn.cursor()
            cur.execute("select current_user")
            wrong += tenant != "rs-iam-a" or cur.fetchone()[0] != f"IAMR:{rs.role_principal}"
            conn.close()
        # Dropped last, as a request handler drops its session: the next one is allocated right after and
        # CPython hands it this one's memory, so an id() of it would name the next tenant's session too.
        del session
    assert (wrong, denied) == (0, 30)


MEMORY_SCRIPT = textwrap.dedent(
    """
    import gc, json, os, resource, sys
    import sqlalchemy as sa
    import sqlalchemy_rs_iam
    from sqlalchemy.pool import NullPool

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    url, endpoint, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    marks = {}
    for i in range(n):
        arn = f"arn:aws:iam::123456789012:role/tenant-{i:04d}"
        if i % 2:  # half through connect()'s connectors, half through engines that are then dropped
            connector = sqlalchemy_rs_iam.get_connector(
                workgroup="analytics", database="dev", aws_endpoint_url=endpoint, role_arn=arn,
            )
        else:
            engine = sa.create_engine(url + "&role_arn=" + arn, poolclass=NullPool)
            connector = sqlalchemy_rs_iam.connector_for(engine)
            engine.dispose()
            del engine
        connector.aws().client("redshift-serverless")  # a boto3 session and client per role configuration
        del connector
        if i + 1 in (100, n // 2, n):
            gc.collect()
            marks[i + 1] = rss_mib()
    print(json.dumps({"marks": marks, "sizes": dict(sqlalchemy_rs_iam.registry.REGISTRY.sizes())}))
    """
)


@pytest.mark.slow
def test_memory_is_bounded_across_1000_role_configurations(rs: RedshiftStandIn) -> None:
    # No AWS call is needed to build what each configuration costs (session, assume-role provider, client).
    import json

    env = {**os.environ, **rs.aws_env()}
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, rs.url(), rs.aws_endpoint_url, "1000"],
        env=env, capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    marks = {int(k): v for k, v in result["marks"].items()}
    assert result["sizes"]["clients"] <= sqlalchemy_rs_iam.registry.Registry.MAX_CLIENTS
    assert result["sizes"]["engines"] == 0  # disposed and dropped engines leave nothing behind
    growth = marks[1000] - marks[500]
    # Before the redesign every role configuration kept ~16 MiB for ever (1,000 -> +16 GiB). The registry
    # bounds AWS clients at 32 identities x options: the second half of the run must not grow memory.
    assert growth < 40, marks
