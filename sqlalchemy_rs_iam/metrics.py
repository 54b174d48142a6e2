"""OpenTelemetry metrics for operators, through ``opentelemetry-api`` when it is installed.

Install ``sqlalchemy-rs-iam[otel]`` and set a ``MeterProvider`` as usual; the plugin records into the global
one (or the one given to :func:`configure`). Without ``opentelemetry-api`` nothing is imported and nothing
is recorded: every hook is one test of :data:`ACTIVE` against ``None``. opentelemetry is imported when the
first engine or ``connect()`` configuration is made, never by ``import sqlalchemy_rs_iam``::

    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

    metrics.set_meter_provider(MeterProvider([PeriodicExportingMetricReader(ConsoleMetricExporter())]))
    engine = create_engine("redshift+redshift_connector:///dev?plugin=rs_iam&workgroup=analytics")

Instruments (meter ``sqlalchemy_rs_iam``):

==================================  ===============  =====================================================
``rs_iam.aws.calls``                counter          AWS API calls, by ``aws.operation`` and
                                                     ``rs_iam.outcome`` (``ok``, ``throttled``,
                                                     ``unavailable``, ``denied``, ``not_found``,
                                                     ``no_credentials``, ``error``)
``rs_iam.aws.retries``              counter          attempts botocore retried within those calls
``rs_iam.aws.throttles``            counter          calls that still failed with throttling
``rs_iam.aws.duration``             histogram (s)    latency of each call, retries included
``rs_iam.cache.hits``               counter          credentials served without an AWS call on the
                                                     caller's thread
``rs_iam.credential.refreshes``     counter          fetches that replaced a cached credential
``rs_iam.credential.failures``      counter          fetches that raised
``rs_iam.login.retries``            counter          refused logins retried with new credentials
``rs_iam.credential.time_to_stale`` gauge (s)        per cached credential: seconds until it is no
                                                     longer handed out (negative: stale)
==================================  ===============  =====================================================

Every instrument carries ``rs_iam.target`` (``workgroup analytics``, ``cluster etl-cluster``,
``custom_domain sql.example.com``) and ``cloud.region``; the cache instruments also ``db.namespace`` (the
database). Never a secret, an access key id, a profile or a role: the identity part of a cache key stays out.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .config import IamConfig, Target
from .errors import (
    AccessDeniedError,
    AwsCredentialsError,
    ResourceNotFoundError,
    ServiceUnavailableError,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

__all__ = ["ACTIVE", "Recorder", "configure", "disable", "enabled", "outcome_of", "target_attributes"]

Attributes = Mapping[str, str]

_STAT_INSTRUMENTS = {
    "hits": (
        "rs_iam.cache.hits",
        "{credential}",
        "credentials served without an AWS call on the caller's thread",
    ),
    "refreshes": ("rs_iam.credential.refreshes", "{fetch}", "fetches that replaced a cached credential"),
    "failures": ("rs_iam.credential.failures", "{fetch}", "credential fetches that raised"),
    "login_retries": ("rs_iam.login.retries", "{login}", "refused logins retried with new credentials"),
    "host_errors": (
        "rs_iam.host_cache.errors",
        "{error}",
        "host cache errors, each of which made an entry absent (the connect went on through AWS)",
    ),
}
_THROTTLE_CODES = ("RequestLimitExceeded", "TooManyRequestsException")


class Recorder:
    """The instruments of one meter. The hooks call :meth:`stat` and :meth:`aws_call`."""

    def __init__(self, provider: MeterProvider | None) -> None:
        from opentelemetry import metrics

        from . import __version__

        meter = (provider or metrics.get_meter_provider()).get_meter("sqlalchemy_rs_iam", __version__)
        self._stats = {
            name: meter.create_counter(instrument, unit=unit, description=text)
            for name, (instrument, unit, text) in _STAT_INSTRUMENTS.items()
        }
        self._calls = meter.create_counter("rs_iam.aws.calls", unit="{call}", description="AWS API calls")
        self._retries = meter.create_counter(
            "rs_iam.aws.retries", unit="{attempt}", description="attempts botocore retried within AWS calls"
        )
        self._throttles = meter.create_counter(
            "rs_iam.aws.throttles", unit="{call}", description="AWS calls that still failed with throttling"
        )
        self._duration = meter.create_histogram(
            "rs_iam.aws.duration", unit="s", description="latency of AWS API calls, retries included"
        )
        self._gauge = meter.create_observable_gauge(
            "rs_iam.credential.time_to_stale",
            callbacks=[_observe_time_to_stale],
            unit="s",
            description="seconds until a cached credential is no longer handed out (negative: stale)",
        )

    def stat(self, name: str, n: int, attributes: Attributes | None) -> None:
        counter = self._stats.get(name)  # api_calls: rs_iam.aws.calls has the operation and outcome
        if counter is not None:
            counter.add(n, attributes)

    def aws_call(
        self, operation: str, outcome: str, seconds: float, retries: int, target: Target, region: str
    ) -> None:
        attributes = {**target_attributes(target, region), "aws.operation": operation}
        self._duration.record(seconds, attributes)
        self._calls.add(1, {**attributes, "rs_iam.outcome": outcome})
        if retries:
            self._retries.add(retries, attributes)
        if outcome == "throttled":
            self._throttles.add(1, attributes)


#: What the hooks record into; ``None`` records nothing (opentelemetry missing, or :func:`disable`).
ACTIVE: Recorder | None = None
_decided = False  # the first connector made decides once whether opentelemetry is there
_lock = threading.Lock()


def configure(meter_provider: MeterProvider | None = None) -> None:
    """Record into ``meter_provider`` (default: OpenTelemetry's global one, also when it is set later).

    Raises ``ImportError`` without ``opentelemetry-api``. Tests use it with an in-memory reader::

        reader = InMemoryMetricReader()
        metrics.configure(MeterProvider(metric_readers=[reader]))
    """
    global ACTIVE, _decided
    with _lock:
        ACTIVE, _decided = Recorder(meter_provider), True


def disable() -> None:
    """Record nothing from now on (until :func:`configure`)."""
    global ACTIVE, _decided
    with _lock:
        ACTIVE, _decided = None, True


def enabled() -> bool:
    """True if the hooks record (opentelemetry is installed and metrics were not disabled)."""
    return ACTIVE is not None


def _activate() -> None:
    global ACTIVE, _decided
    with _lock:
        if _decided:
            return
        _decided = True
        try:
            ACTIVE = Recorder(None)
        except ImportError:  # no opentelemetry-api: the plugin works the same, recording nothing
            ACTIVE = None


def bind(stats: Any, config: IamConfig, region: str) -> None:
    """Give an engine's counters (:class:`~sqlalchemy_rs_iam.counters.CacheStats`) their attributes; the
    first call decides whether opentelemetry is there (imported here, not at package import)."""
    if not _decided:
        _activate()
    stats.attributes = {**target_attributes(config.target, region), "db.namespace": config.database}


@functools.lru_cache(maxsize=256)
def target_attributes(target: Target, region: str) -> Attributes:
    """``rs_iam.target`` and ``cloud.region`` of a target: names only.

    >>> target_attributes(Target(workgroup="analytics"), "us-east-1")
    {'rs_iam.target': 'workgroup analytics', 'cloud.region': 'us-east-1'}
    """
    if target.workgroup is not None:
        name = f"workgroup {target.workgroup}"
    elif target.cluster is not None:
        name = f"cluster {target.cluster}"
    else:
        name = f"custom_domain {target.custom_domain}"
    return {"rs_iam.target": name, "cloud.region": region}


def outcome_of(error: BaseException) -> str:
    """The ``rs_iam.outcome`` of an AWS call that raised one of this package's errors."""
    if isinstance(error, ServiceUnavailableError):
        code = getattr(error, "code", None) or ""
        return "throttled" if "Throttl" in code or code in _THROTTLE_CODES else "unavailable"
    if isinstance(error, AccessDeniedError):
        return "denied"
    if isinstance(error, ResourceNotFoundError):
        return "not_found"
    if isinstance(error, AwsCredentialsError):
        return "no_credentials"
    return "error"


def _retry_attempts(response: Any) -> int:
    try:
        return int(response["ResponseMetadata"]["RetryAttempts"])
    except (KeyError, TypeError, ValueError):
        return 0


class _Caller(Protocol):
    region: str


_C = TypeVar("_C", bound=_Caller)
AwsCall = Callable[[_C, str, str, Mapping[str, Any], Target], Any]


def timed_aws_call(call: AwsCall[_C]) -> AwsCall[_C]:
    """Decorates ``AwsClients._call``: latency, outcome and retries of each AWS call when metrics are on."""

    @functools.wraps(call)
    def timed(self: _C, service: str, operation: str, params: Mapping[str, Any], target: Target) -> Any:
        recorder = ACTIVE
        if recorder is None:
            return call(self, service, operation, params, target)
        started = time.perf_counter()
        try:
            response = call(self, service, operation, params, target)
        except Exception as exc:
            cause = getattr(exc.__cause__, "response", None)  # botocore's ClientError
            recorder.aws_call(
                operation, outcome_of(exc), time.perf_counter() - started, _retry_attempts(cause), target,
                self.region,
            )  # fmt: skip
            raise
        recorder.aws_call(
            operation, "ok", time.perf_counter() - started, _retry_attempts(response), target, self.region
        )
        return response

    return timed


def _observe_time_to_stale(options: CallbackOptions) -> Iterable[Observation]:
    """One observation per target, region and database: the soonest of their cached credentials."""
    from opentelemetry.metrics import Observation

    # Looked up, not imported: the registry imports the connector, which imports this module.
    registry: Any = sys.modules.get(f"{__package__}.registry")
    if registry is None:  # never loaded: nothing is cached
        return []
    soonest: dict[tuple[tuple[str, str], ...], float] = {}
    for key, left in registry.REGISTRY.credentials.time_left():
        attributes = _key_attributes(key)
        if attributes is not None:
            group = tuple(sorted(attributes.items()))
            soonest[group] = min(left, soonest.get(group, left))
    return [Observation(left, dict(group)) for group, left in soonest.items()]


def _key_attributes(key: Hashable) -> Attributes | None:
    scope, region = getattr(key, "scope", None), getattr(key, "region", None)
    if not isinstance(scope, IamConfig) or not isinstance(region, str):
        return None
    return {**target_attributes(scope.target, region), "db.namespace": scope.database}
