"""Parse and validate every parameter: URL query or ``connect()`` keywords in, a frozen :class:`IamConfig` out.

Pure: no I/O, no boto3, no SQLAlchemy. Every AWS constraint and every parameter name lives here, so a bad
value fails at ``create_engine`` time, before any AWS call, with a :class:`ConfigurationError` whose
``parameter`` is the name exactly as the caller spelled it.

Example::

    >>> cfg = parse_config({"workgroup": "analytics", "region": "us-east-1"}, database="dev")
    >>> cfg.target.describe(), cfg.duration_seconds
    ("workgroup 'analytics'", 900)
    >>> parse_config({"workgroup": "Analytics"}, database="dev")
    Traceback (most recent call last):
    ...
    sqlalchemy_rs_iam.errors.ConfigurationError: workgroup: 'Analytics' is not a workgroup name: ...
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from .errors import ConfigurationError

#: Every URL query parameter the plugin consumes (removed from the URL before the dialect sees it).
PARAMETERS: tuple[str, ...] = (
    "workgroup",
    "custom_domain",
    "cluster",
    "service",
    "db_user",
    "auto_create",
    "db_groups",
    "duration_seconds",
    "region",
    "aws_profile",
    "aws_endpoint_url",
    "role_arn",
    "role_session_name",
    "external_id",
    "aws_connect_timeout",
    "aws_read_timeout",
    "aws_max_attempts",
    "cache",
    "refresh",
    # redshift_connector's own IAM switch: accepted only as false, because the plugin replaces it.
    "iam",
)

#: URL query parameters the plugin refuses. Callers pass them to :func:`parse_config` with the others::
#:
#:     names = PARAMETERS + FORBIDDEN_QUERY_PARAMETERS
#:     params = {name: url.query[name] for name in names if name in url.query}
#:
#: ``?password=...`` would otherwise be silently ignored by the plugin yet shown by ``repr(engine)``.
FORBIDDEN_QUERY_PARAMETERS: tuple[str, ...] = ("password",)

#: Bounds on ``db_groups``. The GetClusterCredentials reference documents no limit on DbGroups; these are
#: far above any real set of groups (100 names of the maximum 64 characters take 6,499) and keep parsing
#: cheap however large the input: both are checked before any name is.
MAX_DB_GROUPS = 100
MAX_DB_GROUPS_CHARS = 8192

DEFAULT_PORT = 5439
DEFAULT_DURATION = 900  # AWS's own default; we always send it explicitly.
DEFAULT_ROLE_SESSION_NAME = "sqlalchemy-rs-iam"

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})

# --- AWS constraints (../shared/seeds/: where two disagree, the newer API reference wins) ---------------
# Public: the stand-in's AWS emulator validates requests with these same patterns.
# Every pattern is ASCII-only: explicit classes, plus re.ASCII so that no \w or \d added later can match
# 'ñ' or an Arabic-Indic digit. AWS's own patterns are ASCII; a Unicode look-alike that passed here would
# only fail at the first connect, with a raw botocore error instead of a ConfigurationError.
WORKGROUP_RE = re.compile(r"[a-z0-9-]{3,64}", re.ASCII)
CUSTOM_DOMAIN_RE = re.compile(
    r"(((?!-)[A-Za-z0-9-]{0,62}[A-Za-z0-9])\.)+((?!-)[A-Za-z0-9-]{1,62}[A-Za-z0-9])", re.ASCII
)
# Redshift cluster identifiers: lowercase, first a letter, no trailing hyphen, no "--".
_CLUSTER_RE = re.compile(r"[a-z](?!.*--)[a-z0-9-]{0,62}(?<!-)", re.ASCII)
DB_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_+.@-]{0,63}", re.ASCII)
DB_GROUP_RE = re.compile(r"[a-z][a-z0-9_+.@-]{0,63}", re.ASCII)
_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}", re.ASCII)
_ROLE_ARN_RE = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]{1,512}", re.ASCII)
_ROLE_SESSION_RE = re.compile(r"[A-Za-z0-9_+=,.@-]{2,64}", re.ASCII)
_EXTERNAL_ID_RE = re.compile(r"[A-Za-z0-9_+=,.@:/-]{2,1224}", re.ASCII)
# Profile names are section names in ~/.aws/config: printable ASCII without space, '[' or ']'.
_PROFILE_RE = re.compile(r"[\x21-\x5a\x5c\x5e-\x7e]{1,128}", re.ASCII)
# The URL host the driver connects to: a DNS name, an IPv4 address, or an IPv6 address (SQLAlchemy's URL
# gives it without brackets; connect() callers may keep them).
_IPV6 = r"[0-9A-Fa-f.]{0,39}:[0-9A-Fa-f:.]{0,39}:[0-9A-Fa-f.]{0,39}"  # at least two colons: not host:port
_HOST_RE = re.compile(rf"[A-Za-z0-9._-]{{1,253}}|{_IPV6}|\[{_IPV6}\]", re.ASCII)
# aws_endpoint_url: scheme, host (DNS name, IPv4 or [IPv6]), port, then a path of printable ASCII without
# '?' or '#'. No '@' anywhere in the authority, so no user info; no query string, which botocore would
# mangle when it appends the operation's own path and query.
_ENDPOINT_URL_RE = re.compile(
    rf"(?i:https?)://(?:[A-Za-z0-9._-]{{1,253}}|\[{_IPV6}\])(?::(?P<port>[0-9]{{1,5}}))?(?:/[!-\"$->@-~]*)?",
    re.ASCII,
)
# Surrounding whitespace a user may paste with a value; anything else (Unicode spaces, controls) is an error.
_ASCII_SPACE = " \t\n\r\x0b\x0c"

# Redshift endpoint hosts imply the target and region.
_SERVERLESS_HOST_RE = re.compile(
    r"(?P<name>[a-z0-9-]+)\.(?P<account>[0-9]{12})\.(?P<region>[a-z0-9-]+)"
    r"\.redshift-serverless\.amazonaws\.com(\.cn)?",
    re.ASCII,
)
_PROVISIONED_HOST_RE = re.compile(
    r"(?P<name>[a-z][a-z0-9-]*)\.(?P<suffix>[a-z0-9]+)\.(?P<region>[a-z0-9-]+)\.redshift\.amazonaws\.com(\.cn)?",
    re.ASCII,
)

#: Redshift reserved words: not allowed as database, user or group names.
RESERVED_WORDS = frozenset(
    """AES128 AES256 ALL ALLOWOVERWRITE ANALYSE ANALYZE AND ANY ARRAY AS ASC AUTHORIZATION AZ64 BACKUP BETWEEN
    BINARY BLANKSASNULL BOTH BYTEDICT BZIP2 CASE CAST CHECK COLLATE COLUMN CONSTRAINT CREATE CREDENTIALS CROSS
    CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER CURRENT_USER_ID DEFAULT DEFERRABLE DEFLATE DEFRAG
    DELTA DELTA32K DESC DISABLE DISTINCT DO ELSE EMPTYASNULL ENABLE ENCODE ENCRYPT ENCRYPTION END EXCEPT
    EXPLICIT FALSE FOR FOREIGN FREEZE FROM FULL GLOBALDICT256 GLOBALDICT64K GRANT GROUP GZIP HAVING IDENTITY
    IGNORE ILIKE IN INITIALLY INNER INTERSECT INTERVAL INTO IS ISNULL JOIN LANGUAGE LEADING LEFT LIKE LIMIT
    LOCALTIME LOCALTIMESTAMP LUN LUNS LZO LZOP MINUS MOSTLY16 MOSTLY32 MOSTLY8 NATURAL NEW NOT NOTNULL NULL
    NULLS OFF OFFLINE OFFSET OID OLD ON ONLY OPEN OR ORDER OUTER OVERLAPS PARALLEL PARTITION PERCENT
    PERMISSIONS PIVOT PLACING PRIMARY RAW READRATIO RECOVER REFERENCES REJECTLOG RESORT RESPECT RESTORE RIGHT
    SELECT SESSION_USER SIMILAR SNAPSHOT SOME SYSDATE SYSTEM TABLE TAG TDES TEXT255 TEXT32K THEN TIMESTAMP TO
    TOP TRAILING TRUE TRUNCATECOLUMNS UNION UNIQUE UNNEST UNPIVOT USER USING VERBOSE WALLET WHEN WHERE WITH
    WITHOUT""".split()  # noqa: SIM905 - reads like the AWS list it mirrors
)


class Service(str, enum.Enum):
    """Which Redshift API family issues the credentials."""

    SERVERLESS = "serverless"
    PROVISIONED = "provisioned"


@dataclass(frozen=True)
class Target:
    """Exactly one of workgroup / cluster / custom_domain, and the service that owns it."""

    service: Service
    workgroup: str | None = None
    cluster: str | None = None
    custom_domain: str | None = None

    def describe(self) -> str:
        """Human-readable resource name for messages, e.g. ``workgroup 'analytics'``."""
        if self.workgroup is not None:
            return f"workgroup {self.workgroup!r}"
        if self.cluster is not None:
            return f"cluster {self.cluster!r}"
        return f"{self.service.value} custom domain {self.custom_domain!r}"


@dataclass(frozen=True)
class AwsOptions:
    """How to reach AWS. Hashable: equal options share one boto3 session and set of clients."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    role_arn: str | None = None
    role_session_name: str = DEFAULT_ROLE_SESSION_NAME
    external_id: str | None = None
    # GetCredentials answers in ~100 ms; these bound a dead or hung endpoint to ~25 s in the worst case
    # (3 attempts x (2 s + 5 s) plus botocore's backoff) instead of minutes.
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_attempts: int = 3

    def __repr__(self) -> str:
        # external_id is a shared secret-ish value in cross-account setups: never print it.
        ext = "'***'" if self.external_id is not None else "None"
        return (
            f"AwsOptions(region={self.region!r}, profile={self.profile!r}, endpoint_url={self.endpoint_url!r}, "
            f"role_arn={self.role_arn!r}, role_session_name={self.role_session_name!r}, external_id={ext}, "
            f"connect_timeout={self.connect_timeout!r}, read_timeout={self.read_timeout!r}, "
            f"max_attempts={self.max_attempts!r})"
        )


_C = TypeVar("_C", bound=str)
CacheMode = Literal["process", "host"]
RefreshMode = Literal["auto", "background", "lazy"]
CACHE_MODES: tuple[CacheMode, ...] = ("process", "host")
REFRESH_MODES: tuple[RefreshMode, ...] = ("auto", "background", "lazy")


@dataclass(frozen=True)
class IamConfig:
    """Everything the plugin needs, validated.

    ``host``/``port`` are the explicit endpoint (URL host, an AWS endpoint host, or the custom domain);
    ``host is None`` means "resolve it with GetWorkgroup / DescribeClusters".
    """

    target: Target
    database: str
    db_user: str | None
    auto_create: bool
    db_groups: tuple[str, ...]
    duration_seconds: int
    aws: AwsOptions
    host: str | None
    port: int | None
    #: Where credentials and endpoints are shared: ``process`` (default) or ``host`` (every process of this
    #: OS user on this machine, through a private cache directory).
    cache: CacheMode = "process"
    #: How a credential is refreshed at its refresh point: ``background`` (a thread), ``lazy`` (on the
    #: caller's thread, no thread at all: AWS Lambda and other frozen processes) or ``auto`` (lazy when
    #: ``AWS_LAMBDA_FUNCTION_NAME`` is set, else background; decided when the engine is made).
    refresh: RefreshMode = "auto"

    @property
    def operation(self) -> str:
        """The AWS operation that issues the credentials."""
        if self.target.service is Service.SERVERLESS:
            return "GetCredentials"
        return "GetClusterCredentials" if self.db_user is not None else "GetClusterCredentialsWithIAM"


# --- value parsers: each names the parameter and the allowed form ------------------------------------


def parse_bool(parameter: str, value: object) -> bool:
    """``true/false/1/0/yes/no`` in any case, or a real bool. Anything else is an error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip(_ASCII_SPACE).lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ConfigurationError(parameter, f"{_show(value)} is not a boolean; use true/false, 1/0 or yes/no")


def parse_int(parameter: str, value: object, low: int, high: int) -> int:
    """A whole number in [low, high]: digits only as a string (no '1e3', '10.0', ' 5')."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigurationError(parameter, f"{_show(value)} is not a whole number from {low} to {high}")
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,9}", value, re.ASCII):
            raise ConfigurationError(parameter, f"{_show(value)} is not a whole number from {low} to {high}")
        number = int(value)
    else:
        number = value
    if not low <= number <= high:
        raise ConfigurationError(
            parameter, f"{number} is out of range; use a whole number from {low} to {high}"
        )
    return number


def parse_seconds(parameter: str, value: object, low: float, high: float) -> float:
    """A positive number of seconds in [low, high], e.g. ``2.5``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigurationError(parameter, f"{_show(value)} is not a number of seconds from {low} to {high}")
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6})?", value, re.ASCII):
            raise ConfigurationError(
                parameter, f"{_show(value)} is not a number of seconds from {low} to {high}"
            )
        number = float(value)
    else:
        number = float(value)
    if not low <= number <= high:
        raise ConfigurationError(
            parameter, f"{number:g} is out of range; use seconds from {low:g} to {high:g}"
        )
    return number


def check_workgroup(parameter: str, value: str) -> str:
    if not WORKGROUP_RE.fullmatch(value):
        raise ConfigurationError(
            parameter, f"{_show(value)} is not a workgroup name: 3-64 characters of a-z, 0-9 and '-'"
        )
    return value


def check_custom_domain(parameter: str, value: str) -> str:
    if len(value) > 253 or not CUSTOM_DOMAIN_RE.fullmatch(value):
        raise ConfigurationError(
            parameter,
            f"{_show(value)} is not a custom domain name: a DNS name such as sql.example.com "
            "(labels of letters, digits and '-', not starting or ending with '-'; at most 253 characters)",
        )
    return value


def check_cluster(parameter: str, value: str) -> str:
    if not _CLUSTER_RE.fullmatch(value):
        raise ConfigurationError(
            parameter,
            f"{_show(value)} is not a cluster identifier: 1-63 characters of a-z, 0-9 and '-', starting with "
            "a letter, not ending with '-', without '--'",
        )
    return value


def _check_db_object(parameter: str, value: str, what: str, pattern: re.Pattern[str], letters: str) -> str:
    if not pattern.fullmatch(value):
        raise ConfigurationError(
            parameter,
            f"{_show(value)} is not a valid {what}: 1-64 characters, starting with a letter, of {letters}, "
            "digits, '_', '+', '.', '@' and '-'",
        )
    if value.upper() in RESERVED_WORDS:
        raise ConfigurationError(parameter, f"{_show(value)} is a Redshift reserved word; use another {what}")
    return value


def check_db_name(parameter: str, value: str) -> str:
    return _check_db_object(parameter, value, "database name", DB_NAME_RE, "letters")


def check_db_user(parameter: str, value: str) -> str:
    _check_db_object(parameter, value, "database user name", DB_NAME_RE, "letters")
    if value.upper() == "PUBLIC":
        raise ConfigurationError(parameter, "'PUBLIC' cannot be used as a database user name")
    return value


def check_db_group(parameter: str, value: str) -> str:
    return _check_db_object(parameter, value, "database group name", DB_GROUP_RE, "lowercase letters")


def check_region(parameter: str, value: str) -> str:
    if not _REGION_RE.fullmatch(value):
        raise ConfigurationError(parameter, f"{_show(value)} is not an AWS region name such as us-east-1")
    return value


def check_endpoint_url(parameter: str, value: str) -> str:
    """``http(s)://host[:port][/path]`` in printable ASCII: no user info, query, fragment or whitespace.

    botocore sends every request to this URL: a CR/LF here failed only at the first connect (with a raw
    ValueError), and ``user:password@`` would put a secret into every log line that shows the URL::

        >>> check_endpoint_url("aws_endpoint_url", "http://127.0.0.1:4566")
        'http://127.0.0.1:4566'
        >>> check_endpoint_url("aws_endpoint_url", "http://:secret@127.0.0.1:4566")
        Traceback (most recent call last):
        ...
        sqlalchemy_rs_iam.errors.ConfigurationError: aws_endpoint_url: must not contain user info ...
    """
    allowed = "http(s)://host[:port][/path] in printable ASCII, without user info, query string or fragment"
    if "@" in value:
        # Not echoed: user info is where a password would be.
        raise ConfigurationError(parameter, f"must not contain user info (user:password@); use {allowed}")
    match = _ENDPOINT_URL_RE.fullmatch(value)
    if match is None or not 0 < int(match["port"] or 443) < 65536:
        raise ConfigurationError(parameter, f"{_show(value)} is not an endpoint URL; use {allowed}")
    return value


# --- the whole configuration --------------------------------------------------------------------------


def parse_config(
    params: Mapping[str, object],
    *,
    database: object,
    host: object = None,
    port: object = None,
    username: object = None,
    password: object = None,
    host_parameter: str = "host",
    username_parameter: str = "username",
    database_parameter: str = "database",
) -> IamConfig:
    """Validate plugin parameters plus the URL's own parts and build the :class:`IamConfig`.

    ``params`` holds plugin parameters (see :data:`PARAMETERS`) and any of
    :data:`FORBIDDEN_QUERY_PARAMETERS` the URL query carries (so that they are refused); values are
    strings from a URL (a tuple when repeated) or typed values from ``connect()``. The ``*_parameter``
    arguments are how the caller spells the URL parts in messages. The steps below run in order and the
    first that fails raises :class:`ConfigurationError`::

        >>> parse_config({"cluster": "etl", "db_groups": "b,a"}, database="dev", username="alice").db_groups
        ('a', 'b')
    """
    _check_no_password(params, password)
    p = _Params(params)
    _check_iam_flag(p)
    # connect() passes these straight from the caller: anything but text is a clear error, not a TypeError.
    host_text = _text_part(host_parameter, host)
    username_text = _text_part(username_parameter, username)
    database_text = _text_part(database_parameter, database)

    explicit_host = _parse_host(host_parameter, host_text)
    target, region = _parse_target_and_region(p, explicit_host, host_parameter)
    database_name = _parse_database(database_parameter, database_text)
    db_user, user_param = _parse_user(p, username_text, username_parameter)
    auto_create = parse_bool("auto_create", p.scalar("auto_create")) if "auto_create" in p.params else False
    db_groups = _parse_groups(p.params.get("db_groups"))
    _check_serverless_rules(p, target, db_user, user_param, db_groups)
    _check_with_iam_rules(p, target, db_user, db_groups)
    duration = (
        parse_int("duration_seconds", p.scalar("duration_seconds"), 900, 3600)
        if "duration_seconds" in p.params
        else DEFAULT_DURATION
    )
    conn_host, conn_port = _parse_endpoint(explicit_host, port, target)
    aws = _parse_aws_options(p, region)
    cache = _parse_choice(p, "cache", CACHE_MODES)
    refresh = _parse_choice(p, "refresh", REFRESH_MODES)

    return IamConfig(
        target=target,
        database=database_name,
        db_user=db_user,
        auto_create=auto_create,
        db_groups=db_groups,
        duration_seconds=duration,
        aws=aws,
        host=conn_host,
        port=conn_port,
        cache=cache,
        refresh=refresh,
    )


def _check_no_password(params: Mapping[str, object], password: object) -> None:
    # First, before anything that could echo input, and never with the value: it is a secret.
    if "password" in params:
        raise ConfigurationError(
            "password",
            "must not be in the URL query: rs_iam fetches a temporary password for every new connection; "
            "remove password=...",
        )
    if password is not None and password != "":
        raise ConfigurationError(
            "password", "must not be set: rs_iam fetches a temporary password for every new connection"
        )


def _check_iam_flag(p: _Params) -> None:
    if "iam" in p.params and parse_bool("iam", p.scalar("iam")):
        raise ConfigurationError(
            "iam",
            "redshift_connector's own IAM must stay off with plugin=rs_iam (the plugin fetches and caches the "
            "credentials itself); remove iam=true",
        )


def _parse_host(parameter: str, host: str | None) -> str | None:
    """The explicit endpoint host, lowercased; None when the URL has none (``""`` counts as none)."""
    if not host:
        return None
    text = host.strip(_ASCII_SPACE)
    if not _HOST_RE.fullmatch(text):
        raise ConfigurationError(
            parameter,
            f"{_show(host)} is not a host name or IP address: at most 253 ASCII letters, digits and "
            "'.', '_', '-', or an IPv6 address",
        )
    return text.lower()


def _parse_target_and_region(p: _Params, host: str | None, host_parameter: str) -> tuple[Target, str | None]:
    """The target (parameters, else implied by a Redshift endpoint host) and the region, if known yet."""
    region = p.text("region", check_region)
    implied, host_region = _target_from_host(host) if host else (None, None)
    if region is not None and host_region is not None and region != host_region:
        raise ConfigurationError(
            "region", f"{region!r} contradicts the endpoint host, which is in region {host_region!r}"
        )
    return _choose_target(p, implied, host, host_parameter), region or host_region


def _parse_database(parameter: str, database: str | None) -> str:
    if database is None or database == "":
        raise ConfigurationError(parameter, "required: name the database in the URL path, e.g. /dev")
    return check_db_name(parameter, database)


def _parse_user(p: _Params, username: str | None, username_parameter: str) -> tuple[str | None, str]:
    """The database user (``db_user`` or the URL user, which must agree) and the parameter that named it."""
    db_user = p.text("db_user", check_db_user)
    if not username:
        return db_user, "db_user"
    check_db_user(username_parameter, username)
    if db_user is not None and db_user != username:
        raise ConfigurationError(
            "db_user", f"{db_user!r} contradicts the URL user {username!r}; give only one of them"
        )
    return username, username_parameter


def _check_serverless_rules(
    p: _Params, target: Target, db_user: str | None, user_param: str, db_groups: tuple[str, ...]
) -> None:
    if target.service is not Service.SERVERLESS:
        return
    for name, given in (
        (user_param, db_user),
        ("auto_create", "auto_create" in p.params),
        ("db_groups", db_groups),
    ):
        if given:
            raise ConfigurationError(
                name,
                "not supported for Redshift Serverless: GetCredentials issues the database user of the "
                "calling IAM identity; remove it, or use a provisioned cluster",
            )


def _check_with_iam_rules(
    p: _Params, target: Target, db_user: str | None, db_groups: tuple[str, ...]
) -> None:
    """Provisioned without a database user means GetClusterCredentialsWithIAM, which has fewer inputs."""
    if target.service is not Service.PROVISIONED or db_user is not None:
        return
    for name, given in (("auto_create", "auto_create" in p.params), ("db_groups", db_groups)):
        if given:
            raise ConfigurationError(
                name,
                "needs db_user (or a user in the URL): without one the plugin calls "
                "GetClusterCredentialsWithIAM, which takes neither auto_create nor db_groups",
            )


def _parse_endpoint(host: str | None, port: object, target: Target) -> tuple[str | None, int | None]:
    """Explicit host and port: the URL host, else the custom domain; 5439 unless a port is given."""
    number = parse_int("port", port, 1, 65535) if port is not None else None
    conn_host = host if host is not None else target.custom_domain
    if conn_host is not None and number is None:
        number = DEFAULT_PORT
    return conn_host, number


def _parse_aws_options(p: _Params, region: str | None) -> AwsOptions:
    aws = AwsOptions(
        region=region,
        profile=p.text("aws_profile", _check_profile),
        endpoint_url=p.text("aws_endpoint_url", check_endpoint_url),
        role_arn=p.text("role_arn", _check_role_arn),
        role_session_name=p.text("role_session_name", _check_role_session_name) or DEFAULT_ROLE_SESSION_NAME,
        external_id=p.text("external_id", _check_external_id),
        connect_timeout=_opt_seconds(p, "aws_connect_timeout", AwsOptions.connect_timeout),
        read_timeout=_opt_seconds(p, "aws_read_timeout", AwsOptions.read_timeout),
        max_attempts=(
            parse_int("aws_max_attempts", p.scalar("aws_max_attempts"), 1, 20)
            if "aws_max_attempts" in p.params
            else AwsOptions.max_attempts
        ),
    )
    for dependent in ("role_session_name", "external_id"):
        if dependent in p.params and aws.role_arn is None:
            raise ConfigurationError(dependent, "only applies together with role_arn")
    return aws


def _parse_choice(p: _Params, name: str, choices: tuple[_C, ...]) -> _C:
    """One of ``choices`` (case-insensitive), the first being the default."""
    if name not in p.params:
        return choices[0]
    value = p.scalar(name)
    text = value.strip(_ASCII_SPACE).lower() if isinstance(value, str) else None
    for choice in choices:
        if text == choice:
            return choice
    raise ConfigurationError(name, f"{_show(value)} is not one of: {', '.join(choices)}")


def _text_part(parameter: str, value: object) -> str | None:
    """A URL part handed over by ``connect()``: None or text, anything else is a clear error."""
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(parameter, f"{_show(value)} is not text")
    return value


def _choose_target(p: _Params, implied: Target | None, host: str | None, host_parameter: str) -> Target:
    service_value = p.scalar("service") if "service" in p.params else None
    service: Service | None = None
    if service_value is not None:
        text = str(service_value).strip(_ASCII_SPACE).lower()
        if text not in ("serverless", "provisioned"):
            raise ConfigurationError(
                "service", f"{_show(service_value)} is not one of: serverless, provisioned"
            )
        service = Service(text)

    workgroup = p.text("workgroup", check_workgroup)
    cluster = p.text("cluster", check_cluster)
    domain = p.text("custom_domain", check_custom_domain)
    given = [
        name for name, v in (("workgroup", workgroup), ("cluster", cluster), ("custom_domain", domain)) if v
    ]
    if len(given) > 1:
        raise ConfigurationError(
            given[1], f"give exactly one of workgroup, cluster, custom_domain (got {', '.join(given)})"
        )

    explicit: Target | None = None
    if workgroup is not None:
        explicit = Target(Service.SERVERLESS, workgroup=workgroup)
    elif cluster is not None:
        explicit = Target(Service.PROVISIONED, cluster=cluster)
    elif domain is not None:
        explicit = Target(service or Service.SERVERLESS, custom_domain=domain)

    if explicit is not None and implied is not None and explicit != implied:
        raise ConfigurationError(
            given[0],
            f"names {explicit.describe()} but the URL host {host!r} is the endpoint of {implied.describe()}",
        )
    target = explicit or implied
    if target is None:
        raise ConfigurationError(
            "workgroup",
            "no target: give one of workgroup=<name> (Serverless), cluster=<id> (provisioned), "
            f"custom_domain=<dns name>, or a Redshift endpoint as the URL {host_parameter}",
        )
    if service is not None and service is not target.service:
        raise ConfigurationError("service", f"{service.value!r} contradicts {target.describe()}")
    return target


def _target_from_host(host: str) -> tuple[Target | None, str | None]:
    match = _SERVERLESS_HOST_RE.fullmatch(host)
    if match:
        return Target(Service.SERVERLESS, workgroup=match["name"]), match["region"]
    match = _PROVISIONED_HOST_RE.fullmatch(host)
    if match:
        return Target(Service.PROVISIONED, cluster=match["name"]), match["region"]
    return None, None


def _parse_groups(value: object) -> tuple[str, ...]:
    """``db_groups``: comma-separated names, the parameter possibly repeated; sorted and de-duplicated.

    Linear in the input, and bounded first (:data:`MAX_DB_GROUPS`, :data:`MAX_DB_GROUPS_CHARS`) so that a
    huge value is refused before any name is checked.
    """
    if value is None:
        return ()
    items: Sequence[object] = value if isinstance(value, (list, tuple)) else (value,)
    if len(items) > MAX_DB_GROUPS:
        raise _too_many_groups(len(items))
    texts: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(
                "db_groups", f"{_show(item)} is not a group name; use a comma-separated list"
            )
        texts.append(item)
    chars = sum(len(text) for text in texts)
    if chars > MAX_DB_GROUPS_CHARS:
        raise ConfigurationError(
            "db_groups",
            f"is {chars} characters long; at most {MAX_DB_GROUPS_CHARS} are allowed "
            f"(at most {MAX_DB_GROUPS} comma-separated names)",
        )
    count = sum(text.count(",") + 1 for text in texts)
    if count > MAX_DB_GROUPS:
        raise _too_many_groups(count)
    groups: set[str] = set()  # a set, not a list: membership tests stay O(1)
    for text in texts:
        for part in text.split(","):
            name = part.strip(_ASCII_SPACE)
            if not name:
                raise ConfigurationError(
                    "db_groups", f"{_show(text)} has an empty group name; use e.g. db_groups=analysts,loaders"
                )
            groups.add(check_db_group("db_groups", name))
    # Sorted: the same set of groups in another order is the same credential (and cache key).
    return tuple(sorted(groups))


def _too_many_groups(count: int) -> ConfigurationError:
    return ConfigurationError(
        "db_groups",
        f"has {count} group names; at most {MAX_DB_GROUPS} are allowed, e.g. db_groups=analysts,loaders",
    )


def _opt_seconds(p: _Params, name: str, default: float) -> float:
    return parse_seconds(name, p.scalar(name), 0.1, 300.0) if name in p.params else default


def _check_profile(parameter: str, value: str) -> str:
    if not _PROFILE_RE.fullmatch(value):
        raise ConfigurationError(
            parameter,
            f"{_show(value)} is not an AWS profile name: 1-128 printable ASCII characters, "
            "without spaces, '[' or ']'",
        )
    return value


def _check_role_arn(parameter: str, value: str) -> str:
    if not _ROLE_ARN_RE.fullmatch(value):
        raise ConfigurationError(
            parameter, f"{_show(value)} is not an IAM role ARN such as arn:aws:iam::123456789012:role/name"
        )
    return value


def _check_role_session_name(parameter: str, value: str) -> str:
    if not _ROLE_SESSION_RE.fullmatch(value):
        raise ConfigurationError(
            parameter, f"{_show(value)} must be 2-64 characters of ASCII letters, digits and +=,.@_-"
        )
    return value


def _check_external_id(parameter: str, value: str) -> str:
    if not _EXTERNAL_ID_RE.fullmatch(value):
        # Never echo the value: an external id is a shared secret between accounts.
        raise ConfigurationError(
            parameter, "must be 2-1224 characters of ASCII letters, digits and +=,.@:/_-"
        )
    return value


class _Params:
    """Reads single values out of a URL query / keyword mapping."""

    def __init__(self, params: Mapping[str, object]) -> None:
        unknown = sorted(set(params) - set(PARAMETERS) - set(FORBIDDEN_QUERY_PARAMETERS))
        if unknown:
            # Only plugin parameters reach here; anything else is a programming error upstream.
            raise ConfigurationError(
                unknown[0], f"not a parameter of rs_iam (known: {', '.join(PARAMETERS)})"
            )
        self.params = params

    def scalar(self, name: str) -> object:
        value = self.params[name]
        if isinstance(value, (list, tuple)):
            if len(value) != 1:
                raise ConfigurationError(name, "given more than once; give it once")
            value = value[0]
        return value

    def text(self, name: str, check: Callable[[str, str], str]) -> str | None:
        if name not in self.params:
            return None
        value = self.scalar(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigurationError(name, f"{_show(value)} is not text")
        text = value.strip(_ASCII_SPACE)
        if not text:
            raise ConfigurationError(name, "is empty; give a value or leave the parameter out")
        return check(name, text)


def _show(value: object) -> str:
    """repr() of user input, shortened so a pasted blob cannot flood a log line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
