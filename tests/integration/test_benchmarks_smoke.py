"""The benchmark harness still runs end to end (minimal sizes) and its numbers say what the design promises.

Speed is not asserted here (that is what the benchmark's own report is for); only counts that do not depend
on the machine: single-flight on cold connects, a bounded cache, and a package import that loads no boto3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sqlalchemy_rs_iam.testing.postgres import DSN_ENV, docker_available, find_postgres_bindir

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("matplotlib")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (os.environ.get(DSN_ENV) or find_postgres_bindir() is not None or docker_available()),
        reason="no PostgreSQL for the Redshift stand-in",
    ),
]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--silent", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "raw" / "results.json").read_text())


def test_writes_report_and_plot(smoke_run: tuple[Path, dict]) -> None:
    out, _ = smoke_run
    report = (out / "RESULTS.md").read_text()
    for heading in (
        "## 1. Per-connect cost",
        "## 2. AWS API calls",
        "## 3. Latency at rollover",
        "## 4. Import",
    ):
        assert heading in report
    for contender in (
        "redshift_connector iam=True",
        "hand-rolled TTL cache",
        "sqlalchemy-rs-iam",
        "GetCredentials",
    ):
        assert contender in report
    assert "python benchmarks/run.py --smoke" in report
    png = (out / "rollover.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_counts_match_the_design(smoke_run: tuple[Path, dict]) -> None:
    _, res = smoke_run
    cold = res["cold"]
    threads = res["sizes"]["cold_full"]
    # Single-flight: however many threads connect at once on a cold cache, one GetCredentials.
    assert cold["full"]["plugin"]["get_credentials"] == 1
    assert cold["steps"]["plugin"]["get_credentials"] == 1
    assert cold["full"]["plugin"]["errors"] == 0
    # The naive recipe calls AWS once per connect: the harness really counts calls.
    assert cold["full"]["naive"]["get_credentials"] == threads
    assert res["hours"]["naive"]["get_credentials"] == res["hours"]["connects"]
    assert res["hours"]["plugin"]["get_credentials"] >= 1
    # Every contender really connected in the per-connect phase.
    for key in ("static", "iam_fixed", "plugin", "ttl_lock", "rc_iam", "naive"):
        assert res["connect"][key]["n"] >= 1
        assert res["connect"][key]["median_ms"] > 0
    assert res["rollover"]["plugin"]["errors"] == 0
    assert res["rollover"]["plugin"]["connects"] > 0
    # Bounded memory: never more entries than max_entries.
    mem = res["memory"]
    assert mem["plugin"]["len"] <= mem["max_entries"]
    assert mem["plugin"]["len_fresh"] <= mem["max_entries"]
    # Importing the package is cheap: no boto3 / SQLAlchemy / driver until used.
    assert res["import"]["heavy_modules_after_import"] == ""
