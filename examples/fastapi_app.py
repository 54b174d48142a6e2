"""A FastAPI service on an async engine that logs in to Redshift with IAM credentials.

The pool keeps connections open across requests; the plugin only acts when the pool opens a new one, and
then usually serves the credentials from its cache (one AWS call per refresh window for the whole
process, however many connections and requests). Nothing here blocks the event loop on AWS: the plugin
runs AWS calls in a worker thread.

    pip install fastapi uvicorn "sqlalchemy-rs-iam[async]"
    RS_IAM_URL="postgresql+psycopg_async:///dev?plugin=rs_iam&workgroup=analytics&region=us-east-1" \\
        uvicorn examples.fastapi_app:app

    python examples/fastapi_app.py [URL]   # serves on 127.0.0.1:8000 (PORT=...); no URL: the local stand-in

The data functions take an engine and do not import FastAPI, so they run (and are tested) without it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam import aio

DEFAULT_URL = "postgresql+psycopg_async:///dev?plugin=rs_iam&workgroup=analytics&region=us-east-1"


def make_engine(url: str | None = None) -> AsyncEngine:
    """The one engine of the process (create it once, at startup)."""
    return create_async_engine(
        url or os.environ.get("RS_IAM_URL", DEFAULT_URL),
        pool_size=5,
        max_overflow=5,
        # A pooled connection stays logged in after its credentials expire; pre_ping catches connections
        # Redshift or a NAT dropped while idle, and recycle bounds a session's age. Neither has to be
        # shorter than duration_seconds.
        pool_pre_ping=True,
        pool_recycle=1800,
        use_native_hstore=False,  # psycopg: skip the hstore type lookup at first connect (Redshift has none)
    )


async def sales_by_region(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("select region, sum(amount) as total from sales group by region order by region")
        )
        return [{"region": row.region, "total": float(row.total)} for row in result]


async def health(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        user = (await conn.execute(text("select current_user"))).scalar_one()
    return {"db_user": user, "rs_iam": dict(sqlalchemy_rs_iam.stats(engine))}


@asynccontextmanager
async def engine_lifespan(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """Fetch credentials at startup (a misconfiguration fails the deploy, not the first request)."""
    await aio.warm_up(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


def create_app(url: str | None = None) -> Any:
    from fastapi import FastAPI

    engine = make_engine(url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with engine_lifespan(engine):
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/sales")
    async def sales() -> list[dict[str, Any]]:
        return await sales_by_region(engine)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return await health(engine)

    return app


def __getattr__(name: str) -> Any:
    # `uvicorn examples.fastapi_app:app` builds the app on first access; importing stays FastAPI-free.
    if name == "app":
        return create_app()
    raise AttributeError(name)


if __name__ == "__main__":
    import uvicorn
    from _common import engine_url

    def async_url(rs: Any) -> str:
        return str(rs.url("psycopg")).replace("postgresql+psycopg:", "postgresql+psycopg_async:", 1)

    with engine_url(async_url) as url:
        port = int(os.environ.get("PORT", "8000"))
        print(f"serving http://127.0.0.1:{port}/sales and /healthz (Ctrl-C to stop)", flush=True)
        uvicorn.run(create_app(url), host="127.0.0.1", port=port, log_level="warning")
