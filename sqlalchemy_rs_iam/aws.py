"""The only module that talks to AWS.

One :class:`AwsClients` per distinct :class:`~sqlalchemy_rs_iam.config.AwsOptions` (or per caller-supplied
boto3 session): the session, its credential chain and the botocore clients are built once and reused by every
connect, unlike ``redshift_connector``'s ``iam=True``, which builds a session and client per connect.
Throttling and 5xx are retried by botocore's own ``standard`` retry mode (backoff with jitter); every call is
bounded by connect/read timeouts. AWS errors become this package's exceptions, naming resource and region.

Example::

    clients = clients_for(AwsOptions(region="us-east-1"))
    creds = clients.fetch_credentials(config)          # DbCredentials, expiry on the local clock
    host, port = clients.resolve_endpoint(config.target)
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import boto3
import botocore.credentials
import botocore.exceptions
import botocore.session
from botocore.config import Config

from . import __version__
from .cache import local_expiration
from .config import AwsOptions, IamConfig, Service, Target
from .credentials import DbCredentials
from .errors import (
    AccessDeniedError,
    AwsCredentialsError,
    AwsError,
    AwsValidationError,
    ConfigurationError,
    ResourceNotFoundError,
    ServiceUnavailableError,
)

log = logging.getLogger(__name__)

# Below this much disagreement between AWS's Date header and our clock we trust AWS's expiration as is:
# the Date header has whole-second resolution, and correcting by a rounding error would shift expiry late.
_SKEW_TOLERANCE = 2.0

_NOT_FOUND = {"ResourceNotFoundException", "ClusterNotFound", "ClusterNotFoundFault", "NotFoundException"}
_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "ExpiredToken",
    "ExpiredTokenException",
    "MissingAuthenticationToken",
}
_INVALID = {
    "ValidationException",
    "ValidationError",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "InvalidParameterValueException",
    "UnsupportedOperation",
    "UnsupportedOperationFault",
    "InvalidClusterState",
    "InvalidClusterStateFault",
}


# --- secrets never reach botocore's DEBUG log ------------------------------------------------------------

_SECRET_PATTERNS = (
    re.compile(r'("(?:dbPassword|DbPassword|SecretAccessKey|SessionToken)"\s*:\s*")[^"]*(")'),
    re.compile(r"(<(?:DbPassword|SecretAccessKey|SessionToken)>)[^<]*(</)"),
    re.compile(r"('(?:dbPassword|DbPassword|SecretAccessKey|SessionToken)'\s*:\s*')[^']*(')"),
    # A role session's token travels as a header: botocore.endpoint logs the request headers
    # ('X-Amz-Security-Token': b'...') and botocore.auth the canonical request (x-amz-security-token:...).
    re.compile(r"('X-Amz-Security-Token'\s*:\s*b?')[^']*(')", re.IGNORECASE),
    re.compile(r"^(x-amz-security-token:)[^\n]*()", re.IGNORECASE | re.MULTILINE),
)


def redact(text: str) -> str:
    """Mask every password, secret key and session token in a botocore log message or body.

    >>> redact('{"dbUser": "IAM:a", "dbPassword": "hunter2"}')
    '{"dbUser": "IAM:a", "dbPassword": "***"}'
    """
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***\2", text)
    return text


class _RedactingFilter(logging.Filter):
    """botocore logs raw response bodies (with dbPassword) at DEBUG; rewrite such records before any handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to fix; keep it as it is
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_REDACTING_FILTER = _RedactingFilter()
# Filters on a logger do not apply to its children, so each logger that may print bodies gets one.
for _name in ("botocore", "botocore.auth", "botocore.parsers", "botocore.endpoint", "botocore.hooks",
              "botocore.httpsession", "botocore.retryhandler", "botocore.credentials", "boto3",
              "urllib3.connectionpool"):  # fmt: skip
    logging.getLogger(_name).addFilter(_REDACTING_FILTER)


# --- clients ------------------------------------------------------------------------------------------------


class AwsClients:
    """A boto3 session and its clients for one AWS configuration, built once and shared by every connect.

    Thread-safe; after ``os.fork`` the child drops the parent's clients (their sockets are shared) and
    builds new ones on first use.
    """

    def __init__(self, options: AwsOptions, session: boto3.Session | None = None) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._identity: str | None = None
        self._user_session = session is not None
        try:
            self._session = session if session is not None else boto3.Session(profile_name=options.profile)
        except botocore.exceptions.ProfileNotFound as exc:
            raise ConfigurationError(
                "aws_profile", f"profile {options.profile!r} is not in the AWS config / credentials files"
            ) from exc
        self._profile_name: str | None = self._session.profile_name
        region = options.region or self._session.region_name
        if not region:
            raise ConfigurationError(
                "region",
                "no AWS region: add region=<name> to the URL, use a Redshift endpoint host, or configure one "
                "(AWS_REGION / AWS_DEFAULT_REGION or the profile's region)",
            )
        self.region: str = region
        if options.role_arn is not None:
            self._install_assume_role()
        _LIVE.add(self)

    # The identity is part of every cache key, so two profiles / roles / access keys never share credentials.
    # It holds names and access key ids (identifiers, not secrets); never a secret key.
    def identity(self) -> str:
        """A secret-free string naming the AWS identity, e.g. ``profile=a|key=AKIA...|role=arn:...``."""
        identity = self._identity
        if identity is None:
            with self._lock:
                if self._identity is None:
                    self._identity = self._compute_identity()
                identity = self._identity
        return identity

    def identity_known(self) -> bool:
        """True once :meth:`identity` has been computed (it may read files or call out the first time)."""
        return self._identity is not None

    def _compute_identity(self) -> str:
        source_key = "-"
        try:
            creds = self._source_credentials()
            if creds is not None:
                source_key = creds.access_key
        except botocore.exceptions.BotoCoreError as exc:
            raise self._credentials_error(exc) from exc
        parts = [f"profile={self._profile_name or '-'}", f"key={source_key}"]
        if self.options.role_arn is not None:
            ext = self.options.external_id
            parts.append(f"role={self.options.role_arn}")
            parts.append(f"session={self.options.role_session_name}")
            if ext is not None:  # a hash: external ids are shared secrets between accounts
                parts.append("ext=" + hashlib.sha256(ext.encode()).hexdigest()[:16])
        if self._user_session:
            parts.append(f"session-obj={id(self._session):x}")
        return "|".join(parts)

    def _source_credentials(self) -> botocore.credentials.Credentials | None:
        if self.options.role_arn is not None:
            return self._source_creds
        return self._session.get_credentials()

    def _install_assume_role(self) -> None:
        """Assume ``role_arn`` on top of the session's own credentials, refreshed by botocore before expiry."""
        try:
            source = self._session.get_credentials()
        except botocore.exceptions.BotoCoreError as exc:
            raise self._credentials_error(exc) from exc
        self._source_creds = source
        if source is None:
            raise AwsCredentialsError(
                f"no AWS credentials to assume {self.options.role_arn} with (profile "
                f"{self.options.profile or 'default'})",
                operation="AssumeRole",
                resource=f"role {self.options.role_arn!r}",
                region=self.region,
            )
        options = self.options
        base = self._session._session  # the botocore session behind boto3's

        def sts_client(service_name: str, **kwargs: Any) -> Any:
            # AssumeRoleCredentialFetcher asks for an "sts" client with the source credentials.
            return base.create_client(
                service_name,
                region_name=self.region,
                endpoint_url=options.endpoint_url,
                config=self._config(),
                **kwargs,
            )

        extra: dict[str, Any] = {"RoleSessionName": options.role_session_name}
        if options.external_id is not None:
            extra["ExternalId"] = options.external_id
        fetcher = botocore.credentials.AssumeRoleCredentialFetcher(
            client_creator=sts_client,
            source_credentials=source,
            role_arn=str(options.role_arn),
            extra_args=extra,
        )
        role_creds = botocore.credentials.DeferredRefreshableCredentials(
            refresh_using=fetcher.fetch_credentials, method="assume-role"
        )
        # A private session so the caller's own session keeps its own credentials.
        private = botocore.session.Session()
        # botocore's public set_credentials() takes static keys only; refreshable ones go in directly.
        private._credentials = role_creds  # type: ignore[attr-defined]
        self._session = boto3.Session(botocore_session=private, region_name=self.region)

    def _config(self) -> Config:
        o = self.options
        return Config(
            connect_timeout=o.connect_timeout,
            read_timeout=o.read_timeout,
            retries={"mode": "standard", "total_max_attempts": o.max_attempts},  # incl. the first
            user_agent_extra=f"sqlalchemy-rs-iam/{__version__}",
        )

    def client(self, service: str) -> Any:
        """The shared botocore client for ``service`` (``redshift`` or ``redshift-serverless``)."""
        client = self._clients.get(service)
        if client is None:
            with self._lock:
                client = self._clients.get(service)
                if client is None:
                    client = self._session.client(
                        service,  # type: ignore[call-overload]
                        region_name=self.region,
                        endpoint_url=self.options.endpoint_url,
                        config=self._config(),
                    )
                    self._clients[service] = client
        return client

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._clients = {}

    # --- API calls -------------------------------------------------------------------------------------------

    def fetch_credentials(self, config: IamConfig) -> DbCredentials:
        """Call GetCredentials / GetClusterCredentials / GetClusterCredentialsWithIAM for ``config``."""
        target = config.target
        operation = config.operation
        params: dict[str, Any] = {"DurationSeconds": config.duration_seconds, "DbName": config.database}
        if target.service is Service.SERVERLESS:
            service = "redshift-serverless"
            params = {"durationSeconds": config.duration_seconds, "dbName": config.database}
            if target.workgroup is not None:
                params["workgroupName"] = target.workgroup
            else:
                params["customDomainName"] = target.custom_domain
        else:
            service = "redshift"
            if target.cluster is not None:
                params["ClusterIdentifier"] = target.cluster
            else:
                params["CustomDomainName"] = target.custom_domain
            if config.db_user is not None:
                params["DbUser"] = config.db_user
                params["AutoCreate"] = config.auto_create
                if config.db_groups:
                    params["DbGroups"] = list(config.db_groups)
        log.debug("calling %s for %s in %s", operation, target.describe(), self.region)
        response = self._call(service, operation, params, target)
        received_at = time.time()
        if target.service is Service.SERVERLESS:
            user, password = response["dbUser"], response["dbPassword"]
            expiration, next_refresh = response["expiration"], response.get("nextRefreshTime")
        else:
            user, password = response["DbUser"], response["DbPassword"]
            expiration, next_refresh = response["Expiration"], response.get("NextRefreshTime")
        server_date = _server_date(response)
        if server_date is not None and abs(server_date - received_at) < _SKEW_TOLERANCE:
            local_exp = _epoch(expiration)  # the clocks agree; AWS's expiration holds as it is
        else:
            local_exp = local_expiration(
                _epoch(expiration),
                server_date=server_date,
                received_at=received_at,
                requested_duration=float(config.duration_seconds),
            )
        local_next: float | None = None
        if next_refresh is not None:
            # Shift nextRefreshTime by the same skew correction applied to the expiration.
            local_next = _epoch(next_refresh) + (local_exp - _epoch(expiration))
        return DbCredentials(
            user=user,
            password=password,
            expiration=local_exp,
            next_refresh=local_next,
            fetched_at=received_at,
        )

    def resolve_endpoint(self, target: Target) -> tuple[str, int]:
        """Host and port of a workgroup (GetWorkgroup) or cluster (DescribeClusters)."""
        if target.workgroup is not None:
            response = self._call(
                "redshift-serverless", "GetWorkgroup", {"workgroupName": target.workgroup}, target
            )
            endpoint = response.get("workgroup", {}).get("endpoint") or {}
            address, port = endpoint.get("address"), endpoint.get("port")
        elif target.cluster is not None:
            response = self._call(
                "redshift", "DescribeClusters", {"ClusterIdentifier": target.cluster}, target
            )
            clusters = response.get("Clusters") or [{}]
            endpoint = clusters[0].get("Endpoint") or {}
            address, port = endpoint.get("Address"), endpoint.get("Port")
        else:  # custom domains are their own host; config fills it in
            raise ValueError("custom domain targets have no endpoint to resolve")
        if not address or not port:
            raise AwsError(
                f"{target.describe()} in {self.region} has no endpoint yet (is it still being created?)",
                operation="GetWorkgroup" if target.workgroup else "DescribeClusters",
                resource=target.describe(),
                region=self.region,
            )
        return str(address), int(port)

    def _call(self, service: str, operation: str, params: Mapping[str, Any], target: Target) -> Any:
        method = _SNAKE[operation]
        try:
            return getattr(self.client(service), method)(**params)
        except botocore.exceptions.ClientError as exc:
            raise self._client_error(exc, operation, target) from exc
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError,
            botocore.exceptions.ConnectionClosedError,
        ) as exc:
            endpoint = self.options.endpoint_url or f"the {service} endpoint of {self.region}"
            raise ServiceUnavailableError(
                f"{operation} for {target.describe()} in {self.region}: cannot reach {endpoint} "
                f"({type(exc).__name__}, after {self.options.max_attempts} attempts)",
                operation=operation,
                resource=target.describe(),
                region=self.region,
            ) from exc
        except (
            botocore.exceptions.NoCredentialsError,
            botocore.exceptions.PartialCredentialsError,
            botocore.exceptions.CredentialRetrievalError,
        ) as exc:
            raise self._credentials_error(exc, operation, target) from exc

    def _client_error(self, exc: botocore.exceptions.ClientError, operation: str, target: Target) -> AwsError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        aws_message = redact(str(error.get("Message", "")))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        where = f"{target.describe()} in {self.region}"
        cls: type[AwsError]
        if code in _NOT_FOUND:
            cls, text = ResourceNotFoundError, f"{where} not found ({operation}: {code})"
            if aws_message:
                text += f": {aws_message}"
            text += ". Check the name and the region."
        elif code in _DENIED or status == 403:
            cls = AccessDeniedError
            text = f"{operation} on {where} denied ({code}): {aws_message}. Check the IAM policy of {self.identity_hint()}."
        elif code in _INVALID:
            cls, text = AwsValidationError, f"{operation} on {where} rejected ({code}): {aws_message}"
        elif (
            "Throttl" in code or code in ("RequestLimitExceeded", "TooManyRequestsException") or status >= 500
        ):
            cls = ServiceUnavailableError
            text = (
                f"{operation} on {where} still failing after {self.options.max_attempts} attempts "
                f"({code}): {aws_message}"
            )
        else:
            cls, text = AwsError, f"{operation} on {where} failed ({code}): {aws_message}"
        return cls(text, operation=operation, resource=target.describe(), region=self.region, code=code)

    def identity_hint(self) -> str:
        """Who is calling, for messages (profile / role, never a key)."""
        if self.options.role_arn is not None:
            return f"role {self.options.role_arn}"
        return f"profile {self._profile_name or 'default'}"

    def _credentials_error(
        self, exc: Exception, operation: str = "credentials", target: Target | None = None
    ) -> AwsCredentialsError:
        resource = target.describe() if target is not None else self.identity_hint()
        return AwsCredentialsError(
            f"no usable AWS credentials for {self.identity_hint()} in {self.region}: {redact(str(exc))}",
            operation=operation,
            resource=resource,
            region=self.region,
        )


_SNAKE = {
    "GetCredentials": "get_credentials",
    "GetWorkgroup": "get_workgroup",
    "GetClusterCredentials": "get_cluster_credentials",
    "GetClusterCredentialsWithIAM": "get_cluster_credentials_with_iam",
    "DescribeClusters": "describe_clusters",
}


def _epoch(value: datetime | float | int) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def _server_date(response: Mapping[str, Any]) -> float | None:
    header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not header:
        return None
    try:
        return email.utils.parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return None


# --- process-wide registry: equal options share one session and set of clients -----------------------------

_REGISTRY: dict[AwsOptions, AwsClients] = {}
_REGISTRY_LOCK = threading.Lock()
_LIVE: weakref.WeakSet[AwsClients] = weakref.WeakSet()


def clients_for(options: AwsOptions, session: boto3.Session | None = None) -> AwsClients:
    """The shared :class:`AwsClients` for ``options`` (a caller's own ``session`` gets its own instance)."""
    if session is not None:
        return AwsClients(options, session)
    clients = _REGISTRY.get(options)
    if clients is None:
        with _REGISTRY_LOCK:
            clients = _REGISTRY.get(options)
            if clients is None:
                clients = AwsClients(options)
                _REGISTRY[options] = clients
    return clients


def reset() -> None:
    """Forget every shared session and client (tests; credentials files changed)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()


def _after_fork_in_child() -> None:
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()
    for clients in list(_LIVE):
        clients._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
