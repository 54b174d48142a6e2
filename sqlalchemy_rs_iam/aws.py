"""The only module that talks to AWS.

One :class:`AwsClients` per signing identity and AWS options (the registry owns and bounds them): the
boto3 session, its credential chain and the botocore clients are built on the first call and reused by every
connect, unlike ``redshift_connector``'s ``iam=True``, which builds a session and client per connect. All
sessions share one botocore data loader, so a further identity costs its clients, not another copy of the
service models. Throttling and 5xx are retried by botocore's own ``standard`` retry mode (backoff with
jitter); every call is bounded by connect/read timeouts. AWS errors become this package's exceptions,
naming resource and region.

Example::

    clients = AwsClients(options, identity)            # identity: see sqlalchemy_rs_iam.identity
    creds = clients.fetch_credentials(config)          # DbCredentials, expiry on the local clock
    host, port = clients.resolve_endpoint(config.target)
"""

from __future__ import annotations

import email.utils
import logging
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

from . import __version__, metrics
from .config import AwsOptions, IamConfig, Service, Target
from .credentials import DbCredentials
from .errors import (
    AccessDeniedError,
    AwsCredentialsError,
    AwsError,
    AwsValidationError,
    ResourceNotFoundError,
    ServiceUnavailableError,
)
from .identity import Identity
from .policy import local_times

log = logging.getLogger(__name__)

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


_LOADER_LOCK = threading.Lock()
_LOADER: Any = None


def _shared_loader() -> Any:
    """One botocore data loader for every session: service models are parsed once per process."""
    global _LOADER
    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = botocore.session.get_session().get_component("data_loader")
        return _LOADER


def _boto3_session(core: botocore.session.Session, region: str | None = None) -> boto3.Session:
    """A boto3 session on ``core`` with the shared loader (boto3 appends its data path to the loader's
    search path on every session; keep one copy so the shared list does not grow per identity)."""
    loader = _shared_loader()
    core.register_component("data_loader", loader)
    session = boto3.Session(botocore_session=core, region_name=region)
    with _LOADER_LOCK:
        paths = loader.search_paths
        paths[:] = list(dict.fromkeys(paths))
    return session


class AwsClients:
    """A boto3 session and its clients for one signing identity, built on first use and shared by every
    connect of that identity.

    ``session`` refers (weakly) to a caller's own boto3 session: the identity then names that session, and
    these clients do not keep it alive. Thread-safe; the
    registry calls :meth:`after_fork` in a forked child, which drops the clients (their sockets are the
    parent's) so new ones are built on first use.
    """

    def __init__(
        self, options: AwsOptions, identity: Identity, session: weakref.ref[boto3.Session] | None = None
    ) -> None:
        self.options = options
        self.identity = identity
        self.region: str = identity.region
        self._given_session = session
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._session: boto3.Session | None = None

    def __repr__(self) -> str:
        return f"<AwsClients {self.identity.label} in {self.region}>"

    def _session_locked(self) -> boto3.Session:
        session = self._session
        if session is None:
            if self._given_session is not None:
                session = self._given_session()
                if session is None:
                    raise ValueError("the boto3 session these clients were made for no longer exists")
            else:
                session = _boto3_session(botocore.session.Session(profile=self.identity.profile))
                self._check_signer(session)
            if self.options.role_arn is not None:
                session = self._assume_role(session)  # a private session: safe to keep
            elif self._given_session is not None:
                return session  # the caller's own: keeping it here would keep it alive for ever
            self._session = session
        return session

    def ensure_credentials(self) -> None:
        """Resolve the AWS credential chain now (``rs-iam check``): :class:`AwsCredentialsError` if it
        finds nothing usable."""
        with self._lock:
            session = self._session_locked()
        try:
            creds = session.get_credentials()
            frozen = None if creds is None else creds.get_frozen_credentials()
        except botocore.exceptions.BotoCoreError as exc:
            raise self._credentials_error(exc) from exc
        if frozen is None:
            raise self._credentials_error(botocore.exceptions.NoCredentialsError())

    def _check_signer(self, session: boto3.Session) -> None:
        """The session must sign as the identity it is cached under (the environment may have changed
        between computing the identity and building the session)."""
        expected = self.identity.access_key_id
        if expected is None:
            return
        try:
            creds = session.get_credentials()
        except botocore.exceptions.BotoCoreError as exc:
            raise self._credentials_error(exc) from exc
        if creds is None or creds.access_key != expected:
            raise AwsCredentialsError(
                f"the AWS credentials changed while connecting as {self.identity.label}; connect again",
                operation="credentials",
                resource=self.identity_hint(),
                region=self.region,
            )

    def _assume_role(self, base_session: boto3.Session) -> boto3.Session:
        """Assume ``role_arn`` on top of the session's own credentials, refreshed by botocore before expiry."""
        try:
            source = base_session.get_credentials()
        except botocore.exceptions.BotoCoreError as exc:
            raise self._credentials_error(exc) from exc
        if source is None:
            raise AwsCredentialsError(
                f"no AWS credentials to assume {self.options.role_arn} with ({self.identity.label})",
                operation="AssumeRole",
                resource=f"role {self.options.role_arn!r}",
                region=self.region,
            )
        options = self.options
        base = base_session._session  # the botocore session behind boto3's

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
        return _boto3_session(private, self.region)

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
                    client = self._session_locked().client(
                        service,  # type: ignore[call-overload]
                        region_name=self.region,
                        endpoint_url=self.options.endpoint_url,
                        config=self._config(),
                    )
                    self._clients[service] = client
        return client

    def after_fork(self) -> None:
        """In a forked child: new lock, no clients (their connection pools belong to the parent)."""
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
        sent_at = time.time()  # a Date from before receiving is not skew: we were frozen in flight
        response = self._call(service, operation, params, target)
        received_at = time.time()
        if target.service is Service.SERVERLESS:
            user, password = response["dbUser"], response["dbPassword"]
            expiration, next_refresh = response["expiration"], response.get("nextRefreshTime")
        else:
            user, password = response["DbUser"], response["DbPassword"]
            expiration, next_refresh = response["Expiration"], response.get("NextRefreshTime")
        local_exp, local_next = local_times(
            _epoch(expiration),
            None if next_refresh is None else _epoch(next_refresh),
            server_date=_server_date(response),
            received_at=received_at,
            requested_duration=float(config.duration_seconds),
            sent_at=sent_at,
        )
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

    @metrics.timed_aws_call
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
        """Who is calling, for messages (profile / role / access key id, never a secret)."""
        return self.identity.label

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
