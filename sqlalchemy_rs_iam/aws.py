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
import importlib
import logging
import re
import threading
import time
import traceback
import weakref
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import boto3
import botocore.credentials
import botocore.exceptions
import botocore.parsers
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
    ClockSkewError,
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
#
# Redaction knows the *fields* that carry secrets, whatever the syntax botocore logs them in: the request
# dict (``'ExternalId': 'x'``, ``'headers': {'x-amz-sso_bearer_token': 'x'}``), JSON and XML response
# bodies (also inside a ``b'...'`` repr), canonical-request header lines (``x-amz-security-token:x``) and
# query strings (``Signature=x``). A new credential source that uses a known field name is covered without
# a new pattern.

#: Fields whose value is a secret (compared case-insensitively).
SECRET_FIELDS = (
    "dbPassword",  # GetCredentials (JSON); DbPassword in GetClusterCredentials (XML)
    "SecretAccessKey",  # every STS/SSO/container/IMDS response (sso: secretAccessKey)
    "SessionToken",  # STS and SSO responses
    "Token",  # container and instance metadata credentials
    "WebIdentityToken",  # AssumeRoleWithWebIdentity request
    "ExternalId",  # AssumeRole request: a shared secret between accounts
    "accessToken",  # IAM Identity Center token cache and CreateToken responses
    "refreshToken",
    "clientSecret",
    "x-amz-security-token",  # session credentials signing a request (header and canonical request)
    "X-Amz-Security-Token",
    "x-amz-sso_bearer_token",  # GetRoleCredentials (SSO portal)
    "x-aws-ec2-metadata-token",  # IMDSv2 token header
    "Authorization",  # container credentials token; a SigV4 header keeps all but its Signature
    "aws_secret_access_key",
    "aws_session_token",
    "Signature",  # SigV4 signatures (header, query string): not a key, but no use to a reader either
    "X-Amz-Signature",
)
_NAMES = "|".join(sorted({re.escape(f.lower()) for f in SECRET_FIELDS}, key=len, reverse=True))
_MASK = "***"
# 'Name': 'value'  "Name": "value"  'Name': b'value'  (a repr'd dict, a JSON body, headers)
_QUOTED = re.compile(
    rf"""(?P<q>['"])(?P<name>{_NAMES})(?P=q)(?P<sep>\s*:\s*b?)(?P<vq>['"])(?P<value>(?:\\.|(?!(?P=vq)).)*)(?P=vq)""",
    re.IGNORECASE,
)
# <Name>value</Name>  (query-protocol XML responses)
_XML = re.compile(rf"(<(?P<name>{_NAMES})>)[^<]*(</)", re.IGNORECASE)
# name:value on a line of its own  (botocore.auth's canonical request)
_HEADER_LINE = re.compile(rf"^(?P<name>{_NAMES}):[^\n]+", re.IGNORECASE | re.MULTILINE)
# Name=value in a query string, a form body or an Authorization header
_ASSIGNMENT = re.compile(rf"(?<![\w-])(?P<name>{_NAMES})=(?P<value>[^&\s'\",]*)", re.IGNORECASE)
# botocore.auth: "Signature:\n<hex>"
_SIGNATURE_LINE = re.compile(r"^(Signature:\n)[0-9a-f]+", re.MULTILINE)


def _quoted(match: re.Match[str]) -> str:
    value = match.group("value")
    if match.group("name").lower() == "authorization" and value.startswith("AWS4-"):
        masked = _ASSIGNMENT.sub(lambda m: f"{m.group('name')}={_MASK}", value)  # keep Credential=AKIA...
    else:
        masked = _MASK
    q, vq = match.group("q"), match.group("vq")
    return f"{q}{match.group('name')}{q}{match.group('sep')}{vq}{masked}{vq}"


def _header_line(match: re.Match[str]) -> str:
    name = match.group("name")
    line = match.group(0)
    if name.lower() == "authorization" and line[len(name) + 1 :].startswith("AWS4-"):
        return _ASSIGNMENT.sub(lambda m: f"{m.group('name')}={_MASK}", line)
    return f"{name}:{_MASK}"


def redact(text: str) -> str:
    """Mask every secret field (:data:`SECRET_FIELDS`) in a botocore log message, body or error message.

    >>> redact('{"dbUser": "IAM:a", "dbPassword": "hunter2"}')
    '{"dbUser": "IAM:a", "dbPassword": "***"}'
    >>> redact("{'body': {'Action': 'AssumeRole', 'ExternalId': 'shared-secret'}}")
    "{'body': {'Action': 'AssumeRole', 'ExternalId': '***'}}"
    >>> redact("<SessionToken>FwoGZX</SessionToken> X-Amz-Signature=9f2a&X-Amz-Date=20261202T000000Z")
    '<SessionToken>***</SessionToken> X-Amz-Signature=***&X-Amz-Date=20261202T000000Z'
    """
    if not text:
        return text
    text = _QUOTED.sub(_quoted, text)
    text = _XML.sub(rf"\1{_MASK}\3", text)
    text = _SIGNATURE_LINE.sub(rf"\1{_MASK}", text)
    text = _HEADER_LINE.sub(_header_line, text)
    return _ASSIGNMENT.sub(lambda m: f"{m.group('name')}={_MASK}", text)


class _RedactingFilter(logging.Filter):
    """botocore logs request parameters, headers and raw bodies at DEBUG; rewrite such records (message and
    attached traceback) before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to fix; keep it as it is
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # The formatted traceback holds the exception's message (e.g. a metadata endpoint's body):
            # hand handlers the redacted text instead of the exception (Formatter prints exc_text).
            text = "".join(traceback.format_exception(*record.exc_info))
            cleaned_text = redact(text).rstrip("\n")
            if cleaned_text != text.rstrip("\n"):
                record.exc_info, record.exc_text = None, cleaned_text
        return True


_REDACTING_FILTER = _RedactingFilter()
# The botocore modules that log requests, responses and credential fetches; imported now so their loggers
# exist (and get the filter) before the first call.
_LOGGING_MODULES = ("botocore.auth", "botocore.parsers", "botocore.endpoint", "botocore.hooks",
                    "botocore.httpsession", "botocore.retryhandler", "botocore.credentials", "botocore.utils",
                    "botocore.tokens", "botocore.retries.standard", "botocore.client", "botocore.awsrequest",
                    "botocore.regions", "botocore.configprovider")  # fmt: skip
_FILTERED_ROOTS = ("botocore", "boto3", "urllib3", "s3transfer")


def install_redaction() -> None:
    """Put the redacting filter on every botocore/boto3/urllib3 logger that exists now.

    Filters on a logger do not apply to records of its children, so each logger needs its own. Called at
    import and whenever a boto3 session is built (a module imported later brings a new logger).
    """
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if (
            isinstance(logger, logging.Logger)
            and name.split(".", 1)[0] in _FILTERED_ROOTS
            and _REDACTING_FILTER not in logger.filters
        ):
            logger.addFilter(_REDACTING_FILTER)


for _module in _LOGGING_MODULES:
    importlib.import_module(_module)
for _name in (*_FILTERED_ROOTS, "urllib3.connectionpool"):
    logging.getLogger(_name)
install_redaction()


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
                install_redaction()  # loggers of botocore modules imported since
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
        except Exception as exc:  # a provider's own call (AssumeRole, SSO, metadata) failed, or its output
            raise self._provider_error(exc) from exc
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
            signer = None if creds is None else creds.access_key
        except Exception as exc:
            raise self._provider_error(exc) from exc
        if signer != expected:
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
        except Exception as exc:
            raise self._provider_error(exc) from exc
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
                endpoint=self.options.endpoint_url,
            )
        return str(address), int(port)

    @metrics.timed_aws_call
    def _call(self, service: str, operation: str, params: Mapping[str, Any], target: Target) -> Any:
        """Call ``operation``; every failure becomes an :class:`AwsError` naming endpoint and region."""
        method = _SNAKE[operation]
        client: Any = None
        try:
            client = self.client(service)
            return getattr(client, method)(**params)
        except AwsError:
            raise  # already ours (the session could not be built)
        except Exception as exc:  # every botocore failure (and whatever a credential provider raised)
            endpoint = self._endpoint_of(client, service, exc)
            raise self._error(exc, operation, target, endpoint) from exc

    def _endpoint_of(self, client: Any, service: str, exc: BaseException) -> str:
        """The URL the failed request went to: botocore's own note, else the client's, else the option."""
        kwargs = getattr(exc, "kwargs", None)
        url = kwargs.get("endpoint_url") if isinstance(kwargs, dict) else None
        if not url and client is not None:
            url = getattr(getattr(client, "meta", None), "endpoint_url", None)
        return str(url or self.options.endpoint_url or f"the {service} endpoint of {self.region}").rstrip("/")

    def _error(self, exc: Exception, operation: str, target: Target, endpoint: str) -> AwsError:
        if isinstance(exc, botocore.exceptions.ClientError):
            failed_op = getattr(exc, "operation_name", None) or operation
            if failed_op != operation:  # a credential provider's call (AssumeRole, GetRoleCredentials ...)
                provider = self._provider_endpoint(failed_op)
                return self._client_error(exc, failed_op, None, provider, credentials_for=operation)
            return self._client_error(exc, operation, target, endpoint)
        where = f"{target.describe()} in {self.region}"
        common: dict[str, Any] = {
            "operation": operation,
            "resource": target.describe(),
            "region": self.region,
            "endpoint": endpoint,
        }
        attempts = self.options.max_attempts
        if isinstance(exc, _CREDENTIAL_ERRORS):
            return self._credentials_error(exc, operation, target, endpoint)
        if isinstance(exc, botocore.exceptions.SSLError):
            text = (
                f"{operation} for {where} failed: the TLS handshake with {endpoint} failed "
                f"({_reason(exc)}); check that the endpoint speaks HTTPS and that proxies and CA bundles "
                "are set up for it"
            )
            return ServiceUnavailableError(_sentence(text), **common)
        if isinstance(exc, botocore.exceptions.ProxyConnectionError):
            proxy = (exc.kwargs or {}).get("proxy_url") or "the configured proxy"
            text = (
                f"{operation} for {where} failed: cannot connect to {endpoint} through proxy "
                f"{_strip_userinfo(str(proxy))} ({_reason(exc)})"
            )
            return ServiceUnavailableError(_sentence(text), **common)
        if isinstance(exc, _UNREACHABLE):
            text = (
                f"{operation} for {where} failed: cannot reach {endpoint} "
                f"({type(exc).__name__}, after {attempts} attempts)"
            )
            return ServiceUnavailableError(_sentence(text), **common)
        if isinstance(exc, botocore.parsers.ResponseParserError):
            text = (
                f"{operation} for {where} failed: {endpoint} answered with a response that is not from AWS "
                f"(unparseable body, e.g. an HTML error page of a proxy or load balancer; "
                f"{_snippet(str(exc))}) after {attempts} attempts"
            )
            return ServiceUnavailableError(_sentence(text), **common)
        text = f"{operation} for {where} at {endpoint} failed ({type(exc).__name__}: {_snippet(str(exc))})"
        return AwsError(_sentence(text), **common)

    def _client_error(
        self,
        exc: botocore.exceptions.ClientError,
        operation: str,
        target: Target | None,
        endpoint: str,
        *,
        credentials_for: str | None = None,
    ) -> AwsError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        aws_message = _snippet(str(error.get("Message", "")))
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode", 0) or 0)
        resource = target.describe() if target is not None else self.identity_hint()
        where = f"{resource} in {self.region}"
        detail = f"{code}: {aws_message}" if aws_message else code
        common: dict[str, Any] = {
            "operation": operation,
            "resource": resource,
            "region": self.region,
            "code": code,
            "endpoint": endpoint,
        }
        if _is_clock_skew(code, aws_message):
            skew = _skew_text(meta.get("HTTPHeaders", {}).get("date"))
            text = (
                f"{operation} on {where} at {endpoint} was refused because the request's time is more than "
                f"15 minutes off AWS's clock{skew} ({detail}); set this host's clock right (NTP, chrony or "
                "systemd-timesyncd), this is not an IAM policy problem"
            )
            return ClockSkewError(_sentence(text), **common)
        if credentials_for is not None:  # e.g. AssumeRole denied while getting the keys to sign with
            text = (
                f"could not get AWS credentials for {self.identity_hint()} to call {credentials_for}: "
                f"{operation} at {endpoint} in {self.region} failed ({detail})"
            )
            return AwsCredentialsError(_sentence(text), **common)
        cls: type[AwsError]
        if code in _NOT_FOUND:
            cls = ResourceNotFoundError
            text = f"{where} not found ({operation} at {endpoint}: {detail}); check the name and the region"
        elif code in _DENIED or status == 403:
            cls = AccessDeniedError
            text = (
                f"{operation} on {where} at {endpoint} denied ({detail}); check the IAM policy of "
                f"{self.identity_hint()}"
            )
        elif code in _INVALID:
            cls, text = AwsValidationError, f"{operation} on {where} at {endpoint} rejected ({detail})"
        elif (
            "Throttl" in code or code in ("RequestLimitExceeded", "TooManyRequestsException") or status >= 500
        ):
            cls = ServiceUnavailableError
            text = (
                f"{operation} on {where} at {endpoint} still failing after {self.options.max_attempts} "
                f"attempts (HTTP {status}, {detail})"
            )
        else:
            cls, text = AwsError, f"{operation} on {where} at {endpoint} failed ({detail})"
        return cls(_sentence(text), **common)

    def _provider_endpoint(self, operation: str) -> str:
        """Where a credential provider's own call went (its client is botocore's, not ours)."""
        if self.options.endpoint_url and operation.startswith("AssumeRole"):
            return self.options.endpoint_url  # the URL's role_arn is assumed through it
        service = (
            "STS" if operation.startswith("AssumeRole") else "SSO portal" if "Role" in operation else "AWS"
        )
        return f"the {service} endpoint of {self.region}"

    def _provider_error(self, exc: Exception) -> AwsError:
        """A failure of botocore's credential chain outside an API call of ours (``rs-iam check``, building
        the session): ours already, or mapped like any other (STS ``ClientError`` included)."""
        if isinstance(exc, AwsError):
            return exc
        return self._credentials_error(exc, "credentials", None, self._endpoint_of(None, "sts", exc))

    def identity_hint(self) -> str:
        """Who is calling, for messages (profile / role / access key id, never a secret)."""
        return self.identity.label

    def _credentials_error(
        self,
        exc: Exception,
        operation: str = "credentials",
        target: Target | None = None,
        endpoint: str | None = None,
    ) -> AwsError:
        if isinstance(exc, botocore.exceptions.ClientError):  # a provider's STS call (AssumeRole ...) failed
            failed = getattr(exc, "operation_name", None) or operation
            url = self._provider_endpoint(failed)
            return self._client_error(exc, failed, None, url, credentials_for=operation)
        resource = target.describe() if target is not None else self.identity_hint()
        if target is not None:
            text = (
                f"no usable AWS credentials for {self.identity_hint()} to call {operation} on {resource} in "
                f"{self.region} at {endpoint}: {_snippet(str(exc))}"
            )
        else:
            at = f" (STS at {endpoint})" if endpoint else ""
            text = f"no usable AWS credentials for {self.identity_hint()} in {self.region}{at}: {_snippet(str(exc))}"
        return AwsCredentialsError(
            _sentence(text), operation=operation, resource=resource, region=self.region, endpoint=endpoint
        )


_CREDENTIAL_ERRORS: tuple[type[Exception], ...] = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.CredentialRetrievalError,
    botocore.exceptions.NoAuthTokenError,
    botocore.exceptions.TokenRetrievalError,
    botocore.exceptions.SSOError,  # SSO token missing, expired or unreadable
    botocore.exceptions.ProfileNotFound,
    botocore.exceptions.InvalidConfigError,
    botocore.exceptions.MetadataRetrievalError,
    botocore.exceptions.RefreshWithMFAUnsupportedError,
)
_UNREACHABLE: tuple[type[Exception], ...] = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
)
# "Signature expired: 20261202T010000Z is now earlier than 20261202T011600Z (20261202T011100Z - 5 min.)"
_SKEW_MESSAGE = re.compile(
    r"signature expired|signature not yet current|request has expired|too skewed", re.I
)


def _is_clock_skew(code: str, message: str) -> bool:
    return code in ("RequestExpired", "RequestTimeTooSkewed") or bool(_SKEW_MESSAGE.search(message))


def _skew_text(date_header: str | None) -> str:
    """' (this host is 17 min behind AWS)' from the response's Date header, when there is one."""
    server = _parse_http_date(date_header)
    if server is None:
        return ""
    delta = time.time() - server
    return f" (this host is {abs(delta) / 60:.0f} min {'ahead of' if delta > 0 else 'behind'} AWS)"


_TAG = re.compile(r"<[^>]*>")
_HTML = re.compile(r"<\s*(!doctype|html|head|body|title)\b", re.I)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)


def _snippet(text: str, limit: int = 160) -> str:
    """An AWS message or a response body as one short line: secrets masked, HTML reduced to its title or
    text, whitespace collapsed, cut at ``limit`` characters, no trailing period (the caller ends the
    sentence)."""
    text = redact(text)
    if _HTML.search(text):
        title = _TITLE.search(text)
        body = title.group(1) if title else _TAG.sub(" ", text)
        text = f"an HTML page: {' '.join(body.split())}"
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text.rstrip(". ")


def _sentence(text: str) -> str:
    """One sentence: whitespace collapsed, exactly one final period (the first word stays as it is: it is
    often a name, such as ``workgroup 'analytics'`` or ``GetCredentials``)."""
    return " ".join(text.split()).rstrip(". ") + "."


def _reason(exc: BaseException) -> str:
    """The innermost reason of a connection-level error, short (e.g. 'WRONG_VERSION_NUMBER')."""
    err = (getattr(exc, "kwargs", None) or {}).get("error")
    text = str(err if err is not None else exc)
    found = re.search(r"\[SSL: ([A-Z_]+)\]|(WRONG_VERSION_NUMBER|CERTIFICATE_VERIFY_FAILED)", text)
    if found:
        return found.group(1) or found.group(2)
    return _snippet(text, 100)


def _strip_userinfo(url: str) -> str:
    """A proxy URL without ``user:password@``."""
    return re.sub(r"//[^/@]*@", "//***@", url)


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
    return _parse_http_date(response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date"))


def _parse_http_date(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return email.utils.parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return None
