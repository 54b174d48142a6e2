"""asyncio support: every AWS call runs in a worker thread, so the event loop never blocks on AWS.

Use psycopg 3's async driver (``pip install "sqlalchemy-rs-iam[async]"``, which also needs SQLAlchemy's
``greenlet``)::

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(
        "postgresql+psycopg_async:///dev?plugin=rs_iam&workgroup=analytics&region=us-east-1",
        use_native_hstore=False,   # skip a catalog probe Redshift has no use for
        pool_pre_ping=True,
    )
    await sqlalchemy_rs_iam.aio.warm_up(engine)   # optional: fetch before the first request needs it
    async with engine.connect() as conn:
        print((await conn.execute(text("select current_user"))).scalar())

How it works: ``AsyncEngine`` runs the pool's connect -- and so the plugin's ``do_connect`` handler --
inside a greenlet bridged to the event loop (SQLAlchemy's ``greenlet_spawn``). The handler sees
``dialect.is_async`` and calls :func:`connect_in_greenlet`, which hands every step that may wait on AWS
(endpoint lookup, credential fetch, login retry) to :func:`asyncio.to_thread` and awaits it with SQLAlchemy's
``await_``: the coroutine is suspended, other coroutines keep running. Credentials the cache can hand out
immediately skip the thread hop. Many coroutines that miss a cold cache at once all land in the cache's
single-flight, so they share one AWS call. ``dialect.connect`` then returns SQLAlchemy's adapted async
connection, which is exactly what the pool expects from a ``do_connect`` handler.

A coroutine cancelled while its credential fetch runs stops waiting at once; the fetch itself finishes in
its thread and fills the cache for the next caller (threads cannot be interrupted, and the result is
still useful).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .connector import IamConnector
from .credentials import DbCredentials
from .registry import connector_for

try:  # SQLAlchemy 2.1 name; 2.0 only has await_only (kept in 2.1 as a deprecated alias)
    from sqlalchemy.util import await_ as _await
except ImportError:  # pragma: no cover - SQLAlchemy 2.0
    from sqlalchemy.util import await_only as _await

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")

__all__ = ["connect_in_greenlet", "credentials", "warm_up"]


def _in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in the default executor and suspend this greenlet (not the loop) until it is done."""
    return _await(asyncio.to_thread(fn))


def connect_in_greenlet(connector: IamConnector, open_: Callable[[str, int, DbCredentials], T]) -> T:
    """The async-dialect connect path: like :meth:`IamConnector.connect`, with AWS calls off the loop.

    Must run inside SQLAlchemy's greenlet bridge (``do_connect`` of an ``AsyncEngine`` does).
    """
    return connector.connect(open_, call_blocking=_in_thread)


async def credentials(engine: AsyncEngine) -> DbCredentials:
    """The credentials an ``rs_iam`` async engine logs in with (from the cache, else fetched in a thread).

    The password is in ``.password``; the object's repr never shows it.
    """
    connector = connector_for(engine)
    return await asyncio.to_thread(connector.credentials)


async def warm_up(engine: AsyncEngine) -> None:
    """Resolve the endpoint and fetch credentials now, off the loop, so the first checkout does not wait.

    Call it from an application's startup hook (FastAPI ``lifespan``, aiohttp ``on_startup``). Raises the
    same :mod:`~sqlalchemy_rs_iam.errors` a connect would, which makes a misconfiguration fail at startup.
    """
    connector = connector_for(engine)

    def both() -> None:
        connector.endpoint()
        connector.credentials()

    await asyncio.to_thread(both)
