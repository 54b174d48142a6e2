"""cache=host with a hostile or broken disk, on real files and real processes against the stand-in.

Each case breaks the store in one way, then a fresh process connects. The oracles: the process logs in
(AWS and the database are up, so nothing on disk may fail the connect), each failure is logged once at
WARNING with its path and counted in ``stats(engine)["host_errors"]``, and AWS sees at most one call per
key (the healthy warm case sees none). Disk-full and read-only cases use a small tmpfs and a read-only
bind mount (root only; skipped with the reason otherwise -- tests/unit/test_store.py injects the errnos).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_host_cache import CHILD, calls, child_env

from sqlalchemy_rs_iam.store import LOCK_STRIPES, MAX_ENTRY_BYTES, HostStore
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

pytestmark = pytest.mark.integration

UNRELATED = "0" * 40 + ".json"
# Every AWS wait of a child is bounded by these, and so is its wait for another process's lock:
# max_attempts x (connect + read) + 5 s = 7 s.
TIMEOUTS = {"aws_connect_timeout": "1", "aws_read_timeout": "1", "aws_max_attempts": "1"}


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "host-cache"
    monkeypatch.setenv("RS_IAM_CACHE_DIR", str(d))
    return d


def run_child(rs: RedshiftStandIn, cache_dir: Path, timeout: float = 90) -> tuple[dict[str, object], str]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, rs.url("psycopg2", cache="host", **TIMEOUTS), "0"],
        env=child_env(rs, cache_dir), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def entry_files(rs: RedshiftStandIn, cache_dir: Path) -> dict[str, Path]:
    """Run one healthy process and return its entries by kind."""
    report, _ = run_child(rs, cache_dir)
    assert report["failures"] == 0
    return {json.loads(p.read_text())["kind"]: p for p in cache_dir.glob("*.json")}


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("host cache ")]


def assert_degraded(
    rs: RedshiftStandIn, report: dict[str, object], stderr: str, *, min_errors: int = 1
) -> None:
    assert report["users"] == ["IAM:alice-dev"] and report["failures"] == 0, stderr[-2000:]
    assert calls(rs, "GetCredentials") <= 1 and calls(rs, "GetWorkgroup") <= 1
    stats = report["stats"]
    assert isinstance(stats, dict) and stats["host_errors"] >= min_errors, stderr[-2000:]
    lines = warnings_of(stderr)
    assert lines and len(lines) == len(set(lines)), lines  # each failure logged once
    assert "Traceback" not in stderr


def nesting_bomb(path: Path) -> None:
    path.write_text("[" * 60_000)


def wrong_types(path: Path) -> None:
    data = json.loads(path.read_text())
    data["expiration"] = []
    path.write_text(json.dumps(data))


def small_bomb(path: Path) -> None:  # under the size cap: the parser's depth limit is what stops it
    path.write_text("[" * (MAX_ENTRY_BYTES - 1))


def oversize(path: Path) -> None:
    data = json.loads(path.read_text())
    data["pad"] = "x" * (4 * MAX_ENTRY_BYTES)
    path.write_text(json.dumps(data))


def fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path, 0o600)


def symlinked(path: Path) -> None:
    target = path.parent.parent / "planted.json"
    target.write_text(path.read_text())
    os.chmod(target, 0o600)
    path.unlink()
    path.symlink_to(target)


CASES: dict[str, Callable[[Path], None]] = {
    "nesting bomb": nesting_bomb,
    "nesting bomb under the size cap": small_bomb,
    "wrong types": wrong_types,
    "oversize": oversize,
    "fifo": fifo,
    "symlinked entry": symlinked,
}


@pytest.mark.parametrize("breaks", CASES.values(), ids=CASES.keys())
def test_a_broken_entry_of_its_own_key_never_fails_a_connect(
    rs: RedshiftStandIn, cache_dir: Path, breaks: Callable[[Path], None]
) -> None:
    for path in entry_files(rs, cache_dir).values():
        breaks(path)
    rs.emulator.reset_calls()
    report, stderr = run_child(rs, cache_dir, timeout=60)  # a FIFO once hung a connect past 25 s
    assert_degraded(rs, report, stderr, min_errors=2)
    assert str(cache_dir) in stderr
    # the next process finds good entries again: the broken ones were replaced
    rs.emulator.reset_calls()
    report, stderr = run_child(rs, cache_dir)
    assert report["failures"] == 0 and rs.emulator.calls == [] and warnings_of(stderr) == []


@pytest.mark.parametrize(
    "breaks", [nesting_bomb, wrong_types, fifo], ids=["nesting bomb", "wrong types", "fifo"]
)
def test_an_unrelated_bad_entry_neither_fails_a_cold_connect_nor_survives_the_sweep(
    rs: RedshiftStandIn, cache_dir: Path, breaks: Callable[[Path], None]
) -> None:
    HostStore(cache_dir)
    bad = cache_dir / UNRELATED
    bad.write_text(json.dumps({"format": 1, "kind": "credentials", "expiration": 1.0}))
    os.chmod(bad, 0o600)
    breaks(bad)
    report, stderr = run_child(rs, cache_dir)
    assert_degraded(rs, report, stderr)
    assert not bad.exists() and not bad.is_symlink()
    assert [line for line in warnings_of(stderr) if UNRELATED in line]


def test_rs_iam_cache_list_flags_bad_entries_and_exits_0(rs: RedshiftStandIn, cache_dir: Path) -> None:
    files = entry_files(rs, cache_dir)
    data = json.loads(files["endpoint"].read_text())
    data["expiration"] = "abc"
    files["endpoint"].write_text(json.dumps(data))
    listed = subprocess.run(
        [sys.executable, "-m", "sqlalchemy_rs_iam", "cache", "list"],
        env=child_env(rs, cache_dir), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"credentials\s+expires in", listed.stdout)
    assert "UNUSABLE    field 'expiration' is not a number" in listed.stdout
    assert "1 entries" in listed.stderr and "1 unusable" in listed.stderr


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=700", "tmpfs", str(mnt)], check=True,
                       capture_output=True, text=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); test_store.py injects ENOSPC instead")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_after_a_successful_fetch_never_fails_the_connect(
    rs: RedshiftStandIn, small_tmpfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = small_tmpfs / "cache"
    monkeypatch.setenv("RS_IAM_CACHE_DIR", str(cache_dir))
    HostStore(cache_dir)
    for n in range(LOCK_STRIPES):  # lock files exist; only entries need room
        (cache_dir / f"lock-{n:02d}.lock").touch(0o600)
    filler = os.open(small_tmpfs / "filler", os.O_WRONLY | os.O_CREAT, 0o600)  # fill the file system
    try:
        while True:
            os.write(filler, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == 28  # ENOSPC
    finally:
        os.close(filler)
    report, stderr = run_child(rs, cache_dir)
    assert_degraded(rs, report, stderr, min_errors=2)
    assert "ENOSPC" in stderr
    assert not [p for p in cache_dir.iterdir() if not p.name.endswith(".lock")]


@pytest.fixture
def read_only(cache_dir: Path) -> Iterator[Path]:
    HostStore(cache_dir)
    try:
        subprocess.run(["mount", "--bind", str(cache_dir), str(cache_dir)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(cache_dir)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        subprocess.run(["umount", str(cache_dir)], check=False, capture_output=True)
        pytest.skip(f"cannot make a read-only bind mount here ({exc}); test_store.py injects EROFS instead")
    try:
        yield cache_dir
    finally:
        subprocess.run(["umount", "-l", str(cache_dir)], check=False)


def test_a_read_only_file_system_never_fails_the_connect(rs: RedshiftStandIn, read_only: Path) -> None:
    report, stderr = run_child(rs, read_only)
    assert_degraded(rs, report, stderr, min_errors=2)
    assert "EROFS" in stderr


def test_a_lock_held_forever_costs_a_bounded_wait_then_the_connect_goes_on(
    rs: RedshiftStandIn, cache_dir: Path
) -> None:
    HostStore(cache_dir)
    fds = []
    for n in range(LOCK_STRIPES):  # this process holds every stripe and never lets go
        fd = os.open(cache_dir / f"lock-{n:02d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        fds.append(fd)
    try:
        report, stderr = run_child(rs, cache_dir, timeout=60)
        assert_degraded(rs, report, stderr, min_errors=2)
        assert "lock still busy after 7 s" in stderr
        # its entries were published all the same: the next process needs neither AWS nor the lock
        rs.emulator.reset_calls()
        report, stderr = run_child(rs, cache_dir, timeout=60)
        assert report["failures"] == 0 and rs.emulator.calls == [] and warnings_of(stderr) == []
    finally:
        for fd in fds:
            os.close(fd)
