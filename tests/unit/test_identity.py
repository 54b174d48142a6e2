"""The identity key: derived from the credential source as it is now, never a secret, no boto3."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sqlalchemy_rs_iam.config import AwsOptions
from sqlalchemy_rs_iam.errors import ConfigurationError
from sqlalchemy_rs_iam.identity import IdentityResolver

SECRET_A = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETAAAA"
SECRET_B = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETBBBB"
TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config"
    creds = tmp_path / "credentials"
    config.write_text(
        textwrap.dedent(
            """\
            [default]
            region = us-east-1
            [profile a]
            region = us-east-1
            [profile b]
            region = eu-west-1
            [profile etl]
            role_arn = arn:aws:iam::123456789012:role/etl
            source_profile = a
            external_id = shared-secret-ext
            [profile proc]
            credential_process = /bin/get-creds --token SECRETTOKEN
            [profile sso]
            sso_session = corp
            sso_account_id = 111122223333
            sso_role_name = Analyst
            [sso-session corp]
            sso_start_url = https://corp.awsapps.com/start
            sso_region = us-east-1
            [profile web]
            role_arn = arn:aws:iam::123456789012:role/web
            web_identity_token_file = /var/run/token
            """
        )
    )
    creds.write_text(
        f"[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = {SECRET_A}\n"
        f"[a]\naws_access_key_id = AKIAAAAA\naws_secret_access_key = {SECRET_A}\naws_session_token = {TOKEN}\n"
        f"[b]\naws_access_key_id = AKIABBBB\naws_secret_access_key = {SECRET_B}\n"
    )
    return {"AWS_CONFIG_FILE": str(config), "AWS_SHARED_CREDENTIALS_FILE": str(creds), "HOME": str(tmp_path)}


def ident(env: dict[str, str], **options: str) -> str:
    return IdentityResolver().identify(AwsOptions(**options), environ=env).key  # type: ignore[arg-type]


def test_env_keys_name_the_access_key_id(files: dict[str, str]) -> None:
    env = {
        **files,
        "AWS_ACCESS_KEY_ID": "AKIAENV1",
        "AWS_SECRET_ACCESS_KEY": SECRET_A,
        "AWS_REGION": "us-east-1",
    }
    assert ident(env) == "env:AKIAENV1"
    assert ident({**env, "AWS_ACCESS_KEY_ID": "AKIAENV2"}) == "env:AKIAENV2"
    # botocore skips environment keys when the URL names a profile
    assert ident(env, profile="b").startswith("profile:b:AKIABBBB#")


def test_an_endpoint_override_is_part_of_the_identity(files: dict[str, str]) -> None:
    env = {
        **files,
        "AWS_ACCESS_KEY_ID": "AKIAENV1",
        "AWS_SECRET_ACCESS_KEY": SECRET_A,
        "AWS_REGION": "us-east-1",
    }
    assert ident(env) != ident({**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert ident(files) != ident({**files, "AWS_ENDPOINT_URL_REDSHIFT_SERVERLESS": "http://127.0.0.1:9"})


def test_profile_switches_change_the_key(files: dict[str, str]) -> None:
    default = ident(files)
    assert default.startswith("profile:default:AKIADEFAULT#")
    a = ident({**files, "AWS_PROFILE": "a"})
    b = ident({**files, "AWS_PROFILE": "b"})
    assert len({default, a, b}) == 3
    assert a.startswith("profile:a:AKIAAAAA#") and b.startswith("profile:b:AKIABBBB#")
    assert ident({**files, "AWS_DEFAULT_PROFILE": "b", "AWS_PROFILE": "a"}) == b  # botocore's order


def test_another_credentials_file_with_the_same_profile_name_is_another_identity(
    files: dict[str, str], tmp_path: Path
) -> None:
    other = tmp_path / "other-credentials"
    other.write_text(f"[default]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = {SECRET_B}\n")
    first = ident(files)
    second = ident({**files, "AWS_SHARED_CREDENTIALS_FILE": str(other)})
    assert first != second and "AKIAOTHER" in second


def test_editing_the_file_in_place_is_seen_by_the_same_resolver(files: dict[str, str]) -> None:
    resolver = IdentityResolver()
    before = resolver.identify(AwsOptions(), environ=files).key
    path = Path(files["AWS_SHARED_CREDENTIALS_FILE"])
    path.write_text(path.read_text().replace("AKIADEFAULT", "AKIAROTATED") + "\n")
    after = resolver.identify(AwsOptions(), environ=files).key
    assert before != after and "AKIAROTATED" in after


def test_roles_sso_web_identity_and_processes_are_distinct_and_secret_free(files: dict[str, str]) -> None:
    keys = {
        name: ident({**files, "AWS_REGION": "us-east-1", "AWS_PROFILE": name})
        for name in ("default", "a", "etl", "proc", "sso", "web")
    }
    assert len(set(keys.values())) == len(keys)
    text = "\n".join(keys.values())
    for secret in (SECRET_A, SECRET_B, TOKEN, "shared-secret-ext", "SECRETTOKEN"):
        assert secret not in text
    # the URL's role on top of a source: role, session name and a hash of the external id
    role = ident(files, role_arn="arn:aws:iam::123456789012:role/x", external_id="ext-secret-1")
    other_ext = ident(files, role_arn="arn:aws:iam::123456789012:role/x", external_id="ext-secret-2")
    assert "role=arn:aws:iam::123456789012:role/x" in role and "ext=" in role
    assert role != other_ext and "ext-secret" not in role + other_ext


def test_web_identity_and_container_variables_count(files: dict[str, str]) -> None:
    base = ident(files)
    assert (
        ident({**files, "AWS_ROLE_ARN": "arn:aws:iam::1:role/r", "AWS_WEB_IDENTITY_TOKEN_FILE": "/t"}) != base
    )
    assert ident({**files, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/creds"}) != base


def test_missing_profile_and_missing_region_are_configuration_errors(files: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        ident(files, profile="nope")
    assert info.value.parameter == "aws_profile" and "nope" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        ident({**files, "AWS_PROFILE": "nope"})
    assert "AWS_PROFILE" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        ident({**files, "AWS_PROFILE": "proc"})  # no region anywhere
    assert info.value.parameter == "region"
    assert ident({**files, "AWS_PROFILE": "proc"}, region="us-east-2")


def test_a_caller_session_is_named_by_its_serial() -> None:
    resolver = IdentityResolver()
    one = resolver.for_session(AwsOptions(region="us-east-1"), 1, None)
    two = resolver.for_session(AwsOptions(region="us-east-1"), 2, None)
    assert one.key == "session#1" and two.key == "session#2"
    with pytest.raises(ConfigurationError):
        resolver.for_session(AwsOptions(), 3, None)
    assert resolver.for_session(AwsOptions(), 3, "eu-west-1").region == "eu-west-1"


def test_identity_does_not_import_boto3(files: dict[str, str]) -> None:
    code = (
        "import sys; from sqlalchemy_rs_iam.identity import IdentityResolver; "
        "from sqlalchemy_rs_iam.config import AwsOptions; "
        "print(IdentityResolver().identify(AwsOptions()).key); "
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, sorted(sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **files}, capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("profile:default:AKIADEFAULT#")
