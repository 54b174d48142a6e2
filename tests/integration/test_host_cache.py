"""cache=host on real processes against the stand-in: single flight across processes, one refresher,
crashes while holding the lock or writing, corrupt and foreign files, identity isolation."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sqlalchemy_rs_iam
from sqlalchemy_rs_iam.errors import ConfigurationError
from sqlalchemy_rs_iam.store import HostStore
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

ROOT = Path(__file__).resolve().parents[2]

# One child: connect (a new login), report who it is, its counters and whether it imported boto3.
CHILD = """
import json, sys, time
import sqlalchemy as sa
import sqlalchemy_rs_iam
from sqlalchemy.pool import NullPool
url, seconds = sys.argv[1], float(sys.argv[2])
engine = sa.create_engine(url, poolclass=NullPool)
users, failures, deadline = set(), 0, time.monotonic() + seconds
while True:
    try:
        with engine.connect() as conn:
            users.add(conn.execute(sa.text("select current_user")).scalar())
    except Exception as exc:
        failures += 1
        print("FAILED", type(exc).__name__, str(exc)[:200], file=sys.stderr)
    if time.monotonic() >= deadline:
        break
    time.sleep(0.05)
print(json.dumps({"users": sorted(users), "failures": failures, "stats": dict(sqlalchemy_rs_iam.stats(engine)),
                  "boto3": "boto3" in sys.modules}))
"""


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "host-cache"
    monkeypatch.setenv("RS_IAM_CACHE_DIR", str(d))
    return d


def child_env(rs: RedshiftStandIn, cache_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(rs.aws_env(), RS_IAM_CACHE_DIR=str(cache_dir), **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def spawn(rs: RedshiftStandIn, url: str, env: dict[str, str], seconds: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(seconds)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def result(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    data: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return data


def calls(rs: RedshiftStandIn, op: str) -> int:
    return len(rs.emulator.calls_for(op))


def test_sixteen_cold_processes_make_one_call_of_each_kind(rs: RedshiftStandIn, cache_dir: Path) -> None:
    env = child_env(rs, cache_dir)
    url = rs.url("psycopg2", cache="host")
    results = [result(p) for p in [spawn(rs, url, env) for _ in range(16)]]
    assert all(r["users"] == ["IAM:alice-dev"] and r["failures"] == 0 for r in results)
    assert (calls(rs, "GetCredentials"), calls(rs, "GetWorkgroup")) == (1, 1)
    assert sum(r["stats"]["api_calls"] for r in results) == 2  # type: ignore[index]
    assert oct(cache_dir.stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in cache_dir.iterdir())


def test_a_warm_host_cache_costs_no_aws_call_and_no_boto3_import(
    rs: RedshiftStandIn, cache_dir: Path
) -> None:
    env = child_env(rs, cache_dir)
    url = rs.url("psycopg2", cache="host")
    result(spawn(rs, url, env))
    rs.emulator.reset_calls()
    warm = result(spawn(rs, url, env))
    assert warm["users"] == ["IAM:alice-dev"] and rs.emulator.calls == []
    assert warm["boto3"] is False  # psycopg2 does not import it, and neither did we
    # cache=process beside it: a separate process cache of its own, as before
    rs.emulator.reset_calls()
    assert result(spawn(rs, rs.url("psycopg2"), env))["users"] == ["IAM:alice-dev"]
    assert calls(rs, "GetCredentials") == 1


def test_profiles_never_share_an_entry(rs: RedshiftStandIn, cache_dir: Path) -> None:
    url = rs.url("psycopg2", cache="host")
    procs = [spawn(rs, url, child_env(rs, cache_dir, AWS_PROFILE=p)) for p in ("rs-iam-a", "rs-iam-b") * 3]
    users = [result(p)["users"] for p in procs]
    assert users == [["IAM:alice-dev"], ["IAM:bob-ops"]] * 3
    callers = sorted(c.caller for c in rs.emulator.calls_for("GetCredentials"))
    assert callers == sorted([rs.identities["rs-iam-a"].principal, rs.identities["rs-iam-b"].principal])


def test_one_process_refreshes_for_all_and_nobody_fails(rs: RedshiftStandIn, cache_dir: Path) -> None:
    rs.emulator.max_lifetime = 6  # refresh at 4.5 s, stale at 5.4 s
    env = child_env(rs, cache_dir)
    url = rs.url("psycopg2", cache="host")
    alone = result(spawn(rs, url, env, seconds=13))
    single = calls(rs, "GetCredentials")
    for path in cache_dir.glob("*.json"):
        path.unlink()
    rs.emulator.reset_calls()
    results = [result(p) for p in [spawn(rs, url, env, seconds=13) for _ in range(6)]]
    assert alone["failures"] == 0 and all(r["failures"] == 0 for r in results)
    shared = calls(rs, "GetCredentials")
    assert shared <= single + 1, (shared, single)  # six processes cost what one does


def test_a_process_killed_while_holding_the_lock_blocks_nobody(rs: RedshiftStandIn, cache_dir: Path) -> None:
    env = child_env(rs, cache_dir)
    url = rs.url("psycopg2", cache="host")
    result(spawn(rs, url, env))  # learn the entry's name
    [entry] = [p for p in cache_dir.glob("*.json") if json.loads(p.read_text())["kind"] == "credentials"]
    entry.unlink()
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)"
        ), str(cache_dir / HostStore.lock_file(entry.stem))],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    waiting = spawn(rs, url, env)
    time.sleep(1.0)
    assert waiting.poll() is None  # it waits for the holder's fetch ...
    holder.send_signal(signal.SIGKILL)  # ... which dies without one: its lock dies with it
    holder.wait()
    started = time.monotonic()
    assert result(waiting)["users"] == ["IAM:alice-dev"]
    assert time.monotonic() - started < 20


def test_torn_corrupt_and_leftover_files_are_ignored_and_refetched(
    rs: RedshiftStandIn, cache_dir: Path
) -> None:
    env = child_env(rs, cache_dir)
    url = rs.url("psycopg2", cache="host")
    result(spawn(rs, url, env))
    entries = list(cache_dir.glob("*.json"))
    for path in entries:
        path.write_text('{"format": 1, "kind": "credentials", "user": "IAM:alice-dev", "passw')  # torn
    (cache_dir / ".tmp-killed-mid-write").write_text("{")  # what a kill during a write leaves
    rs.emulator.reset_calls()
    assert result(spawn(rs, url, env))["users"] == ["IAM:alice-dev"]
    assert calls(rs, "GetCredentials") == 1
    assert all(json.loads(p.read_text())["format"] == 1 for p in cache_dir.glob("*.json"))


def test_foreign_open_or_symlinked_storage_is_refused_before_any_aws_call(
    rs: RedshiftStandIn, cache_dir: Path, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    store = HostStore(cache_dir)
    os.chmod(cache_dir, 0o750)
    with pytest.raises(ConfigurationError, match="open to group or others"):
        sa.create_engine(rs.url("psycopg2", cache="host"))
    os.chmod(cache_dir, 0o700)
    sqlalchemy_rs_iam.reset()
    link = tmp_path / "link"
    link.symlink_to(cache_dir)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        HostStore(link)
    # an entry owned by another user (a planted file) is not read: it is an absent entry, counted
    entry = cache_dir / ("f" * 40 + ".json")
    entry.write_text('{"format": 1, "kind": "credentials"}')
    os.chmod(entry, 0o600)
    nobody = pwd.getpwnam("nobody")
    os.chown(entry, nobody.pw_uid, nobody.pw_gid)
    assert store.read_credentials("f" * 40) is None and store.errors == 1
    assert rs.emulator.calls == []


def test_a_refused_login_drops_the_shared_entry_only_if_it_holds_that_password(
    rs: RedshiftStandIn, cache_dir: Path
) -> None:
    env = child_env(rs, cache_dir)
    url = rs.url("psycopg2", cache="host")
    result(spawn(rs, url, env))
    assert rs.emulator.revoke() >= 1  # the stored password no longer logs in
    refused = result(spawn(rs, url, env))  # refused once, refetched once, then logged in
    assert refused["users"] == ["IAM:alice-dev"] and refused["stats"]["login_retries"] == 1  # type: ignore[index]
    rs.emulator.reset_calls()
    assert result(spawn(rs, url, env))["users"] == ["IAM:alice-dev"]
    assert calls(rs, "GetCredentials") == 0  # the refetched entry was kept for the next process


def test_rs_iam_cache_list_and_clear(rs: RedshiftStandIn, cache_dir: Path) -> None:
    env = child_env(rs, cache_dir)
    result(spawn(rs, rs.url("psycopg2", cache="host"), env))
    listed = subprocess.run(
        [sys.executable, "-m", "sqlalchemy_rs_iam", "cache", "list", "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert {e["kind"] for e in entries} == {"credentials", "endpoint"}
    assert all("analytics" in e["description"] for e in entries)
    [stored] = [json.loads(p.read_text()) for p in cache_dir.glob("*.json")
                if json.loads(p.read_text())["kind"] == "credentials"]  # fmt: skip
    assert stored["password"] and stored["password"] not in listed.stdout
    cleared = subprocess.run(
        [sys.executable, "-m", "sqlalchemy_rs_iam", "cache", "clear"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cleared.returncode == 0 and "2" in cleared.stdout
    assert list(cache_dir.glob("*.json")) == []
