"""Log in through the plugin with what one install holds, against a running stand-in (scripts/matrix).

    python -I matrix_login.py STANDIN.json WHAT

WHAT names what the venv was made with: an extra (``redshift-connector``, ``psycopg2``, ``async``, ``otel``,
``testing``), ``core`` (the package alone), or ``all`` (every driver: the interpreter and SQLAlchemy checks).
Each dialect that install should carry logs in over verified TLS and must see the stand-in's IAM user;
``core`` and ``otel`` (no driver) fetch credentials with ``rs-iam credentials``. Run with ``-I`` from an
empty directory, so only the venv's packages are importable. Exits non-zero at the first failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# Dialects each install must be able to log in with (the stand-in's driver names; see DRIVERS there).
SYNC = {
    "redshift-connector": ["redshift_connector"],
    "psycopg2": ["psycopg2", "postgresql+psycopg2"],
    "async": ["psycopg"],
    "testing": ["postgresql+psycopg2"],
    "all": ["redshift_connector", "psycopg2", "postgresql+psycopg2", "psycopg"],
}
ASYNC = {"async": ["psycopg_async"], "all": ["asyncpg", "psycopg_async"]}


def ok(message: str) -> None:
    print(f"matrix_login: ok: {message}", flush=True)


def fail(message: str) -> None:
    raise SystemExit(f"matrix_login: FAILED: {message}")


def url_for(described: dict[str, Any], driver: str) -> str:
    if driver == "psycopg_async":
        return str(described["urls"]["psycopg"]).replace(
            "postgresql+psycopg:", "postgresql+psycopg_async:", 1
        )
    return str(described["urls"][driver])


def sync_login(url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("select current_user")).scalar())
    finally:
        engine.dispose()


def async_login(url: str) -> str:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def go() -> str:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return str((await conn.execute(text("select current_user"))).scalar())
        finally:
            await engine.dispose()

    return asyncio.run(go())


def main(described_file: str, what: str) -> None:
    described = json.loads(Path(described_file).read_text())
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    os.environ.update(described["env"])
    import sqlalchemy

    import sqlalchemy_rs_iam

    ok(
        f"python {sys.version.split()[0]}, SQLAlchemy {sqlalchemy.__version__}, sqlalchemy-rs-iam {sqlalchemy_rs_iam.__version__}"
    )
    expected = described["user"]
    logins = 0
    for driver in SYNC.get(what, []):
        if driver == "psycopg" and sqlalchemy.__version__.startswith("1."):
            print(
                "matrix_login: NOTE: SQLAlchemy 1.4 has no psycopg 3 dialect; postgresql+psycopg skipped",
                flush=True,
            )
            continue
        user = sync_login(url_for(described, driver))
        if user != expected:
            fail(f"{driver}: logged in as {user!r}, expected {expected!r}")
        ok(f"{driver}: logged in as {user} over verified TLS")
        logins += 1
    for driver in ASYNC.get(what, []):
        if driver == "psycopg_async" and sqlalchemy.__version__.startswith("1."):
            print(
                "matrix_login: NOTE: SQLAlchemy 1.4 has no psycopg 3 dialect; psycopg_async skipped",
                flush=True,
            )
            continue
        user = async_login(url_for(described, driver))
        if user != expected:
            fail(f"{driver}: logged in as {user!r}, expected {expected!r}")
        ok(f"{driver}: logged in as {user} over verified TLS (async)")
        logins += 1
    if what in ("core", "otel"):
        exe = shutil.which("rs-iam")
        if exe is None:
            fail("no rs-iam console script")
        argv = [exe, "credentials", "--workgroup", described["workgroup"], "-d", described["database"]]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0 or described["user"] not in done.stdout:
            fail(f"rs-iam credentials exited {done.returncode}: {done.stderr.strip()[-400:]}")
        ok(f"rs-iam credentials issued a credential for {described['user']} (no driver installed)")
        logins += 1
    if logins == 0:
        fail(f"nothing to check for {what!r}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
