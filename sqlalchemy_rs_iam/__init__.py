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
    ClockSkewError,
    ConfigurationError,
    ResourceNotFoundError,
    RsIamError,
    ServiceUnavailableError,
)

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it statically

if TYPE_CHECKING:
    from .connector import IamConnector
    from .dbapi import connect, get_connector
    from .plugin import RedshiftIAMPlugin
    from .registry import connector_for, reset, stats

_LAZY = {
    "connect": "dbapi",
    "get_connector": "dbapi",
    "IamConnector": "connector",
    "RedshiftIAMPlugin": "plugin",
    "connector_for": "registry",
    "reset": "registry",
    "stats": "registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "AccessDeniedError",
    "AwsCredentialsError",
    "AwsError",
    "AwsValidationError",
    "ClockSkewError",
    "ConfigurationError",
    "DbCredentials",
    "IamConnector",
    "RedshiftIAMPlugin",
    "ResourceNotFoundError",
    "RsIamError",
    "ServiceUnavailableError",
    "__version__",
    "connect",
    "connector_for",
    "get_connector",
    "reset",
    "stats",
]
