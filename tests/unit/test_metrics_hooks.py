"""The metrics module: attributes, outcomes, the AWS-call hook, and the package without opentelemetry.

No PostgreSQL or HTTP: the hooks are driven with fakes, and read with the SDK's in-memory reader.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "opentelemetry.sdk", reason="the metrics hooks are read with opentelemetry-sdk ([test] extra)"
)

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sqlalchemy_rs_iam import errors, metrics
from sqlalchemy_rs_iam.config import Target, parse_config
from sqlalchemy_rs_iam.counters import CacheStats

ROOT = Path(__file__).resolve().parents[2]


def run_python(*parts: str) -> str:
    """Run the parts (each dedented on its own) as one script in a fresh interpreter; its stdout."""
    code = "\n".join(textwrap.dedent(part) for part in parts)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# A connector on fake AWS, made and used three times: the package's whole path short of a driver.
FAKE_CONNECTOR = """
    import time
    from sqlalchemy_rs_iam.cache import CredentialCache, TtlCache
    from sqlalchemy_rs_iam.config import parse_config
    from sqlalchemy_rs_iam.connector import IamConnector
    from sqlalchemy_rs_iam.credentials import DbCredentials
    from sqlalchemy_rs_iam.identity import Identity
    from sqlalchemy_rs_iam.policy import ForcedRefreshBudget

    class FakeAws:
        def fetch_credentials(self, config):
            now = time.time()
            return DbCredentials("IAM:a", "pw", now + 900, None, now)

    connector = IamConnector(
        parse_config({"workgroup": "analytics", "region": "us-east-1"}, database="dev"),
        identify=lambda: Identity("test", "test", "us-east-1"),
        clients=lambda who: FakeAws(),
        credentials=CredentialCache(), endpoints=TtlCache(),
        budget=ForcedRefreshBudget(clock=time.monotonic),
    )
    for _ in range(3):
        connector.credentials()
"""


def test_without_opentelemetry_the_package_works_and_records_nothing():
    out = run_python(
        """
        import sys

        class NoOpenTelemetry:  # as if opentelemetry-api were not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "opentelemetry":
                    raise ModuleNotFoundError(f"No module named {name!r}")

        sys.meta_path.insert(0, NoOpenTelemetry())
        """,
        FAKE_CONNECTOR,
        """
from sqlalchemy_rs_iam import metrics
assert metrics.ACTIVE is None and not metrics.enabled()
assert not [m for m in sys.modules if m.startswith("opentelemetry")]
print(connector.stats.snapshot())
""",
    )
    assert "'api_calls': 1, 'hits': 2" in out


def test_importing_the_package_does_not_import_opentelemetry_making_a_connector_does():
    out = run_python(
        """
        import sys
        import sqlalchemy_rs_iam, sqlalchemy_rs_iam.plugin, sqlalchemy_rs_iam.registry, sqlalchemy_rs_iam.aws
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """,
        FAKE_CONNECTOR,
        """
from sqlalchemy_rs_iam import metrics
print(metrics.enabled(), "opentelemetry.metrics" in sys.modules)
""",
    )
    assert out.splitlines() == ["[]", "True True"]


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemoryMetricReader]:
    monkeypatch.setattr(metrics, "ACTIVE", metrics.ACTIVE)
    monkeypatch.setattr(metrics, "_decided", metrics._decided)
    reader = InMemoryMetricReader()
    metrics.configure(MeterProvider(metric_readers=[reader]))
    yield reader


def collected(reader: InMemoryMetricReader) -> dict[tuple[str, frozenset[tuple[str, Any]]], Any]:
    data = reader.get_metrics_data()
    out = {}
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    out[(m.name, frozenset((p.attributes or {}).items()))] = p
    return out


class FakeClients:
    region = "eu-west-1"

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    @metrics.timed_aws_call
    def _call(self, service: str, operation: str, params: Any, target: Target) -> Any:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def unavailable(code: str) -> errors.ServiceUnavailableError:
    return errors.ServiceUnavailableError(
        "x", operation="GetCredentials", resource="r", region="eu-west-1", code=code
    )


def test_aws_call_hook_records_outcome_latency_retries_and_throttles(reader):
    wg = parse_config({"workgroup": "analytics"}, database="dev").target
    ok = FakeClients({"ResponseMetadata": {"RetryAttempts": 2}})
    assert ok._call("redshift-serverless", "GetCredentials", {}, wg) == ok.answer
    for answer in (unavailable("ThrottlingException"), unavailable("InternalServerError")):
        with pytest.raises(errors.ServiceUnavailableError):
            FakeClients(answer)._call("redshift-serverless", "GetCredentials", {}, wg)
    base = {
        "rs_iam.target": "workgroup analytics",
        "cloud.region": "eu-west-1",
        "aws.operation": "GetCredentials",
    }
    got = collected(reader)

    def value(name: str, **extra: str) -> Any:
        return got[(name, frozenset({**base, **extra}.items()))]

    assert value("rs_iam.aws.calls", **{"rs_iam.outcome": "ok"}).value == 1
    assert value("rs_iam.aws.calls", **{"rs_iam.outcome": "throttled"}).value == 1
    assert value("rs_iam.aws.calls", **{"rs_iam.outcome": "unavailable"}).value == 1
    assert value("rs_iam.aws.retries").value == 2
    assert value("rs_iam.aws.throttles").value == 1
    assert value("rs_iam.aws.duration").count == 3


def test_stats_hook_records_with_the_owners_attributes_and_skips_api_calls(reader):
    stats = CacheStats()
    metrics.bind(stats, parse_config({"cluster": "etl", "region": "us-west-2"}, database="dw"), "us-west-2")
    for name in ("hits", "hits", "refreshes", "failures", "login_retries", "api_calls"):
        stats.incr(name)  # type: ignore[arg-type]
    attrs = frozenset(
        {"rs_iam.target": "cluster etl", "cloud.region": "us-west-2", "db.namespace": "dw"}.items()
    )
    got = {name: p.value for (name, a), p in collected(reader).items() if a == attrs}
    assert got == {
        "rs_iam.cache.hits": 2,
        "rs_iam.credential.refreshes": 1,
        "rs_iam.credential.failures": 1,
        "rs_iam.login.retries": 1,
    }
    assert stats.snapshot()["api_calls"] == 1  # stats(engine) is unchanged


@pytest.mark.parametrize(
    "error,outcome",
    [
        (unavailable("Throttling"), "throttled"),
        (unavailable("RequestLimitExceeded"), "throttled"),
        (unavailable(""), "unavailable"),
        (errors.AccessDeniedError("x", operation="o", resource="r", region="g"), "denied"),
        (errors.ResourceNotFoundError("x", operation="o", resource="r", region="g"), "not_found"),
        (errors.AwsCredentialsError("x", operation="o", resource="r", region="g"), "no_credentials"),
        (errors.AwsValidationError("x", operation="o", resource="r", region="g"), "error"),
    ],
)
def test_outcomes(error, outcome):
    assert metrics.outcome_of(error) == outcome


def test_target_attributes_name_the_target_only():
    domain = parse_config({"custom_domain": "sql.example.com", "region": "us-east-1"}, database="dev").target
    assert metrics.target_attributes(domain, "us-east-1") == {
        "rs_iam.target": "custom_domain sql.example.com",
        "cloud.region": "us-east-1",
    }


def test_disable_turns_every_hook_off(monkeypatch):
    monkeypatch.setattr(metrics, "ACTIVE", metrics.ACTIVE)
    monkeypatch.setattr(metrics, "_decided", metrics._decided)
    metrics.disable()
    assert not metrics.enabled()
    assert FakeClients("x")._call("s", "GetCredentials", {}, Target.__new__(Target)) == "x"  # no recorder
