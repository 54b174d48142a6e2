"""The password a failed connect handed to a driver is not shown by tracebacks formatted with their locals."""

from __future__ import annotations

import pickle
import sys
import traceback
from collections.abc import Callable

from test_connector import World

from sqlalchemy_rs_iam.connector import scrub_traceback
from sqlalchemy_rs_iam.credentials import DbCredentials, Secret


def _driver_connect(dsn_parts: dict[str, str]) -> None:
    # Like psycopg2.connect: a plain-str DSN built from the parameters, then a failure.
    dsn = " ".join(f"{k}={v}" for k, v in dsn_parts.items())
    raise ConnectionError(f"could not connect to {dsn_parts['host']}") from OSError(
        111, "refused " + "x" * len(dsn)
    )


def _fail(fn: Callable[[], object]) -> BaseException:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("did not fail")


def _with_locals(exc: BaseException) -> str:
    return "".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())


def test_secret_masks_repr_only() -> None:
    s = Secret("hunter2")
    assert repr(s) == "'***'" and repr({"password": s}) == "{'password': '***'}"
    assert str(s) == "hunter2" and f"{s}" == "hunter2" and s.encode() == b"hunter2" and s == "hunter2"
    assert isinstance(s, str) and "%s" % (s,) == "hunter2"  # noqa: UP031 (how drivers build DSNs)
    assert repr(pickle.loads(pickle.dumps(s))) == "'***'"
    creds = DbCredentials("IAM:a", "hunter2", 1900.0, None, 1000.0)
    assert isinstance(creds.password, Secret) and creds.password == "hunter2"


def test_failed_connect_leaves_no_password_in_any_frame_below_the_connector() -> None:
    world = World()
    connector = world.connector()

    def open_(host: str, port: int, creds: DbCredentials) -> object:
        params = {"host": host, "password": str(creds.password)}  # a driver's own plain copy
        _driver_connect(params)
        raise AssertionError("unreachable")

    exc = _fail(lambda: connector.connect(open_))  # the traceback starts there, not in this frame
    assert isinstance(exc, ConnectionError)
    password = str(connector.credentials().password)
    shown = _with_locals(exc)
    frames = []
    for e in (exc, exc.__cause__, exc.__context__):
        if e is not None:
            frames += [f for f, _ in traceback.walk_tb(e.__traceback__)]
    shown += "".join(repr(v) for f in frames for v in f.f_locals.values())
    assert password not in shown
    # Type, message, cause and the traceback's lines are kept.
    assert "could not connect to wg.example" in str(exc)
    assert isinstance(exc.__cause__, OSError)
    names = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
    assert names[-2:] == ["open_", "_driver_connect"]


def test_scrub_leaves_running_frames_and_the_callers_exception_alone() -> None:
    def inner(secret: str) -> None:
        raise ValueError("boom")

    try:
        raise KeyError("the caller's own")
    except KeyError:
        callers = sys.exc_info()[1]
        assert callers is not None
        try:
            inner("hunter2")
        except ValueError as exc:
            scrub_traceback(exc, callers)
            assert exc.__context__ is callers
            frames = {tb.tb_frame.f_code.co_name: tb.tb_frame for tb in _tbs(exc)}
            assert frames["inner"].f_locals == {}  # finished: cleared
            assert "callers" in sys._getframe().f_locals  # this frame still runs: untouched
        caller_frames = [tb.tb_frame for tb in _tbs(callers)]
        assert all("callers" in f.f_locals for f in caller_frames)  # the caller's exception: not ours


def _tbs(exc: BaseException) -> list:  # type: ignore[type-arg]
    out = []
    tb = exc.__traceback__
    while tb is not None:
        out.append(tb)
        tb = tb.tb_next
    return out
