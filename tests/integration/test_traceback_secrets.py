"""No issued password in a failed connect's traceback, even formatted with every frame's local variables.

Error reporters (Sentry with ``include_local_variables=True``, ``pytest -l``,
``traceback.TracebackException(..., capture_locals=True)``) print the locals of every frame of a traceback and
of its chained causes. For each supported driver, connects that fail in each way (login refused, host
unreachable, another database error) are checked both ways: the formatted chain, and ``repr()`` of every value
in every frame's ``f_locals``. The exception must still reach the caller with its type, message and cause.
"""

from __future__ import annotations

import asyncio
import socket
import traceback
from collections.abc import Callable, Iterator
from types import TracebackType

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn
from sqlalchemy_rs_iam.testing.store import IssuedCredential

pytestmark = pytest.mark.integration

DRIVERS = ["redshift_connector", "psycopg2", "postgresql+psycopg2", "psycopg", "asyncpg", "psycopg_async"]
ASYNC = ("asyncpg", "psycopg_async")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def _frames(tb: TracebackType | None) -> Iterator[TracebackType]:
    while tb is not None:
        yield tb
        tb = tb.tb_next


def everything_shown(exc: BaseException) -> str:
    """What an error reporter that records locals could show for ``exc``."""
    shown = ["".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())]
    for e in _chain(exc):
        for tb in _frames(e.__traceback__):
            for name, value in tb.tb_frame.f_locals.items():
                try:
                    shown.append(f"{tb.tb_frame.f_code.co_name}.{name}={value!r}")
                except Exception as repr_error:  # a broken repr hides nothing; note it and go on
                    shown.append(f"{name}: repr failed ({type(repr_error).__name__})")
    return "\n".join(shown)


def _fail(connect: Callable[[], object]) -> BaseException:
    """Run ``connect``; return what it raised (this frame's own locals hold no secret)."""
    try:
        connect()
    except Exception as exc:
        return exc
    raise AssertionError("the connect did not fail")


def _connector(url: str, driver: str) -> Callable[[], object]:
    if driver in ASYNC:
        from sqlalchemy.ext.asyncio import create_async_engine

        async def go() -> None:
            engine = create_async_engine(url, poolclass=NullPool)
            try:
                async with engine.connect() as conn:
                    await conn.execute(sa.text("select 1"))
            finally:
                await engine.dispose()

        return lambda: asyncio.run(go())
    engine = sa.create_engine(url, poolclass=NullPool)

    def go_sync() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))

    return go_sync


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("failure", ["login_refused", "unreachable", "database_error"])
def test_failed_connect_traceback_with_locals_holds_no_password(
    rs: RedshiftStandIn, issued: list[IssuedCredential], driver: str, failure: str
) -> None:
    if driver in ASYNC:
        pytest.importorskip("greenlet")
    params: dict[str, object] = {"duration_seconds": 900 + DRIVERS.index(driver)}  # a key of its own
    if failure == "login_refused":
        rs.emulator.max_lifetime = 0.001  # every issued password has expired when it arrives
    elif failure == "unreachable":
        rs.emulator.add_workgroup("gone", region=rs.region, address="127.0.0.1", port=_closed_port())
        params["workgroup"] = "gone"
    database = "no_such_db" if failure == "database_error" else None
    if driver == "psycopg_async":
        url = rs.url("psycopg", database=database, **params)
        url = url.replace("postgresql+psycopg:", "postgresql+psycopg_async:")
    else:
        url = rs.url(driver, database=database, **params)
    exc = _fail(_connector(url, driver))

    assert issued, "the emulator issued no password, so there was nothing to leak"
    if failure == "login_refused":
        # refused, refetched once, refused again; each 1 ms credential also arrives expired, which the
        # connector takes for a freeze in flight and fetches once more: 2 x 2 issued passwords
        assert len(issued) == 4
    shown = everything_shown(exc)
    leaks = [c.login_user for c in issued if c.password in shown]
    assert leaks == [], f"issued password of {leaks} shown in a traceback with locals ({driver}, {failure})"

    # The error itself reaches the caller unchanged: the driver's error wrapped by SQLAlchemy, with its cause
    # (asyncpg raises a refused TCP connect as the plain OSError, which SQLAlchemy passes through).
    if driver == "asyncpg" and failure == "unreachable":
        assert isinstance(exc, ConnectionRefusedError), repr(exc)
        return
    assert isinstance(exc, sa.exc.DBAPIError), repr(exc)
    assert exc.orig is not None and exc.__cause__ is exc.orig
    expect = {"login_refused": "password", "unreachable": "connect", "database_error": "no_such_db"}[failure]
    assert expect in str(exc).lower(), str(exc)
    assert exc.__traceback__ is not None and len(traceback.extract_tb(exc.__traceback__)) > 3  # lines kept


def test_dbapi_connect_refused_login_traceback_holds_no_password(
    rs: RedshiftStandIn, issued: list[IssuedCredential]
) -> None:
    import sqlalchemy_rs_iam

    rs.emulator.max_lifetime = 0.001
    exc = _fail(
        lambda: sqlalchemy_rs_iam.connect(
            workgroup=rs.workgroup, database=rs.database, region=rs.region,
            aws_endpoint_url=rs.aws_endpoint_url, duration_seconds=1000,
        )
    )  # fmt: skip
    assert len(issued) == 4  # as above: two fetches, each repeated once because it arrived expired
    shown = everything_shown(exc)
    assert [c.login_user for c in issued if c.password in shown] == []
    assert type(exc).__module__.startswith("redshift_connector") and "password" in str(exc).lower()
