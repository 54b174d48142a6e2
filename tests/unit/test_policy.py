"""Unit tests of the pure time policy: refresh point, stale mark, clock-skew mapping, forced-refresh budget."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlalchemy_rs_iam import policy
from sqlalchemy_rs_iam.credentials import DbCredentials
from sqlalchemy_rs_iam.policy import ForcedRefreshBudget, RefreshPolicy, local_expiration, local_times

T0 = 1_700_000_000.0
POLICY = RefreshPolicy()


def creds(
    fetched_at: float = T0, lifetime: float = 900.0, next_refresh: float | None = None
) -> DbCredentials:
    return DbCredentials(
        user="u",
        password="p",
        expiration=fetched_at + lifetime,
        next_refresh=next_refresh,
        fetched_at=fetched_at,
    )


# --- RefreshPolicy ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "margin", "refresh_after"),
    [(3.0, 0.75, 2.25), (60.0, 6.0, 45.0), (900.0, 60.0, 675.0), (3600.0, 60.0, 2700.0)],
)
def test_margin_and_refresh_scale_with_lifetime(lifetime, margin, refresh_after):
    c = creds(lifetime=lifetime)
    assert POLICY.margin(c) == pytest.approx(margin)
    assert POLICY.stale_at(c) == pytest.approx(T0 + lifetime - margin)
    assert POLICY.refresh_at(c) == pytest.approx(T0 + refresh_after)


@pytest.mark.parametrize(
    ("next_refresh_in", "expected"),
    [
        (300.0, 300.0),  # earlier than 75%: honoured
        (100.0, 225.0),  # earlier than 25%: clamped to 25% of the lifetime
        (-5000.0, 225.0),  # already in the past on our clock: clamped, no refresh storm
        (800.0, 675.0),  # later than 75%: the 75% point wins
        (None, 675.0),
    ],
)
def test_next_refresh_is_honoured_and_clamped(next_refresh_in, expected):
    nr = None if next_refresh_in is None else T0 + next_refresh_in
    assert POLICY.refresh_at(creds(next_refresh=nr)) == pytest.approx(T0 + expected)


def test_policy_rejects_inconsistent_fractions():
    with pytest.raises(ValueError):
        RefreshPolicy(refresh_fraction=0.95)
    with pytest.raises(ValueError):
        RefreshPolicy(earliest_refresh_fraction=0.8)
    with pytest.raises(ValueError):
        RefreshPolicy(min_margin=100.0)


@settings(max_examples=500, deadline=None)
@given(
    fetched_at=st.floats(0.0, 4e9),
    lifetime=st.floats(1e-3, 1e6),
    next_refresh=st.one_of(st.none(), st.floats(-1e7, 1e7)),
)
def test_policy_invariants(fetched_at, lifetime, next_refresh):
    c = DbCredentials(
        user="u",
        password="p",
        fetched_at=fetched_at,
        expiration=fetched_at + lifetime,
        next_refresh=None if next_refresh is None else fetched_at + next_refresh,
    )
    life = c.lifetime
    refresh, stale = POLICY.refresh_at(c), POLICY.stale_at(c)
    assert c.fetched_at <= refresh <= stale < c.expiration
    assert refresh >= c.fetched_at + 0.25 * life - 1e-6
    assert 0.5 <= POLICY.refetch_interval(c) <= 1.0


# --- local_expiration (clock skew) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expiration", "server_date", "requested", "expected"),
    [
        (T0 + 7200 + 900, T0 + 7200, 900.0, T0 + 900),  # AWS 2 h ahead, Date known: mapped onto our clock
        (T0 - 7200 + 900, T0 - 7200, 900.0, T0 + 900),  # AWS 2 h behind, Date known
        (T0 + 900.4, T0 - 0.6, 900.0, T0 + 900),  # Date truncated to seconds: never longer than requested
        (T0 + 3000, T0 + 2000, None, T0 + 1000),  # Date known, duration unknown: AWS's lifetime kept
        (T0 + 850, None, 900.0, T0 + 850),  # no Date, plausible (small skew): trusted as is
        (T0 - 100, None, 900.0, T0 + 900),  # no Date, already expired on our clock: assume what we asked
        (T0 + 200, None, 900.0, T0 + 900),  # no Date, far shorter than asked: our clock is ahead
        (T0 + 5000, None, 900.0, T0 + 900),  # no Date, our clock behind AWS's: capped at what we asked
        (T0 - 100, None, None, T0 - 100),  # nothing to go on: unchanged (the cache copes, see below)
    ],
)
def test_local_expiration(expiration, server_date, requested, expected):
    got = local_expiration(expiration, server_date=server_date, received_at=T0, requested_duration=requested)
    assert got == pytest.approx(expected)


@given(
    expiration=st.floats(-1e5, 1e5),
    server_date=st.one_of(st.none(), st.floats(-1e5, 1e5)),
    requested=st.floats(900, 3600),
)
def test_local_expiration_never_exceeds_requested_duration(expiration, server_date, requested):
    got = local_expiration(T0 + expiration, server_date=None if server_date is None else T0 + server_date,
                           received_at=T0, requested_duration=requested)  # fmt: skip
    assert got <= T0 + requested
    if server_date is None:
        assert got - T0 >= 0.5 * requested  # never implausibly short without a Date to prove it


# --- local_times: the skew arithmetic applied to a response -------------------------------------------------------


def test_local_times_keep_aws_times_when_clocks_agree():
    exp, nxt = local_times(T0 + 900, T0 + 600, server_date=T0 + 1.5, received_at=T0, requested_duration=900.0)
    assert (exp, nxt) == (T0 + 900, T0 + 600)


@pytest.mark.parametrize("skew", [-1200.0, -600.0, -3.0, 3.0, 600.0, 1200.0])
def test_local_times_shift_expiration_and_next_refresh_by_the_same_skew(skew):
    # AWS's clock is `skew` seconds ahead of ours; it issued a 900 s credential with a refresh hint at 600 s.
    exp, nxt = local_times(
        T0 + skew + 900, T0 + skew + 600, server_date=T0 + skew, received_at=T0, requested_duration=900.0
    )
    assert exp == pytest.approx(T0 + 900)
    assert nxt == pytest.approx(T0 + 600)


def test_local_times_a_date_between_sending_and_receiving_is_not_skew():
    # Sent at T0, frozen 600 s while AWS answered at T0 + 1 (a 900 s credential): read at T0 + 600.
    late = {"server_date": T0 + 1, "received_at": T0 + 600, "requested_duration": 900.0}
    assert local_times(T0 + 901, None, sent_at=T0, **late) == (T0 + 901, None)  # its real expiry
    assert local_times(T0 + 901, None, **late)[0] == pytest.approx(T0 + 600 + 900)  # without sent_at: skew


def test_local_times_without_next_refresh():
    assert local_times(T0 + 900, None, server_date=None, received_at=T0, requested_duration=900.0) == (
        T0 + 900,
        None,
    )


@settings(max_examples=300, deadline=None)
@given(
    skew=st.floats(-7200, 7200),
    lifetime=st.floats(1, 3600),
    requested=st.floats(900, 3600),
    with_date=st.booleans(),
)
def test_local_times_never_outlive_the_requested_duration(skew, lifetime, requested, with_date):
    exp, _ = local_times(
        T0 + skew + lifetime,
        None,
        server_date=T0 + skew if with_date else None,
        received_at=T0,
        requested_duration=requested,
    )
    assert exp <= T0 + requested + 1e-6


# --- the forced-refresh budget ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_budget_burst_then_one_per_interval():
    clock = Clock()
    budget: ForcedRefreshBudget[str] = ForcedRefreshBudget(clock=clock, burst=2, interval=30.0)
    assert [budget.take("k") for _ in range(5)] == [True, True, False, False, False]
    assert budget.next_token_in("k") == pytest.approx(30.0)
    clock.t = 29.9
    assert not budget.take("k")
    clock.t = 30.0
    assert budget.take("k")
    assert not budget.take("k")
    assert budget.take("other")  # keys are independent


def test_budget_bounds_forced_refreshes_per_minute_whatever_the_rate():
    clock = Clock()
    budget: ForcedRefreshBudget[str] = ForcedRefreshBudget(clock=clock)
    allowed = 0
    for i in range(60_000):  # 1,000 attempts per second for a minute
        clock.t = i / 1000
        allowed += budget.take("k")
    assert allowed == 2 + 1  # the burst, then one per 30 s (the next would be due at 60 s)


def test_budget_is_bounded_and_refills_to_burst_only():
    clock = Clock()
    budget: ForcedRefreshBudget[int] = ForcedRefreshBudget(clock=clock, max_keys=10)
    for key in range(1000):
        budget.take(key)
    assert len(budget._buckets) == 10
    budget.take("k")
    clock.t = 10_000.0  # a long quiet time refills to the burst, not beyond
    assert [budget.take("k") for _ in range(3)] == [True, True, False]


def test_budget_rejects_nonsense():
    with pytest.raises(ValueError):
        ForcedRefreshBudget(clock=Clock(), burst=0)
    with pytest.raises(ValueError):
        ForcedRefreshBudget(clock=Clock(), interval=0)


# --- the module stays pure and small -----------------------------------------------------------------------------


def test_policy_module_is_pure_and_small():
    path = Path(policy.__file__)
    source = path.read_text()
    assert len(source.splitlines()) < 300
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"boto3", "botocore", "sqlalchemy", "socket", "urllib", "http", "requests"}
