"""Fixtures shared by the integration tests (the stand-in fixtures come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn
from sqlalchemy_rs_iam.testing.store import IssuedCredential


@pytest.fixture
def issued(rs: RedshiftStandIn, monkeypatch: pytest.MonkeyPatch) -> list[IssuedCredential]:
    """Every credential the emulator issues during the test (revocation removes them from the store)."""
    seen: list[IssuedCredential] = []
    original = rs.store.add

    def add(credential: IssuedCredential) -> None:
        seen.append(credential)
        original(credential)

    monkeypatch.setattr(rs.store, "add", add)
    return seen
