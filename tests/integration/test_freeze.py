"""A process frozen (SIGSTOP) and resumed (SIGCONT), as AWS Lambda freezes an execution environment between
invocations, in both refresh modes.

Like Lambda, the freezes land between logins (a login frozen after its password was handed out but
before the driver sent it would be refused, and recovered by the one login retry: no client can prevent
that); the lazy in-flight case is the exception, frozen inside the login that runs the refresh.

Real processes: each child (``freeze_child.py``) has an engine on the stand-in with 5 s credentials and
logs in every 0.1 s, reporting every login on stdout; the parent stops and resumes it. The oracles are the
front, which refuses an expired password (so one would show up as a failed login or a login retry), and the
emulator's call log (every HTTP request, retries included). Children run side by side; each one's AWS
calls are told apart by a distinct ``duration_seconds`` (the emulator caps every lifetime at 5 s anyway).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy_rs_iam.testing.emulator import Call
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("freeze_child.py")
LIFETIME = 5.0  # refresh point 3.75 s, stale mark 4 s (policy.py: margin = clamp(10 %, 1 s, ...))
FREEZE_AT = 0.6 * LIFETIME  # after the child's first login: before the refresh point
AFTER = 1.5  # seconds the child keeps logging in after SIGCONT
# Every AWS call of a child is bounded by these (URL parameters), so is a wait on one in flight.
TIMEOUTS = {"aws_connect_timeout": "1", "aws_read_timeout": "1", "aws_max_attempts": "2"}
CALL_BOUND = 2 * (1 + 1) + 1.0  # attempts x (connect + read) + botocore's first backoff (< 1 s)


class Child:
    """One child process and what it reported (read on a thread, so the pipe never fills)."""

    def __init__(self, url: str, tmp: Path, name: str) -> None:
        env = dict(os.environ)
        env.pop("AWS_LAMBDA_FUNCTION_NAME", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        self.name = name
        self.stderr = tmp / f"{name}.stderr"
        with self.stderr.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD), url, "0.1"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
            )
        self.events: list[dict[str, Any]] = []
        self.stopped_at = self.resumed_at = 0.0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def logins(self) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["event"] == "login"]

    def first_login(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.logins()
            if done:
                return done[0]
            assert self.proc.poll() is None, self.stderr.read_text()
            time.sleep(0.02)
        raise AssertionError(f"no login within {timeout} s: {self.stderr.read_text()}")

    def idle_since(self, t: float) -> bool:
        """True if the child finished a login after ``t``: it now sleeps 0.1 s before the next one."""
        done = self.logins()
        return bool(done) and done[-1]["end"] >= t

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.stopped_at = time.time()

    def resume(self) -> None:
        self.resumed_at = time.time()
        os.kill(self.proc.pid, signal.SIGCONT)

    def finish(self) -> dict[str, int]:
        """Ask the child to stop; its ``stats(engine)``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        assert self.proc.wait(timeout=30) == 0, self.stderr.read_text()
        self._reader.join(timeout=5)
        stats = [e for e in self.events if e["event"] == "stats"]
        assert stats, self.stderr.read_text()
        return {k: v for k, v in stats[-1].items() if k != "event"}

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


def calls_of(rs: RedshiftStandIn, operation: str, duration: int) -> list[Call]:
    return [
        c
        for c in rs.emulator.calls_for(operation)
        if str(c.params.get(duration_key(operation))) == str(duration)
    ]


def duration_key(operation: str) -> str:
    return "durationSeconds" if operation == "GetCredentials" else "DurationSeconds"


def check_child(child: Child, stats: dict[str, int], calls: list[Call]) -> None:
    """The guarantees of a freeze, from the child's report and the emulator's call log."""
    failed = [e for e in child.logins() if not e["ok"]]
    assert failed == [], (child.name, failed)  # an expired password would be refused by the front
    assert stats["login_retries"] == 0 and stats["failures"] == 0, (child.name, stats)
    after = [e for e in child.logins() if e["start"] >= child.resumed_at]
    assert len(after) >= 3, child.logins()[-5:]  # it kept logging in after the resume
    on_resume = [c for c in calls if child.resumed_at <= c.at < child.resumed_at + AFTER]
    assert len(on_resume) <= 1, on_resume  # at most one AWS call on resume (the next is due 3.75 s later)


@pytest.mark.parametrize("mode", ["background", "lazy"])
def test_frozen_for_zero_to_two_lifetimes_never_logs_in_with_an_expired_password(
    rs: RedshiftStandIn, tmp_path: Path, mode: str
) -> None:
    """Four children, frozen for 0, 0.5, 1 and 2 lifetimes from just before their refresh point."""
    rs.emulator.max_lifetime = LIFETIME
    fractions = [0.0, 0.5, 1.0, 2.0]
    children = [
        Child(rs.url(refresh=mode, duration_seconds=str(900 + i), **TIMEOUTS), tmp_path, f"{mode}-{i}")
        for i in range(len(fractions))
    ]
    try:
        plan = []
        for child, fraction in zip(children, fractions, strict=True):
            freeze_at = child.first_login()["end"] + FREEZE_AT
            plan.append((child, freeze_at, freeze_at + fraction * LIFETIME))
        pending = list(plan)
        while pending:
            now = time.time()
            for item in list(pending):
                child, freeze_at, resume_at = item
                if not child.stopped_at and child.idle_since(freeze_at):
                    child.stop()
                    resume_at += child.stopped_at - freeze_at
                    pending[pending.index(item)] = (child, freeze_at, resume_at)
                elif child.stopped_at and now >= resume_at:
                    child.resume()
                    pending.remove(item)
            time.sleep(0.005)
        time.sleep(AFTER)
        for i, (child, fraction) in enumerate(zip(children, fractions, strict=True)):
            stats = child.finish()
            calls = calls_of(rs, "GetCredentials", 900 + i)
            check_child(child, stats, calls)
            if fraction >= 0.5:  # resumed past the stale mark: exactly one fetch, before the first login
                assert len([c for c in calls if child.resumed_at <= c.at < child.resumed_at + AFTER]) == 1
    finally:
        for child in children:
            child.kill()


@pytest.mark.parametrize("mode", ["background", "lazy"])
def test_frozen_while_a_refresh_is_in_flight(rs: RedshiftStandIn, tmp_path: Path, mode: str) -> None:
    """Frozen while the refresh call is on the wire, for longer than the credential lives.

    Two children side by side: the workgroup child's call is still unanswered at SIGCONT (its read has
    timed out meanwhile: botocore retries once), the cluster child's call was answered during the freeze
    with a credential that expired before the child could read it. Either way the first login after
    SIGCONT waits at most the AWS call's own bounds, and uses a live password.
    """
    rs.emulator.max_lifetime = LIFETIME
    # Longer than the read timeout, and than a credential issued 1 s into the freeze lives (5 s).
    freeze = 1.6 * LIFETIME
    setups = [("GetCredentials", {}, 30.0), ("GetClusterCredentialsWithIAM", {"cluster": rs.cluster}, 1.0)]
    children = [
        Child(rs.url(refresh=mode, duration_seconds="901", **kw, **TIMEOUTS), tmp_path, f"{mode}-{op}")
        for op, kw, _ in setups
    ]
    try:
        for child in children:
            child.first_login()
        armed = time.time()
        for op, _, hang in setups:
            rs.emulator.faults.hang(op, hang, n=1)  # the next call of op: the child's refresh
        for child, (op, _, _) in zip(children, setups, strict=True):
            deadline = time.monotonic() + 2 * LIFETIME
            while not (in_flight := [c for c in calls_of(rs, op, 901) if c.at >= armed and c.status == 0]):
                assert time.monotonic() < deadline, "the refresh call never started"
                time.sleep(0.002)
            if mode == "background":  # as in Lambda: the handler has returned, the refresh thread is out
                while not child.idle_since(in_flight[0].at):
                    time.sleep(0.002)
            # lazy: the login that runs the refresh is frozen inside it, and must leave with the new password
            child.stop()
            assert [c.status for c in calls_of(rs, op, 901) if c.at >= armed] == [0]  # still on the wire
        time.sleep(freeze)
        for child in children:
            child.resume()
        time.sleep(AFTER + CALL_BOUND)
        for child, (op, _, _) in zip(children, setups, strict=True):
            stats = child.finish()
            check_child(child, stats, calls_of(rs, op, 901))
            first = next(e for e in child.logins() if e["end"] >= child.resumed_at)
            assert first["end"] - child.resumed_at <= CALL_BOUND, first
    finally:
        for child in children:
            child.kill()
