"""The host store on real files in a temporary directory, with a fake clock: permissions, the directory
rule, and that every unusable file or failing operation is an absent entry (logged once, counted)."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from pathlib import Path

import pytest

from sqlalchemy_rs_iam.counters import CacheStats
from sqlalchemy_rs_iam.credentials import DbCredentials
from sqlalchemy_rs_iam.errors import ConfigurationError
from sqlalchemy_rs_iam.store import LOCK_STRIPES, MAX_ENTRY_BYTES, HostStore, default_cache_dir, key_name

NAME = key_name("credentials", "k")
OTHER = key_name("credentials", "unrelated")


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def creds(clock: Clock, n: int = 1) -> DbCredentials:
    return DbCredentials("IAM:a", f"pw{n}", clock.t + 900, None, clock.t)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> HostStore:
    return HostStore(tmp_path / "c", clock=clock, wait=0.2)


def plant(store: HostStore, name: str, content: str | bytes, mode: int = 0o600) -> Path:
    path = store.directory / f"{name}.json"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chmod(path, mode)
    return path


def test_directory_choice(tmp_path: Path) -> None:
    assert default_cache_dir({"RS_IAM_CACHE_DIR": "/x/y"}) == Path("/x/y")
    assert default_cache_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) == tmp_path / "sqlalchemy-rs-iam"
    assert "sqlalchemy-rs-iam" in str(default_cache_dir({"XDG_RUNTIME_DIR": "/does/not/exist"}))


def test_key_names_are_hashes_that_separate_keys() -> None:
    a, b = key_name("credentials", "profile:a:AKIA1"), key_name("credentials", "profile:b:AKIA2")
    assert a != b and len(a) == 40 and "AKIA" not in a


def test_round_trip_files_private_and_atomic(store: HostStore, clock: Clock) -> None:
    assert store.write_credentials(NAME, "workgroup 'x'", creds(clock))
    got = store.read_credentials(NAME)
    assert got is not None and got.password == "pw1" and got.shared
    with store.lock(NAME, blocking=True) as mine:
        assert mine
    assert oct(store.directory.stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in store.directory.iterdir()} == {"0o600"}
    assert not [p for p in store.directory.iterdir() if p.name.startswith(".tmp-")]
    clock.t += 901
    assert store.read_credentials(NAME) is None and not (store.directory / f"{NAME}.json").exists()


BAD = {
    "torn": '{"format": 1, "kind": "credentials", "user": "IAM:a", "passw',
    "nesting bomb": "[" * 60_000,  # over the size cap too
    "small nesting bomb": "[" * 5_000 + "]" * 0,
    "deep but small": '{"a":' * 3_000 + "1" + "}" * 3_000,
    "not an object": "[1, 2]",
    "wrong format": '{"format": 2}',
    "expiration a list": '{"format": 1, "kind": "credentials", "expiration": [], "user": "u", "password": "p", "fetched_at": 1}',
    "expiration a string": '{"format": 1, "kind": "credentials", "expiration": "abc"}',
    "expiration a bool": '{"format": 1, "kind": "credentials", "expiration": true}',
    "user a number": '{"format": 1, "kind": "credentials", "expiration": 1e12, "user": 1, "password": "p", "fetched_at": 1}',
    "nan": '{"format": 1, "kind": "credentials", "expiration": NaN}',
    "oversize": json.dumps({"format": 1, "kind": "credentials", "pad": "x" * MAX_ENTRY_BYTES}),
    "not utf-8": b'{"format": 1, "kind": "\xff"}',
}


@pytest.mark.parametrize("content", BAD.values(), ids=BAD.keys())
def test_unusable_entries_are_absent_logged_once_counted_and_swept(
    store: HostStore, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    stats = CacheStats()
    plant(store, NAME, content)
    plant(store, OTHER, content)
    with caplog.at_level(logging.WARNING, "sqlalchemy_rs_iam.store"):
        assert store.read_credentials(NAME, stats) is None
        assert stats.host_errors == 1 and store.errors == 1
        assert str(store.directory / f"{NAME}.json") in caplog.text
        assert len(caplog.records) == 1
        assert [e.problem for e in store.entries() if e.name == OTHER] != [None]  # flagged, not fatal
        assert store.sweep(stats) >= 1  # the unrelated bad entry does not stop the sweep: it is removed
    assert not (store.directory / f"{OTHER}.json").exists()


def test_each_failure_is_logged_once_but_counted_each_time(
    store: HostStore, caplog: pytest.LogCaptureFixture
) -> None:
    stats = CacheStats()
    with caplog.at_level(logging.WARNING, "sqlalchemy_rs_iam.store"):
        for _ in range(3):
            plant(store, NAME, "{torn")
            assert store.read_credentials(NAME, stats) is None
    assert stats.host_errors == 3 and len(caplog.records) == 1


def test_special_files_and_foreign_files_are_absent_without_blocking(
    store: HostStore, tmp_path: Path
) -> None:
    stats = CacheStats()
    os.mkfifo(store.directory / f"{NAME}.json", 0o600)  # opened O_NONBLOCK: no hang
    assert store.read_credentials(NAME, stats) is None
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"format": 1}')
    (store.directory / f"{OTHER}.json").symlink_to(elsewhere)
    assert store.read_credentials(OTHER, stats) is None
    group = key_name("g")
    plant(store, group, '{"format": 1}', mode=0o644)
    assert store.read_credentials(group, stats) is None
    foreign = key_name("f")
    os.chown(plant(store, foreign, '{"format": 1}'), 65534, 65534)
    assert store.read_credentials(foreign, stats) is None
    assert stats.host_errors == 4 and elsewhere.exists()  # the symlink's target is never touched


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES])
def test_write_errors_are_absent_entries_not_failures(
    store: HostStore, clock: Clock, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    stats = CacheStats()

    def failing(*_: object) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "write", failing)
    assert store.write_credentials(NAME, "d", creds(clock), stats) is False
    monkeypatch.undo()
    assert stats.host_errors == 1 and store.read_credentials(NAME) is None
    assert not [p for p in store.directory.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_a_lock_that_cannot_be_made_is_no_lock(
    store: HostStore, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    stats = CacheStats()
    real_open = os.open

    def failing(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if str(path).startswith("lock-"):
            raise OSError(code, os.strerror(code))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", failing)
    with store.lock(NAME, blocking=True, stats=stats) as mine:
        assert mine is False
    assert stats.host_errors == 1


def test_a_busy_lock_is_waited_for_a_bounded_time_and_counted(store: HostStore) -> None:
    stats = CacheStats()
    with store.lock(NAME, blocking=True) as mine:
        assert mine
        got: list[bool] = []

        def other() -> None:
            with store.lock(NAME, blocking=True, stats=stats) as theirs:
                got.append(theirs)

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        with store.lock(NAME, blocking=False) as busy:
            assert busy is False  # non-blocking and busy: normal, not an error
    assert got == [False] and stats.host_errors == 1


def test_unsafe_directories_are_refused(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
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
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # world-writable, no sticky bit: another user could swap what is inside
    with pytest.raises(ConfigurationError, match="sticky"):
        HostStore(shared / "cache")
    os.chmod(shared, 0o1777)  # as /tmp: allowed
    HostStore(shared / "cache")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(ConfigurationError, match="owned by uid 65534"):
        HostStore(theirs / "cache")


def test_a_swapped_path_changes_nothing(store: HostStore, clock: Clock, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    os.rename(store.directory, moved)
    decoy = tmp_path / "decoy"
    decoy.mkdir(mode=0o700)
    store.directory.symlink_to(decoy)
    assert store.write_credentials(NAME, "d", creds(clock))
    assert (moved / f"{NAME}.json").exists() and list(decoy.iterdir()) == []


def test_refused_password_is_forgotten_only_if_still_stored(store: HostStore, clock: Clock) -> None:
    old = creds(clock, 1)
    store.write_credentials(NAME, "d", creds(clock, 2))  # another process already replaced it
    store.forget_credentials(NAME, old)
    stored = store.read_credentials(NAME)
    assert stored is not None
    store.forget_credentials(NAME, stored)
    assert store.read_credentials(NAME) is None


def test_endpoints_round_trip_and_bad_ports(store: HostStore) -> None:
    name = key_name("endpoint", "k")
    assert store.write_endpoint(name, "endpoint of 'x'", ("h", 5439), 3600)
    assert store.read_endpoint(name) == ("h", 5439)
    plant(store, name, '{"format": 1, "kind": "endpoint", "expiration": 1e12, "host": "h", "port": true}')
    assert store.read_endpoint(name) is None


def test_files_are_bounded_after_a_thousand_expired_keys_and_one_sweep(
    store: HostStore, clock: Clock
) -> None:
    for i in range(1000):
        name = key_name("credentials", "per-request", i)
        with store.lock(name, blocking=True):
            store.write_credentials(name, "d", creds(clock))
    live = key_name("credentials", "live")
    clock.t += 901
    store.write_credentials(live, "d", DbCredentials("u", "p", clock.t + 900, None, clock.t))
    store.sweep()
    files = os.listdir(store.directory)
    assert len(files) <= LOCK_STRIPES + 1, len(files)
    assert f"{live}.json" in files


def test_entries_show_no_secret_flag_bad_ones_and_clear_keeps_held_locks(
    store: HostStore, clock: Clock
) -> None:
    c = creds(clock)
    store.write_credentials(NAME, "workgroup 'x' db dev", c)
    store.write_endpoint(key_name("e"), "endpoint of workgroup 'x'", ("h", 5439), 3600)
    plant(store, OTHER, '{"format": 1, "kind": "credentials", "expiration": "abc"}')
    listed = store.entries()
    assert sorted(e.kind for e in listed if e.problem is None) == ["credentials", "endpoint"]
    assert [e.problem for e in listed if e.name == OTHER] == ["field 'expiration' is not a number"]
    assert c.password not in repr(listed)
    held = key_name("held")
    with store.lock(held, blocking=True):
        with store.lock(NAME, blocking=True):
            pass
        assert store.clear() == 3
        locks = [p.name for p in store.directory.iterdir()]
        assert locks == [store.lock_file(held)]  # held: kept
    assert store.entries() == []


def test_clear_while_a_process_waits_gives_no_two_holders(store: HostStore) -> None:
    order: list[str] = []
    with store.lock(NAME, blocking=True):
        waiter_holds = threading.Event()

        def waiter() -> None:
            with store.lock(NAME, blocking=True) as mine:
                order.append(f"waiter {mine}")
                waiter_holds.set()
                with store.lock(NAME, blocking=False) as other:
                    order.append(f"other {other}")

        store.wait = 5.0
        t = threading.Thread(target=waiter)
        t.start()
        store.clear()  # cannot delete the held lock
    t.join(10)
    assert order == ["waiter True", "other False"]
