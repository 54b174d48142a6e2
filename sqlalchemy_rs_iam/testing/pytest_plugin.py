"""pytest fixtures for the local Redshift stand-in (opt-in).

Enable in your ``conftest.py``::

    pytest_plugins = ["sqlalchemy_rs_iam.testing.pytest_plugin"]

    def test_sales(rs_iam_env, rs_iam_url):
        engine = sqlalchemy.create_engine(rs_iam_url)
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select count(*) from sales")).scalar() == 3

Fixtures:

* ``rs_standin`` (session) -- the running :class:`~sqlalchemy_rs_iam.testing.standin.RedshiftStandIn`;
  started on first use, stopped at the end of the session, also after failures or Ctrl-C. While it runs,
  the process environment carries :meth:`RedshiftStandIn.tls_env` (``SSL_CERT_FILE`` = the stand-in CA plus
  certifi's roots, ``PGSSLROOTCERT`` = the stand-in CA), so every driver verifies the front's certificate
  with its default TLS settings.
* ``rs_standin_clean`` (function) -- the same stand-in, reset before the test (emulator faults, denials,
  lifetime caps, call log) and the plugin's process-wide caches cleared before and after it.
* ``rs_iam_env`` (function) -- applies :meth:`RedshiftStandIn.aws_env` with ``monkeypatch`` (and removes every
  other ``AWS_*`` variable), so boto3 finds the stand-in's profiles and endpoint; returns the dict.
* ``rs_iam_url`` (function) -- an engine URL (redshift_connector) for the serverless workgroup, on a clean
  stand-in.

This module imports nothing heavy at import time: the stand-in is imported inside the fixtures.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .standin import RedshiftStandIn

__all__ = ["rs_iam_env", "rs_iam_url", "rs_standin", "rs_standin_clean"]


def _reset_plugin_caches() -> None:
    import sqlalchemy_rs_iam

    hook = getattr(sqlalchemy_rs_iam, "reset", None)
    if callable(hook):
        hook()


def _sigterm_as_interrupt() -> bool:
    """While the stand-in runs, turn SIGTERM into KeyboardInterrupt so pytest tears fixtures down.

    Only installed from the main thread, and only if nobody else handles SIGTERM. True if installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    return True


@pytest.fixture(scope="session")
def rs_standin() -> Iterator[RedshiftStandIn]:
    """The local Redshift stand-in, started once per session (real PostgreSQL, front and AWS emulator).

    Stopped at session end, also when tests fail or the run is interrupted (Ctrl-C, SIGTERM). If this
    process is killed outright, the PostgreSQL reaper still removes the server and its temp dir.
    """
    from .standin import RedshiftStandIn

    installed = _sigterm_as_interrupt()
    standin = RedshiftStandIn()
    saved: dict[str, str | None] = {}
    try:
        standin.start()
        for name, value in standin.tls_env().items():
            saved[name] = os.environ.get(name)
            os.environ[name] = value
        yield standin
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        try:
            standin.stop()
        finally:
            if installed:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture
def rs_standin_clean(rs_standin: RedshiftStandIn) -> Iterator[RedshiftStandIn]:
    """The session stand-in, reset for this test: no faults or denials, no lifetime cap, empty call log,
    and empty process-wide credential/endpoint/session caches (before and after the test)."""
    rs_standin.reset()
    _reset_plugin_caches()
    try:
        yield rs_standin
    finally:
        if rs_standin.started:
            rs_standin.reset()  # also wakes calls still sleeping in an injected hang
        _reset_plugin_caches()


@pytest.fixture
def rs_iam_env(rs_standin: RedshiftStandIn, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3 at the stand-in for this test: its AWS config/credentials files (``default`` profile =
    ``rs-iam-a``), region and emulator endpoint, plus the TLS trust variables. Every other ``AWS_*`` variable is removed, so real
    credentials cannot leak in. Returns the variables set."""
    env = rs_standin.aws_env()
    for name in list(os.environ):
        if name.startswith("AWS_") and name not in env:
            monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def rs_iam_url(rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str]) -> str:
    """A ready engine URL: redshift_connector, rs_iam plugin, serverless workgroup ``analytics``, database
    ``dev`` on a clean stand-in with the AWS environment applied (``rs_iam_env``)."""
    return rs_standin_clean.url()
