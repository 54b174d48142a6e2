"""Async engines (psycopg 3 async and asyncpg) through the plugin, against the local stand-in.

The claims under test: concurrent coroutines on a cold cache share one AWS call, the event loop keeps
running while AWS is slow, errors surface as this package's exceptions, and a cancelled connect does not
waste the fetch it started.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam import aio
from sqlalchemy_rs_iam.errors import AccessDeniedError, ResourceNotFoundError

pytestmark = pytest.mark.integration

pytest.importorskip("greenlet", reason="SQLAlchemy's asyncio support needs greenlet")

LOGIN = "IAM:alice-dev"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def async_url(rs, driver: str, **params) -> str:
    if driver == "psycopg_async":
        return rs.url("psycopg", **params).replace("postgresql+psycopg:", "postgresql+psycopg_async:")
    return rs.url(driver, **params)


class Ticker:
    """A coroutine that records when it ran: a blocked loop shows up as a long gap."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.times: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.times.append(time.perf_counter())
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task

    def max_gap(self) -> float:
        return max(b - a for a, b in zip(self.times, self.times[1:], strict=False))


@pytest.mark.parametrize("driver", ["psycopg_async", "asyncpg"])
def test_concurrent_cold_cache_makes_one_aws_call(rs, driver):
    rs.emulator.faults.latency("GetCredentials", 0.5)  # every coroutine arrives while the fetch runs

    async def main() -> list[str]:
        engine = create_async_engine(async_url(rs, driver), pool_size=60, max_overflow=0)
        try:

            async def one() -> str:
                async with engine.connect() as conn:
                    return (await conn.execute(text("select current_user"))).scalar_one()

            users = await asyncio.gather(*(one() for _ in range(60)))
            stats = sqlalchemy_rs_iam.stats(engine)
            assert stats["api_calls"] == 2  # GetWorkgroup + GetCredentials, for 60 connects
            assert stats["hits"] >= 50
            return users
        finally:
            await engine.dispose()

    users = asyncio.run(main())
    assert users == [LOGIN] * 60
    assert len(rs.emulator.calls_for("GetCredentials")) == 1
    assert len(rs.emulator.calls_for("GetWorkgroup")) == 1


@pytest.mark.parametrize("operation", ["GetCredentials", "GetWorkgroup"])
def test_loop_keeps_running_while_aws_is_slow(rs, operation):
    rs.emulator.faults.hang(operation, 1.0, n=1)

    async def main() -> tuple[float, Ticker]:
        engine = create_async_engine(async_url(rs, "psycopg_async"), pool_size=20, max_overflow=0)
        ticker = Ticker()
        ticker.start()
        try:
            start = time.perf_counter()

            async def one() -> str:
                async with engine.connect() as conn:
                    return (await conn.execute(text("select current_user"))).scalar_one()

            assert await asyncio.gather(*(one() for _ in range(20))) == [LOGIN] * 20
            elapsed = time.perf_counter() - start
        finally:
            await ticker.stop()
            await engine.dispose()
        return elapsed, ticker

    elapsed, ticker = asyncio.run(main())
    assert elapsed >= 0.9  # the hang really delayed the connects ...
    # ... but the loop kept scheduling the ticker: a blocked loop would show one gap of ~1 s.
    assert ticker.max_gap() < 0.5, ticker.max_gap()
    assert len(ticker.times) >= 20
    assert len(rs.emulator.calls_for(operation)) == 1


def test_errors_surface_as_package_exceptions(rs):
    rs.emulator.deny("GetCredentials")

    async def main() -> None:
        engine = create_async_engine(async_url(rs, "psycopg_async"))
        try:
            with pytest.raises(AccessDeniedError) as info:
                async with engine.connect():
                    pass
            assert "GetCredentials" in str(info.value) and "analytics" in str(info.value)
            bad = create_async_engine(async_url(rs, "psycopg_async", workgroup="no-such-wg"))
            with pytest.raises(ResourceNotFoundError):
                async with bad.connect():
                    pass
            await bad.dispose()
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_cancelled_connect_still_fills_the_cache(rs):
    rs.emulator.faults.hang("GetCredentials", 1.0, n=1)

    async def main() -> str:
        engine = create_async_engine(async_url(rs, "psycopg_async"))
        try:

            async def connect_once() -> str:
                async with engine.connect() as conn:
                    return (await conn.execute(text("select current_user"))).scalar_one()

            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(connect_once(), 0.3)
            await asyncio.sleep(1.2)  # the fetch finishes in its thread meanwhile
            return await connect_once()
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == LOGIN
    assert len(rs.emulator.calls_for("GetCredentials")) == 1


def test_warm_up_and_credentials(rs):
    async def main() -> None:
        engine = create_async_engine(async_url(rs, "psycopg_async"))
        try:
            await aio.warm_up(engine)
            assert len(rs.emulator.calls_for("GetWorkgroup")) == 1
            assert len(rs.emulator.calls_for("GetCredentials")) == 1
            creds = await aio.credentials(engine)
            assert creds.user == LOGIN and "***" in repr(creds)
            async with engine.connect() as conn:
                assert (await conn.execute(text("select current_user"))).scalar_one() == LOGIN
        finally:
            await engine.dispose()

    asyncio.run(main())
    # warm_up did the AWS work; the connect and credentials() were served from the cache.
    assert len(rs.emulator.calls_for("GetCredentials")) == 1
    assert len(rs.emulator.calls_for("GetWorkgroup")) == 1


def test_pooled_connections_outlive_a_revoked_credential(rs):
    """The pool reuses logged-in sessions; a new connection after a refused login retries with new creds."""

    async def main() -> tuple[str, str]:
        engine = create_async_engine(async_url(rs, "psycopg_async"), pool_size=1, max_overflow=1)
        try:
            async with engine.connect() as conn:
                first = (await conn.execute(text("select current_user"))).scalar_one()
            rs.emulator.revoke(LOGIN)  # the cached password no longer logs in
            async with engine.connect() as a, engine.connect() as b:  # b needs a new login
                await a.execute(text("select 1"))
                second = (await b.execute(text("select current_user"))).scalar_one()
            stats = sqlalchemy_rs_iam.stats(engine)
            assert stats["login_retries"] == 1
            return first, second
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == (LOGIN, LOGIN)
    assert len(rs.emulator.calls_for("GetCredentials")) == 2


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fastapi_example_data_layer(rs):
    example = _load_example("fastapi_app")  # imports without FastAPI installed

    async def main() -> tuple[list[dict], dict]:
        engine = example.make_engine(async_url(rs, "psycopg_async"))
        async with example.engine_lifespan(engine):
            calls_after_startup = len(rs.emulator.calls_for("GetCredentials"))
            assert calls_after_startup == 1
            sales = await example.sales_by_region(engine)
            health = await example.health(engine)
        return sales, health

    sales, health = asyncio.run(main())
    assert sales == [{"region": "eu-west-1", "total": 250.5}, {"region": "us-east-1", "total": 175.25}]
    assert health["db_user"] == LOGIN and health["rs_iam"]["api_calls"] == 2  # GetWorkgroup + GetCredentials


def test_fastapi_example_app(rs):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    example = _load_example("fastapi_app")
    with TestClient(example.create_app(async_url(rs, "psycopg_async"))) as client:
        assert client.get("/sales").json()[0]["region"] == "eu-west-1"
        assert client.get("/healthz").json()["db_user"] == LOGIN
