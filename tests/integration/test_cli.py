"""The ``rs-iam`` CLI, run for real (``python -m sqlalchemy_rs_iam``) against the local stand-in.

Each diagnosis path gets its own exit code and message; no command except ``env`` and
``credentials --show-password`` ever prints a password.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from sqlalchemy_rs_iam import cli

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOGIN = "IAM:alice-dev"


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)  # rs_iam_env has pointed AWS_* at the stand-in
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "sqlalchemy_rs_iam", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def passwords(rs, login: str = LOGIN) -> list[str]:
    return [c.password for c in rs.store.live(login)]


def assert_no_password(rs, proc: subprocess.CompletedProcess[str], login: str = LOGIN) -> None:
    issued = passwords(rs, login)
    for secret in issued:
        assert secret not in proc.stdout
        assert secret not in proc.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TARGET = ("--workgroup", "analytics", "--database", "dev")


# --- credentials ----------------------------------------------------------------------------------------------


def test_credentials_shows_user_and_expiry_but_not_the_password(rs):
    proc = run_cli("credentials", *TARGET)
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(None, 1) for line in proc.stdout.strip().splitlines())
    assert fields["dbUser"] == LOGIN
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in \d+ s\)", fields["expiration"])
    assert "nextRefreshTime" in fields
    assert "dbPassword" not in fields
    assert "--show-password" in proc.stderr  # the hint goes to stderr, not into the result
    assert len(rs.emulator.calls_for("GetCredentials")) == 1
    assert passwords(rs), "the fetch must have issued a credential"
    assert_no_password(rs, proc)


def test_credentials_json_with_password(rs):
    proc = run_cli("credentials", *TARGET, "--json", "--show-password")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["dbUser"] == LOGIN
    assert data["dbPassword"] in passwords(rs)  # a real, live issued password
    assert data["region"] == "us-east-1"
    expires = time.mktime(time.strptime(data["expiration"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert 800 < expires - time.time() < 1000  # default duration_seconds=900
    assert data["dbPassword"] not in proc.stderr


def test_credentials_json_without_password(rs):
    proc = run_cli("credentials", *TARGET, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert "dbPassword" not in data
    assert data["dbUser"] == LOGIN
    assert_no_password(rs, proc)


def test_credentials_provisioned_options_map_to_url_parameters(rs):
    proc = run_cli(
        "credentials", "--cluster", "etl-cluster", "--database", "dev", "--db-user", "alice",
        "--db-groups", "analysts", "--auto-create", "--duration-seconds", "1800", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dbUser"] == "IAMA:alice"
    (call,) = rs.emulator.calls_for("GetClusterCredentials")
    assert call.params["DbUser"] == "alice"
    assert call.params["DurationSeconds"] in ("1800", 1800)
    assert call.params["AutoCreate"] in ("true", True)
    assert_no_password(rs, proc, "IAMA:alice")


def test_credentials_config_error_names_the_option(rs):
    proc = run_cli("credentials", "--workgroup", "Bad_Name", "--database", "dev")
    assert proc.returncode == cli.EXIT_CONFIG
    assert "--workgroup" in proc.stderr and "'Bad_Name'" in proc.stderr
    assert proc.stdout == ""
    assert rs.emulator.calls == []  # validated before any AWS call


def test_credentials_serverless_rejects_db_user_by_its_flag(rs):
    proc = run_cli("credentials", *TARGET, "--db-user", "alice")
    assert proc.returncode == cli.EXIT_CONFIG
    assert "--db-user" in proc.stderr and "Serverless" in proc.stderr


def test_usage_errors_exit_2(rs):
    assert run_cli().returncode == 2
    proc = run_cli("credentials", "--no-such-option")
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr


def test_version_and_help():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("rs-iam ")
    proc = run_cli("credentials", "--help")
    assert proc.returncode == 0
    for option in ("--workgroup", "--db-user", "--aws-endpoint-url", "--duration-seconds", "--show-password"):
        assert option in proc.stdout


@pytest.mark.skipif(shutil.which("rs-iam") is None, reason="console script not installed")
def test_console_script_entry_point():
    proc = subprocess.run(["rs-iam", "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and "rs-iam" in proc.stdout


# --- env --------------------------------------------------------------------------------------------------------


def test_env_lines_log_in_with_psql_variables(rs):
    proc = run_cli("env", *TARGET)
    assert proc.returncode == 0, proc.stderr
    values = {}
    for line in proc.stdout.strip().splitlines():
        match = re.fullmatch(r"export (PG[A-Z]+)=(.*)", line)
        assert match, line
        values[match[1]] = match[2].strip("'")
    assert set(values) == {"PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"}
    assert (values["PGHOST"], int(values["PGPORT"])) == (rs.host, rs.port)
    assert values["PGPASSWORD"] in passwords(rs)
    assert values["PGPASSWORD"] not in proc.stderr  # stdout only
    # The printed values really log in (what psql would do with them).
    conn = psycopg2.connect(
        host=values["PGHOST"], port=values["PGPORT"], user=values["PGUSER"], password=values["PGPASSWORD"],
        dbname=values["PGDATABASE"], sslmode="verify-full",  # PGSSLROOTCERT names the stand-in CA
    )  # fmt: skip
    try:
        with conn.cursor() as cur:
            cur.execute("select current_user")
            assert cur.fetchone()[0] == LOGIN
    finally:
        conn.close()


# --- check ------------------------------------------------------------------------------------------------------

STEPS = ("parse URL", "validate parameters", "AWS identity", "resolve (GetWorkgroup)", "fetch (GetCredentials)",
         "create engine", "connect and query")  # fmt: skip


@pytest.mark.parametrize("driver", ["redshift_connector", "psycopg2", "psycopg", "psycopg_async"])
def test_check_ok_reports_each_step(rs, driver):
    url = rs.url("psycopg" if driver == "psycopg_async" else driver)
    if driver == "psycopg_async":
        url = url.replace("postgresql+psycopg:", "postgresql+psycopg_async:")
    proc = run_cli("check", url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"ok: connected as {LOGIN}\n")
    for step in STEPS:
        assert re.search(rf"\[  ok\] {re.escape(step)}\s+\d+ ms", proc.stderr), (step, proc.stderr)
    # The engine took the credentials the fetch step cached: one AWS call for the whole check.
    assert len(rs.emulator.calls_for("GetCredentials")) == 1
    assert_no_password(rs, proc)


def test_check_adds_the_plugin_and_reports_json(rs):
    url = rs.url().replace("plugin=rs_iam&", "")
    assert "plugin=" not in url
    proc = run_cli("check", url, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["exit_code"] == 0 and report["current_user"] == LOGIN
    assert [s["name"] for s in report["steps"]] == list(STEPS)
    assert all(s["status"] == "ok" and s["ms"] >= 0 for s in report["steps"])
    assert "plugin=rs_iam" in report["steps"][0]["detail"]


def test_check_with_explicit_host_skips_resolution(rs):
    url = rs.url(custom_domain=rs.workgroup_domain)
    proc = run_cli("check", url)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\[skip\] resolve endpoint .*explicit host", proc.stderr)
    assert rs.emulator.calls_for("GetWorkgroup") == []


def check_fails(url: str, code: int, *needles: str) -> subprocess.CompletedProcess[str]:
    proc = run_cli("check", url)
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert "[FAIL]" in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    return proc


def test_check_config_error(rs):
    check_fails(rs.url(duration_seconds=60), cli.EXIT_CONFIG, "configuration error: duration_seconds", "900")
    assert rs.emulator.calls == []


def test_check_not_a_url(rs):
    check_fails("not a url", cli.EXIT_CONFIG, "configuration error: url")


def test_check_missing_driver_is_a_config_error(rs):
    url = rs.url().replace("redshift+redshift_connector:", "postgresql+nosuchdriver:")
    check_fails(url, cli.EXIT_CONFIG, "configuration error: url", "nosuchdriver")


def test_check_workgroup_not_found(rs):
    proc = check_fails(rs.url(workgroup="no-such-wg"), cli.EXIT_AWS_REFUSED, "not found", "'no-such-wg'")
    assert "[FAIL] resolve (GetWorkgroup)" in proc.stderr


def test_check_wrong_region(rs):
    proc = check_fails(rs.url(region="eu-west-1"), cli.EXIT_AWS_REFUSED, "not found", "eu-west-1", "region")
    assert "workgroup 'analytics'" in proc.stderr


def test_check_access_denied(rs):
    rs.emulator.deny("GetCredentials")
    proc = check_fails(rs.url(), cli.EXIT_AWS_REFUSED, "access denied", "GetCredentials", "IAM policy")
    assert "[FAIL] fetch (GetCredentials)" in proc.stderr


def test_check_no_aws_credentials(rs, monkeypatch, tmp_path):
    empty = tmp_path / "credentials"
    empty.write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    check_fails(rs.url(), cli.EXIT_AWS_REFUSED, "no AWS credentials")


def test_check_aws_unreachable(rs):
    url = rs.url(
        aws_endpoint_url=f"http://127.0.0.1:{free_port()}", aws_max_attempts=1, aws_connect_timeout=1
    )
    check_fails(url, cli.EXIT_AWS_UNAVAILABLE, "AWS unavailable", "cannot reach")


def test_check_aws_throttled(rs):
    rs.emulator.faults.throttle("GetCredentials", 10)
    check_fails(rs.url(aws_max_attempts=2), cli.EXIT_AWS_UNAVAILABLE, "AWS unavailable", "Throttl")


def test_check_login_refused(rs):
    # GetClusterCredentials issues a password for a user that does not exist: the database refuses it.
    url = rs.url(cluster=rs.cluster, user="nobody")
    proc = check_fails(url, cli.EXIT_DATABASE, "login refused", "nobody")
    assert "[FAIL] connect and query" in proc.stderr
    assert len(rs.emulator.calls_for("GetClusterCredentials")) == 2  # the connector retried once
    assert_no_password(rs, proc, "IAM:nobody")


def test_check_database_unreachable(rs):
    port = free_port()
    url = rs.url(custom_domain=rs.workgroup_domain).replace(f":{rs.port}/", f":{port}/")
    check_fails(url, cli.EXIT_DATABASE, "cannot reach", str(port))


def test_credentials_and_env_share_the_diagnoses(rs):
    rs.emulator.deny("GetCredentials")
    for command in ("credentials", "env"):
        proc = run_cli(command, *TARGET)
        assert proc.returncode == cli.EXIT_AWS_REFUSED
        assert "access denied" in proc.stderr and proc.stdout == ""


# --- standin ----------------------------------------------------------------------------------------------------


def test_standin_help():
    proc = run_cli("standin", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "rs-iam standin" in proc.stdout and "--max-lifetime" in proc.stdout


@pytest.mark.slow
def test_standin_runs_in_foreground_until_sigterm():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sqlalchemy_rs_iam", "standin"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "READY":
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(90), "".join(lines)
        banner = "".join(lines)
        assert "redshift+redshift_connector://" in banner and "plugin=rs_iam" in banner
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
