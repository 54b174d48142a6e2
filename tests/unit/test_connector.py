"""IamConnector against fake AWS clients and a fake driver: recovery policy, budgets, identity switching."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable

import pytest
from together import run_together

from sqlalchemy_rs_iam.cache import CredentialCache, TtlCache
from sqlalchemy_rs_iam.config import IamConfig, Target, parse_config
from sqlalchemy_rs_iam.connector import CacheKey, IamConnector, classify_connect_error
from sqlalchemy_rs_iam.credentials import DbCredentials
from sqlalchemy_rs_iam.identity import Identity
from sqlalchemy_rs_iam.policy import ForcedRefreshBudget


class FakeAws:
    """Issues a new password per call for the identity it signs as; resolves to ``self.address``."""

    def __init__(self, who: str, log: list[tuple[str, str]]) -> None:
        self.who, self.log = who, log
        self.address = ("wg.example", 5439)
        self.lock = threading.Lock()

    def fetch_credentials(self, config: IamConfig) -> DbCredentials:
        with self.lock:
            self.log.append(("GetCredentials", self.who))
            n = len(self.log)
        now = time.time()
        return DbCredentials(f"IAM:{self.who}", f"pw-{self.who}-{n}", now + 900, None, now)

    def resolve_endpoint(self, target: Target) -> tuple[str, int]:
        with self.lock:
            self.log.append(("GetWorkgroup", self.who))
        return self.address


class World:
    """A connector wired to fakes; ``who`` is the identity the 'AWS configuration' names right now."""

    def __init__(self, **params: str) -> None:
        self.who = "alice"
        self.log: list[tuple[str, str]] = []
        self.aws: dict[str, FakeAws] = {}
        self.credentials: CredentialCache[CacheKey] = CredentialCache(spawn=lambda fn: fn())
        self.endpoints: TtlCache[CacheKey, tuple[str, int]] = TtlCache()
        self.budget: ForcedRefreshBudget[Hashable] = ForcedRefreshBudget(clock=time.monotonic)
        self.config = parse_config(
            {"workgroup": "analytics", "region": "us-east-1", **params}, database="dev"
        )

    def identify(self) -> Identity:
        return Identity(f"test:{self.who}", self.who, "us-east-1")

    def clients(self, who: Identity) -> FakeAws:
        return self.aws.setdefault(who.label, FakeAws(who.label, self.log))

    def connector(self) -> IamConnector:
        return IamConnector(
            self.config,
            identify=self.identify,
            clients=self.clients,
            credentials=self.credentials,
            endpoints=self.endpoints,
            budget=self.budget,
        )

    def calls(self, operation: str) -> int:
        return sum(1 for op, _ in self.log if op == operation)


class AuthFailed(Exception):
    pgcode = "28P01"


class Driver:
    """A fake driver: refuses passwords in ``refused``, and hosts in ``dead``."""

    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.dead: set[str] = set()
        self.logins: list[tuple[str, str]] = []

    def __call__(self, host: str, port: int, creds: DbCredentials) -> tuple[str, str]:
        if host in self.dead:
            raise ConnectionRefusedError(111, f"could not connect to {host}")
        if creds.password in self.refused:
            raise AuthFailed(f'password authentication failed for user "{creds.user}"')
        self.logins.append((host, creds.user))
        return host, creds.user


# --- classification -----------------------------------------------------------------------------------------


class Sqlstate(Exception):
    def __init__(self, code: str) -> None:
        super().__init__("x")
        self.sqlstate = code


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (AuthFailed("x"), "auth"),
        (Sqlstate("28000"), "auth"),
        (Exception({"S": "FATAL", "C": "28P01", "M": "password authentication failed"}), "auth"),
        (Exception("FATAL: password authentication failed for user x"), "auth"),
        (ConnectionRefusedError(111, "refused"), "network"),
        (Exception("could not translate host name 'x'"), "network"),
        (Exception("timeout expired"), "network"),
        (Sqlstate("3D000"), None),  # database does not exist: not ours to fix
        (Exception("permission denied for table sales"), None),
    ],
)
def test_classify_connect_error(exc: BaseException, kind: str | None) -> None:
    assert classify_connect_error(exc) == kind


def test_classify_reads_an_oserror_cause() -> None:
    outer = RuntimeError("driver wrapper")
    outer.__cause__ = TimeoutError()
    assert classify_connect_error(outer) == "network"


# --- the connect path ---------------------------------------------------------------------------------------


def test_connect_resolves_fetches_once_and_serves_from_cache() -> None:
    world, driver = World(), Driver()
    connector = world.connector()
    for _ in range(5):
        assert connector.connect(driver) == ("wg.example", "IAM:alice")
    assert (world.calls("GetCredentials"), world.calls("GetWorkgroup")) == (1, 1)
    assert connector.stats.snapshot()["hits"] == 4


def test_refused_login_is_retried_exactly_once_with_new_credentials() -> None:
    world, driver = World(), Driver()
    connector = world.connector()
    first = connector.credentials()
    driver.refused.add(first.password)
    assert connector.connect(driver) == ("wg.example", "IAM:alice")
    assert world.calls("GetCredentials") == 2
    assert connector.stats.login_retries == 1
    # Both refused: the second refusal propagates (no third attempt).
    driver.refused.add(connector.credentials().password)
    world.aws["alice"].fetch_credentials = lambda config: first  # type: ignore[method-assign]
    with pytest.raises(AuthFailed):
        connector.connect(driver)
    assert connector.stats.login_retries == 2


def test_refused_logins_are_bounded_by_the_budget_and_fail_fast() -> None:
    world, driver = World(), Driver()
    connector = world.connector()

    class AlwaysRefuse(Driver):
        def __call__(self, host: str, port: int, creds: DbCredentials) -> tuple[str, str]:
            raise AuthFailed("password authentication failed")

    failures = 0
    for _ in range(200):
        try:
            connector.connect(AlwaysRefuse())
        except AuthFailed:
            failures += 1
    assert failures == 200  # the real database error every time
    assert world.calls("GetCredentials") <= 1 + 2  # the first fetch, then the budget's burst of two
    del driver


def test_concurrent_refusals_of_one_password_cost_one_refetch() -> None:
    world, driver = World(), Driver()
    connector = world.connector()
    driver.refused.add(connector.credentials().password)
    results, errors = run_together(8, lambda: connector.connect(driver))
    assert errors == [] and len(results) == 8
    assert world.calls("GetCredentials") == 2


def test_dead_host_is_looked_up_again_once_and_followed_when_it_moved() -> None:
    world, driver = World(), Driver()
    connector = world.connector()
    connector.endpoint()
    driver.dead.add("wg.example")
    world.aws["alice"].address = ("wg-new.example", 5439)
    assert connector.connect(driver) == ("wg-new.example", "IAM:alice")
    assert world.calls("GetWorkgroup") == 2


def test_dead_host_that_did_not_move_raises_the_network_error_and_floods_nothing() -> None:
    world, driver = World(), Driver()
    connector = world.connector()
    driver.dead.add("wg.example")
    errors = 0
    for _ in range(500):
        try:
            connector.connect(driver)
        except ConnectionRefusedError:
            errors += 1
    assert errors == 500
    assert world.calls("GetWorkgroup") <= 1 + 2
    assert world.calls("GetCredentials") == 1


def test_explicit_host_is_never_looked_up() -> None:
    world, driver = World(), Driver()
    world.config = parse_config(
        {"workgroup": "analytics", "region": "us-east-1"}, database="dev", host="db.internal", port=5440
    )
    connector = world.connector()
    assert not connector.needs_lookup
    driver.dead.add("db.internal")
    with pytest.raises(ConnectionRefusedError):
        connector.connect(driver)
    assert world.calls("GetWorkgroup") == 0


def test_call_blocking_is_used_only_when_the_caches_cannot_answer() -> None:
    world, driver = World(), Driver()
    connector = world.connector()
    hops: list[object] = []

    def call_blocking(fn):  # type: ignore[no-untyped-def]
        hops.append(fn)
        return fn()

    connector.connect(driver, call_blocking=call_blocking)
    assert len(hops) == 1  # cold: endpoint and credentials together, in one hop
    connector.connect(driver, call_blocking=call_blocking)
    assert len(hops) == 1  # warm: no thread hop at all


def test_cold_connect_looks_up_the_endpoint_while_fetching_credentials() -> None:
    world, driver = World(), Driver()
    both_running = threading.Barrier(2, timeout=5)  # breaks (and fails the test) if the calls run in a row
    aws = world.clients(world.identify())
    fetch, resolve = aws.fetch_credentials, aws.resolve_endpoint

    def slow_fetch(config: IamConfig) -> DbCredentials:
        both_running.wait()
        return fetch(config)

    def slow_resolve(target: Target) -> tuple[str, int]:
        both_running.wait()
        return resolve(target)

    aws.fetch_credentials, aws.resolve_endpoint = slow_fetch, slow_resolve  # type: ignore[method-assign]
    assert world.connector().connect(driver) == ("wg.example", "IAM:alice")


def test_a_failed_lookup_during_a_cold_connect_is_raised_to_the_caller() -> None:
    world, driver = World(), Driver()
    aws = world.clients(world.identify())

    def broken(target: Target) -> tuple[str, int]:
        raise LookupError("no such workgroup")

    aws.resolve_endpoint = broken  # type: ignore[method-assign]
    with pytest.raises(LookupError):
        world.connector().connect(driver)

    def denied(config: IamConfig) -> DbCredentials:
        raise PermissionError("denied")

    aws.fetch_credentials = denied  # type: ignore[method-assign]
    with pytest.raises(LookupError):  # both failed: the lookup's error, as when the lookup ran first
        world.connector().connect(driver)


# --- identity -----------------------------------------------------------------------------------------------


def test_a_warm_entry_keeps_its_identity_a_cold_one_sees_the_new_one() -> None:
    world, driver = World(), Driver()
    connector = world.connector()
    assert connector.connect(driver)[1] == "IAM:alice"
    world.who = "bob"  # the process's AWS configuration changes
    assert connector.connect(driver)[1] == "IAM:alice"  # warm: served as cached, signed by alice
    connector.invalidate()  # the entry goes cold
    assert connector.connect(driver)[1] == "IAM:bob"
    assert ("GetCredentials", "bob") in world.log


def test_a_new_connector_and_recheck_identity_see_the_change_at_once() -> None:
    world, driver = World(), Driver()
    first = world.connector()
    first.connect(driver)
    world.who = "bob"
    assert world.connector().connect(driver)[1] == "IAM:bob"
    assert first.recheck_identity().label == "bob"
    assert first.connect(driver)[1] == "IAM:bob"
    world.who = "alice"
    assert world.connector().connect(driver)[1] == "IAM:alice"  # alice's entry is still warm: no call
    assert world.log.count(("GetCredentials", "alice")) == 1


def test_keys_differ_by_identity_and_by_any_config_field_but_not_by_host() -> None:
    world = World()
    a = world.connector().credential_key
    world.who = "bob"
    b = world.connector().credential_key
    assert a != b and hash(a) != hash(b)
    world.who = "alice"
    assert world.connector().credential_key == a
    world.config = parse_config(
        {"workgroup": "analytics", "region": "us-east-1", "aws_endpoint_url": "http://127.0.0.1:1"},
        database="dev",
    )
    assert world.connector().credential_key != a
    world.config = parse_config(
        {"workgroup": "analytics", "region": "us-east-1"}, database="dev", host="wg.example", port=5439
    )
    assert world.connector().credential_key == a  # where to connect does not change what AWS issues


def test_a_credential_that_expired_in_flight_is_fetched_again_once():
    world = World()
    aws = world.clients(world.identify())
    real = aws.fetch_credentials
    stale_first = [True]

    def answered_while_frozen(config: IamConfig) -> DbCredentials:
        creds = real(config)
        if stale_first.pop() if stale_first else False:  # issued, then read 1000 s later: expired
            return DbCredentials(creds.user, creds.password, creds.fetched_at - 100, None, creds.fetched_at)
        return creds

    aws.fetch_credentials = answered_while_frozen  # type: ignore[method-assign]
    creds = world.connector().credentials()
    assert creds.expiration > time.time() + 800
    assert world.calls("GetCredentials") == 2
