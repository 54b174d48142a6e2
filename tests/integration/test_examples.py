"""The examples run for real, as a user would run them, against the session's stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, url: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), url],
        env={
            **os.environ,
            **env,
            "PYTHONPATH": os.pathsep.join([str(EXAMPLES.parent), os.environ.get("PYTHONPATH", "")]),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_pandas_example(rs_standin_clean: RedshiftStandIn) -> None:
    rs = rs_standin_clean
    out = run_example("pandas_read_sql.py", rs.url(), rs.aws_env())
    assert "total" in out and "'api_calls': 2" in out  # GetWorkgroup + GetCredentials, once each


def test_orm_example(rs_standin_clean: RedshiftStandIn) -> None:
    rs = rs_standin_clean
    out = run_example("orm_app.py", rs.url("psycopg2"), rs.aws_env())
    assert len(out.strip().splitlines()) >= 2


def test_provisioned_groups_example(rs_standin_clean: RedshiftStandIn) -> None:
    rs = rs_standin_clean
    url = rs.url("psycopg2", cluster=rs.cluster, user=rs.db_user, db_groups=rs.db_group)
    out = run_example("provisioned_groups.py", url, rs.aws_env())
    assert "logged in as alice; member of analysts: True" in out


def test_custom_domain_example(rs_standin_clean: RedshiftStandIn) -> None:
    rs = rs_standin_clean
    out = run_example("custom_domain.py", rs.url(custom_domain=rs.workgroup_domain), rs.aws_env())
    assert "as IAM:alice-dev" in out
    assert rs.emulator.calls_for("GetCredentials")[0].params["customDomainName"] == rs.workgroup_domain


@pytest.mark.slow
def test_demo_runs_clean() -> None:
    """The README's main job: starts its own stand-in, shows every feature, exits 0 with zero failed logins."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "16 connections, GetCredentials calls: 1" in proc.stdout
    assert "failed=0" in proc.stdout


def test_alembic_env_example_migrates_with_iam(
    rs_standin_clean: RedshiftStandIn,
    rs_iam_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """examples/alembic_env.py as a project's migrations/env.py: `alembic upgrade head` logs in with IAM."""
    from alembic import command
    from alembic.config import Config

    rs = rs_standin_clean
    migrations = tmp_path / "migrations"
    (migrations / "versions").mkdir(parents=True)
    (migrations / "env.py").write_text((EXAMPLES / "alembic_env.py").read_text())
    (migrations / "script.py.mako").write_text("")
    (migrations / "versions" / "0001_events.py").write_text(
        'revision = "0001"\ndown_revision = None\nbranch_labels = None\ndepends_on = None\n\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n\n"
        "def upgrade():\n"
        '    op.create_table("alembic_events", sa.Column("id", sa.Integer, primary_key=True))\n\n\n'
        "def downgrade():\n"
        '    op.drop_table("alembic_events")\n'
    )
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    # The plain PostgreSQL dialect: sqlalchemy-redshift's has_table() reads Redshift-only catalog views
    # that the stand-in's PostgreSQL does not have.
    monkeypatch.setenv("RS_IAM_URL", rs.url("postgresql+psycopg2"))
    command.upgrade(cfg, "head")
    assert rs.sql("select version_num from alembic_version") == [("0001",)]
    owner = rs.sql("select tableowner from pg_tables where tablename = 'alembic_events'")
    assert owner == [("IAM:alice-dev",)]  # created by the IAM user the plugin logged in as
    assert len(rs.emulator.calls_for("GetCredentials")) == 1
    command.downgrade(cfg, "base")
    assert rs.sql("select count(*) from pg_tables where tablename = 'alembic_events'") == [(0,)]


LAMBDA_INVOCATIONS = """
import importlib.util, json, sys, types

import sqlalchemy_rs_iam

hooks = []
runtime = types.ModuleType("snapshot_restore_py")  # what the Lambda Python runtime provides
runtime.register_after_restore = lambda func, *args, **kwargs: hooks.append(func) or func
sys.modules["snapshot_restore_py"] = runtime

spec = importlib.util.spec_from_file_location("lambda_handler", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)  # the init phase (before the snapshot, with SnapStart)
assert hooks == [module.after_restore], hooks
assert sqlalchemy_rs_iam.connector_for(module.engine).refresh_mode == "lazy"  # refresh=auto is lazy here
first = module.handler({}, None)
for hook in hooks:  # restored from the snapshot
    hook()
second = module.handler({"region": "us-east-1"}, None)
print(json.dumps({"first": first, "second": second, "stats": dict(sqlalchemy_rs_iam.stats(module.engine))}))
"""


def test_lambda_handler_example_under_a_simulated_lambda_runtime(rs_standin_clean: RedshiftStandIn) -> None:
    """Imported as Lambda imports it (AWS_LAMBDA_FUNCTION_NAME set, snapshot_restore_py present): lazy
    refresh, the after-restore hook registered, and a restore makes the next invocation fetch anew."""
    import json

    rs = rs_standin_clean
    root = EXAMPLES.parent
    env = {
        **os.environ,
        **rs.aws_env(),
        "AWS_LAMBDA_FUNCTION_NAME": "rs-iam-example",
        "RS_IAM_URL": rs.url(),
        "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p),
    }
    proc = subprocess.run(
        [sys.executable, "-c", LAMBDA_INVOCATIONS, str(EXAMPLES / "lambda_handler.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(out["first"]["body"]) == [
        {"region": "eu-west-1", "total": 250.5},
        {"region": "us-east-1", "total": 175.25},
    ]
    assert json.loads(out["second"]["body"]) == [{"region": "us-east-1", "total": 175.25}]
    assert len(rs.emulator.calls_for("GetCredentials")) == 2  # reset() after the restore: fetched anew
    assert out["stats"]["login_retries"] == 0 and out["stats"]["failures"] == 0


def test_lambda_handler_example_runs_without_the_lambda_runtime(rs_standin_clean: RedshiftStandIn) -> None:
    rs = rs_standin_clean
    out = run_example("lambda_handler.py", rs.url(), rs.aws_env())
    assert "175.25" in out and "250.5" in out
    assert len(rs.emulator.calls_for("GetCredentials")) == 2  # after_restore() between the two invocations


def test_fastapi_example_serves_when_run_directly(rs_standin_clean: RedshiftStandIn) -> None:
    """`python examples/fastapi_app.py URL` serves (it used to import, define the app and exit 0)."""
    import signal
    import socket
    import time

    import httpx

    pytest.importorskip("uvicorn")
    rs = rs_standin_clean
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = rs.url("psycopg").replace("postgresql+psycopg:", "postgresql+psycopg_async:", 1)
    env = {
        **os.environ,
        **rs.aws_env(),
        "PORT": str(port),
        "PYTHONPATH": os.pathsep.join([str(EXAMPLES.parent), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "fastapi_app.py"), url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        health = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert proc.poll() is None, "the example exited instead of serving"
        assert health is not None and health.status_code == 200, health
        assert health.json()["db_user"] == f"IAM:{rs.identities['rs-iam-a'].principal}"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert f"serving http://127.0.0.1:{port}/sales" in out
