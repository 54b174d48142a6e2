"""Child process of test_freeze.py: one engine, a login every ``interval`` seconds until a line on stdin.

Prints one JSON object per line: ``ready``, then ``login`` (ok, start, end, user or error: wall-clock
times, comparable with the parent's and the emulator's), and finally ``stats`` (``stats(engine)``).

    python freeze_child.py URL INTERVAL
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import sqlalchemy_rs_iam


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    url, interval = sys.argv[1], float(sys.argv[2])
    engine = sa.create_engine(url, poolclass=NullPool)  # every checkout is a new login
    stop = threading.Event()

    def wait_for_quit() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=wait_for_quit, daemon=True).start()
    emit(event="ready", pid=os.getpid())
    while not stop.is_set():
        start = time.time()
        try:
            with engine.connect() as conn:
                user = conn.execute(sa.text("select current_user")).scalar()
            emit(event="login", ok=True, start=start, end=time.time(), user=user)
        except Exception as exc:  # reported, and the parent fails the test
            emit(event="login", ok=False, start=start, end=time.time(), error=f"{type(exc).__name__}: {exc}")
        stop.wait(interval)
    emit(event="stats", **sqlalchemy_rs_iam.stats(engine))


if __name__ == "__main__":
    main()
