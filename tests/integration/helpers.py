"""Small helpers shared by the integration tests."""

from __future__ import annotations

import sqlalchemy as sa

from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn


def current_user(engine: sa.engine.Engine) -> str:
    """Open a connection (a new login unless pooled) and return the database user it logged in as."""
    with engine.connect() as conn:
        return str(conn.execute(sa.text("select current_user")).scalar())


def api_calls(rs: RedshiftStandIn, operation: str) -> int:
    """How many HTTP requests for ``operation`` the AWS emulator received (retries included)."""
    return len(rs.emulator.calls_for(operation))
