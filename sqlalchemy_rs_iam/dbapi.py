"""DB-API use without SQLAlchemy: a ``redshift_connector`` connection with cached IAM credentials.

Same parameter names as the URL, same process-wide cache as the SQLAlchemy plugin::

    import sqlalchemy_rs_iam

    conn = sqlalchemy_rs_iam.connect(workgroup="analytics", database="dev", region="us-east-1")
    cur = conn.cursor()
    cur.execute("select current_user")

Keywords that are not plugin parameters (``ssl``, ``timeout``, ``application_name`` ...) go to
``redshift_connector.connect``.
"""

from __future__ import annotations

from typing import Any

from .config import PARAMETERS, parse_config
from .connector import IamConnector
from .credentials import DbCredentials
from .driver_params import check_driver_params, drop_none
from .errors import ConfigurationError
from .registry import REGISTRY


def get_connector(
    *,
    database: str | None = None,
    host: str | None = None,
    port: int | None = None,
    user: str | None = None,
    session: Any = None,
    **params: Any,
) -> IamConnector:
    """The shared :class:`IamConnector` for a configuration (its ``stats`` count every ``connect()`` with it).

    One per configuration and boto3 ``session`` (held weakly, never confused with a later session that
    reuses its memory); the registry bounds how many are kept.
    """
    drop_none(params)  # a None keyword is an absent one, as in connect()
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise ConfigurationError(unknown[0], f"not a parameter of rs_iam (known: {', '.join(PARAMETERS)})")
    config = parse_config(
        params, database=database, host=host, port=port, username=user, username_parameter="user"
    )
    return REGISTRY.connector(config, session)


def connect(
    *,
    database: str | None = None,
    host: str | None = None,
    port: int | None = None,
    user: str | None = None,
    session: Any = None,
    **kwargs: Any,
) -> Any:
    """Open a ``redshift_connector`` connection authenticated with cached IAM temporary credentials.

    ``session`` is an optional ``boto3.Session`` to use instead of the default credential chain.
    """
    drop_none(kwargs)  # ssl=None is absent (verified TLS), never an opt-out
    if "password" in kwargs:
        raise ConfigurationError("password", "must not be given: rs_iam fetches a temporary password")
    plugin_params = {name: kwargs.pop(name) for name in PARAMETERS if name in kwargs}
    check_driver_params(kwargs, where="connect() keyword")  # rc's IAM names would be ignored: refuse
    conn = get_connector(database=database, host=host, port=port, user=user, session=session, **plugin_params)
    conn.recheck_identity()  # a change of the AWS configuration is seen by the next connect()
    import redshift_connector

    from .transport import secure_connect_params

    secure_connect_params("redshift_connector", "redshift", kwargs)  # issued passwords only over verified TLS

    database_name = conn.config.database

    def open_(h: str, p: int, creds: DbCredentials) -> Any:
        return redshift_connector.connect(
            host=h,
            port=p,
            database=database_name,
            user=creds.user,
            password=creds.password,
            iam=False,
            **kwargs,
        )

    return conn.connect(open_)
