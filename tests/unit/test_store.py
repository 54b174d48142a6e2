"""The host cache's files, permissions and time policy, on a temporary directory with a fake clock."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from sqlalchemy_rs_iam.credentials import DbCredentials
from sqlalchemy_rs_iam.errors import ConfigurationError
from sqlalchemy_rs_iam.policy import RefreshPolicy
from sqlalchemy_rs_iam.store import HostStore, default_cache_dir, key_name

POLICY = RefreshPolicy()


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


class Aws:
    def __init__(self, clock: Clock) -> None:
        self.clock, self.calls = clock, 0

    def __call__(self) -> DbCredentials:
        self.calls += 1
        return DbCredentials("IAM:a", f"pw{self.calls}", self.clock.t + 900, None, self.clock.t)


@pytest.fixture
def env(tmp_path: Path) -> tuple[HostStore, Clock, Aws]:
    clock = Clock()
    return HostStore(tmp_path / "c", clock=clock, wait=0.2), clock, Aws(clock)


def test_directory_choice(tmp_path: Path) -> None:
    assert default_cache_dir({"RS_IAM_CACHE_DIR": "/x/y"}) == Path("/x/y")
    assert default_cache_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) == tmp_path / "sqlalchemy-rs-iam"
    assert "sqlalchemy-rs-iam" in str(default_cache_dir({"XDG_RUNTIME_DIR": "/does/not/exist"}))


def test_key_names_are_hashes_that_separate_keys() -> None:
    a, b = key_name("credentials", "profile:a:AKIA1"), key_name("credentials", "profile:b:AKIA2")
    assert a != b and len(a) == 40 and "AKIA" not in a


def test_adopt_refresh_by_one_and_block_when_stale(env: tuple[HostStore, Clock, Aws]) -> None:
    store, clock, aws = env
    first = store.credentials("k", "d", aws, POLICY)
    assert aws.calls == 1 and not first.shared
    adopted = store.credentials("k", "d", aws, POLICY)
    assert aws.calls == 1 and adopted.shared and adopted.password == first.password
    clock.t += 700  # past the refresh point, before the stale mark: the lock holder refreshes
    with store._lock("k", blocking=True):  # another process holds it: serve the stored one, no call
        assert store.credentials("k", "d", aws, POLICY).password == "pw1" and aws.calls == 1
    assert store.credentials("k", "d", aws, POLICY).password == "pw2" and aws.calls == 2
    clock.t += 900  # stale: block on the lock and fetch
    assert store.credentials("k", "d", aws, POLICY).password == "pw3"


def test_a_busy_lock_is_waited_for_a_bounded_time(env: tuple[HostStore, Clock, Aws]) -> None:
    store, _, aws = env
    with store._lock("k", blocking=True):
        got = []
        t = threading.Thread(target=lambda: got.append(store.credentials("k", "d", aws, POLICY)))
        t.start()
        t.join(5)
    assert got and aws.calls == 1  # fetched on its own after `wait` (0.2 s), not stuck


def test_files_are_private_and_atomic(env: tuple[HostStore, Clock, Aws]) -> None:
    store, _, aws = env
    store.credentials("k", "workgroup 'x'", aws, POLICY)
    assert oct(store.directory.stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in store.directory.iterdir()} == {"0o600"}
    assert not [p for p in store.directory.iterdir() if p.name.startswith(".tmp-")]


def test_expired_and_corrupt_entries_are_dropped(env: tuple[HostStore, Clock, Aws]) -> None:
    store, clock, aws = env
    store.credentials("k", "d", aws, POLICY)
    clock.t += 901
    assert store.read_credentials("k") is None and not (store.directory / "k.json").exists()
    (store.directory / "k.json").write_text("{not json")
    os.chmod(store.directory / "k.json", 0o600)
    assert store.read_credentials("k") is None
    assert not (store.directory / "k.json").exists()  # a corrupt entry is deleted
    (store.directory / "k.json").write_text(json.dumps({"format": 1, "kind": "credentials", "user": 1}))
    os.chmod(store.directory / "k.json", 0o600)
    assert store.read_credentials("k") is None


def test_refused_password_is_forgotten_only_if_still_stored(env: tuple[HostStore, Clock, Aws]) -> None:
    store, _, aws = env
    old = store.credentials("k", "d", aws, POLICY)
    store.write_credentials("k", "d", aws())  # another process already replaced it
    store.forget_credentials("k", old)
    assert store.read_credentials("k") is not None
    store.forget_credentials("k", store.read_credentials("k"))  # type: ignore[arg-type]
    assert store.read_credentials("k") is None


def test_unsafe_directories_and_files_are_refused(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    os.chmod(open_dir, 0o755)
    with pytest.raises(ConfigurationError, match="group or others") as info:
        HostStore(open_dir)
    assert info.value.parameter == "cache"
    private = tmp_path / "private"
    HostStore(private)
    link = tmp_path / "link"
    link.symlink_to(private)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        HostStore(link)
    store = HostStore(private)
    (private / "e.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ConfigurationError, match="symbolic link"):
        store.read_credentials("e")
    (private / "g.json").write_text("{}")
    os.chmod(private / "g.json", 0o644)
    with pytest.raises(ConfigurationError, match="group or others"):
        store.read_credentials("g")


def test_entries_show_no_secret_and_clear_empties(env: tuple[HostStore, Clock, Aws]) -> None:
    store, _, aws = env
    creds = store.credentials("k", "workgroup 'x' db dev", aws, POLICY)
    store.endpoint("e", "endpoint of workgroup 'x'", lambda: ("h", 5439), 3600)
    listed = store.entries()
    assert {e.kind for e in listed} == {"credentials", "endpoint"}
    assert creds.password not in repr(listed)
    assert store.endpoint("e", "d", lambda: pytest.fail("cached"), 3600) == ("h", 5439)
    assert store.clear() == 2 and store.entries() == []
