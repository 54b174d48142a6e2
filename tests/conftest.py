"""Our own suite uses the same stand-in fixtures we ship to users (rs_standin, rs_standin_clean, rs_iam_env,
rs_iam_url)."""

from __future__ import annotations

import pytest

from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

pytest_plugins = ["sqlalchemy_rs_iam.testing.pytest_plugin"]


@pytest.fixture
def rs(rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str]) -> RedshiftStandIn:
    """The clean session stand-in with boto3 pointed at it: what most integration tests need."""
    return rs_standin_clean
