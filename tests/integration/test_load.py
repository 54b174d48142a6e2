"""Bounded load: 64 threads hammering checkouts on pools of mixed sizes while credentials live a few seconds
and the AWS emulator throttles, fails and slows down at random.

The driver is ``benchmarks/soak.py`` (``run_load``); ``python benchmarks/soak.py --minutes N`` runs it longer.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

from sqlalchemy_rs_iam.registry import REGISTRY
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _soak() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"
    spec = importlib.util.spec_from_file_location("rs_iam_soak", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_64_threads_mixed_pools_short_credentials_random_faults(
    rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str]
) -> None:
    soak = _soak()
    baseline = threading.active_count()
    report = soak.run_load(rs_standin_clean, seconds=8.0, threads=64, lifetime=5.0, recycle=1.5, seed=7)

    # Zero failed connects: every fetch succeeded within botocore's retries, so a credential could always be
    # served.
    assert report.failures == []
    assert report.connects > 500
    assert report.faults_injected >= 2  # the faults really happened ...
    assert sum(1 for c in rs_standin_clean.emulator.calls if c.error_code) >= 2  # ... and were answered
    # About one credential fetch per refresh window (75% of 5 s) per key: 8 s -> ~3 each, whatever the
    # number of threads, pools and connects.
    assert set(report.fetches) == {
        "GetCredentials as alice-dev", "GetCredentials as bob-ops", "GetClusterCredentials as alice-dev",
    }  # fmt: skip
    for key, n in report.fetches.items():
        assert 2 <= n <= report.ideal_fetches * 1.35 + 1, (key, n, report.ideal_fetches)
    assert len(REGISTRY.credentials) == 3  # one cache entry per key, nothing else accumulates
    # No growth: memory (generous), and no thread of ours left behind.
    assert report.rss_growth < 64 << 20
    assert report.leftover_threads == []
    assert report.problems() == []
    assert threading.active_count() <= baseline + 4 * 16 + 8  # at most the emulator's keep-alive handlers
