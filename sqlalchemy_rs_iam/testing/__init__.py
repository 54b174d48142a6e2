"""A local Redshift stand-in: real PostgreSQL, a Redshift wire front, and an AWS API emulator.

For your own tests::

    # conftest.py
    pytest_plugins = ["sqlalchemy_rs_iam.testing.pytest_plugin"]   # fixtures rs_standin, rs_iam_url, ...

or directly::

    from sqlalchemy_rs_iam.testing import RedshiftStandIn

    with RedshiftStandIn() as rs:
        os.environ.update(rs.aws_env())
        engine = sqlalchemy.create_engine(rs.url())

or in a terminal: ``python -m sqlalchemy_rs_iam.testing`` (prints URLs and ``export`` lines).

Names are imported lazily, so ``import sqlalchemy_rs_iam.testing`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .emulator import AwsEmulator
    from .front import RedshiftFront
    from .postgres import PostgresRoleAdmin, PostgresServer, PostgresUnavailableError, provision_postgres
    from .standin import RedshiftStandIn
    from .store import CredentialStore, IssuedCredential

_LAZY = {
    "AwsEmulator": "emulator",
    "RedshiftFront": "front",
    "PostgresRoleAdmin": "postgres",
    "PostgresServer": "postgres",
    "PostgresUnavailableError": "postgres",
    "provision_postgres": "postgres",
    "RedshiftStandIn": "standin",
    "CredentialStore": "store",
    "IssuedCredential": "store",
}

__all__ = [
    "AwsEmulator",
    "CredentialStore",
    "IssuedCredential",
    "PostgresRoleAdmin",
    "PostgresServer",
    "PostgresUnavailableError",
    "RedshiftFront",
    "RedshiftStandIn",
    "provision_postgres",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
