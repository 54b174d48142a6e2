"""The composed Redshift stand-in, end to end: real boto3 against the emulator, real drivers through the front
into real PostgreSQL; expiry, faults, the foreground command, and cleanup."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import psycopg2
import pytest
import redshift_connector
import sqlalchemy as sa

from sqlalchemy_rs_iam.testing.postgres import DSN_ENV, LocalPostgres, provision_postgres
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn, find_live_pids

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NO_RETRY = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"})


# -- helpers ---------------------------------------------------------------------------------------------------


def login(driver: str, rs: RedshiftStandIn, user: str, password: str) -> Any:
    """A DB-API connection through the front with the given driver over verified TLS (caller closes it)."""
    if driver == "redshift_connector":
        return redshift_connector.connect(  # default ssl=True; trusts the CA through SSL_CERT_FILE
            host=rs.host,
            port=rs.port,
            database=rs.database,
            user=user,
            password=password,
            sslmode="verify-full",
            timeout=20,
        )
    return psycopg2.connect(
        host=rs.host,
        port=rs.port,
        dbname=rs.database,
        user=user,
        password=password,
        sslmode="verify-full",
        sslrootcert=str(rs.ca_file),
        connect_timeout=20,
    )


def query(conn: Any, statement: str) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    try:
        cur.execute(statement)
        return [tuple(row) for row in cur.fetchall()]
    finally:
        cur.close()


def client(service: str, profile: str | None = None) -> Any:
    return boto3.Session(profile_name=profile).client(service, config=NO_RETRY)


DRIVERS = ["redshift_connector", "psycopg2"]


# -- AWS side + logins -------------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_serverless_get_credentials_then_login(
    rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str], driver: str
) -> None:
    rs = rs_standin_clean
    answer = client("redshift-serverless").get_credentials(workgroupName=rs.workgroup, dbName=rs.database)
    assert answer["dbUser"] == "IAM:alice-dev"  # default profile = rs-iam-a = IAM user alice-dev
    conn = login(driver, rs, answer["dbUser"], answer["dbPassword"])
    try:
        assert query(conn, "SELECT current_user, (SELECT count(*) FROM sales)") == [("IAM:alice-dev", 3)]
    finally:
        conn.close()
    assert [c.operation for c in rs.emulator.calls] == ["GetCredentials"]
    with pytest.raises(Exception, match=r"(?i)password|authentication"):
        login(driver, rs, answer["dbUser"], "not-the-issued-password")


def test_endpoints_point_at_the_front(rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str]) -> None:
    rs = rs_standin_clean
    wg = client("redshift-serverless").get_workgroup(workgroupName=rs.workgroup)["workgroup"]
    assert (wg["endpoint"]["address"], wg["endpoint"]["port"]) == (rs.host, rs.port)
    cluster = client("redshift").describe_clusters(ClusterIdentifier=rs.cluster)["Clusters"][0]
    assert (cluster["Endpoint"]["Address"], cluster["Endpoint"]["Port"]) == (rs.host, rs.port)
    by_domain = client("redshift-serverless").get_credentials(customDomainName=rs.workgroup_domain)
    conn = login("psycopg2", rs, by_domain["dbUser"], by_domain["dbPassword"])
    conn.close()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client("redshift-serverless").get_credentials(workgroupName="no-such-workgroup")
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"


@pytest.mark.parametrize("driver", DRIVERS)
def test_cluster_credentials_db_user_and_groups(
    rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str], driver: str
) -> None:
    rs = rs_standin_clean
    answer = client("redshift").get_cluster_credentials(
        DbUser=rs.db_user, DbGroups=[rs.db_group], ClusterIdentifier=rs.cluster, DbName=rs.database
    )
    assert answer["DbUser"] == "IAM:alice"
    conn = login(driver, rs, answer["DbUser"], answer["DbPassword"])
    try:
        assert query(conn, "SELECT current_user, pg_has_role('analysts', 'member')") == [("alice", True)]
    finally:
        conn.close()


def test_cluster_credentials_unknown_user_needs_auto_create(
    rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str]
) -> None:
    rs = rs_standin_clean
    redshift = client("redshift")
    newbie = f"newbie_{secrets.token_hex(3)}"
    # Like Redshift: the API call succeeds, the login fails because the user does not exist.
    answer = redshift.get_cluster_credentials(DbUser=newbie, ClusterIdentifier=rs.cluster)
    with pytest.raises(Exception, match=newbie):
        login("psycopg2", rs, answer["DbUser"], answer["DbPassword"])
    created = redshift.get_cluster_credentials(DbUser=newbie, ClusterIdentifier=rs.cluster, AutoCreate=True)
    assert created["DbUser"] == f"IAMA:{newbie}"
    for driver in DRIVERS:
        conn = login(driver, rs, created["DbUser"], created["DbPassword"])
        try:
            assert query(conn, "SELECT current_user") == [(newbie,)]
        finally:
            conn.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_cluster_credentials_with_iam(
    rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str], driver: str
) -> None:
    rs = rs_standin_clean
    answer = client("redshift", "rs-iam-b").get_cluster_credentials_with_iam(ClusterIdentifier=rs.cluster)
    assert answer["DbUser"] == "IAM:bob-ops"
    conn = login(driver, rs, answer["DbUser"], answer["DbPassword"])
    try:
        assert query(conn, "SELECT current_user") == [("IAM:bob-ops",)]
    finally:
        conn.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_assume_role_profile_logs_in_as_iamr(
    rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str], driver: str
) -> None:
    rs = rs_standin_clean
    session = boto3.Session(profile_name="rs-iam-etl")  # assumes etl-role once, from rs-iam-a's keys
    ident = session.client("sts", config=NO_RETRY).get_caller_identity()
    assert ident["Arn"].startswith("arn:aws:sts::123456789012:assumed-role/etl-role/")
    answer = session.client("redshift-serverless", config=NO_RETRY).get_credentials(
        workgroupName=rs.workgroup
    )
    assert answer["dbUser"] == "IAMR:etl-role"
    conn = login(driver, rs, answer["dbUser"], answer["dbPassword"])
    try:
        assert query(conn, "SELECT current_user") == [("IAMR:etl-role",)]
    finally:
        conn.close()
    assert [c.operation for c in rs.emulator.calls_for("AssumeRole")] == ["AssumeRole"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_static_user_baseline_without_plugin(rs_standin: RedshiftStandIn, driver: str) -> None:
    engine = sa.create_engine(rs_standin.static_url(driver), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_user")).scalar() == "static_user"
    engine.dispose()


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    "target, expected_user",
    [
        ({}, "IAM:alice-dev"),
        ({"cluster": "etl-cluster", "user": "alice", "db_groups": "analysts"}, "alice"),
        ({"custom_domain": "sql.analytics.example.com"}, "IAM:alice-dev"),
        ({"custom_domain": "sql.etl.example.com", "service": "provisioned", "user": "alice"}, "alice"),
    ],
    ids=["workgroup", "cluster", "serverless-domain", "provisioned-domain"],
)
def test_plugin_urls_log_in(
    rs_standin_clean: RedshiftStandIn,
    rs_iam_env: dict[str, str],
    driver: str,
    target: dict[str, str],
    expected_user: str,
) -> None:
    engine = sa.create_engine(rs_standin_clean.url(driver, **target), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_user")).scalar() == expected_user
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "driver", ["redshift_connector", "psycopg2", "postgresql+psycopg2", "psycopg", "asyncpg"]
)
def test_every_driver_url_logs_in_over_verified_tls(
    rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str], driver: str
) -> None:
    rs = rs_standin_clean
    url = rs.url(driver)
    assert "ssl=false" not in url and "sslmode" not in url and "ssl=disable" not in url
    if driver == "asyncpg":
        from sqlalchemy.ext.asyncio import create_async_engine

        async def who() -> str:
            engine = create_async_engine(url, poolclass=sa.pool.NullPool)
            try:
                async with engine.connect() as conn:
                    return str((await conn.execute(sa.text("SELECT current_user"))).scalar())
            finally:
                await engine.dispose()

        user = asyncio.run(who())
    else:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                user = str(conn.execute(sa.text("SELECT current_user")).scalar())
        finally:
            engine.dispose()
    assert user == "IAM:alice-dev"
    login = rs.front.connections[-1]
    assert login.user == "IAM:alice-dev" and login.tls_version in ("TLSv1.2", "TLSv1.3")


def test_plain_mode_standin(monkeypatch: pytest.MonkeyPatch) -> None:
    # its own PostgreSQL: on a shared server its role passwords would clobber the session stand-in's
    with RedshiftStandIn(tls=False) as plain:
        assert not plain.front.tls and plain.tls_env() == {}
        with pytest.raises(RuntimeError, match="plain front"):
            _ = plain.ca_file
        for name in [k for k in os.environ if k.startswith("AWS_")]:
            monkeypatch.delenv(name)
        for name, value in plain.aws_env().items():
            monkeypatch.setenv(name, value)
        url = plain.url()
        assert sa.make_url(url).query["ssl"] == "false"  # the explicit opt-out the plugin respects
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM sales")).scalar() == 3
        finally:
            engine.dispose()
        assert plain.front.connections[-1].tls_version is None


def test_rs_iam_url_fixture(rs_iam_url: str) -> None:
    url = sa.make_url(rs_iam_url)
    assert url.drivername == "redshift+redshift_connector"
    assert url.query["plugin"] == "rs_iam" and url.query["workgroup"] == "analytics"
    engine = sa.create_engine(rs_iam_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sales")).scalar() == 3
    engine.dispose()


# -- time and faults ---------------------------------------------------------------------------------------


def test_expired_credential_refused_but_open_session_survives(
    rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str]
) -> None:
    rs = rs_standin_clean
    rs.emulator.max_lifetime = 2
    answer = client("redshift-serverless").get_credentials(workgroupName=rs.workgroup)
    assert answer["expiration"].timestamp() - time.time() <= 3
    session = login("redshift_connector", rs, answer["dbUser"], answer["dbPassword"])
    try:
        deadline = answer["expiration"].timestamp() + 0.5
        while time.time() < deadline:
            time.sleep(0.1)
        for driver in DRIVERS:
            with pytest.raises(Exception, match=r"(?i)password|authentication|expired"):
                login(driver, rs, answer["dbUser"], answer["dbPassword"])
        assert query(session, "SELECT current_user") == [("IAM:alice-dev",)]
    finally:
        session.close()


def test_faults_fire_as_configured(rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str]) -> None:
    rs = rs_standin_clean
    serverless = client("redshift-serverless")
    rs.emulator.faults.throttle("GetCredentials", 1)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        serverless.get_credentials(workgroupName=rs.workgroup)
    assert "Throttl" in info.value.response["Error"]["Code"]
    rs.emulator.faults.server_error("GetCredentials", 1)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        serverless.get_credentials(workgroupName=rs.workgroup)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    rs.emulator.deny("GetCredentials", "alice-dev")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        serverless.get_credentials(workgroupName=rs.workgroup)
    assert "AccessDenied" in info.value.response["Error"]["Code"]
    assert client("redshift-serverless", "rs-iam-b").get_credentials(workgroupName=rs.workgroup)[
        "dbUser"
    ] == ("IAM:bob-ops")
    rs.reset()  # what rs_standin_clean does before each test
    assert rs.emulator.calls == []
    assert serverless.get_credentials(workgroupName=rs.workgroup)["dbUser"] == "IAM:alice-dev"


def test_clean_fixture_reset_the_previous_tests_faults(
    rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str]
) -> None:
    rs = rs_standin_clean
    rs.emulator.faults.throttle("GetWorkgroup", 5)
    rs.emulator.max_lifetime = 1
    rs.reset()
    assert rs.emulator.max_lifetime is None
    client("redshift-serverless").get_workgroup(workgroupName=rs.workgroup)  # would raise if still throttled


# -- environment and URLs ----------------------------------------------------------------------------------


def test_aws_env_files_and_profiles(rs_standin: RedshiftStandIn, rs_iam_env: dict[str, str]) -> None:
    assert os.environ["AWS_ENDPOINT_URL"] == rs_standin.aws_endpoint_url
    assert Path(rs_iam_env["AWS_CONFIG_FILE"]).is_file()
    assert Path(rs_iam_env["AWS_SHARED_CREDENTIALS_FILE"]).stat().st_mode & 0o077 == 0
    assert {"default", "rs-iam-a", "rs-iam-b", "rs-iam-etl"} <= set(boto3.Session().available_profiles)
    assert rs_standin.aws_env("rs-iam-b")["AWS_PROFILE"] == "rs-iam-b"
    with pytest.raises(ValueError):
        rs_standin.aws_env("nope")
    for secret in (rs_standin.static_password, rs_standin.identities["rs-iam-a"].secret_access_key):
        assert secret not in repr(rs_standin)
        assert secret not in repr(rs_standin.identities)


def test_url_shapes(rs_standin: RedshiftStandIn) -> None:
    rs = rs_standin
    url = sa.make_url(rs.url())
    assert (url.drivername, url.host, url.database) == ("redshift+redshift_connector", None, "dev")
    assert dict(url.query) == {
        "plugin": "rs_iam",
        "workgroup": "analytics",
        "region": "us-east-1",
        "aws_endpoint_url": rs.aws_endpoint_url,
    }  # no TLS setting: redshift_connector's defaults (ssl=True, verify-full) apply
    pg = sa.make_url(
        rs.url("psycopg2", cluster=rs.cluster, user="alice", auto_create=True, db_groups=["a", "b"])
    )
    assert pg.drivername == "redshift+psycopg2" and pg.username == "alice"
    assert "sslmode" not in pg.query  # the dialect's verify-full default applies
    assert (pg.query["cluster"], pg.query["sslrootcert"], pg.query["auto_create"], pg.query["db_groups"]) == (
        "etl-cluster",
        str(rs.ca_file),
        "true",
        "a,b",
    )
    dom = sa.make_url(rs.url("postgresql+psycopg2", custom_domain=rs.cluster_domain))
    assert (dom.host, dom.port, dom.query["custom_domain"]) == (rs.host, rs.port, "sql.etl.example.com")
    with pytest.raises(ValueError, match="unknown driver"):
        rs.url("odbc")


# -- lifecycle and cleanup ---------------------------------------------------------------------------------


def _pg_tempdirs() -> set[str]:
    return {str(p) for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("rs-iam-*")}


def _port_closed(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) != 0


def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_stopped_standin_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DSN_ENV, raising=False)
    rs = RedshiftStandIn().start()
    try:
        assert isinstance(rs.postgres, LocalPostgres)
        pg_dir, aws_dir = str(rs.postgres.tempdir), str(rs.aws_config_file.parent)
        front, emulator_port = (rs.host, rs.port), rs.emulator.port
        for name, value in rs.aws_env().items():
            monkeypatch.setenv(name, value)
        answer = client("redshift-serverless").get_credentials(workgroupName=rs.workgroup)
        open_session = login("psycopg2", rs, answer["dbUser"], answer["dbPassword"])
        assert find_live_pids(pg_dir)
    finally:
        rs.stop()
    rs.stop()  # idempotent
    assert find_live_pids(pg_dir) == []
    assert not Path(pg_dir).exists() and not Path(aws_dir).exists()
    assert _port_closed(*front) and _port_closed("127.0.0.1", emulator_port)
    with pytest.raises(psycopg2.Error):
        query(open_session, "SELECT 1")
    open_session.close()


def test_failed_start_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DSN_ENV, raising=False)
    before = _pg_tempdirs()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        rs = RedshiftStandIn(db_port=taken.getsockname()[1])
        with pytest.raises(OSError):
            rs.start()
    assert not rs.started
    assert _wait_for(lambda: _pg_tempdirs() <= before), _pg_tempdirs() - before


def test_standin_on_a_shared_server_via_env_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DSN_ENV, raising=False)
    server = provision_postgres()
    try:
        monkeypatch.setenv(
            DSN_ENV,
            f"postgresql://{server.superuser}:{server.superuser_password}@{server.host}:"
            f"{server.port}/postgres",
        )
        rs = RedshiftStandIn().start()
        try:
            assert rs.postgres.kind == "dsn" and re.fullmatch(r"dev_[0-9a-f]{8}", rs.database)
            for name, value in rs.aws_env().items():
                monkeypatch.setenv(name, value)
            answer = client("redshift").get_cluster_credentials(DbUser="alice", ClusterIdentifier=rs.cluster)
            conn = login("redshift_connector", rs, answer["DbUser"], answer["DbPassword"])
            assert query(conn, "SELECT current_database(), current_user") == [(rs.database, "alice")]
            conn.close()
            database = rs.database
        finally:
            rs.stop()
        assert server.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)) == []
        assert (
            server.execute(
                "SELECT rolname FROM pg_roles WHERE rolname IN ('alice', 'analysts', 'static_user')"
            )
            == []
        )
        assert server.execute("SELECT 1") == [(1,)]  # the shared server itself still runs
    finally:
        server.stop()


@pytest.fixture
def foreground() -> Iterator[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != DSN_ENV}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sqlalchemy_rs_iam.testing", "--max-lifetime", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_foreground_command_serves_and_stops_cleanly_on_sigterm(
    foreground: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert foreground.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = foreground.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.strip() == "READY":
            break
    banner = "\n".join(lines)
    assert lines and lines[-1] == "READY", banner + (foreground.stderr.read() if foreground.poll() else "")
    exports = dict(re.findall(r"^export ([A-Z_]+)=(\S+)$", banner, re.M))
    urls = re.findall(r"(?<![A-Z_])URL=(\S+)", banner)
    pg_dir = re.search(r"throwaway cluster in (\S+)\)", banner)
    assert pg_dir is not None and find_live_pids(pg_dir.group(1))
    assert {"AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL"} <= set(exports)
    # this stand-in's own CA (not the session stand-in's): the URLs below only work if the exports are right
    assert {"SSL_CERT_FILE", "PGSSLROOTCERT"} <= set(exports)
    assert any(
        u.startswith("redshift+redshift_connector:///dev?plugin=rs_iam&workgroup=analytics") for u in urls
    )
    assert any(u.startswith("redshift+psycopg2://alice@/dev?plugin=rs_iam&cluster=etl-cluster") for u in urls)
    static = next(u for u in urls if "static_user" in u)
    assert "psql -h 127.0.0.1" in banner

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in exports.items():
        monkeypatch.setenv(name, value)
    for url in (urls[0], urls[3], static):  # redshift_connector serverless, psycopg2 cluster, static user
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM sales")).scalar() == 3
        engine.dispose()

    foreground.send_signal(signal.SIGTERM)
    assert foreground.wait(60) == 0
    assert _wait_for(lambda: not find_live_pids(pg_dir.group(1)) and not Path(pg_dir.group(1)).exists())
    assert not Path(exports["AWS_CONFIG_FILE"]).exists()
    assert foreground.stderr is not None
    assert "Traceback" not in foreground.stderr.read()


def test_killed_owner_leaves_nothing_behind() -> None:
    """SIGKILL skips every finalizer: the reapers must still remove PostgreSQL and both temp dirs."""
    code = (
        "import os, signal\n"
        "from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn\n"
        "rs = RedshiftStandIn().start()\n"
        "print(rs.postgres.tempdir, rs.aws_config_file.parent, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != DSN_ENV}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pg_dir, aws_dir = proc.stdout.split()
    assert _wait_for(
        lambda: not find_live_pids(pg_dir) and not Path(pg_dir).exists() and not Path(aws_dir).exists()
    )


def test_reset_restores_the_standins_aws_resources(
    rs_standin_clean: RedshiftStandIn, rs_iam_env: dict[str, str]
) -> None:
    rs = rs_standin_clean
    rs.emulator.add_workgroup(rs.workgroup, region=rs.region, address="127.0.0.2", port=1)  # no custom domain
    rs.reset()
    wg = client("redshift-serverless").get_workgroup(workgroupName=rs.workgroup)["workgroup"]
    assert (wg["endpoint"]["address"], wg["endpoint"]["port"]) == (rs.host, rs.port)
    assert client("redshift-serverless").get_credentials(customDomainName=rs.workgroup_domain)["dbUser"]
