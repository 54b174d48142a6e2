"""Failure paths do not flood AWS: forced refreshes are budgeted per key (2 at once, then 1 per 30 s).

Against the stand-in, 16 threads connect as fast as they can for 5 s while the database side keeps failing;
the emulator's call log (every HTTP request, retries included) is the count. Without the budget these runs
made 509 GetWorkgroup calls (database unreachable) and 500 GetCredentials calls (logins refused).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from helpers import api_calls
from sqlalchemy.pool import NullPool

from sqlalchemy_rs_iam.connector import classify_connect_error
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

pytestmark = pytest.mark.integration

THREADS, SECONDS = 16, 5.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def storm(engine: sa.engine.Engine) -> tuple[int, list[BaseException]]:
    """THREADS threads connecting for SECONDS: (successes, errors). Counts, not timings: how fast a connect
    fails depends on the machine's load; how many AWS calls it makes does not."""
    errors: list[BaseException] = []
    ok = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS

    def worker() -> None:
        while time.monotonic() < deadline:
            try:
                with engine.connect():
                    pass
                with lock:
                    ok[0] += 1
            except Exception as exc:
                with lock:
                    errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ok[0], errors


def _driver_errors(errors: list[BaseException], kind: str) -> Callable[[], None]:
    def check() -> None:
        assert errors, "no connect failed: the scenario did not happen"
        for exc in errors:
            assert isinstance(exc, sa.exc.DBAPIError), repr(exc)  # the database's error, not an AWS one
            assert classify_connect_error(exc.orig) == kind, repr(exc.orig)

    return check


def test_unreachable_database_makes_a_handful_of_endpoint_lookups(rs: RedshiftStandIn) -> None:
    rs.emulator.add_workgroup(rs.workgroup, region=rs.region, address="127.0.0.1", port=_closed_port())
    engine = sa.create_engine(rs.url(), poolclass=NullPool)
    ok, errors = storm(engine)
    lookups = api_calls(rs, "GetWorkgroup")
    assert ok == 0
    _driver_errors(errors, "network")()
    assert len(errors) >= 2 * THREADS  # every thread failed again and again: nothing blocked the window
    # one lookup, then the burst of 2 forced re-resolves; the next token comes after 30 s
    assert 1 <= lookups <= 3, lookups
    assert api_calls(rs, "GetCredentials") == 1


def test_refused_logins_make_at_most_three_credential_fetches(
    rs: RedshiftStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = sa.create_engine(rs.url(), poolclass=NullPool)
    with engine.connect():
        pass  # warm: one GetCredentials, one GetWorkgroup
    # From now on the front refuses every login (SQLSTATE 28000), also with newly issued passwords: the
    # database user lost its right to log in, as when its grant is revoked.
    refusal = 'role "IAM:alice-dev" is not permitted to log in'
    original = rs.store.add
    monkeypatch.setattr(rs.store, "add", lambda c: original(dataclasses.replace(c, login_error=refusal)))
    for credential in rs.store.live("IAM:alice-dev"):
        object.__setattr__(credential, "login_error", refusal)
    ok, errors = storm(engine)
    fetches = api_calls(rs, "GetCredentials")
    assert ok == 0
    _driver_errors(errors, "auth")()
    assert len(errors) >= 2 * THREADS  # every thread failed again and again: nothing blocked the window
    assert fetches <= 3, fetches  # the first fetch, then the burst of 2 forced refreshes
    assert api_calls(rs, "GetWorkgroup") == 1
