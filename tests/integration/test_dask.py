"""Dask: read_sql_query on a multi-process LocalCluster, each worker logging in with IAM credentials.

Every worker process has its own credential cache: AWS sees one GetCredentials call per process that
connects (the client process reads index bounds and head rows), not one per partition or per task.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
N_WORKERS = 2


def _load_example():
    spec = importlib.util.spec_from_file_location(
        "example_dask_read_sql", ROOT / "examples" / "dask_read_sql.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cluster(rs_standin_clean, rs_iam_env, monkeypatch):
    # Spawned worker processes inherit os.environ as it is now: the stand-in's AWS variables, and the
    # repo on the path so they import this checkout.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with (
        distributed.LocalCluster(
            n_workers=N_WORKERS, threads_per_worker=1, processes=True, dashboard_address=None,
            worker_dashboard_address=None,
        ) as lc,
        distributed.Client(lc) as client,
    ):  # fmt: skip
        yield client


@pytest.mark.timeout(120)
def test_read_sql_query_one_credential_per_process(rs_standin_clean, cluster):
    rs = rs_standin_clean
    example = _load_example()
    url = rs.url()

    frame = example.read_sales(url, npartitions=3).compute()
    assert frame.sort_index()["region"].tolist() == ["us-east-1", "eu-west-1", "us-east-1"]
    assert [float(x) for x in frame.sort_index()["amount"]] == [100.0, 250.5, 75.25]
    after_read = len(rs.emulator.calls_for("GetCredentials"))
    # The client fetched once; each worker that ran a partition fetched once (scheduling decides how many).
    assert 2 <= after_read <= 1 + N_WORKERS, after_read

    # Make every worker connect (one that ran no partition yet fetches now), twice: per process, the second
    # round and any further partitions are cache hits.
    def probe(url: str) -> tuple[int, str]:
        import os

        import sqlalchemy as sa

        engine = sa.create_engine(url)
        with engine.connect() as conn:
            user = conn.execute(sa.text("select current_user")).scalar_one()
        engine.dispose()
        return os.getpid(), user

    first = cluster.run(probe, url)
    second = cluster.run(probe, url)
    assert len(first) == N_WORKERS
    assert len({pid for pid, _ in first.values()}) == N_WORKERS  # really separate processes
    assert {user for _, user in [*first.values(), *second.values()]} == {"IAM:alice-dev"}
    assert len(rs.emulator.calls_for("GetCredentials")) == 1 + N_WORKERS

    again = example.read_sales(url, npartitions=3).compute()
    assert len(again) == 3
    assert len(rs.emulator.calls_for("GetCredentials")) == 1 + N_WORKERS  # all processes are warm now
