"""sqlalchemy-rs-iam: Amazon Redshift IAM log-in for SQLAlchemy, configured from the engine URL.

    engine = create_engine(
        "redshift+redshift_connector:///dev?plugin=rs_iam&workgroup=analytics&region=us-east-1")

Importing the package is cheap: boto3 and the drivers load only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .credentials import DbCredentials
from .errors import (
    AccessDeniedError,
    AwsCredentialsError,
    AwsError,
    AwsValidationError,
    ConfigurationError,
    LoginError,
    ResourceNotFoundError,
    RsIamError,
    ServiceUnavailableError,
)

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it statically

if TYPE_CHECKING:
    from .connector import IamConnector
    from .dbapi import connect, get_connector
    from .plugin import RedshiftIAMPlugin, connector_for, stats

_LAZY = {
    "connect": "dbapi",
    "get_connector": "dbapi",
    "IamConnector": "connector",
    "RedshiftIAMPlugin": "plugin",
    "connector_for": "plugin",
    "stats": "plugin",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)


def _reset_for_tests() -> None:
    """Forget every cached credential, endpoint and AWS session in this process (test isolation)."""
    from . import aws, connector, dbapi

    dbapi._CONNECTORS.clear()
    connector.CREDENTIALS.clear()
    connector.ENDPOINTS.clear()
    aws.reset()


__all__ = [
    "AccessDeniedError",
    "AwsCredentialsError",
    "AwsError",
    "AwsValidationError",
    "ConfigurationError",
    "DbCredentials",
    "IamConnector",
    "LoginError",
    "RedshiftIAMPlugin",
    "ResourceNotFoundError",
    "RsIamError",
    "ServiceUnavailableError",
    "__version__",
    "connect",
    "connector_for",
    "get_connector",
    "stats",
]
