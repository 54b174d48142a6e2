"""The SQLAlchemy adapter: a ``CreateEnginePlugin`` registered as ``rs_iam``.

Configured entirely from the URL, so it works wherever a URL string goes (pandas, Alembic, Superset, Dask)::

    from sqlalchemy import create_engine, text

    engine = create_engine(
        "redshift+redshift_connector:///dev?plugin=rs_iam&workgroup=analytics&region=us-east-1"
    )
    with engine.connect() as conn:
        conn.execute(text("select current_user"))

Programmatic use with a boto3 session you already hold::

    engine = create_engine(
        "redshift+redshift_connector:///dev?workgroup=analytics",
        plugins=["rs_iam"],
        rs_iam_session=boto3.Session(profile_name="analytics"),
    )

The plugin's parameters are validated when the engine is created (no AWS call) and removed from the URL
before the dialect sees it; every other query parameter passes through to the dialect and driver.
"""

from __future__ import annotations

import inspect
import logging
import re
import typing
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, CreateEnginePlugin, Engine, ExceptionContext

from .config import FORBIDDEN_QUERY_PARAMETERS, PARAMETERS, parse_bool, parse_config, parse_int
from .credentials import DbCredentials
from .driver_params import check_connect_args, check_driver_params, drop_none
from .errors import ConfigurationError
from .registry import REGISTRY, connector_for, stats
from .transport import secure_connect_params

log = logging.getLogger(__name__)

#: Keyword arguments of ``create_engine`` the plugin takes (and removes).
ENGINE_KWARGS = ("rs_iam_session",)


class RedshiftIAMPlugin(CreateEnginePlugin):
    """Injects cached Redshift IAM credentials (and the resolved host/port) into every new DB-API connection."""

    def __init__(self, url: URL, kwargs: dict[str, Any]) -> None:
        super().__init__(url, kwargs)
        session = kwargs.pop("rs_iam_session", None)
        # redshift_connector's IAM names (and near-misses of ours) would be ignored by the driver: refuse them.
        ours = {*PARAMETERS, *FORBIDDEN_QUERY_PARAMETERS, "plugin"}
        check_driver_params([name for name in url.query if name not in ours], where="URL query")
        check_connect_args(kwargs.get("connect_args") or {})
        # A query password is read only to be refused (config names it, never echoing the value).
        params = {
            name: url.query[name] for name in PARAMETERS + FORBIDDEN_QUERY_PARAMETERS if name in url.query
        }
        config = parse_config(
            params,
            database=url.database,
            host=url.host,
            port=url.port,
            username=url.username,
            password=url.password,
        )
        # Reads the AWS configuration now (environment and files; no boto3, no network), so a missing
        # profile or region fails here, at create_engine, not at the first checkout.
        self.connector = REGISTRY.new_connector(config, session)

    def update_url(self, url: URL) -> URL:
        return url.difference_update_query(PARAMETERS)

    def engine_created(self, engine: Engine) -> None:
        REGISTRY.register_engine(engine, self.connector)
        event.listen(engine, "do_connect", self._do_connect)
        if getattr(engine.dialect, "driver", "") == "redshift_connector":
            event.listen(engine, "handle_error", _mark_redshift_connector_disconnects)

    def _do_connect(
        self, dialect: Any, conn_rec: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
    ) -> Any:
        driver = getattr(dialect, "driver", "")
        base = dict(cparams)
        base.pop("password", None)
        drop_none(base)  # connect_args={"sslmode": os.getenv(...)} unset is absent, never a TLS opt-out
        if driver == "redshift_connector":
            _coerce_redshift_connector_params(base)
            base["iam"] = False  # the plugin does IAM; the driver must not do it again on top
        secure_connect_params(driver, dialect.name, base)  # issued passwords only over verified TLS

        def open_(host: str, port: int, creds: DbCredentials) -> Any:
            params = dict(base, host=host, port=port, user=creds.user, password=creds.password)
            return dialect.connect(*cargs, **params)

        if getattr(dialect, "is_async", False):
            from .aio import connect_in_greenlet

            return connect_in_greenlet(self.connector, open_)
        return self.connector.connect(open_)


# sqlalchemy-redshift's redshift_connector dialect reports no error as a disconnect: after a database restart
# (or an idle timeout) the pool would keep handing out dead connections, and pool_pre_ping would raise instead
# of reconnecting. These are the messages redshift_connector raises for a dead socket.
_RC_DISCONNECT = re.compile(r"BrokenPipe|server socket closed|connection is closed|communication error")


def _mark_redshift_connector_disconnects(context: ExceptionContext) -> None:
    exc = context.original_exception
    if (
        not context.is_disconnect
        and type(exc).__name__ == "InterfaceError"
        and _RC_DISCONNECT.search(str(exc))
    ):
        context.is_disconnect = True  # the pool invalidates it (and, pre-pinging, reconnects)


# redshift_connector takes booleans and integers, but a URL delivers strings, and "false" is truthy: the exact
# trap that makes its iam=true silently do nothing. Convert them strictly, naming the parameter.
def _coerce_redshift_connector_params(params: dict[str, Any]) -> None:
    kinds = _redshift_connector_kinds()
    for name, value in list(params.items()):
        if not isinstance(value, str) or name not in kinds:
            continue
        if kinds[name] is bool:
            params[name] = parse_bool(name, value)
        else:
            params[name] = parse_int(name, value, 0, 2**31 - 1)


_KINDS: dict[str, type] | None = None


def _redshift_connector_kinds() -> dict[str, type]:
    global _KINDS
    if _KINDS is None:
        import redshift_connector

        kinds: dict[str, type] = {}
        hints = typing.get_type_hints(redshift_connector.connect)
        for name in inspect.signature(redshift_connector.connect).parameters:
            args = typing.get_args(hints.get(name)) or (hints.get(name),)
            if bool in args:
                kinds[name] = bool
            elif int in args:
                kinds[name] = int
        _KINDS = kinds
    return _KINDS


__all__ = ["ENGINE_KWARGS", "ConfigurationError", "RedshiftIAMPlugin", "connector_for", "stats"]
