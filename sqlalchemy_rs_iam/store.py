"""``cache=host``: where the host tier's entries live -- one private directory per OS user, one file per key.

Primitives only (read, write, lock, forget, list, sweep); what to do with them is the host tier's
(:mod:`sqlalchemy_rs_iam.tiers`)::

    store = HostStore.open()                        # checks the directory and holds it open
    creds = store.read_credentials(name)            # None: missing, expired or unusable (never raises)
    with store.lock(name, blocking=True) as mine:   # False: busy past the bounded wait, or no lock at all
        store.write_credentials(name, "workgroup 'analytics' ...", creds)

**Where.** ``RS_IAM_CACHE_DIR`` if set, else ``$XDG_RUNTIME_DIR/sqlalchemy-rs-iam`` (a tmpfs that the
system clears at logout), else the user cache directory (``platformdirs``). The directory is created 0700;
it and every ancestor are checked as OpenSSH's StrictModes does (:mod:`sqlalchemy_rs_iam.hostdir`) and an
unsafe location is refused with :class:`ConfigurationError` for ``cache`` at ``create_engine``. The
directory is then held open and every file operation is relative to that descriptor, so a later swap of
the path (or of a parent) changes nothing.

**Degrade, never fail.** After the directory check nothing here raises: any error reading, parsing,
sweeping, locking or writing (corrupt or hostile content, wrong types, deep nesting, more than
:data:`MAX_ENTRY_BYTES`, a FIFO or symlink or another user's file in place of an entry, ``ENOSPC``,
``EROFS``, ``EACCES``, ``EDQUOT``, a lock not had within ``wait`` seconds) makes that entry absent; it is
logged once per file and reason at WARNING (path and reason, never a secret) and counted (``errors``,
and the caller's ``host_errors`` counter). Reads open with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO cannot
hang them), check ``S_ISREG``, the owner and the mode with ``fstat`` and cap the size before parsing.

**Bounded files.** Entries are ``<40 hex>.json``, written 0600 and atomically (temporary file + rename).
Cross-process single flight uses :data:`LOCK_STRIPES` fixed lock files (``lock-NN.lock``, a key's stripe
from its name; ``flock``, so a lock dies with its process). A sweep (after a write, at most once a minute
per process) deletes expired and unusable entries and temporary files
older than a minute. After any number of keys expire and one sweep the directory holds at most: the live
entries + 32 lock files + one temporary file per write in progress.

What is on disk, for how long, who can read it: the issued database password and user, their expiry and
a description of the key (target, database, region, the identity's label), readable only by this OS user
(and root), until expiry (at most 1 hour) or ``rs-iam cache clear``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import secrets
import stat
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .counters import CacheStats
from .credentials import DbCredentials
from .errors import ConfigurationError
from .hostdir import open_private_dir
from .policy import Clock

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: cache=host is refused when asked for
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_STRIPES", "MAX_ENTRY_BYTES", "HostStore", "StoredEntry", "default_cache_dir", "key_name"]

log = logging.getLogger(__name__)

MAX_ENTRY_BYTES = 8192  # a real entry is < 1 KiB; anything bigger is not ours
LOCK_STRIPES = 32
_FORMAT = 1
_POLL = 0.01  # seconds between tries of a busy lock
_TMP_AGE = 60.0  # a temporary file older than this was left by a process killed mid-write
_SWEEP_EVERY = 60.0
_MAX_WARNED = 1024
_ENTRY = re.compile(r"[0-9a-f]{40}\.json")
# getattr: these flags are POSIX-only, and this module is imported (not used) on Windows too
_SAFE = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _SAFE
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | _SAFE
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _SAFE


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``cache=host`` keeps its entries (see the module docstring for the order)."""
    env = os.environ if environ is None else environ
    if env.get("RS_IAM_CACHE_DIR"):
        return Path(env["RS_IAM_CACHE_DIR"])
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "sqlalchemy-rs-iam"
    import platformdirs  # only where it is needed: most Linux sessions have XDG_RUNTIME_DIR

    return Path(platformdirs.user_cache_dir("sqlalchemy-rs-iam", appauthor=False))


def key_name(*parts: object) -> str:
    """A file-name-safe hash of a cache key's parts (which may hold identifiers, never shown)."""
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()[:40]


@dataclass(frozen=True)
class StoredEntry:
    """What ``rs-iam cache list`` shows of one entry: never a secret. ``problem`` says why a file is
    unusable (then the other fields are empty)."""

    name: str
    kind: str
    description: str
    expires_at: float
    written_at: float
    problem: str | None = None


class _Unusable(Exception):
    """An entry file that is there but cannot be used; the message is the reason (never a secret)."""


def _reason(exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0, "error")
    return f"{code}: {exc.strerror or exc}"


def _number(data: Mapping[str, Any], field: str, *, optional: bool = False) -> float | None:
    value = data.get(field)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Unusable(f"field {field!r} is not a number")
    return float(value)


def _text(data: Mapping[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str):
        raise _Unusable(f"field {field!r} is not a string")
    return value


def _validate(data: Mapping[str, Any]) -> float:
    """Check every field an entry of its kind must have (raises _Unusable); returns its expiry."""
    kind = data.get("kind")
    expiration = _number(data, "expiration")
    assert expiration is not None
    _text(data, "description")
    _number(data, "written_at")
    if kind == "credentials":
        _text(data, "user"), _text(data, "password")
        _number(data, "fetched_at"), _number(data, "next_refresh", optional=True)
    elif kind == "endpoint":
        _text(data, "host")
        port = data.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise _Unusable("field 'port' is not a port number")
    else:
        raise _Unusable("an unknown kind of entry")
    return expiration


class HostStore:
    """The host cache directory of this OS user, held open. One per directory per process (the
    registry's); ``wait`` bounds every wait for another process's lock."""

    def __init__(self, directory: Path, *, clock: Clock = time.time, wait: float = 30.0) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            raise ConfigurationError(
                "cache", "cache=host needs a POSIX system (flock locks); use cache=process"
            )
        self.directory = Path(directory)
        self.clock = clock
        self.wait = wait
        self.errors = 0  # store errors met by this process (each made an entry absent)
        self._fd = open_private_dir(self.directory)  # ConfigurationError(cache) if unsafe
        self._mutex = threading.Lock()  # guards the counters below, never held during I/O
        self._warned: set[tuple[str, str]] = set()
        self._next_sweep = -math.inf

    @classmethod
    def open(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> HostStore:
        return cls(default_cache_dir(environ), **kwargs)

    def __repr__(self) -> str:
        return f"<HostStore {self.directory}>"

    def close(self) -> None:
        fd, self._fd = getattr(self, "_fd", -1), -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        self.close()

    def after_fork(self) -> None:
        """In a forked child: a new mutex. Held flock locks are the parent's; the child opens its own."""
        self._mutex = threading.Lock()

    # --- trouble ----------------------------------------------------------------------------------------------

    def _trouble(self, file: str, reason: str, stats: CacheStats | None) -> None:
        """Count a store error; log it once per file and reason."""
        with self._mutex:
            self.errors += 1
            first = (file, reason) not in self._warned
            if first:
                if len(self._warned) >= _MAX_WARNED:
                    self._warned.clear()
                self._warned.add((file, reason))
        if stats is not None:
            stats.incr("host_errors")
        if first:
            log.warning(
                "host cache %s: %s; treating it as absent (connects go on through AWS)",
                self.directory / file, reason,
            )  # fmt: skip

    # --- files -------------------------------------------------------------------------------------------------

    def _load(self, file: str) -> tuple[dict[str, Any], os.stat_result] | None:
        """The entry's JSON object and its stat; None when missing; raises _Unusable."""
        try:
            fd = os.open(file, _READ_FLAGS, dir_fd=self._fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _Unusable("a symbolic link" if exc.errno == errno.ELOOP else _reason(exc)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _Unusable("not a regular file")
            if st.st_uid != os.geteuid():
                raise _Unusable(f"owned by uid {st.st_uid}, not by this user")
            if st.st_mode & 0o077:
                raise _Unusable(f"open to group or others (mode {stat.S_IMODE(st.st_mode):o})")
            if st.st_size > MAX_ENTRY_BYTES:
                raise _Unusable(f"larger than {MAX_ENTRY_BYTES} bytes")
            chunks, size = [], 0
            while size <= MAX_ENTRY_BYTES:
                chunk = os.read(fd, MAX_ENTRY_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > MAX_ENTRY_BYTES:
                raise _Unusable(f"larger than {MAX_ENTRY_BYTES} bytes")
        except OSError as exc:
            raise _Unusable(_reason(exc)) from None
        finally:
            os.close(fd)
        try:
            data = json.loads(b"".join(chunks))
        except RecursionError:
            raise _Unusable("nested too deep") from None
        except ValueError:  # UnicodeDecodeError too
            raise _Unusable("not valid JSON") from None
        if not isinstance(data, dict):
            raise _Unusable("not a JSON object")
        if data.get("format") != _FORMAT:
            raise _Unusable("an unknown format")
        return data, st

    def _unlink(self, file: str, st: os.stat_result | None = None) -> None:
        """Delete ``file`` (only if it is still the file ``st`` describes, when given); errors are ignored:
        a file that cannot be deleted is skipped again next time."""
        with contextlib.suppress(OSError):
            if st is not None:
                now = os.stat(file, dir_fd=self._fd, follow_symlinks=False)
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    return  # replaced meanwhile by a fresh entry
            os.unlink(file, dir_fd=self._fd)

    def _entry(self, name: str, kind: str, stats: CacheStats | None) -> tuple[dict[str, Any], float] | None:
        """A live entry of ``kind`` and its expiry, else None (expired and unusable ones are deleted)."""
        file = name + ".json"
        try:
            found = self._load(file)
            if found is None:
                return None
            data, st = found
            expiration = _validate(data)
            if data["kind"] != kind:
                raise _Unusable(f"not a {kind} entry")
        except _Unusable as exc:
            self._trouble(file, str(exc), stats)
            self._unlink(file)
            return None
        if self.clock() >= expiration:
            self._unlink(file, st)
            return None
        return data, expiration

    def _write(self, name: str, data: dict[str, Any], stats: CacheStats | None) -> bool:
        file, tmp = name + ".json", f".tmp-{secrets.token_hex(8)}"
        body = json.dumps(data).encode()
        try:
            fd = os.open(tmp, _WRITE_FLAGS, 0o600, dir_fd=self._fd)
            try:
                view = memoryview(body)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            # atomic: readers see the old entry or the new one; replaces whatever was there
            os.rename(tmp, file, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except OSError as exc:
            self._unlink(tmp)
            self._trouble(file, f"not written ({_reason(exc)})", stats)
            return False
        self._maybe_sweep(stats)
        return True

    @staticmethod
    def lock_file(name: str) -> str:
        """The lock file (one of :data:`LOCK_STRIPES`) that serialises fetches of ``name``."""
        return f"lock-{zlib.crc32(name.encode()) % LOCK_STRIPES:02d}.lock"

    @contextlib.contextmanager
    def lock(self, name: str, *, blocking: bool, stats: CacheStats | None = None) -> Iterator[bool]:
        """Hold the lock of ``name``'s stripe (yields True). False at once when ``blocking=False`` and it is
        busy; False after ``wait`` seconds of a blocking wait, or when no lock can be had at all (both
        counted as errors): the caller then goes on without it."""
        file = self.lock_file(name)
        deadline = time.monotonic() + self.wait
        fd = -1
        try:
            while fd < 0:
                try:
                    fd = os.open(file, _LOCK_FLAGS, 0o600, dir_fd=self._fd)
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                        raise _Unusable("not a regular file of this user")
                except (OSError, _Unusable) as exc:
                    reason = _reason(exc) if isinstance(exc, OSError) else str(exc)
                    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
                        reason = "a symbolic link"
                    self._trouble(file, f"no lock ({reason})", stats)
                    if fd >= 0:
                        os.close(fd)
                    yield False
                    return
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError as exc:
                        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                            self._trouble(file, f"no lock ({_reason(exc)})", stats)
                            yield False
                            return
                        if not blocking:
                            yield False
                            return
                        if time.monotonic() >= deadline:
                            self._trouble(file, f"lock still busy after {self.wait:.0f} s", stats)
                            yield False
                            return
                        time.sleep(_POLL)
                try:  # `rs-iam cache clear` may have deleted the file we waited on: lock the current one
                    now = os.stat(file, dir_fd=self._fd, follow_symlinks=False)
                    same = (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)
                except OSError:
                    same = False
                if not same:
                    os.close(fd)
                    fd = -1
            yield True  # released with the file description, also if this process dies
        finally:
            if fd >= 0:
                os.close(fd)

    # --- credentials --------------------------------------------------------------------------------------------

    def read_credentials(self, name: str, stats: CacheStats | None = None) -> DbCredentials | None:
        """The stored credential if it is there, usable and not expired."""
        found = self._entry(name, "credentials", stats)
        if found is None:
            return None
        data, expiration = found  # validated
        next_refresh = data.get("next_refresh")
        return DbCredentials(
            user=data["user"], password=data["password"], expiration=expiration,
            next_refresh=None if next_refresh is None else float(next_refresh),
            fetched_at=float(data["fetched_at"]), shared=True,
        )  # fmt: skip

    def write_credentials(
        self, name: str, description: str, creds: DbCredentials, stats: CacheStats | None = None
    ) -> bool:
        """Publish ``creds`` under ``name``; False (logged, counted) if the disk would not take it."""
        return self._write(
            name,
            {"format": _FORMAT, "kind": "credentials", "description": description, "user": creds.user,
             "password": creds.password, "expiration": creds.expiration, "next_refresh": creds.next_refresh,
             "fetched_at": creds.fetched_at, "written_at": self.clock()},
            stats,
        )  # fmt: skip

    def forget_credentials(
        self, name: str, refused: DbCredentials | None, stats: CacheStats | None = None
    ) -> None:
        """Drop the shared entry if it still holds the password a database refused (not a newer one);
        ``None``: drop it whatever it holds."""
        with self.lock(name, blocking=True, stats=stats):
            stored = self.read_credentials(name, stats)
            if stored is not None and (refused is None or stored.password == refused.password):
                self._unlink(name + ".json")

    # --- endpoints ----------------------------------------------------------------------------------------------

    def read_endpoint(self, name: str, stats: CacheStats | None = None) -> tuple[str, int] | None:
        found = self._entry(name, "endpoint", stats)
        if found is None:
            return None
        data = found[0]  # validated
        return str(data["host"]), int(data["port"])

    def write_endpoint(
        self,
        name: str,
        description: str,
        address: tuple[str, int],
        ttl: float,
        stats: CacheStats | None = None,
    ) -> bool:
        now = self.clock()
        return self._write(
            name,
            {"format": _FORMAT, "kind": "endpoint", "description": description, "host": address[0],
             "port": address[1], "expiration": now + ttl, "written_at": now},
            stats,
        )  # fmt: skip

    def forget_endpoint(self, name: str) -> None:
        self._unlink(name + ".json")

    # --- listing, purging, sweeping -------------------------------------------------------------------------------

    def _names(self) -> list[str]:
        try:
            return sorted(os.listdir(self._fd))
        except OSError:
            return []

    def entries(self) -> list[StoredEntry]:
        """Every live entry, and every unusable entry file flagged with its problem (``rs-iam cache list``).
        Expired entries are deleted; unusable ones are left for the user to see (the sweep deletes them)."""
        found = []
        for file in self._names():
            if not _ENTRY.fullmatch(file):
                continue
            name = file[:-5]
            try:
                loaded = self._load(file)
                if loaded is None:
                    continue
                data, st = loaded
                expires = _validate(data)
            except _Unusable as exc:
                found.append(StoredEntry(name, "", "", 0.0, 0.0, problem=str(exc)))
                continue
            if self.clock() >= expires:
                self._unlink(file, st)
                continue
            found.append(
                StoredEntry(name, data["kind"], data["description"], expires, float(data["written_at"]))
            )
        return found

    def clear(self) -> int:
        """Delete every entry, temporary file and lock file not held by a process; returns how many entries
        were deleted. A held lock stays: deleting it would let a second process take the same stripe."""
        count = 0
        for file in self._names():
            if _ENTRY.fullmatch(file) or file.startswith(".tmp-"):
                count += file.endswith(".json")
                self._unlink(file)
            elif file.startswith("lock-") and file.endswith(".lock"):
                with self._try_lock(file) as held:
                    if held:
                        self._unlink(file)  # while holding it: a waiter re-checks the inode it locked
        return count

    @contextlib.contextmanager
    def _try_lock(self, file: str) -> Iterator[bool]:
        try:
            fd = os.open(file, _READ_FLAGS, dir_fd=self._fd)
        except OSError:
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def _maybe_sweep(self, stats: CacheStats | None) -> None:
        now = self.clock()
        with self._mutex:
            if now < self._next_sweep:
                return
            self._next_sweep = now + _SWEEP_EVERY
        self.sweep(stats)

    def sweep(self, stats: CacheStats | None = None) -> int:
        """Delete expired and unusable entries and temporary files older than a minute; returns how many
        files were deleted. Never raises."""
        removed = 0
        try:
            now, wall = self.clock(), time.time()
            for file in self._names():
                if file.startswith(".tmp-"):
                    with contextlib.suppress(OSError):
                        if wall - os.stat(file, dir_fd=self._fd, follow_symlinks=False).st_mtime > _TMP_AGE:
                            self._unlink(file)
                            removed += 1
                    continue
                if not _ENTRY.fullmatch(file):
                    continue
                try:
                    loaded = self._load(file)
                    if loaded is None:
                        continue
                    expiration = _validate(loaded[0])
                except _Unusable as exc:
                    self._trouble(file, str(exc), stats)
                    self._unlink(file)
                    removed += 1
                    continue
                if now >= expiration:
                    self._unlink(file, loaded[1])
                    removed += 1
        except Exception as exc:  # a sweep is housekeeping: it never fails a connect
            self._trouble(".", f"sweep failed ({type(exc).__name__})", stats)
        return removed
