"""Fault injection against the stand-in: AWS throttling / 5xx / outages / hangs, revoked credentials, database
restarts, clock skew between this host and AWS, and os.fork with a warm cache and locks held.

Every test counts the connects that failed and the AWS calls made (the emulator's call log is the truth: it
records every HTTP request, retries included).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator

import boto3
import pytest
import sqlalchemy as sa
from helpers import api_calls, current_user
from sqlalchemy.pool import NullPool
from together import run_together

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam import counters, errors
from sqlalchemy_rs_iam.registry import REGISTRY
from sqlalchemy_rs_iam.testing.emulator import AwsEmulator
from sqlalchemy_rs_iam.testing.front import RedshiftFront
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn
from sqlalchemy_rs_iam.testing.store import CredentialStore

pytestmark = pytest.mark.integration


def hammer(engine: sa.engine.Engine, n: int, expected: str) -> int:
    """``n`` sequential checkouts; returns how many failed (a wrong user counts as a failure)."""
    failed = 0
    for _ in range(n):
        try:
            failed += current_user(engine) != expected
        except Exception:
            failed += 1
    return failed


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- throttling and 5xx ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url_kw,operation,expected",
    [
        ({}, "GetCredentials", "IAM:alice-dev"),
        ({}, "GetWorkgroup", "IAM:alice-dev"),
        ({"cluster": "etl-cluster", "user": "alice"}, "GetClusterCredentials", "alice"),
        ({"cluster": "etl-cluster"}, "DescribeClusters", "IAM:alice-dev"),
    ],
)
def test_cold_cache_throttling_and_5xx_are_absorbed_by_retries(
    rs: RedshiftStandIn, url_kw: dict[str, str], operation: str, expected: str
) -> None:
    rs.emulator.faults.throttle(operation, 1)
    rs.emulator.faults.server_error(operation, 1)
    engine = sa.create_engine(rs.url(**url_kw), poolclass=NullPool)
    assert hammer(engine, 3, expected) == 0
    assert api_calls(rs, operation) == 3  # two failed attempts, one success, then cached
    answers = [c.status for c in rs.emulator.calls_for(operation)]
    assert sorted(answers) == [200, 400, 500]
    assert sqlalchemy_rs_iam.stats(engine)["failures"] == 0


def test_warm_cache_makes_aws_faults_invisible(rs: RedshiftStandIn) -> None:
    engines = [
        sa.create_engine(rs.url(), poolclass=NullPool),
        sa.create_engine(rs.url("psycopg2", cluster=rs.cluster, user=rs.db_user), poolclass=NullPool),
    ]
    for engine, expected in zip(engines, ("IAM:alice-dev", "alice"), strict=True):
        assert current_user(engine) == expected
    rs.emulator.reset_calls()
    for op in ("*", "GetCredentials", "GetClusterCredentials", "GetWorkgroup", "DescribeClusters"):
        rs.emulator.faults.throttle(op, 50)
        rs.emulator.faults.server_error(op, 50)
    assert hammer(engines[0], 20, "IAM:alice-dev") == 0
    assert hammer(engines[1], 20, "alice") == 0
    assert rs.emulator.calls == []  # zero AWS calls while warm
    for engine in engines:
        assert sqlalchemy_rs_iam.stats(engine)["failures"] == 0


# --- AWS unreachable or hanging ---------------------------------------------------------------------------------


def test_timeout_defaults_are_sane_and_bound_every_call(rs: RedshiftStandIn) -> None:
    engine = sa.create_engine(rs.url())
    clients = sqlalchemy_rs_iam.connector_for(engine).aws()
    config = clients.client("redshift-serverless").meta.config
    assert (config.connect_timeout, config.read_timeout) == (2.0, 5.0)
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    # Worst case of one blocking fetch: every attempt times out, plus standard-mode backoff (<= 2**i s each).
    worst = 3 * (config.connect_timeout + config.read_timeout) + sum(min(2**i, 20) for i in range(2))
    assert worst <= 30
    tuned = sa.create_engine(rs.url(aws_connect_timeout="0.5", aws_read_timeout="1.5", aws_max_attempts="2"))
    config = sqlalchemy_rs_iam.connector_for(tuned).aws().client("redshift-serverless").meta.config
    assert (config.connect_timeout, config.read_timeout) == (0.5, 1.5)
    assert config.retries["total_max_attempts"] == 2


def test_unreachable_aws_fails_fast_and_names_endpoint_and_region(rs: RedshiftStandIn) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    # Retried (a refused connection is transient), but only twice here: botocore's backoff is up to 2**i s.
    engine = sa.create_engine(rs.url(aws_endpoint_url=endpoint, aws_max_attempts="2"), poolclass=NullPool)
    started = time.monotonic()
    with pytest.raises(errors.ServiceUnavailableError) as info:
        current_user(engine)
    assert time.monotonic() - started < 30
    message = str(info.value)
    assert endpoint in message and rs.region in message and "GetWorkgroup" in message
    assert info.value.region == rs.region and info.value.__cause__ is not None
    # The failure is remembered briefly (negative cache): an outage does not turn every connect into a call.
    with pytest.raises(errors.ServiceUnavailableError):
        current_user(engine)


def test_hanging_aws_with_cold_cache_is_bounded(rs: RedshiftStandIn) -> None:
    rs.emulator.faults.hang("GetCredentials", 60)
    engine = sa.create_engine(
        rs.url(aws_read_timeout="0.5", aws_connect_timeout="0.5", aws_max_attempts="2"), poolclass=NullPool
    )
    started = time.monotonic()
    with pytest.raises(errors.ServiceUnavailableError) as info:
        current_user(engine)
    assert time.monotonic() - started < 15
    assert rs.aws_endpoint_url in str(info.value) and rs.region in str(info.value)
    assert "ReadTimeout" in str(info.value)
    assert api_calls(rs, "GetCredentials") == 2


def test_hanging_aws_with_warm_cache_serves_until_stale(rs: RedshiftStandIn) -> None:
    rs.emulator.max_lifetime = 6.0  # stale_at = expiration - 1 s
    rs.emulator.next_refresh_after = 1.0  # AWS asks for an early refresh: refresh_at = fetched + 1.5 s
    engine = sa.create_engine(
        rs.url(aws_read_timeout="0.4", aws_connect_timeout="0.4", aws_max_attempts="2"), poolclass=NullPool
    )
    assert current_user(engine) == "IAM:alice-dev"
    rs_connector = sqlalchemy_rs_iam.connector_for(engine)
    creds = rs_connector.cached_credentials()
    assert creds is not None
    policy = REGISTRY.credentials.policy
    refresh_at, stale_at = policy.refresh_at(creds), policy.stale_at(creds)
    assert refresh_at < stale_at - 2
    rs.emulator.faults.hang("GetCredentials", 60)

    connects = failed = 0
    while time.time() < stale_at - 0.4:  # past refresh_at: every background refresh hangs and times out
        failed += hammer(engine, 1, "IAM:alice-dev")
        connects += 1
        time.sleep(0.05)
    assert failed == 0 and connects > 20
    assert api_calls(rs, "GetCredentials") >= 3  # 1 + at least one refresh of 2 timed-out attempts
    assert sqlalchemy_rs_iam.stats(engine)["failures"] >= 1
    assert sqlalchemy_rs_iam.stats(engine)["login_retries"] == 0

    time.sleep(max(0.0, stale_at - time.time()) + 0.1)
    started = time.monotonic()
    with pytest.raises(errors.ServiceUnavailableError):
        current_user(engine)  # no usable credential left: a clear, bounded error
    assert time.monotonic() - started < 15


# --- credentials revoked / expired early on the server -----------------------------------------------------------


def test_revoked_credential_concurrent_logins_refetch_once(rs: RedshiftStandIn) -> None:
    engine = sa.create_engine(rs.url(), poolclass=NullPool)
    assert current_user(engine) == "IAM:alice-dev"
    assert rs.emulator.revoke("IAM:alice-dev") >= 1
    results, failures = run_together(8, lambda: current_user(engine))
    assert failures == [] and results == ["IAM:alice-dev"] * 8
    assert api_calls(rs, "GetCredentials") == 2  # one refetch, shared by all eight refused logins
    assert sqlalchemy_rs_iam.stats(engine)["login_retries"] == 8


def test_credential_expired_early_on_the_server_is_refetched_once(rs: RedshiftStandIn) -> None:
    engine = sa.create_engine(rs.url("psycopg2", cluster=rs.cluster, user=rs.db_user), poolclass=NullPool)
    other = sa.create_engine(rs.url(), poolclass=NullPool)
    assert current_user(engine) == "alice" and current_user(other) == "IAM:alice-dev"
    store = rs.store
    # The server lets the credential expire before the expiration it announced (no public hook for this).
    with store._lock:
        store._by_user["IAM:alice"] = [
            dataclasses.replace(c, expires_at=time.time() - 1) for c in store._by_user["IAM:alice"]
        ]
    assert hammer(engine, 5, "alice") == 0
    assert hammer(other, 5, "IAM:alice-dev") == 0  # another user's credential is untouched
    assert api_calls(rs, "GetClusterCredentials") == 2
    assert api_calls(rs, "GetCredentials") == 1
    assert sqlalchemy_rs_iam.stats(engine)["login_retries"] == 1
    assert sqlalchemy_rs_iam.stats(other)["login_retries"] == 0


# --- the database restarting under a pool ---------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["redshift_connector", "psycopg2"])
@pytest.mark.parametrize("pre_ping", [True, False])
def test_pool_recovers_from_a_database_restart(rs: RedshiftStandIn, driver: str, pre_ping: bool) -> None:
    engine = sa.create_engine(rs.url(driver), pool_size=4, max_overflow=0, pool_pre_ping=pre_ping)
    held = [engine.connect() for _ in range(4)]
    for conn in held:
        conn.execute(sa.text("select 1"))
        conn.close()  # back to the pool, alive
    logins = rs.front.logins_accepted
    rs.postgres.restart()
    failed = hammer(engine, 10, "IAM:alice-dev")
    # Pre-ping replaces every dead connection unseen; without it, the first disconnect error invalidates the
    # whole pool, so exactly one statement fails.
    assert failed == (0 if pre_ping else 1)
    assert rs.front.logins_accepted - logins >= 1  # fresh connects...
    assert api_calls(rs, "GetCredentials") == 1  # ... with the still-valid cached credential
    engine.dispose()


# --- clock skew between this host and AWS ---------------------------------------------------------------------------


class SkewedAws:
    """A second emulator + front + store whose clock (the "AWS" clock) is ``skew`` seconds off ours.

    Its identity is unique, so the PostgreSQL role it issues does not collide with the shared stand-in's.
    """

    def __init__(self, rs: RedshiftStandIn, skew: float) -> None:
        self.clock: Callable[[], float] = lambda: time.time() + skew
        self.store = CredentialStore(clock=self.clock)
        self.front = RedshiftFront(
            self.store, rs.postgres.host, rs.postgres.port, ssl_context=rs.server_ssl_context
        ).start()
        self.emulator = AwsEmulator(self.store, rs.roles, clock=self.clock)
        try:
            self.emulator.start()
        except BaseException:
            self.front.stop()
            raise
        self.principal = f"skew-{secrets.token_hex(3)}"
        key, secret = "AKIASKEW" + secrets.token_hex(6).upper(), secrets.token_hex(20)
        self.emulator.add_identity(key, secret, self.principal)
        self.emulator.add_workgroup(
            rs.workgroup, region=rs.region, address=self.front.host, port=self.front.port
        )
        self.session = boto3.Session(
            aws_access_key_id=key, aws_secret_access_key=secret, region_name=rs.region
        )
        self.url = rs.url(aws_endpoint_url=self.emulator.url)

    def stop(self) -> None:
        self.emulator.stop()
        self.front.stop()


@pytest.fixture
def skewed(rs: RedshiftStandIn) -> Iterator[Callable[[float], SkewedAws]]:
    # The emulator stamps its Date header and expirations with its own (here skewed) clock, as AWS does.
    started: list[SkewedAws] = []

    def make(skew: float) -> SkewedAws:
        started.append(SkewedAws(rs, skew))
        return started[-1]

    try:
        yield make
    finally:
        for s in started:
            s.stop()


# AWS accepts a request signed up to 15 minutes off its clock (and answers "Signature expired" / "not yet
# current" beyond), so skews stay inside that window. (-600, 300): the expiry is already past on our clock.
@pytest.mark.parametrize(("skew", "lifetime"), [(600.0, None), (-600.0, None), (-600.0, 300.0)])
def test_clock_skew_expiration_is_mapped_to_the_local_clock(
    skewed: Callable[[float], SkewedAws], skew: float, lifetime: float | None
) -> None:
    aws_side = skewed(skew)
    aws_side.emulator.max_lifetime = lifetime
    engine = sa.create_engine(aws_side.url, rs_iam_session=aws_side.session, poolclass=NullPool)
    assert hammer(engine, 30, f"IAM:{aws_side.principal}") == 0
    creds = sqlalchemy_rs_iam.connector_for(engine).cached_credentials()
    assert creds is not None
    # AWS's lifetime, started when it arrived here
    assert abs(creds.expiration - (time.time() + (lifetime or 900))) < 10
    assert len(aws_side.emulator.calls_for("GetCredentials")) == 1
    assert sqlalchemy_rs_iam.stats(engine)["login_retries"] == 0


@pytest.mark.parametrize("skew", [600.0, -840.0])
def test_clock_skew_short_credentials_no_refresh_storm_no_login_race(
    skewed: Callable[[float], SkewedAws], skew: float
) -> None:
    aws_side = skewed(skew)
    aws_side.emulator.max_lifetime = 5.0
    engine = sa.create_engine(aws_side.url, rs_iam_session=aws_side.session, poolclass=NullPool)
    # The window starts at the first fetch: on a loaded machine building the boto3 client can take seconds.
    failed = hammer(engine, 1, f"IAM:{aws_side.principal}")
    deadline = time.monotonic() + 5.5
    connects = 1
    while time.monotonic() < deadline:
        failed += hammer(engine, 1, f"IAM:{aws_side.principal}")
        connects += 1
    fetched = len(aws_side.emulator.calls_for("GetCredentials"))
    # Refresh-ahead at 75% of 5 s: about 5.5 / 3.75 + 1 = 2.5 fetches. Uncorrected skew would either refetch
    # about every second (expiry "past") or serve refused passwords (expiry 10 min "later").
    assert failed == 0 and connects > 30
    assert 2 <= fetched <= 3, fetched
    assert sqlalchemy_rs_iam.stats(engine)["login_retries"] == 0
    assert aws_side.front.logins_refused == 0


@pytest.mark.parametrize(("skew", "message"), [(-1200.0, "not yet current"), (1200.0, "Signature expired")])
def test_clock_skew_beyond_15_minutes_is_refused_as_aws_does(
    skewed: Callable[[float], SkewedAws], skew: float, message: str
) -> None:
    aws_side = skewed(skew)
    engine = sa.create_engine(aws_side.url, rs_iam_session=aws_side.session, poolclass=NullPool)
    with pytest.raises(sqlalchemy_rs_iam.AccessDeniedError) as err:
        current_user(engine)
    assert message in str(err.value)
    assert not aws_side.store.login_users()  # nothing was issued
    calls = aws_side.emulator.calls_for("GetWorkgroup") + aws_side.emulator.calls_for("GetCredentials")
    assert calls and all(c.error_code == "InvalidSignatureException" for c in calls)


# --- os.fork with a warm cache and locks held by another thread ----------------------------------------------------


def _wait_child(pid: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("forked child hung")


def test_fork_with_warm_cache_and_locks_held(rs: RedshiftStandIn) -> None:
    warm = sa.create_engine(rs.url())  # QueuePool, as under gunicorn --preload
    assert current_user(warm) == "IAM:alice-dev"
    cold = sa.create_engine(rs.url(aws_profile="rs-iam-b"), poolclass=NullPool)
    # A fetch for another key is in flight (its first AWS call hangs) when the fork happens.
    rs.emulator.faults.hang("GetCredentials", 2, n=1)
    in_flight = threading.Thread(target=lambda: hammer(cold, 1, "IAM:bob-ops"), daemon=True)
    in_flight.start()
    deadline = time.monotonic() + 10
    while api_calls(rs, "GetCredentials") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    # ... and another thread holds every lock of ours.
    holding, release = threading.Event(), threading.Event()
    clients = sqlalchemy_rs_iam.connector_for(warm).aws()

    def hold_locks() -> None:
        with REGISTRY.credentials._lock, REGISTRY.endpoints._lock, REGISTRY._lock, counters._lock, \
                clients._lock:  # fmt: skip
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold_locks, daemon=True)
    holder.start()
    assert holding.wait(10)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 70
        try:
            os.close(read_fd)
            warm.dispose(close=False)  # the parent's pooled sockets are not ours
            results = (current_user(warm), current_user(warm), current_user(cold))
            os.write(write_fd, repr(results).encode())
            code = 0 if results == ("IAM:alice-dev", "IAM:alice-dev", "IAM:bob-ops") else 71
        except BaseException:
            os.write(write_fd, traceback.format_exc().encode()[-4000:])
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        code = _wait_child(pid)
        with os.fdopen(read_fd, "rb") as pipe:
            report = pipe.read().decode(errors="replace")
    finally:
        release.set()
    assert code == 0, report
    in_flight.join(15)
    assert not in_flight.is_alive()
    # The child used the inherited warm credential (no call for alice) and, since the parent's fetch in flight
    # did not survive the fork, fetched bob's itself instead of waiting for it forever.
    callers = [c.caller for c in rs.emulator.calls_for("GetCredentials")]
    assert callers.count("alice-dev") == 1
    assert callers.count("bob-ops") == 2  # the parent's (hung, then answered) and the child's


_PRELOADED: list[sa.engine.Engine] = []


def _worker_init() -> None:
    _PRELOADED[0].dispose(close=False)


def _worker_user(_: int) -> str:
    return current_user(_PRELOADED[0])


def test_multiprocessing_fork_workers_share_the_warm_cache(rs: RedshiftStandIn) -> None:
    engine = sa.create_engine(rs.url())
    _PRELOADED[:] = [engine]
    try:
        assert current_user(engine) == "IAM:alice-dev"
        pool = multiprocessing.get_context("fork").Pool(2, initializer=_worker_init)
        try:
            got = pool.map_async(_worker_user, range(6), chunksize=1).get(60)
            pool.close()
            pool.join()
        finally:
            pool.terminate()
    finally:
        _PRELOADED.clear()
    assert got == ["IAM:alice-dev"] * 6
    assert api_calls(rs, "GetCredentials") == 1  # the workers used the credential fetched before the fork
