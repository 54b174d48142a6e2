"""cache=host against another local user: an attacker account swaps the cache directory and its parent
while a victim process uses them. Real processes and a real second OS user (created with useradd when
missing; needs root, as in CI); the attacker's steps run as that user through ``runuser``.

Oracles: no file of the victim's is ever written outside the directory it checked, the victim never
waits beyond the bounded wait (it never waits at all: it holds the directory open), every connect
succeeds, and a victim started after the swap refuses the location before any AWS call.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_host_cache import CHILD, child_env

from sqlalchemy_rs_iam.store import LOCK_STRIPES
from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

pytestmark = pytest.mark.integration

ATTACKER = "rsiam-attacker"
TIMEOUTS = {"aws_connect_timeout": "1", "aws_read_timeout": "1", "aws_max_attempts": "1"}  # wait: 7 s
REFUSED = """
import sys
import sqlalchemy as sa
from sqlalchemy_rs_iam.errors import ConfigurationError
try:
    sa.create_engine(sys.argv[1])
except ConfigurationError as exc:
    print("refused:", exc)
else:
    print("accepted")
"""


@pytest.fixture(scope="module")
def attacker() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("needs root to create and become a second OS user")
    try:
        return pwd.getpwnam(ATTACKER)
    except KeyError:
        pass
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ATTACKER],
        capture_output=True, text=True,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot create a second OS user: {made.stderr.strip()}")
    return pwd.getpwnam(ATTACKER)


def as_attacker(script: str) -> None:
    done = subprocess.run(
        ["runuser", "-u", ATTACKER, "--", "sh", "-ec", script], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def places(attacker: pwd.struct_passwd) -> Iterator[tuple[Path, Path]]:
    """``(grand, decoy)``: a root-owned directory in /tmp (the attacker can reach it) and the attacker's own
    directory, full of FIFOs named like the victim's lock files."""
    tag = secrets.token_hex(4)
    grand, decoy = Path(f"/tmp/rsiam-victim-{tag}"), Path(f"/tmp/rsiam-attacker-{tag}")
    grand.mkdir(mode=0o755)
    os.chmod(grand, 0o755)
    decoy.mkdir()
    os.chown(decoy, attacker.pw_uid, attacker.pw_gid)
    fifos = " ".join(f"{decoy}/lock-{n:02d}.lock" for n in range(LOCK_STRIPES))
    as_attacker(f"chmod 777 {decoy}; mkfifo -m 666 {fifos}")
    try:
        yield grand, decoy
    finally:
        shutil.rmtree(grand, ignore_errors=True)
        shutil.rmtree(decoy, ignore_errors=True)


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under ``root`` -> (owner uid, kind)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            kind = (
                "fifo"
                if path.is_fifo()
                else "link"
                if path.is_symlink()
                else "dir"
                if path.is_dir()
                else "file"
            )
            found[str(path.relative_to(root))] = (st.st_uid, kind)
    return found


def refused(rs: RedshiftStandIn, cache_dir: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", REFUSED, rs.url("psycopg2", cache="host", **TIMEOUTS)],
        env=child_env(rs, cache_dir), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_parent_another_user_could_write_is_refused_before_anything_is_created(
    rs: RedshiftStandIn, places: tuple[Path, Path]
) -> None:
    grand, _ = places
    os.chmod(grand, 0o777)  # world-writable, no sticky bit
    said = refused(rs, grand / "parent" / "cache")
    assert said.startswith("refused:") and "sticky" in said
    assert os.listdir(grand) == [] and rs.emulator.calls == []


def test_swapping_the_directory_and_its_parent_during_use_changes_nothing(
    rs: RedshiftStandIn, places: tuple[Path, Path], attacker: pwd.struct_passwd
) -> None:
    grand, decoy = places
    parent = grand / "parent"
    cache_dir = parent / "cache"
    rs.emulator.max_lifetime = 6  # the victim refreshes through the host store every few seconds
    victim = subprocess.Popen(
        [sys.executable, "-c", CHILD, rs.url("psycopg2", cache="host", **TIMEOUTS), "14"],
        env=child_env(rs, cache_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not list(cache_dir.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(cache_dir.glob("*.json")), "the victim never wrote its entries"
        os.chmod(grand, 0o777)  # an administrator's mistake, mid-run
        os.chmod(parent, 0o777)
        swapped_at = time.time()
        as_attacker(  # the directory first, then its parent, each for a symlink into the attacker's place
            f"mv {cache_dir} {parent}/cache.orig; ln -s {decoy} {cache_dir};"
            f"mv {parent} {grand}/parent.orig; mkdir {parent}; ln -s {decoy} {parent}/cache"
        )
        out, err = victim.communicate(timeout=14 + 7 + 60)  # its run, one bounded wait, a loaded machine
    finally:
        victim.kill()
    assert victim.returncode == 0, err[-2000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["users"] == ["IAM:alice-dev"] and report["failures"] == 0, err[-2000:]
    # nothing of the victim's outside the directory it checked
    assert tree(decoy) == {f"lock-{n:02d}.lock": (attacker.pw_uid, "fifo") for n in range(LOCK_STRIPES)}
    assert all(uid == attacker.pw_uid for uid, _ in tree(parent).values())
    # ... which it kept using: it refreshed there after the swap
    original = grand / "parent.orig" / "cache.orig"
    written = [json.loads(p.read_text())["written_at"] for p in original.glob("*.json")]
    assert max(written) > swapped_at, (written, swapped_at)
    # a process started now refuses the location (before any AWS call), whichever way it is broken
    rs.emulator.reset_calls()
    assert "sticky" in refused(rs, cache_dir)
    os.chmod(grand, 0o755)
    assert "owned by uid" in refused(rs, cache_dir)
    assert rs.emulator.calls == []
    assert tree(decoy) == {f"lock-{n:02d}.lock": (attacker.pw_uid, "fifo") for n in range(LOCK_STRIPES)}
