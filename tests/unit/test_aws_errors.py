"""Every failure of an AWS call becomes one of this package's errors: the class, and a one-sentence message
that names the operation, the resource, the endpoint URL and the region, never a secret.

botocore's ``Stubber`` answers with each error code ``aws.py`` knows; botocore exceptions that are not
``ClientError`` (unparseable bodies, TLS and proxy failures, credential providers) are raised from a
``before-send`` hook of a real client, so they travel botocore's own call path. No network.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterator
from typing import Any

import botocore.exceptions
import botocore.parsers
import pytest
from botocore.stub import Stubber

from sqlalchemy_rs_iam import aws, errors
from sqlalchemy_rs_iam.config import AwsOptions, parse_config
from sqlalchemy_rs_iam.identity import Identity

KEY_ID, SECRET = "AKIAUNITTEST0000", "unit-test-secret-key-0000000000000000000"
ENDPOINT = "https://redshift-serverless.us-east-1.amazonaws.com"


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> aws.AwsClients:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    identity = Identity(
        f"env:{KEY_ID}", f"AWS keys from the environment ({KEY_ID})", "us-east-1", None, KEY_ID
    )
    return aws.AwsClients(AwsOptions(region="us-east-1", max_attempts=1), identity)


CONFIG = parse_config({"workgroup": "analytics", "region": "us-east-1"}, database="dev")


@pytest.fixture
def stub(clients: aws.AwsClients) -> Iterator[Stubber]:
    with Stubber(clients.client("redshift-serverless")) as stubber:
        yield stubber


def _error(clients: aws.AwsClients) -> errors.AwsError:
    with pytest.raises(errors.AwsError) as info:
        clients.fetch_credentials(CONFIG)
    return info.value


def _check_message(
    exc: errors.AwsError, *, endpoint: str = ENDPOINT, operation: str = "GetCredentials"
) -> str:
    text = str(exc)
    assert operation in text and exc.operation == operation
    assert "workgroup 'analytics'" in text.lower() and exc.resource == "workgroup 'analytics'"
    assert endpoint in text and exc.endpoint == endpoint
    assert "us-east-1" in text and exc.region == "us-east-1"
    assert text.endswith(".") and ".." not in text.replace(endpoint, "") and "\n" not in text
    assert SECRET not in text
    assert exc.__cause__ is not None
    return text


CODES: list[tuple[str, int, type[errors.AwsError]]] = (
    [
        (code, 404 if "NotFound" in code else 400, errors.ResourceNotFoundError)
        for code in sorted(aws._NOT_FOUND)
    ]
    + [(code, 403, errors.AccessDeniedError) for code in sorted(aws._DENIED)]
    + [(code, 400, errors.AwsValidationError) for code in sorted(aws._INVALID)]
    + [
        ("ThrottlingException", 400, errors.ServiceUnavailableError),
        ("RequestLimitExceeded", 400, errors.ServiceUnavailableError),
        ("TooManyRequestsException", 429, errors.ServiceUnavailableError),
        ("InternalServerException", 500, errors.ServiceUnavailableError),
        ("ServiceUnavailable", 503, errors.ServiceUnavailableError),
        ("ConflictException", 409, errors.AwsError),
        ("RequestExpired", 400, errors.ClockSkewError),
        ("RequestTimeTooSkewed", 403, errors.ClockSkewError),
    ]
)


@pytest.mark.parametrize("code,status,cls", CODES, ids=[c for c, _, _ in CODES])
def test_every_error_code_maps_to_its_class_with_a_clean_sentence(
    clients: aws.AwsClients, stub: Stubber, code: str, status: int, cls: type[errors.AwsError]
) -> None:
    stub.add_client_error(
        "get_credentials",
        service_error_code=code,
        service_message="Something went wrong for this request.",  # AWS's own trailing period
        http_status_code=status,
    )
    exc = _error(clients)
    assert type(exc) is cls
    assert exc.code == code
    _check_message(exc)


@pytest.mark.parametrize(
    "code,message",
    [
        (
            "InvalidSignatureException",
            "Signature expired: 20261202T010000Z is now earlier than 20261202T011600Z",
        ),
        ("SignatureDoesNotMatch", "Signature expired: 20261202T010000Z is now earlier than 20261202T011600Z"),
        ("InvalidSignatureException", "Signature not yet current: 20261202T013000Z is still later than now"),
        ("RequestExpired", "Request has expired."),
    ],
)
def test_signature_expired_is_diagnosed_as_clock_skew_not_iam(
    clients: aws.AwsClients, stub: Stubber, code: str, message: str
) -> None:
    aws_now = email.utils.formatdate(time.time() + 17 * 60, usegmt=True)
    stub.add_client_error(
        "get_credentials",
        service_error_code=code,
        service_message=message,
        http_status_code=403,
        response_meta={"HTTPHeaders": {"date": aws_now}},
    )
    exc = _error(clients)
    assert isinstance(exc, errors.ClockSkewError) and isinstance(exc, errors.AccessDeniedError)
    text = _check_message(exc)
    assert "clock" in text and "17 min behind AWS" in text and "IAM policy problem" in text


def test_a_signature_mismatch_that_is_not_about_time_stays_access_denied(
    clients: aws.AwsClients, stub: Stubber
) -> None:
    stub.add_client_error(
        "get_credentials",
        service_error_code="SignatureDoesNotMatch",
        service_message="The request signature we calculated does not match the signature you provided.",
        http_status_code=403,
    )
    exc = _error(clients)
    assert type(exc) is errors.AccessDeniedError
    assert "IAM policy" in _check_message(exc)


def test_html_5xx_body_is_reduced_to_its_title(clients: aws.AwsClients, stub: Stubber) -> None:
    page = (
        "<!doctype html><html><head><title>502 Bad Gateway</title></head><body>"
        + "x" * 5000
        + "</body></html>"
    )
    stub.add_client_error(
        "get_credentials", service_error_code="502", service_message=page, http_status_code=502
    )
    exc = _error(clients)
    text = _check_message(exc)
    assert isinstance(exc, errors.ServiceUnavailableError)
    assert "502 Bad Gateway" in text and "<" not in text and len(text) < 400


def test_not_found_message_has_no_double_period(clients: aws.AwsClients, stub: Stubber) -> None:
    stub.add_client_error(
        "get_credentials",
        service_error_code="ResourceNotFoundException",
        service_message="Workgroup analytics not found.",
        http_status_code=404,
    )
    text = _check_message(_error(clients))
    assert "not found" in text and "Check the name" not in text and "check the name and the region." in text


def test_secrets_in_an_aws_message_are_masked(clients: aws.AwsClients, stub: Stubber) -> None:
    stub.add_client_error(
        "get_credentials",
        service_error_code="ValidationException",
        service_message=f'bad request {{"SecretAccessKey": "{SECRET}", "dbPassword": "pw-123456"}}',
        http_status_code=400,
    )
    text = _check_message(_error(clients))
    assert "pw-123456" not in text


def _raising(clients: aws.AwsClients, exc: Exception) -> None:
    def raise_it(**kwargs: Any) -> None:
        raise exc

    clients.client("redshift-serverless").meta.events.register("before-send", raise_it)


RAW: list[tuple[str, Callable[[], Exception], type[errors.AwsError], str]] = [
    (
        "html-5xx-unparseable",
        lambda: botocore.parsers.ResponseParserError(
            "Unable to parse response (syntax error), invalid XML received. Further retries may succeed:\n"
            "b'<!doctype html><html><head><title>503 Service Unavailable</title></head></html>'"
        ),
        errors.ServiceUnavailableError,
        "503 Service Unavailable",
    ),
    (
        "tls-to-plain-http",
        lambda: botocore.exceptions.SSLError(
            endpoint_url=ENDPOINT, error="[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"
        ),
        errors.ServiceUnavailableError,
        "WRONG_VERSION_NUMBER",
    ),
    (
        "proxy",
        lambda: botocore.exceptions.ProxyConnectionError(
            proxy_url="http://user:proxypass@proxy.corp:3128", error="Connection refused"
        ),
        errors.ServiceUnavailableError,
        "proxy.corp:3128",
    ),
    (
        "unreachable",
        lambda: botocore.exceptions.EndpointConnectionError(endpoint_url=ENDPOINT),
        errors.ServiceUnavailableError,
        "cannot reach",
    ),
    (
        "read-timeout",
        lambda: botocore.exceptions.ReadTimeoutError(endpoint_url=ENDPOINT),
        errors.ServiceUnavailableError,
        "ReadTimeoutError",
    ),
    (
        "no-credentials",
        lambda: botocore.exceptions.NoCredentialsError(),
        errors.AwsCredentialsError,
        "no usable AWS credentials",
    ),
    (
        "sso-token-expired",
        lambda: botocore.exceptions.UnauthorizedSSOTokenError(),
        errors.AwsCredentialsError,
        "no usable AWS credentials",
    ),
    (
        "credential-process-bad-json",
        lambda: ValueError("Expecting value: line 1 column 1 (char 0)"),
        errors.AwsError,
        "ValueError",
    ),
    (
        "other-botocore",
        lambda: botocore.exceptions.ParamValidationError(report="Invalid type for parameter dbName"),
        errors.AwsError,
        "Invalid type for parameter dbName",
    ),
]


@pytest.mark.parametrize("raised,cls,expect", [r[1:] for r in RAW], ids=[r[0] for r in RAW])
def test_botocore_exceptions_that_are_not_client_errors_become_ours(
    clients: aws.AwsClients, raised: Callable[[], Exception], cls: type[errors.AwsError], expect: str
) -> None:
    _raising(clients, raised())
    exc = _error(clients)
    assert isinstance(exc, cls), repr(exc)
    text = _check_message(exc)
    assert expect in text
    assert "proxypass" not in text


def test_a_credential_providers_client_error_names_the_failing_call(clients: aws.AwsClients) -> None:
    denied = botocore.exceptions.ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "not authorized to perform sts:AssumeRole."}},
        "AssumeRole",
    )
    _raising(clients, denied)
    exc = _error(clients)
    assert isinstance(exc, errors.AwsCredentialsError)
    assert exc.operation == "AssumeRole" and "to call GetCredentials" in str(exc)
    assert "AssumeRole at the STS endpoint of us-east-1" in str(exc) and exc.region == "us-east-1"
    assert str(exc).endswith(".") and ".." not in str(exc)


def test_ensure_credentials_maps_a_providers_client_error(
    clients: aws.AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = clients._session_locked()

    def fail() -> Any:
        raise botocore.exceptions.ClientError(
            {
                "Error": {
                    "Code": "ExpiredToken",
                    "Message": "The security token included in the request is expired",
                }
            },
            "AssumeRoleWithWebIdentity",
        )

    monkeypatch.setattr(session, "get_credentials", fail)
    with pytest.raises(errors.AwsCredentialsError) as info:
        clients.ensure_credentials()
    assert info.value.operation == "AssumeRoleWithWebIdentity" and isinstance(
        info.value.__cause__, botocore.exceptions.ClientError
    )


def test_resolve_endpoint_maps_errors_too(clients: aws.AwsClients, stub: Stubber) -> None:
    stub.add_client_error(
        "get_workgroup", service_error_code="ResourceNotFoundException", http_status_code=404
    )
    with pytest.raises(errors.ResourceNotFoundError) as info:
        clients.resolve_endpoint(CONFIG.target)
    _check_message(info.value, operation="GetWorkgroup")


def test_rs_iam_diagnoses_clock_skew_as_a_clock_problem(clients: aws.AwsClients, stub: Stubber) -> None:
    from sqlalchemy_rs_iam import cli

    stub.add_client_error(
        "get_credentials",
        service_error_code="InvalidSignatureException",
        service_message="Signature expired: 20261202T010000Z is now earlier than 20261202T011600Z",
        http_status_code=403,
    )
    problem = cli.diagnose(_error(clients), cli_flags=False)
    assert problem.code == cli.EXIT_AWS_REFUSED
    assert problem.message.startswith("clock skew:") and "Fix this host's clock" in problem.message
    assert "access denied" not in problem.message
