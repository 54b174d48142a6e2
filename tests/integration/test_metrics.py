"""OpenTelemetry metrics after real connects against the stand-in, read with the SDK's in-memory reader.

The emulator's call log is the truth for AWS calls (it records every HTTP request, botocore's retries
included: requests = ``rs_iam.aws.calls`` + ``rs_iam.aws.retries``); ``stats(engine)`` for the cache counters.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import api_calls, current_user
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy.pool import NullPool

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam import errors, metrics
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

pytestmark = pytest.mark.integration

WG = {"rs_iam.target": "workgroup analytics", "cloud.region": "us-east-1"}


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemoryMetricReader]:
    """Metrics go to an in-memory reader for this test (the previous recorder is restored after)."""
    monkeypatch.setattr(metrics, "ACTIVE", metrics.ACTIVE)
    monkeypatch.setattr(metrics, "_decided", metrics._decided)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.configure(provider)
    yield reader
    provider.shutdown()


def points(reader: InMemoryMetricReader) -> list[tuple[str, dict[str, Any], Any]]:
    """(instrument, attributes, data point) for every point collected now."""
    data = reader.get_metrics_data()
    found = []
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    found.append((m.name, dict(p.attributes or {}), p))
    return found


def total(found: list[tuple[str, dict[str, Any], Any]], name: str, **match: str) -> int:
    """Sum of a counter's points whose attributes include ``match`` (dots written as ``__``)."""
    want = {k.replace("__", "."): v for k, v in match.items()}
    return sum(p.value for n, a, p in found if n == name and want.items() <= a.items())


def test_aws_call_and_cache_counters_match_the_call_log_and_stats(
    rs: RedshiftStandIn, reader: InMemoryMetricReader
) -> None:
    rs.emulator.faults.throttle("GetCredentials", 1)  # absorbed by one botocore retry
    engine = sa.create_engine(rs.url(), poolclass=NullPool)
    for _ in range(5):
        assert current_user(engine) == "IAM:alice-dev"
    rs.emulator.revoke()  # next login refused: one login retry with a new credential
    assert current_user(engine) == "IAM:alice-dev"
    # A call that still fails: no retries left for the throttling.
    failing = sa.create_engine(rs.url(database="other_db", aws_max_attempts="1"), poolclass=NullPool)
    rs.emulator.faults.throttle("GetCredentials", 1)
    with pytest.raises(errors.ServiceUnavailableError):
        failing.connect()

    found = points(reader)
    calls = Counter(c.operation for c in rs.emulator.calls)
    for op in ("GetCredentials", "GetWorkgroup"):
        made = total(found, "rs_iam.aws.calls", aws__operation=op)
        assert made + total(found, "rs_iam.aws.retries", aws__operation=op) == calls[op], (op, calls)
    assert total(found, "rs_iam.aws.calls", aws__operation="GetCredentials", rs_iam__outcome="ok") == 2
    assert total(found, "rs_iam.aws.calls", rs_iam__outcome="throttled") == 1
    assert total(found, "rs_iam.aws.throttles", aws__operation="GetCredentials") == 1
    assert total(found, "rs_iam.aws.retries", aws__operation="GetCredentials") == 1
    durations = [p for n, _, p in found if n == "rs_iam.aws.duration"]
    assert sum(p.count for p in durations) == sum(1 for c in calls.elements()) - 1  # all but the retry
    assert all(p.min >= 0 for p in durations)

    stats = sqlalchemy_rs_iam.stats(engine)
    dev = {**WG, "db.namespace": rs.database}
    assert total(found, "rs_iam.cache.hits", **_kw(dev)) == stats["hits"] == 5  # all but the first fetch
    assert total(found, "rs_iam.login.retries", **_kw(dev)) == stats["login_retries"] == 1
    assert total(found, "rs_iam.credential.failures", db__namespace="other_db") == 1
    assert sqlalchemy_rs_iam.stats(failing)["failures"] == 1

    gauge = [(a, p.value) for n, a, p in found if n == "rs_iam.credential.time_to_stale"]
    assert [a for a, _ in gauge] == [dev]  # one cached credential; the failed key holds none
    assert 0 < gauge[0][1] <= 840  # 900 s credential: stale mark 60 s before expiry

    assert_no_secret_in_attributes(rs, found)


def test_refreshes_and_the_stale_gauge_follow_a_short_lived_credential(
    rs: RedshiftStandIn, reader: InMemoryMetricReader
) -> None:
    rs.emulator.max_lifetime = 2  # stale 0.5 s before expiry (policy: 25 % floor of the 1 s margin)
    engine = sa.create_engine(rs.url(refresh="lazy"), poolclass=NullPool)
    current_user(engine)
    before = [p.value for n, _, p in points(reader) if n == "rs_iam.credential.time_to_stale"]
    time.sleep(1.6)
    current_user(engine)  # stale: replaced on this thread
    found = points(reader)
    assert total(found, "rs_iam.credential.refreshes") == sqlalchemy_rs_iam.stats(engine)["refreshes"] == 1
    assert total(found, "rs_iam.aws.calls", aws__operation="GetCredentials") == api_calls(
        rs, "GetCredentials"
    )
    after = [p.value for n, _, p in found if n == "rs_iam.credential.time_to_stale"]
    assert len(before) == len(after) == 1 and 0 < before[0] <= 1.5 and 0 < after[0] <= 1.5
    assert_no_secret_in_attributes(rs, found)


def _kw(attributes: dict[str, str]) -> dict[str, str]:
    return {k.replace(".", "__"): v for k, v in attributes.items()}


def assert_no_secret_in_attributes(rs: RedshiftStandIn, found: list[tuple[str, dict[str, Any], Any]]) -> None:
    secrets = [rs.static_password, rs.store.role_password(rs.db_user)]
    for ident in rs.identities.values():
        secrets += [ident.access_key_id, ident.secret_access_key, ident.profile]
    for user in ("IAM:alice-dev", "IAM:bob-ops"):
        secrets += [c.password for c in rs.store.live(user)]
    values = {str(v) for _, a, _ in found for v in a.values()}
    assert values  # there is something to check
    leaked = [(s, v) for s in secrets for v in values if s and s in v]
    assert leaked == []
    assert not any(v.startswith("AKIA") or "default" in v for v in values)
