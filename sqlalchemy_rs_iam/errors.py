"""The exceptions this package raises: one small hierarchy.

Every message names what the user can act on: the URL parameter exactly as spelled in the URL, or the
AWS resource (workgroup, cluster, custom domain) and region. No message ever contains a password.

Example::

    from sqlalchemy_rs_iam import errors

    try:
        engine = create_engine("redshift+redshift_connector:///dev?plugin=rs_iam&workgroup=BAD_NAME")
    except errors.ConfigurationError as exc:
        print(exc.parameter)  # "workgroup"
"""

from __future__ import annotations


class RsIamError(Exception):
    """Base class of every error raised by sqlalchemy-rs-iam."""


class ConfigurationError(RsIamError, ValueError):
    """A parameter is missing, malformed or contradicts another one.

    Raised before any AWS call. ``parameter`` is the name as the caller spelled it (URL query name,
    ``connect()`` keyword, or a URL part such as ``host`` / ``username``).
    """

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        self.detail = message  # the message without the parameter name, for callers that show it their way
        super().__init__(f"{parameter}: {message}")


class AwsError(RsIamError):
    """An AWS call failed. ``operation``, ``resource`` (e.g. ``workgroup 'analytics'``), ``region`` and
    ``endpoint`` (the URL called, when known) say which; ``code`` is AWS's error code when there was one;
    the botocore exception is chained."""

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        resource: str,
        region: str,
        code: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.operation = operation
        self.resource = resource
        self.region = region
        self.code = code
        self.endpoint = endpoint
        super().__init__(message)


class ResourceNotFoundError(AwsError):
    """The workgroup, cluster or custom domain does not exist in that region (or account)."""


class AccessDeniedError(AwsError):
    """The AWS identity may not call the operation on that resource (IAM policy)."""


class ClockSkewError(AccessDeniedError):
    """AWS refused the request because its signature time is more than 15 minutes off AWS's clock: the
    local clock is wrong, not the IAM policy (``Signature expired``, ``RequestExpired``)."""


class AwsValidationError(AwsError):
    """AWS rejected the request's parameters (e.g. a database name AWS does not accept)."""


class ServiceUnavailableError(AwsError):
    """Throttling, 5xx, a timeout or an unreachable endpoint, still failing after botocore's retries."""


class AwsCredentialsError(AwsError):
    """No AWS credentials could be found or assumed for the configured profile / role."""
