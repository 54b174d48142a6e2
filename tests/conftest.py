"""Root of the suite. It loads no stand-in of its own: the stand-in fixtures we ship to users (rs_standin,
rs_standin_clean, rs_iam_env, rs_iam_url) are registered only where the ``[testing]`` extra is installed, so
``python -m pytest tests/unit`` runs with nothing but the core dependencies and the test runner."""

from __future__ import annotations

from importlib.util import find_spec
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

# pytest_plugins is honoured only in the root conftest, so the choice is made here, by what is installed.
_HAVE_STANDIN = all(find_spec(name) is not None for name in ("psycopg2", "trustme", "certifi"))
pytest_plugins = ["sqlalchemy_rs_iam.testing.pytest_plugin"] if _HAVE_STANDIN else []


@pytest.fixture
def rs(rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str]) -> RedshiftStandIn:
    """The clean session stand-in with boto3 pointed at it: what most integration tests need."""
    return rs_standin_clean
