"""Parameters that must not pass through silently: redshift_connector's IAM names and near-misses of ours.

With ``plugin=rs_iam`` the plugin does IAM and turns the driver's own IAM off (``iam=False``), so every
redshift_connector IAM/IdP parameter would be *ignored* by the driver -- ``profile=B`` would log in as the
default identity. They are refused before any AWS call, naming the equivalent here::

    >>> check_driver_params(["sslmode", "profile"], where="URL query")
    Traceback (most recent call last):
    ...
    sqlalchemy_rs_iam.errors.ConfigurationError: profile: is redshift_connector's IAM parameter, ...

A near-miss of one of this package's names (``workgrop``) gets "did you mean"; a real driver parameter
(``connect_timeout``, close to ``aws_connect_timeout``) is never refused. Values are never read, so a
secret given as ``secret_access_key=...`` is never echoed.

Pure apart from one cached look at the installed drivers' parameter names, taken only for a name that is
close to one of ours and not in the static list.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
from collections.abc import Iterable, Mapping

from .config import PARAMETERS
from .errors import ConfigurationError

__all__ = ["RC_IAM_PARAMETERS", "check_connect_args", "check_driver_params", "drop_none"]

_KEYS = (
    "the AWS credential chain (environment, aws_profile=, instance role) or create_engine(rs_iam_session=...)"
)
_IDP = "a botocore profile (aws_profile=) using SSO (sso_session) or credential_process"

#: redshift_connector's IAM / identity-provider parameters, each with what to use here instead.
RC_IAM_PARAMETERS: Mapping[str, str] = {
    "profile": "use aws_profile=",
    "auth_profile": "use aws_profile=",
    "cluster_identifier": "use cluster=",
    "serverless_work_group": "use workgroup=",
    "serverless_acct_id": "use workgroup= (the account is the caller's) or the workgroup endpoint as host",
    "is_serverless": "use workgroup= or a serverless endpoint host (serverless is implied)",
    "endpoint_url": "use aws_endpoint_url=",
    "iam_duration": "use duration_seconds=",
    "iam_disable_cache": "remove it: credentials are always cached (sqlalchemy_rs_iam.reset() forgets them)",
    "access_key_id": f"use {_KEYS}",
    "secret_access_key": f"use {_KEYS}",
    "session_token": f"use {_KEYS}",
    "allow_db_user_override": "use db_user=",
    "force_lowercase": "give db_groups= in lowercase",
    "group_federation": f"use {_IDP}; group federation is not supported",
    "credentials_provider": f"use {_IDP}",
    "plugin_name": f"use {_IDP}",
    "web_identity_token": "use a botocore profile with web_identity_token_file (or AWS_WEB_IDENTITY_TOKEN_FILE)",
    **{
        name: f"use {_IDP}"
        for name in (
            "idp_host",
            "idp_tenant",
            "idp_response_timeout",
            "idp_partition",
            "app_id",
            "app_name",
            "preferred_role",
            "principal_arn",
            "client_id",
            "client_secret",
            "partner_sp_id",
            "listen_port",
            "login_to_rp",
            "login_url",
            "provider_name",
            "scope",
            "identity_namespace",
            "idc_client_display_name",
            "idc_region",
            "issuer_url",
            "token",
            "token_type",
        )
    },
}

# Every connect parameter of the supported drivers that is not an rs_iam parameter: never "did you mean"'d.
# redshift_connector.connect (non-IAM), asyncpg.connect, and libpq's connection keywords (psycopg2/psycopg).
_DRIVER_NAMES = frozenset(
    [
        "user",
        "database",
        "password",
        "port",
        "host",
        "source_address",
        "unix_sock",
        "ssl",
        "sslmode",
        "timeout",
        "max_prepared_statements",
        "tcp_keepalive",
        "tcp_keepalive_idle",
        "tcp_keepalive_interval",
        "tcp_keepalive_count",
        "application_name",
        "client_protocol_version",
        "database_metadata_current_db_only",
        "enable_table_types",
        "ssl_insecure",
        "numeric_to_float",
        "dsn",
        "passfile",
        "service",
        "servicefile",
        "loop",
        "statement_cache_size",
        "max_cached_statement_lifetime",
        "max_cacheable_statement_size",
        "command_timeout",
        "direct_tls",
        "connection_class",
        "record_class",
        "server_settings",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "hostaddr",
        "dbname",
        "connect_timeout",
        "client_encoding",
        "options",
        "fallback_application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "replication",
        "gssencmode",
        "sslnegotiation",
        "sslcompression",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslcertmode",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "requirepeer",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "gssdelegation",
        "channel_binding",
        "require_auth",
        "load_balance_hosts",
        "cursor_factory",
        "connection_factory",
        "async",
        "async_",
        "prepare_threshold",
        "autocommit",
        "row_factory",
        "context",
    ]
)

#: Our names that redshift_connector also has: given in connect_args they would go to the driver (which
#: ignores them with iam=False) instead of to the plugin.
_URL_ONLY = frozenset(PARAMETERS)


def _refusal(name: str, where: str) -> ConfigurationError:
    return ConfigurationError(
        name,
        f"is redshift_connector's IAM parameter, ignored with plugin=rs_iam (the driver's own IAM is off) "
        f"and refused rather than logging in as another identity; {RC_IAM_PARAMETERS[name]} ({where})",
    )


def check_driver_params(names: Iterable[str], *, where: str) -> None:
    """Refuse redshift_connector IAM names and near-misses of rs_iam's names among ``names``.

    ``names`` are the parameters that would go to the driver (the plugin's own already removed);
    ``where`` says where they came from, for the message (``"URL query"``, ``"connect() keyword"``).
    """
    for name in sorted(names):
        if name in RC_IAM_PARAMETERS:
            raise _refusal(name, where)
        if name in _DRIVER_NAMES or name in _URL_ONLY or name in _installed_driver_names():
            continue
        close = difflib.get_close_matches(name, PARAMETERS, n=1, cutoff=0.8)
        if close:
            raise ConfigurationError(
                name, f"is not a parameter of rs_iam or of the driver ({where}); did you mean {close[0]}=?"
            )


@functools.cache
def _installed_driver_names() -> frozenset[str]:
    """What the installed drivers really take (libpq's keywords of this libpq version, the signatures)."""
    names: set[str] = set()
    # A driver that is not installed (or psycopg without a libpq) leaves the static list to stand.
    with contextlib.suppress(Exception):
        import psycopg

        names.update(d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults())
    for module in ("asyncpg", "redshift_connector"):
        with contextlib.suppress(Exception):
            names.update(inspect.signature(__import__(module).connect).parameters)
    return frozenset(names - set(RC_IAM_PARAMETERS))


def check_connect_args(connect_args: Mapping[str, object]) -> None:
    """Refuse ``create_engine(connect_args=...)`` entries the driver would ignore or the plugin override.

    ``None`` values are absent (``{"sslmode": os.getenv("PGSSLMODE")}`` with the variable unset), and
    ``iam`` false is harmless; rs_iam's own parameters belong in the URL query.
    """
    for name in sorted(connect_args):
        # No local holds the value: a traceback printed with its locals must not show a secret key.
        if connect_args[name] is None or (name == "iam" and connect_args[name] is False):
            continue
        if name in _URL_ONLY:
            raise ConfigurationError(
                name,
                "is an rs_iam parameter: put it in the URL query (...&" + name + "=...), not in "
                "connect_args, where the driver would ignore it or the plugin override it",
            )
    check_driver_params(
        (n for n, v in connect_args.items() if v is not None and n not in _URL_ONLY), where="connect_args"
    )


def drop_none(params: dict[str, object]) -> None:
    """Remove ``None`` values in place: a ``None`` keyword is the same as an absent one."""
    for name in [n for n, v in params.items() if v is None]:
        del params[name]
