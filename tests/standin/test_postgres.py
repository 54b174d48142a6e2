"""PostgreSQL provisioning for the stand-in: order of sources, cleanup (also after crashes), restart, roles."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from sqlalchemy_rs_iam.testing import postgres as pgmod
from sqlalchemy_rs_iam.testing.postgres import (
    DSN_ENV,
    ExternalPostgres,
    LocalPostgres,
    PostgresRoleAdmin,
    PostgresServer,
    PostgresUnavailableError,
    provision_postgres,
)
from sqlalchemy_rs_iam.testing.standin import find_live_pids

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_env_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DSN_ENV, raising=False)


@pytest.fixture(scope="module")
def local_pg() -> Iterator[PostgresServer]:
    server = provision_postgres()
    try:
        yield server
    finally:
        server.stop()


def _login(
    server: PostgresServer, user: str, password: str, dbname: str = "postgres"
) -> psycopg2.extensions.connection:
    return psycopg2.connect(
        host=server.host, port=server.port, user=user, password=password, dbname=dbname, connect_timeout=10
    )


def _wait_for(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


# -- provisioning order ----------------------------------------------------------------------------------


def test_local_binaries_give_a_throwaway_md5_cluster(local_pg: PostgresServer) -> None:
    assert isinstance(local_pg, LocalPostgres) and local_pg.kind == "local" and local_pg.owned
    assert local_pg.host == "127.0.0.1"
    settings = dict(
        local_pg.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            (["password_encryption", "listen_addresses", "fsync", "max_connections"],),
        )
    )
    assert settings == {
        "password_encryption": "md5",
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "max_connections": "300",
    }
    hba = local_pg.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type = 'host'")
    assert hba == [("md5",)]
    if os.geteuid() == 0:  # initdb refuses root: the server must run as the postgres OS user
        assert local_pg.execute("SELECT current_setting('data_directory')")
        owner = Path(local_pg.tempdir).stat().st_uid
        import pwd

        assert owner == pwd.getpwnam("postgres").pw_uid


def test_env_dsn_wins_and_isolates(local_pg: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    url = (
        f"postgresql://{local_pg.superuser}:{local_pg.superuser_password}@{local_pg.host}:{local_pg.port}"
        "/postgres"
    )
    monkeypatch.setenv(DSN_ENV, url)
    shared = provision_postgres()
    assert isinstance(shared, ExternalPostgres)
    assert (shared.kind, shared.owned, shared.port) == ("dsn", False, local_pg.port)
    shared.create_database("iso_db_1")
    PostgresRoleAdmin(shared).ensure_login_role("IAM:iso-user", "pw-1")
    assert local_pg.execute("SELECT 1 FROM pg_database WHERE datname = 'iso_db_1'") == [(1,)]
    conn = _login(local_pg, "IAM:iso-user", "pw-1", "iso_db_1")
    shared.stop()
    shared.stop()  # idempotent
    # What it created is gone (sessions on it were terminated), the shared server itself keeps running.
    assert local_pg.execute("SELECT 1 FROM pg_database WHERE datname = 'iso_db_1'") == []
    assert local_pg.execute("SELECT 1 FROM pg_roles WHERE rolname = 'IAM:iso-user'") == []
    assert conn.closed or _query_fails(conn)
    assert local_pg.execute("SELECT 1") == [(1,)]


def _query_fails(conn: psycopg2.extensions.connection) -> bool:
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        return False
    except psycopg2.Error:
        return True


def test_env_dsn_errors_never_show_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    port = pgmod.free_port()  # nothing listens there
    monkeypatch.setattr(ExternalPostgres, "connect_wait", 0.5)
    monkeypatch.setenv(DSN_ENV, f"postgresql://admin:Sup3rS3cretPw@127.0.0.1:{port}/postgres")
    with pytest.raises(PostgresUnavailableError) as info:
        provision_postgres()
    assert DSN_ENV in str(info.value) and "Sup3rS3cretPw" not in str(info.value)
    monkeypatch.setenv(DSN_ENV, "host=127.0.0.1 password=Sup3rS3cretPw nonsense")
    with pytest.raises(PostgresUnavailableError) as info:
        provision_postgres()
    assert "Sup3rS3cretPw" not in str(info.value)


def test_nothing_available_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgmod, "find_postgres_bindir", lambda: None)
    # A Docker endpoint where nothing listens: the real ping must fail (fast), not a stub.
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{pgmod.free_port()}")
    started = time.monotonic()
    with pytest.raises(PostgresUnavailableError) as info:
        provision_postgres()
    message = str(info.value)
    assert "apt-get install" in message and DSN_ENV in message and "Docker" in message
    assert time.monotonic() - started < 30


def test_docker_is_tried_after_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[int] = []

    class FakeDocker:
        def __init__(self, *, port: int = 0) -> None:
            tried.append(port)

    monkeypatch.setattr(pgmod, "find_postgres_bindir", lambda: None)
    monkeypatch.setattr(pgmod, "docker_available", lambda: True)
    monkeypatch.setattr(pgmod, "DockerPostgres", FakeDocker)
    assert isinstance(provision_postgres(port=6543), FakeDocker)
    assert tried == [6543]


def test_find_postgres_bindir_has_the_server_binaries() -> None:
    bindir = pgmod.find_postgres_bindir()
    assert bindir is not None
    assert (bindir / "initdb").exists() and (bindir / "postgres").exists()


# -- lifecycle ---------------------------------------------------------------------------------------------


def test_stop_leaves_no_process_or_tempdir() -> None:
    server = provision_postgres()
    assert isinstance(server, LocalPostgres)
    tempdir = str(server.tempdir)
    conn = _login(server, server.superuser, server.superuser_password)
    assert find_live_pids(tempdir), "the server should be running"
    server.stop()
    server.stop()
    assert not Path(tempdir).exists()
    assert find_live_pids(tempdir) == []
    assert _query_fails(conn)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "KeyboardInterrupt", "os._exit"])
def test_dead_owner_leaves_no_process_or_tempdir(how: str) -> None:
    """The reaper (or atexit) removes the server whatever way the owning process ends."""
    ending = {
        "SIGKILL": "os.kill(os.getpid(), signal.SIGKILL)",
        "SIGTERM": "os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)",
        "KeyboardInterrupt": "raise KeyboardInterrupt",
        "os._exit": "os._exit(3)",
    }[how]
    code = textwrap.dedent(f"""
        import os, signal, sys, time
        from sqlalchemy_rs_iam.testing.postgres import provision_postgres
        pg = provision_postgres()
        print(pg.tempdir, flush=True)
        {ending}
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    tempdir = proc.stdout.strip().splitlines()[0]
    assert tempdir.startswith(("/tmp", os.environ.get("TMPDIR", "/tmp"))), proc.stderr
    assert _wait_for(lambda: not Path(tempdir).exists() and not find_live_pids(tempdir)), (
        f"left behind after {how}: dir={Path(tempdir).exists()} pids={find_live_pids(tempdir)}"
    )


def test_restart_keeps_port_and_data_and_breaks_open_sessions() -> None:
    server = provision_postgres()
    try:
        port = server.port
        server.execute("CREATE TABLE kept (x int)")
        server.execute("INSERT INTO kept VALUES (42)")
        conn = _login(server, server.superuser, server.superuser_password)
        server.restart()
        assert server.port == port
        assert _query_fails(conn)
        assert server.execute("SELECT x FROM kept") == [(42,)]
    finally:
        server.stop()


# -- roles -------------------------------------------------------------------------------------------------


def test_role_admin_with_colon_names(local_pg: PostgresServer) -> None:
    admin = PostgresRoleAdmin(local_pg)
    role = "IAMR:etl-role"
    assert not admin.role_exists(role)
    admin.ensure_login_role(role, "first-password")
    assert admin.role_exists(role) and not admin.group_exists(role)
    _login(local_pg, role, "first-password").close()
    admin.ensure_login_role(role, "second-password")  # existing role: password replaced
    with pytest.raises(psycopg2.OperationalError):
        _login(local_pg, role, "first-password")
    admin.ensure_group("analysts")
    assert admin.group_exists("analysts") and not admin.group_exists("no_such_group")
    admin.grant_group("analysts", role)
    admin.grant_group("analysts", role)  # idempotent
    conn = _login(local_pg, role, "second-password")
    with conn.cursor() as cur:
        cur.execute("SELECT current_user, pg_has_role('analysts', 'member')")
        assert cur.fetchone() == (role, True)
    conn.close()
    stored = local_pg.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))[0][0]
    assert stored.startswith("md5") and "second-password" not in stored
    weird = 'IAM:o"brien; DROP ROLE x'
    admin.ensure_login_role(weird, "pw")
    assert admin.role_exists(weird)
    admin.drop_role(weird)
    assert not admin.role_exists(weird)


def test_role_admin_is_thread_safe(local_pg: PostgresServer) -> None:
    admin = PostgresRoleAdmin(local_pg)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            admin.ensure_login_role("IAMA:racer", "same-password")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _login(local_pg, "IAMA:racer", "same-password").close()


def test_repr_hides_superuser_password(local_pg: PostgresServer) -> None:
    assert local_pg.superuser_password not in repr(local_pg)
    assert local_pg.superuser_password not in str(local_pg)


def test_sigterm_in_pytest_fixture_process_still_cleans_up() -> None:
    """A session killed with SIGTERM while the server runs: nothing may be left behind."""
    code = textwrap.dedent("""
        import os, signal, time
        from sqlalchemy_rs_iam.testing.postgres import provision_postgres
        pg = provision_postgres()
        print(pg.tempdir, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        tempdir = proc.stdout.readline().strip()
        assert find_live_pids(tempdir)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _wait_for(lambda: not Path(tempdir).exists() and not find_live_pids(tempdir))
