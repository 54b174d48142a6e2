"""The AWS emulator of the local Redshift stand-in, driven by real boto3 clients over real HTTP.

Every success is parsed by botocore against the service model; every error is asserted as botocore reports
it (``Error.Code`` and HTTP status). One test provisions a PostgreSQL server (:func:`provision_postgres`) to
check that issued credentials are backed by real roles.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from sqlalchemy_rs_iam.testing.emulator import AwsEmulator, Call
from sqlalchemy_rs_iam.testing.postgres import (
    PostgresRoleAdmin,
    PostgresServer,
    PostgresUnavailableError,
    provision_postgres,
)
from sqlalchemy_rs_iam.testing.store import CredentialStore

AKID, SECRET = "AKIAALICEEXAMPLE0001", "alice-secret-key-0001"
ROLE_AKID, ROLE_SECRET = "AKIAROLEEXAMPLE00002", "role-secret-key-0002"
ROLE_ARN = "arn:aws:iam::123456789012:role/etl-role"
NO_RETRY = Config(retries={"total_max_attempts": 1})
# botocore checks lengths (not patterns) itself; without that, the emulator is the only judge
UNCHECKED = Config(retries={"total_max_attempts": 1}, parameter_validation=False)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingRoles:
    """A RoleAdmin that records what the emulator asks of the database (pure logic tests)."""

    def __init__(self, roles: Iterable[str] = (), groups: Iterable[str] = ()) -> None:
        self.roles = set(roles)
        self.groups = set(groups)
        self.passwords: dict[str, str] = {}
        self.grants: list[tuple[str, str]] = []

    def role_exists(self, role: str) -> bool:
        return role in self.roles

    def ensure_login_role(self, role: str, password: str) -> None:
        self.roles.add(role)
        self.passwords[role] = password

    def group_exists(self, group: str) -> bool:
        return group in self.groups

    def grant_group(self, group: str, role: str) -> None:
        self.grants.append((group, role))


def _seed(aws: AwsEmulator) -> None:
    aws.add_identity(AKID, SECRET, "alice")
    aws.add_identity(ROLE_AKID, ROLE_SECRET, "static-role", kind="role")
    aws.add_workgroup("wg-one", address="127.0.0.1", port=5439, custom_domains=["db.example.com"])
    aws.add_workgroup("wg-eu", region="eu-west-1", address="127.0.0.2", port=5440)
    aws.add_cluster("cluster-1", address="127.0.0.1", port=5441, custom_domains=["rs.example.com"])
    aws.add_role(ROLE_ARN, "etl-role", external_id="ext-42")


@pytest.fixture
def store() -> CredentialStore:
    return CredentialStore()


@pytest.fixture
def aws(store: CredentialStore) -> Iterator[AwsEmulator]:
    with AwsEmulator(store, None) as emulator:
        _seed(emulator)
        yield emulator


def client(
    aws: AwsEmulator,
    service: str,
    *,
    region: str = "us-east-1",
    key: str = AKID,
    secret: str = SECRET,
    token: str | None = None,
    config: Config | None = NO_RETRY,
) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        region_name=region,
        endpoint_url=aws.url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=config,
    )


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def _utc(value: dt.datetime) -> float:
    assert value.tzinfo is not None
    return value.timestamp()


# --------------------------------------------------------------------------------------------------- serverless
def test_get_credentials_parses_and_is_recorded(aws: AwsEmulator, store: CredentialStore) -> None:
    before = time.time()
    out = client(aws, "redshift-serverless").get_credentials(
        workgroupName="wg-one", dbName="Dev", durationSeconds=1800
    )
    assert out["dbUser"] == "IAM:alice"
    assert isinstance(out["dbPassword"], str) and len(out["dbPassword"]) >= 32
    assert isinstance(out["expiration"], dt.datetime) and isinstance(out["nextRefreshTime"], dt.datetime)
    assert before + 1800 - 1 <= _utc(out["expiration"]) <= time.time() + 1800 + 1
    assert _utc(out["nextRefreshTime"]) == pytest.approx(_utc(out["expiration"]), abs=0.01)
    (cred,) = store.live("IAM:alice")
    assert cred.password == out["dbPassword"]
    assert cred.role == "IAM:alice" and cred.caller == "alice" and cred.login_error is None
    (call,) = aws.calls_for("GetCredentials")
    assert (call.service, call.region, call.caller, call.access_key_id) == (
        "redshift-serverless",
        "us-east-1",
        "alice",
        AKID,
    )
    assert call.params == {"workgroupName": "wg-one", "dbName": "Dev", "durationSeconds": 1800}
    assert call.status == 200 and call.error_code is None


def test_get_credentials_default_duration_and_custom_domain(aws: AwsEmulator) -> None:
    before = time.time()
    out = client(aws, "redshift-serverless").get_credentials(customDomainName="db.example.com")
    assert out["dbUser"] == "IAM:alice"
    assert before + 899 <= _utc(out["expiration"]) <= time.time() + 901


def test_get_credentials_as_static_role_identity(aws: AwsEmulator, store: CredentialStore) -> None:
    rs = client(aws, "redshift-serverless", key=ROLE_AKID, secret=ROLE_SECRET)
    assert rs.get_credentials(workgroupName="wg-one")["dbUser"] == "IAMR:static-role"
    assert store.live("IAMR:static-role")[0].role == "IAMR:static-role"


def test_get_workgroup(aws: AwsEmulator) -> None:
    wg = client(aws, "redshift-serverless").get_workgroup(workgroupName="wg-one")["workgroup"]
    assert wg["workgroupName"] == "wg-one" and wg["status"] == "AVAILABLE"
    assert (wg["endpoint"]["address"], wg["endpoint"]["port"]) == ("127.0.0.1", 5439)
    # members AWS returns that clients may read (botocore parsed them against the model)
    (vpce,) = wg["endpoint"]["vpcEndpoints"]
    assert vpce["vpcEndpointId"].startswith("vpce-") and vpce["vpcId"].startswith("vpc-")
    (eni,) = vpce["networkInterfaces"]
    assert eni["subnetId"] in wg["subnetIds"] and eni["availabilityZone"] == "us-east-1a"
    assert (wg["maxCapacity"], wg["baseCapacity"]) == (512, 8)
    assert wg["workgroupVersion"] and wg["patchVersion"] and wg["trackName"] == "current"
    assert {"parameterKey": "require_ssl", "parameterValue": "true"} in wg["configParameters"]
    assert wg["workgroupArn"].startswith("arn:aws:redshift-serverless:us-east-1:123456789012:workgroup/")
    assert wg["customDomainName"] == "db.example.com"
    assert isinstance(wg["creationDate"], dt.datetime)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"workgroupName": "WG-ONE"}, "regular expression pattern: ^[a-z0-9-]+$"),
        ({"workgroupName": "w" * 65}, "length less than or equal to 64"),
        ({}, "Either workgroupName or customDomainName"),
        ({"workgroupName": "wg-one", "customDomainName": "db.example.com"}, "not both"),
        ({"customDomainName": "-bad-.example"}, "customDomainName"),
        ({"workgroupName": "wg-one", "dbName": "1dev"}, "dbName"),
        ({"workgroupName": "wg-one", "dbName": "de:v"}, "dbName"),
        ({"workgroupName": "wg-one", "durationSeconds": 899}, "between 900 and 3600"),
        ({"workgroupName": "wg-one", "durationSeconds": 3601}, "between 900 and 3600"),
    ],
)
def test_get_credentials_validation(
    aws: AwsEmulator, store: CredentialStore, kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift-serverless").get_credentials(**kwargs)
    assert error_of(exc) == ("ValidationException", 400)
    assert fragment in exc.value.response["Error"]["Message"]
    assert not store.is_managed("IAM:alice")


def test_serverless_not_found_and_region_scoping(aws: AwsEmulator) -> None:
    rs = client(aws, "redshift-serverless")
    with pytest.raises(ClientError) as exc:
        rs.get_credentials(workgroupName="wg-eu")  # exists, but in eu-west-1
    assert error_of(exc) == ("ResourceNotFoundException", 400)
    assert dict(exc.value.response)["resourceName"] == "wg-eu"
    with pytest.raises(ClientError) as exc:
        rs.get_workgroup(workgroupName="nope")
    assert error_of(exc) == ("ResourceNotFoundException", 400)
    with pytest.raises(ClientError) as exc:
        rs.get_credentials(customDomainName="unknown.example.com")
    assert error_of(exc) == ("ResourceNotFoundException", 400)
    eu = client(aws, "redshift-serverless", region="eu-west-1")
    assert eu.get_workgroup(workgroupName="wg-eu")["workgroup"]["endpoint"]["address"] == "127.0.0.2"
    with pytest.raises(ClientError) as exc:
        eu.get_workgroup(workgroupName="wg-one")
    assert error_of(exc) == ("ResourceNotFoundException", 400)
    assert [c.region for c in aws.calls_for("GetWorkgroup")][-2:] == ["eu-west-1", "eu-west-1"]


# ---------------------------------------------------------------------------------------------- provisioned
def test_get_cluster_credentials_prefixes_and_groups(aws: AwsEmulator, store: CredentialStore) -> None:
    rs = client(aws, "redshift")
    before = time.time()
    out = rs.get_cluster_credentials(
        DbUser="bob", DbName="dev", ClusterIdentifier="cluster-1", DurationSeconds=3600
    )
    assert out["DbUser"] == "IAM:bob" and isinstance(out["DbPassword"], str)
    assert before + 3599 <= _utc(out["Expiration"]) <= time.time() + 3601
    assert "NextRefreshTime" not in out
    out2 = rs.get_cluster_credentials(
        DbUser="bob", ClusterIdentifier="cluster-1", AutoCreate=True, DbGroups=["analysts", "etl"]
    )
    assert out2["DbUser"] == "IAMA:bob"
    (cred,) = store.live("IAMA:bob")
    assert cred.role == "bob" and cred.groups == ("analysts", "etl")
    assert store.live("IAM:bob")[0].role == "bob"
    (_, call) = aws.calls_for("GetClusterCredentials")
    assert call.params["DbGroups"] == ["analysts", "etl"] and call.params["AutoCreate"] == "true"
    via_domain = rs.get_cluster_credentials(DbUser="carol", CustomDomainName="rs.example.com")
    assert via_domain["DbUser"] == "IAM:carol"


def test_get_cluster_credentials_with_iam(aws: AwsEmulator, store: CredentialStore) -> None:
    aws.next_refresh_after = 600
    out = client(aws, "redshift").get_cluster_credentials_with_iam(
        ClusterIdentifier="cluster-1", DbName="dev"
    )
    assert out["DbUser"] == "IAM:alice"
    assert _utc(out["NextRefreshTime"]) == pytest.approx(_utc(out["Expiration"]) - 300, abs=0.01)
    role_out = client(aws, "redshift", key=ROLE_AKID, secret=ROLE_SECRET).get_cluster_credentials_with_iam(
        CustomDomainName="rs.example.com", DurationSeconds=900
    )
    assert role_out["DbUser"] == "IAMR:static-role"
    assert store.live("IAMR:static-role")[0].role == "IAMR:static-role"


def test_describe_clusters(aws: AwsEmulator) -> None:
    rs = client(aws, "redshift")
    (cluster,) = rs.describe_clusters(ClusterIdentifier="cluster-1")["Clusters"]
    assert cluster["ClusterIdentifier"] == "cluster-1" and cluster["ClusterStatus"] == "available"
    assert (cluster["Endpoint"]["Address"], cluster["Endpoint"]["Port"]) == ("127.0.0.1", 5441)
    (vpce,) = cluster["Endpoint"]["VpcEndpoints"]
    assert vpce["VpcId"] == cluster["VpcId"] and vpce["VpcId"].startswith("vpc-")
    assert vpce["NetworkInterfaces"][0]["PrivateIpAddress"] == cluster["ClusterNodes"][0]["PrivateIPAddress"]
    assert cluster["ClusterNodes"][0]["NodeRole"] == "SHARED" and cluster["ClusterVersion"] == "1.0"
    assert cluster["VpcSecurityGroups"][0]["Status"] == "active"
    assert isinstance(cluster["ClusterCreateTime"], dt.datetime)
    assert [c["ClusterIdentifier"] for c in rs.describe_clusters()["Clusters"]] == ["cluster-1"]
    assert client(aws, "redshift", region="eu-west-1").describe_clusters()["Clusters"] == []
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift", region="eu-west-1").describe_clusters(ClusterIdentifier="cluster-1")
    assert error_of(exc) == ("ClusterNotFound", 404)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"DbUser": "PUBLIC", "ClusterIdentifier": "cluster-1"}, "InvalidParameterValue"),
        ({"DbUser": "9bob", "ClusterIdentifier": "cluster-1"}, "InvalidParameterValue"),
        ({"DbUser": "bo/b", "ClusterIdentifier": "cluster-1"}, "InvalidParameterValue"),
        ({"DbUser": "b" * 65, "ClusterIdentifier": "cluster-1"}, "InvalidParameterValue"),
        ({"DbUser": "bob", "DbName": "_x", "ClusterIdentifier": "cluster-1"}, "InvalidParameterValue"),
        (
            {"DbUser": "bob", "DbGroups": ["Analysts"], "ClusterIdentifier": "cluster-1"},
            "InvalidParameterValue",
        ),
        (
            {"DbUser": "bob", "DurationSeconds": 4000, "ClusterIdentifier": "cluster-1"},
            "InvalidParameterValue",
        ),
        ({"DbUser": "bob"}, "MissingParameter"),
        (
            {"DbUser": "bob", "ClusterIdentifier": "cluster-1", "CustomDomainName": "rs.example.com"},
            "InvalidParameterCombination",
        ),
    ],
)
def test_get_cluster_credentials_validation(aws: AwsEmulator, kwargs: dict[str, Any], code: str) -> None:
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift").get_cluster_credentials(**kwargs)
    assert error_of(exc) == (code, 400)


def test_cluster_not_found_by_id_region_or_domain(aws: AwsEmulator) -> None:
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift").get_cluster_credentials(DbUser="bob", ClusterIdentifier="nope")
    assert error_of(exc) == ("ClusterNotFound", 404)
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift", region="eu-west-1").get_cluster_credentials_with_iam(
            ClusterIdentifier="cluster-1"
        )
    assert error_of(exc) == ("ClusterNotFound", 404)
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift").get_cluster_credentials_with_iam(CustomDomainName="other.example.com")
    assert error_of(exc) == ("ClusterNotFound", 404)


# -------------------------------------------------------------------------------------------- roles / sts
def test_role_admin_logic(store: CredentialStore) -> None:
    roles = RecordingRoles(roles={"bob"}, groups={"analysts"})
    with AwsEmulator(store, roles) as aws:
        _seed(aws)
        rs = client(aws, "redshift")
        rs.get_cluster_credentials(DbUser="bob", ClusterIdentifier="cluster-1", DbGroups=["analysts"])
        assert roles.passwords["bob"] == store.role_password("bob")
        assert roles.grants == [("analysts", "bob")]
        assert store.live("IAM:bob")[0].login_error is None
        # Missing role without AutoCreate: the call succeeds, the login will fail.
        rs.get_cluster_credentials(DbUser="dave", ClusterIdentifier="cluster-1")
        assert store.live("IAM:dave")[0].login_error == 'role "dave" does not exist'
        assert "dave" not in roles.roles
        # AutoCreate creates it; a missing group makes the login fail.
        rs.get_cluster_credentials(
            DbUser="dave", ClusterIdentifier="cluster-1", AutoCreate=True, DbGroups=["ghosts"]
        )
        assert "dave" in roles.roles
        assert store.live("IAMA:dave")[0].login_error == 'group "ghosts" does not exist'
        client(aws, "redshift-serverless").get_credentials(workgroupName="wg-one")
        assert roles.passwords["IAM:alice"] == store.role_password("IAM:alice")


def test_role_admin_failure_is_internal_error(
    store: CredentialStore, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(RecordingRoles):
        def ensure_login_role(self, role: str, password: str) -> None:
            raise RuntimeError(f"cannot set {password}")

    with AwsEmulator(store, Broken()) as aws, caplog.at_level(logging.DEBUG):
        _seed(aws)
        with pytest.raises(ClientError) as exc:
            client(aws, "redshift-serverless").get_credentials(workgroupName="wg-one")
        assert error_of(exc) == ("InternalServerException", 500)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy_rs_iam"))
    assert "RuntimeError" in ours and store.role_password("IAM:alice") not in ours


def test_assume_role_then_calls_are_by_the_role(aws: AwsEmulator, store: CredentialStore) -> None:
    sts = client(aws, "sts")
    before = time.time()
    out = sts.assume_role(
        RoleArn=ROLE_ARN, RoleSessionName="etl-session", ExternalId="ext-42", DurationSeconds=1200
    )
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and creds["SecretAccessKey"] and creds["SessionToken"]
    assert before + 1199 <= _utc(creds["Expiration"]) <= time.time() + 1201
    assert out["AssumedRoleUser"]["Arn"] == "arn:aws:sts::123456789012:assumed-role/etl-role/etl-session"
    assert out["AssumedRoleUser"]["AssumedRoleId"].endswith(":etl-session")
    as_role = {
        "key": creds["AccessKeyId"],
        "secret": creds["SecretAccessKey"],
        "token": creds["SessionToken"],
    }
    who = client(aws, "sts", **as_role).get_caller_identity()
    assert who["Arn"] == out["AssumedRoleUser"]["Arn"] and who["Account"] == "123456789012"
    assert client(aws, "redshift-serverless", **as_role).get_credentials(workgroupName="wg-one")[
        "dbUser"
    ] == ("IAMR:etl-role")
    assert (
        client(aws, "redshift", **as_role).get_cluster_credentials_with_iam(ClusterIdentifier="cluster-1")[
            "DbUser"
        ]
        == "IAMR:etl-role"
    )
    assert {c.caller for c in store.live("IAMR:etl-role")} == {"etl-role"}
    assert aws.calls_for("GetCredentials")[-1].access_key_id == creds["AccessKeyId"]
    # The session token is checked: wrong or missing token is rejected.
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift-serverless", **{**as_role, "token": "forged"}).get_workgroup(
            workgroupName="wg-one"
        )
    assert error_of(exc) == ("UnrecognizedClientException", 400)
    with pytest.raises(ClientError) as exc:
        client(aws, "sts", key=as_role["key"], secret=as_role["secret"]).get_caller_identity()
    assert error_of(exc) == ("InvalidClientTokenId", 403)


def test_assume_role_errors(aws: AwsEmulator) -> None:
    sts = client(aws, "sts")
    for kwargs in (
        {"RoleArn": "arn:aws:iam::123456789012:role/unknown", "RoleSessionName": "s1"},
        {"RoleArn": ROLE_ARN, "RoleSessionName": "s1"},
        {"RoleArn": ROLE_ARN, "RoleSessionName": "s1", "ExternalId": "wrong"},
    ):
        with pytest.raises(ClientError) as exc:
            sts.assume_role(**kwargs)
        assert error_of(exc) == ("AccessDenied", 403)
        assert "sts:AssumeRole" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        sts.assume_role(RoleArn=ROLE_ARN, RoleSessionName="s1", ExternalId="ext-42", DurationSeconds=7200)
    assert error_of(exc) == ("ValidationError", 400)
    with pytest.raises(ClientError) as exc:
        sts.assume_role(RoleArn=ROLE_ARN, RoleSessionName="bad name", ExternalId="ext-42")
    assert error_of(exc) == ("ValidationError", 400)


def test_assumed_role_keys_expire(store: CredentialStore, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(time.time())
    # botocore signs with the same (fake) clock, else the jump below would only expire the signature
    monkeypatch.setattr(
        botocore.auth,
        "get_current_datetime",
        lambda remove_tzinfo=True: dt.datetime.fromtimestamp(clock.now, dt.timezone.utc).replace(
            tzinfo=None if remove_tzinfo else dt.timezone.utc
        ),
    )
    with AwsEmulator(store, None, clock=clock) as aws:
        _seed(aws)
        creds = client(aws, "sts").assume_role(RoleArn=ROLE_ARN, RoleSessionName="s1", ExternalId="ext-42")[
            "Credentials"
        ]
        rs = client(
            aws,
            "redshift-serverless",
            key=creds["AccessKeyId"],
            secret=creds["SecretAccessKey"],
            token=creds["SessionToken"],
        )
        assert rs.get_workgroup(workgroupName="wg-one")["workgroup"]["workgroupName"] == "wg-one"
        clock.now += 3601
        with pytest.raises(ClientError) as exc:
            rs.get_workgroup(workgroupName="wg-one")
        assert error_of(exc) == ("ExpiredTokenException", 400)


def test_get_caller_identity_user(aws: AwsEmulator) -> None:
    who = client(aws, "sts").get_caller_identity()
    assert who["Arn"] == "arn:aws:iam::123456789012:user/alice"
    assert who["Account"] == "123456789012" and who["UserId"].startswith("AIDA")


# ---------------------------------------------------------------------------------------------- identity
@pytest.mark.parametrize(
    ("service", "code", "status"),
    [
        ("sts", "SignatureDoesNotMatch", 403),
        ("redshift", "SignatureDoesNotMatch", 403),
        ("redshift-serverless", "InvalidSignatureException", 400),
    ],
)
def test_signature_mismatch(
    aws: AwsEmulator, store: CredentialStore, service: str, code: str, status: int
) -> None:
    bad = client(aws, service, secret="not-the-secret")
    with pytest.raises(ClientError) as exc:
        if service == "sts":
            bad.get_caller_identity()
        elif service == "redshift":
            bad.get_cluster_credentials(DbUser="bob", ClusterIdentifier="cluster-1")
        else:
            bad.get_credentials(workgroupName="wg-one")
    assert error_of(exc) == (code, status)
    assert not store.is_managed("IAM:bob") and not store.is_managed("IAM:alice")
    assert aws.calls[-1].caller == "" and aws.calls[-1].error_code == code


def test_unknown_access_key(aws: AwsEmulator, store: CredentialStore) -> None:
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift-serverless", key="AKIAUNKNOWN").get_credentials(workgroupName="wg-one")
    assert error_of(exc) == ("UnrecognizedClientException", 400)
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift", key="AKIAUNKNOWN").describe_clusters()
    assert error_of(exc) == ("InvalidClientTokenId", 403)
    with AwsEmulator(store, None, strict_identities=False) as lax:
        _seed(lax)
        out = client(lax, "redshift-serverless", key="AKIALAX").get_credentials(workgroupName="wg-one")
        assert out["dbUser"] == "IAM:AKIALAX"


def test_missing_authentication(aws: AwsEmulator) -> None:
    import urllib.request

    req = urllib.request.Request(
        aws.url + "/", data=b"Action=GetCallerIdentity&Version=2011-06-15", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    assert exc.value.code == 403
    assert b"<Code>MissingAuthenticationToken</Code>" in exc.value.read()


def test_unknown_operation(aws: AwsEmulator) -> None:
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift-serverless").list_workgroups()
    assert error_of(exc) == ("UnknownOperationException", 400)
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift").describe_cluster_snapshots()
    assert error_of(exc) == ("InvalidAction", 400)


def test_deny(aws: AwsEmulator) -> None:
    aws.deny("GetCredentials", "alice")
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift-serverless").get_credentials(workgroupName="wg-one")
    assert error_of(exc) == ("AccessDeniedException", 400)
    assert "redshift-serverless:GetCredentials" in exc.value.response["Error"]["Message"]
    other = client(aws, "redshift-serverless", key=ROLE_AKID, secret=ROLE_SECRET)
    assert other.get_credentials(workgroupName="wg-one")["dbUser"] == "IAMR:static-role"
    aws.deny("GetClusterCredentials")
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift", key=ROLE_AKID, secret=ROLE_SECRET).get_cluster_credentials(
            DbUser="bob", ClusterIdentifier="cluster-1"
        )
    assert error_of(exc) == ("AccessDenied", 403)
    aws.allow()
    assert client(aws, "redshift-serverless").get_credentials(workgroupName="wg-one")["dbUser"] == "IAM:alice"


# ------------------------------------------------------------------------------------------------- faults
def test_throttle_raw_then_success(aws: AwsEmulator) -> None:
    aws.faults.throttle("GetCredentials", 2)
    rs = client(aws, "redshift-serverless")
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            rs.get_credentials(workgroupName="wg-one")
        assert error_of(exc) == ("ThrottlingException", 400)
    assert rs.get_credentials(workgroupName="wg-one")["dbUser"] == "IAM:alice"
    aws.faults.throttle("*", 1)
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift").describe_clusters()
    assert error_of(exc) == ("Throttling", 400)
    assert [c.error_code for c in aws.calls] == [
        "ThrottlingException",
        "ThrottlingException",
        None,
        "Throttling",
    ]


def test_default_retries_absorb_throttling_and_500s(aws: AwsEmulator) -> None:
    aws.faults.throttle("GetClusterCredentials", 2)
    out = client(aws, "redshift", config=None).get_cluster_credentials(
        DbUser="bob", ClusterIdentifier="cluster-1"
    )
    assert out["ResponseMetadata"]["RetryAttempts"] == 2
    assert [c.status for c in aws.calls_for("GetClusterCredentials")] == [400, 400, 200]
    aws.faults.server_error("GetCredentials", 1)
    out = client(aws, "redshift-serverless", config=None).get_credentials(workgroupName="wg-one")
    assert out["ResponseMetadata"]["RetryAttempts"] == 1


def test_server_error_raw(aws: AwsEmulator) -> None:
    aws.faults.server_error("GetCredentials", 1)
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift-serverless").get_credentials(workgroupName="wg-one")
    assert error_of(exc) == ("InternalServerException", 500)
    aws.faults.server_error("*", 1)
    with pytest.raises(ClientError) as exc:
        client(aws, "sts").get_caller_identity()
    assert error_of(exc) == ("InternalFailure", 500)
    aws.faults.server_error("AssumeRole", 5)
    aws.faults.clear()
    assert client(aws, "sts").assume_role(RoleArn=ROLE_ARN, RoleSessionName="s1", ExternalId="ext-42")


def _in_background(fn: Any, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(fn(**kwargs))
        except Exception as exc:  # the outcome is asserted by the caller
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _wait_for_hung_calls(aws: AwsEmulator, operation: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while sum(1 for c in aws.calls_for(operation) if c.status == 0) < count:
        assert time.monotonic() < deadline, "calls never arrived"
        time.sleep(0.01)


def test_hang_times_out_without_blocking_others_and_stop_is_prompt(store: CredentialStore) -> None:
    aws = AwsEmulator(store, None).start()
    threads: list[threading.Thread] = []
    try:
        _seed(aws)
        aws.faults.hang("GetCredentials", 60)
        slow = client(
            aws, "redshift-serverless", config=Config(read_timeout=0.5, retries={"total_max_attempts": 1})
        )
        with pytest.raises(ReadTimeoutError):
            slow.get_credentials(workgroupName="wg-one")
        patient = client(
            aws, "redshift-serverless", config=Config(read_timeout=30, retries={"total_max_attempts": 1})
        )
        thread, outcome = _in_background(patient.get_credentials, workgroupName="wg-one")
        threads.append(thread)
        _wait_for_hung_calls(aws, "GetCredentials", 2)
        # Other operations are not blocked by the hung ones.
        assert client(aws, "redshift-serverless").get_workgroup(workgroupName="wg-one")["workgroup"]
        aws.faults.release_hangs()  # the hung call now answers normally
        thread.join(timeout=10)
        assert outcome and isinstance(outcome[0], dict) and outcome[0]["dbUser"] == "IAM:alice"
        # Hang again, then stop while the call is in progress.
        thread, outcome = _in_background(patient.get_credentials, workgroupName="wg-one")
        threads.append(thread)
        _wait_for_hung_calls(aws, "GetCredentials", 1)
    finally:
        started = time.monotonic()
        aws.stop()
        assert time.monotonic() - started < 10  # generous: "promptly", not a benchmark
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert outcome  # answered or failed, but not stuck


def test_latency_applies_to_every_call(aws: AwsEmulator) -> None:
    aws.faults.latency("GetWorkgroup", 0.3)
    rs = client(aws, "redshift-serverless")
    started = time.monotonic()
    rs.get_workgroup(workgroupName="wg-one")
    rs.get_workgroup(workgroupName="wg-one")
    assert time.monotonic() - started >= 0.55
    aws.faults.clear()
    started = time.monotonic()
    rs.get_workgroup(workgroupName="wg-one")
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------------- lifetimes and the store
def test_max_lifetime_caps_expiration_and_expires_in_store() -> None:
    clock = FakeClock(time.time())
    store = CredentialStore(clock=clock)
    with AwsEmulator(store, None, clock=clock) as aws:
        _seed(aws)
        aws.max_lifetime = 5
        out = client(aws, "redshift-serverless").get_credentials(workgroupName="wg-one", durationSeconds=3600)
        assert _utc(out["expiration"]) == pytest.approx(clock.now + 5, abs=0.01)
        out = client(aws, "redshift").get_cluster_credentials(DbUser="bob", ClusterIdentifier="cluster-1")
        assert _utc(out["Expiration"]) == pytest.approx(clock.now + 5, abs=0.01)
        assert len(store.live("IAM:alice")) == 1 and len(store.live("IAM:bob")) == 1
        clock.now += 5.5
        assert store.live("IAM:alice") == [] and store.live("IAM:bob") == []


def test_next_refresh_after(aws: AwsEmulator) -> None:
    aws.next_refresh_after = 120
    out = client(aws, "redshift-serverless").get_credentials(workgroupName="wg-one", durationSeconds=900)
    assert _utc(out["expiration"]) - _utc(out["nextRefreshTime"]) == pytest.approx(780, abs=0.01)


def test_several_credentials_stay_live_and_revoke(aws: AwsEmulator, store: CredentialStore) -> None:
    rs = client(aws, "redshift-serverless")
    first = rs.get_credentials(workgroupName="wg-one")["dbPassword"]
    second = rs.get_credentials(workgroupName="wg-one")["dbPassword"]
    assert first != second
    assert store.find_live("IAM:alice", lambda pw: pw == first) is not None
    assert store.find_live("IAM:alice", lambda pw: pw == second) is not None
    assert aws.revoke("IAM:alice") == 2
    assert store.find_live("IAM:alice", lambda pw: pw == first) is None


def test_no_secret_in_call_log_or_logs(aws: AwsEmulator, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        creds = client(aws, "sts").assume_role(RoleArn=ROLE_ARN, RoleSessionName="s1", ExternalId="ext-42")[
            "Credentials"
        ]
        pw = client(aws, "redshift-serverless").get_credentials(workgroupName="wg-one")["dbPassword"]
        pw2 = client(aws, "redshift").get_cluster_credentials(DbUser="bob", ClusterIdentifier="cluster-1")[
            "DbPassword"
        ]
    secrets_seen = [SECRET, ROLE_SECRET, creds["SecretAccessKey"], creds["SessionToken"], pw, pw2]
    # botocore itself logs bodies at DEBUG; only the emulator's own records are ours to judge.
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy_rs_iam")]
    assert ours  # the emulator does log (request lines at DEBUG), so the check below is not vacuous
    dumped = repr(aws.calls) + repr(aws) + "\n".join(ours)
    for value in secrets_seen:
        assert value not in dumped
    assert all(isinstance(c, Call) for c in aws.calls) and len(aws.calls) == 3
    aws.reset_calls()
    assert aws.calls == []


def test_concurrent_requests(aws: AwsEmulator, store: CredentialStore) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            rs = client(aws, "redshift-serverless")
            for _ in range(5):
                rs.get_credentials(workgroupName="wg-one")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(store.live("IAM:alice")) == 40
    assert len(aws.calls_for("GetCredentials")) == 40


# ------------------------------------------------------------------------------------- real PostgreSQL
@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    try:
        server = provision_postgres()
    except PostgresUnavailableError as exc:
        pytest.skip(str(exc))
    with server:
        yield server


def member_of(server: PostgresServer, role: str) -> set[str]:
    rows = server.execute(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s",
        (role,),
    )
    return {row[0] for row in rows}


def test_issued_credentials_are_backed_by_real_postgres_roles(
    postgres: PostgresServer, store: CredentialStore
) -> None:
    import psycopg2

    suffix = secrets.token_hex(3)  # unique names: the server may be shared (RS_IAM_TEST_POSTGRES_DSN)
    bob, group, nobody = f"bob_{suffix}", f"analysts_{suffix}", f"nobody_{suffix}"
    roles = PostgresRoleAdmin(postgres)
    roles.ensure_group(group)
    roles.ensure_login_role(bob, secrets.token_hex(8))  # exists before, with some other password
    with AwsEmulator(store, roles) as aws:
        _seed(aws)
        client(aws, "redshift").get_cluster_credentials(
            DbUser=bob, ClusterIdentifier="cluster-1", DbGroups=[group]
        )
        client(aws, "redshift-serverless").get_credentials(workgroupName="wg-one")
        client(aws, "redshift").get_cluster_credentials(DbUser=nobody, ClusterIdentifier="cluster-1")
    assert member_of(postgres, bob) == {group}
    assert not roles.role_exists(nobody)
    assert store.live(f"IAM:{nobody}")[0].login_error == f'role "{nobody}" does not exist'
    # The internal passwords work for a real md5 login over TCP, as the front will use them.
    for role in (bob, "IAM:alice"):
        conn = psycopg2.connect(
            host=postgres.host,
            port=postgres.port,
            user=role,
            password=store.role_password(role),
            dbname=postgres.admin_database,
            sslmode="disable",  # straight to PostgreSQL, which has no TLS (the front is not involved)
        )
        with conn, conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == role
        conn.close()


# ------------------------------------------------------------------------ signing and HTTP like AWS
def _signed(aws: AwsEmulator, body: bytes, *, claim_hash: bool = False) -> dict[str, str]:
    """Headers of a SigV4-signed redshift query request for ``body``, signed by botocore for real."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    if claim_hash:  # signed, so a man in the middle can only leave it as it is
        headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    request = AWSRequest(method="POST", url=aws.url + "/", data=body, headers=headers)
    SigV4Auth(Credentials(AKID, SECRET), "redshift", "us-east-1").add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() != "content-length"}


def _post(aws: AwsEmulator, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    host, port = aws.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


DESCRIBE = b"Action=DescribeClusters&Version=2012-12-01"


def test_signed_raw_request_is_accepted(aws: AwsEmulator) -> None:
    # the control for the tampering tests below: the same request, untouched, succeeds
    status, payload = _post(aws, DESCRIBE, _signed(aws, DESCRIBE, claim_hash=True))
    assert status == 200 and b"<ClusterIdentifier>cluster-1</ClusterIdentifier>" in payload


@pytest.mark.parametrize("claim_hash", [True, False])
def test_tampered_body_breaks_the_signature(aws: AwsEmulator, claim_hash: bool) -> None:
    # x-amz-content-sha256 still names the original body: the emulator must hash what arrived
    headers = _signed(aws, DESCRIBE, claim_hash=claim_hash)
    status, payload = _post(aws, DESCRIBE + b"&ClusterIdentifier=cluster-1", headers)
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in payload


def test_chunked_body_is_read_and_nothing_is_left_on_the_connection(aws: AwsEmulator) -> None:
    headers = _signed(aws, DESCRIBE)
    host, port = aws.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for _ in range(3):  # one keep-alive connection: leftover chunk bytes would garble the next request
            conn.request(
                "POST", "/", body=iter([DESCRIBE[:10], DESCRIBE[10:]]), headers=headers, encode_chunked=True
            )
            response = conn.getresponse()
            assert response.status == 200, response.read()
            assert b"cluster-1" in response.read()
    finally:
        conn.close()
    assert len(aws.calls_for("DescribeClusters")) == 3


def test_malformed_chunked_body_is_refused(aws: AwsEmulator) -> None:
    host, port = aws.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400")
    assert aws.calls == []


@pytest.mark.parametrize(
    ("service", "skew", "code", "status", "message"),
    [
        ("redshift-serverless", 901.0, "InvalidSignatureException", 400, "Signature expired"),
        ("redshift-serverless", -901.0, "InvalidSignatureException", 400, "Signature not yet current"),
        ("redshift", 901.0, "SignatureDoesNotMatch", 403, "Signature expired"),
        ("sts", -901.0, "SignatureDoesNotMatch", 403, "Signature not yet current"),
    ],
)
def test_request_time_outside_15_minutes_is_refused(
    store: CredentialStore, service: str, skew: float, code: str, status: int, message: str
) -> None:
    # the emulator's clock is `skew` seconds off the signer's (botocore signs with the real time)
    with AwsEmulator(store, None, clock=lambda: time.time() + skew) as aws:
        _seed(aws)
        calls = {
            "redshift-serverless": lambda c: c.get_workgroup(workgroupName="wg-one"),
            "redshift": lambda c: c.describe_clusters(),
            "sts": lambda c: c.get_caller_identity(),
        }
        with pytest.raises(ClientError) as exc:
            calls[service](client(aws, service))
        assert error_of(exc) == (code, status)
        assert exc.value.response["Error"]["Message"].startswith(message)
        assert "15 min." in exc.value.response["Error"]["Message"]


@pytest.mark.parametrize("skew", [840.0, -840.0])
def test_request_time_inside_15_minutes_is_accepted(store: CredentialStore, skew: float) -> None:
    with AwsEmulator(store, None, clock=lambda: time.time() + skew) as aws:
        _seed(aws)
        assert client(aws, "redshift-serverless").get_workgroup(workgroupName="wg-one")["workgroup"]


# ------------------------------------------------------------------- constraints transcribed from AWS
def test_emulator_does_not_take_its_constraints_from_the_client() -> None:
    import ast

    import sqlalchemy_rs_iam.testing.emulator as emulator

    tree = ast.parse(Path(emulator.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith("sqlalchemy_rs_iam.config") for m in imported), imported


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"workgroupName": "wg"}, "length greater than or equal to 3"),
        ({"workgroupName": "w" * 64}, "Workgroup"),  # 64 is allowed: not found, not invalid
        ({"workgroupName": "wg_one"}, "regular expression pattern"),
        ({"workgroupName": "wg-oné"}, "regular expression pattern"),
        ({"customDomainName": "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 62}, "length less"),
        ({"customDomainName": "bücher.example.com"}, "regular expression pattern"),
        ({"customDomainName": "a" * 64 + ".example.com"}, "regular expression pattern"),
        ({"customDomainName": "example-.com"}, "regular expression pattern"),
        ({"customDomainName": "localhost"}, "regular expression pattern"),  # needs a dot
        ({"workgroupName": "wg-one", "dbName": "dév"}, "Invalid dbName"),
        ({"workgroupName": "wg-one", "dbName": "d" * 65}, "Invalid dbName"),
        ({"workgroupName": "wg-one", "dbName": "db:x"}, "Invalid dbName"),
        ({"workgroupName": "wg-one", "dbName": "1db"}, "Invalid dbName"),
    ],
)
def test_serverless_constraints(aws: AwsEmulator, kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift-serverless", config=UNCHECKED).get_credentials(**kwargs)
    assert fragment in exc.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    ("kwargs", "ok"),
    [
        ({"workgroupName": "wg-one", "dbName": "D" + "b" * 63}, True),  # 64, upper case allowed (seed 004)
        ({"workgroupName": "wg-one", "dbName": "a_b+c.d@e-f"}, True),
        ({"customDomainName": "db.example.com"}, True),
    ],
)
def test_serverless_constraints_accept_what_aws_accepts(
    aws: AwsEmulator, kwargs: dict[str, Any], ok: bool
) -> None:
    assert client(aws, "redshift-serverless").get_credentials(**kwargs)["dbUser"] == "IAM:alice"


@pytest.mark.parametrize(
    ("kwargs", "accepted"),
    [
        ({"DbUser": "b" * 64}, True),
        ({"DbUser": "b" * 65}, False),
        ({"DbUser": "böb"}, False),
        ({"DbUser": "bo:b"}, False),
        ({"DbUser": "public"}, False),
        ({"DbUser": "bob", "DbGroups": ["g" * 64]}, True),
        ({"DbUser": "bob", "DbGroups": ["g" * 65]}, False),
        ({"DbUser": "bob", "DbGroups": ["grüppe"]}, False),
        ({"DbUser": "bob", "DbGroups": ["1group"]}, False),
        ({"DbUser": "bob", "DurationSeconds": 899}, False),
        ({"DbUser": "bob", "DurationSeconds": 900}, True),
        ({"DbUser": "bob", "DurationSeconds": 3600}, True),
        ({"DbUser": "bob", "DurationSeconds": 3601}, False),
    ],
)
def test_provisioned_constraints(aws: AwsEmulator, kwargs: dict[str, Any], accepted: bool) -> None:
    rs = client(aws, "redshift", config=UNCHECKED)
    if accepted:
        assert rs.get_cluster_credentials(ClusterIdentifier="cluster-1", **kwargs)["DbUser"].endswith(
            kwargs["DbUser"]
        )
        return
    with pytest.raises(ClientError) as exc:
        rs.get_cluster_credentials(ClusterIdentifier="cluster-1", **kwargs)
    assert error_of(exc) == ("InvalidParameterValue", 400)


@pytest.mark.parametrize(("name", "accepted"), [("s1", True), ("a" * 64, True), ("a" * 65, False),
                                                ("s", False), ("séssion", False), ("s p", False)])  # fmt: skip
def test_role_session_name_constraint(aws: AwsEmulator, name: str, accepted: bool) -> None:
    sts = client(aws, "sts", config=UNCHECKED)
    if accepted:
        sts.assume_role(RoleArn=ROLE_ARN, RoleSessionName=name, ExternalId="ext-42")
        return
    with pytest.raises(ClientError) as exc:
        sts.assume_role(RoleArn=ROLE_ARN, RoleSessionName=name, ExternalId="ext-42")
    assert error_of(exc) == ("ValidationError", 400)


# ------------------------------------------------------------------------------------- DescribeClusters paging
def test_describe_clusters_pages_with_max_records_and_marker(aws: AwsEmulator) -> None:
    for i in range(25):
        aws.add_cluster(f"page-{i:02d}", address="127.0.0.1", port=5439)
    rs = client(aws, "redshift")
    first = rs.describe_clusters(MaxRecords=20)
    assert len(first["Clusters"]) == 20 and first["Marker"]
    second = rs.describe_clusters(MaxRecords=20, Marker=first["Marker"])
    assert len(second["Clusters"]) == 6 and "Marker" not in second
    names = [c["ClusterIdentifier"] for c in first["Clusters"] + second["Clusters"]]
    assert sorted(names) == names and len(set(names)) == 26
    assert len(rs.describe_clusters()["Clusters"]) == 26  # default 100
    paged = [c for page in rs.get_paginator("describe_clusters").paginate(PaginationConfig={"PageSize": 20})
             for c in page["Clusters"]]  # fmt: skip
    assert [c["ClusterIdentifier"] for c in paged] == names


@pytest.mark.parametrize("kwargs", [{"MaxRecords": 19}, {"MaxRecords": 101}, {"Marker": "no-such-marker"}])
def test_describe_clusters_paging_constraints(aws: AwsEmulator, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as exc:
        client(aws, "redshift", config=UNCHECKED).describe_clusters(**kwargs)
    assert error_of(exc) == ("InvalidParameterValue", 400)
