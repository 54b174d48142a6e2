"""``cache=host``: credentials and endpoints shared by every process of one OS user on this machine.

Entries live in a private directory, one JSON file per secret-free cache key (the file name is a hash of
the key), and cross-process single flight uses an ``fcntl`` lock file per key::

    store = HostStore.open()                       # checks the directory: 0700, ours, not a symlink
    creds = store.credentials(name, "workgroup 'analytics' ...", fetch_from_aws, policy)

The directory is ``RS_IAM_CACHE_DIR`` if set, else ``$XDG_RUNTIME_DIR/sqlalchemy-rs-iam`` (a tmpfs that the
system clears at logout), else the user cache directory (``platformdirs``). It is created 0700 and refused
(:class:`ConfigurationError` for ``cache``) when it or an entry is a symlink, is owned by another user, or
is open to group or others -- as ssh refuses a private key. Entry files are 0600 and written atomically
(temporary file + rename), so a reader sees a whole entry or none; a torn, corrupt or foreign entry is
ignored and fetched anew; expired entries are deleted. Locks are ``flock`` locks on open files: they die
with the process that held them, so a process killed while holding one blocks nobody.

Time policy, as in the process cache (:mod:`sqlalchemy_rs_iam.policy`): a stored credential before its
refresh point is adopted as it is; between refresh point and stale mark it is served while at most one
process (whoever takes the key's lock without waiting) refreshes it; missing, stale or unreadable, callers
wait on the lock and the first one fetches. Waiting is bounded: past ``wait`` seconds (a holder frozen or
hung), a caller fetches on its own.

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
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .credentials import DbCredentials
from .errors import ConfigurationError
from .policy import Clock, RefreshPolicy

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: cache=host is refused when asked for
    fcntl = None  # type: ignore[assignment]

__all__ = ["HostStore", "StoredEntry", "default_cache_dir", "key_name"]

log = logging.getLogger(__name__)

_FORMAT = 1
_POLL = 0.01  # seconds between tries of a busy lock


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
    """What ``rs-iam cache list`` shows of one entry: never a secret."""

    name: str
    kind: str
    description: str
    expires_at: float
    written_at: float


def _refuse(path: Path | str, why: str) -> ConfigurationError:
    return ConfigurationError(
        "cache", f"refusing the host cache at {path}: {why} (set RS_IAM_CACHE_DIR to a private directory)"
    )


def _check_private(st: os.stat_result, path: Path | str, *, directory: bool) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, "it is a symbolic link")
    if directory and not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "it is not a directory")
    if not directory and not stat.S_ISREG(st.st_mode):
        raise _refuse(path, "it is not a regular file")
    if st.st_uid != os.geteuid():
        raise _refuse(path, f"it is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
    if st.st_mode & 0o077:
        raise _refuse(
            path, f"it is open to group or others (mode {stat.S_IMODE(st.st_mode):o}; must be 700/600)"
        )


class HostStore:
    """The host cache directory of this OS user. One per directory per process (the registry's)."""

    def __init__(self, directory: Path, *, clock: Clock = time.time, wait: float = 30.0) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            raise ConfigurationError(
                "cache", "cache=host needs a POSIX system (flock locks); use cache=process"
            )
        self.directory = directory
        self._clock = clock
        self.wait = wait
        self._last_sweep = 0.0
        self._sweep_lock = threading.Lock()
        self._ensure_directory()

    @classmethod
    def open(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> HostStore:
        return cls(default_cache_dir(environ), **kwargs)

    def __repr__(self) -> str:
        return f"<HostStore {self.directory}>"

    def after_fork(self) -> None:
        """In a forked child: a new lock. Held flock locks are the parent's; the child opens its own."""
        self._sweep_lock = threading.Lock()

    def _ensure_directory(self) -> None:
        d = self.directory
        try:
            d.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise _refuse(d, f"it cannot be created ({exc.strerror})") from exc
        _check_private(os.lstat(d), d, directory=True)

    # --- files -------------------------------------------------------------------------------------------------

    def _path(self, name: str, suffix: str) -> str:
        return os.path.join(self.directory, name + suffix)

    def _read(self, name: str) -> dict[str, Any] | None:
        """The entry's JSON, or None when missing, unreadable, corrupt or not safely ours."""
        path = self._path(name, ".json")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _refuse(path, "it is a symbolic link") from exc
            log.info("host cache entry %s unreadable (%s); fetching anew", name, exc.strerror)
            return None
        with os.fdopen(fd, "rb") as f:
            _check_private(os.fstat(f.fileno()), path, directory=False)
            raw = f.read(65536)
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            log.info("host cache entry %s is corrupt; ignoring and fetching anew", name)
            self._unlink(path)
            return None
        return data

    def _write(self, name: str, data: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)  # created 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self._path(name, ".json"))  # atomic: readers see the old entry or the new one
        except BaseException:
            self._unlink(tmp)
            raise
        self._maybe_sweep()

    @staticmethod
    def _unlink(path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    @contextlib.contextmanager
    def _lock(self, name: str, *, blocking: bool) -> Iterator[bool]:
        """Hold the key's lock (yields True); ``blocking=False`` yields False at once when it is busy, and a
        blocking wait gives up after ``self.wait`` seconds (yields False)."""
        path = self._path(name, ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            _check_private(os.fstat(fd), path, directory=False)
            deadline = time.monotonic() + self.wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not blocking or time.monotonic() >= deadline:
                        if blocking:
                            log.info(
                                "host cache lock %s still busy after %.0f s; fetching anyway", name, self.wait
                            )
                        yield False
                        return
                    time.sleep(_POLL)
            yield True  # released with the file description, also if this process dies
        finally:
            os.close(fd)

    # --- credentials --------------------------------------------------------------------------------------------

    def read_credentials(self, name: str) -> DbCredentials | None:
        """The stored credential if it has not expired (expired ones are deleted)."""
        data = self._read(name)
        if data is None or data.get("kind") != "credentials":
            return None
        try:
            creds = DbCredentials(
                user=str(data["user"]),
                password=str(data["password"]),
                expiration=float(data["expiration"]),
                next_refresh=None if data.get("next_refresh") is None else float(data["next_refresh"]),
                fetched_at=float(data["fetched_at"]),
                shared=True,
            )
        except (KeyError, TypeError, ValueError):
            self._unlink(self._path(name, ".json"))
            return None
        if self._clock() >= creds.expiration:
            self._unlink(self._path(name, ".json"))
            return None
        return creds

    def write_credentials(self, name: str, description: str, creds: DbCredentials) -> None:
        self._write(
            name,
            {
                "format": _FORMAT,
                "kind": "credentials",
                "description": description,
                "user": creds.user,
                "password": creds.password,
                "expiration": creds.expiration,
                "next_refresh": creds.next_refresh,
                "fetched_at": creds.fetched_at,
                "written_at": self._clock(),
            },
        )

    def credentials(
        self, name: str, description: str, fetch: Callable[[], DbCredentials], policy: RefreshPolicy
    ) -> DbCredentials:
        """A credential for key ``name``: adopted from the host cache, or fetched by one process for all."""
        now = self._clock()
        stored = self.read_credentials(name)
        if stored is not None and now < policy.refresh_at(stored):
            return stored  # fresh: no AWS call, no lock
        if stored is not None and now < policy.stale_at(stored):
            with self._lock(name, blocking=False) as mine:
                if not mine:
                    return stored  # another process is refreshing it; serve this one meanwhile
                return self._fetch_locked(name, description, fetch, policy, stale_only=False)
        with self._lock(name, blocking=True):  # missing or stale: the first process fetches for all
            return self._fetch_locked(name, description, fetch, policy, stale_only=True)

    def _fetch_locked(
        self,
        name: str,
        description: str,
        fetch: Callable[[], DbCredentials],
        policy: RefreshPolicy,
        *,
        stale_only: bool,
    ) -> DbCredentials:
        again = self.read_credentials(name)  # another process may have just done it
        now = self._clock()
        if again is not None and now < (policy.stale_at(again) if stale_only else policy.refresh_at(again)):
            return again
        creds = fetch()
        self.write_credentials(name, description, creds)
        return creds

    def forget_credentials(self, name: str, refused: DbCredentials) -> None:
        """Drop the shared entry if it still holds the password a database refused (not a newer one)."""
        with self._lock(name, blocking=True):
            stored = self.read_credentials(name)
            if stored is not None and stored.password == refused.password:
                self._unlink(self._path(name, ".json"))

    # --- endpoints ----------------------------------------------------------------------------------------------

    def endpoint(
        self, name: str, description: str, resolve: Callable[[], tuple[str, int]], ttl: float
    ) -> tuple[str, int]:
        """Host and port for key ``name``, looked up by one process for all and kept ``ttl`` seconds."""
        found = self._read_endpoint(name)
        if found is not None:
            return found
        with self._lock(name, blocking=True):
            found = self._read_endpoint(name)
            if found is not None:
                return found
            host, port = resolve()
            now = self._clock()
            self._write(
                name,
                {"format": _FORMAT, "kind": "endpoint", "description": description, "host": host,
                 "port": port, "expiration": now + ttl, "written_at": now},
            )  # fmt: skip
            return host, port

    def _read_endpoint(self, name: str) -> tuple[str, int] | None:
        data = self._read(name)
        if data is None or data.get("kind") != "endpoint":
            return None
        try:
            host, port, expiration = str(data["host"]), int(data["port"]), float(data["expiration"])
        except (KeyError, TypeError, ValueError):
            return None
        if self._clock() >= expiration:
            self._unlink(self._path(name, ".json"))
            return None
        return host, port

    def forget_endpoint(self, name: str) -> None:
        self._unlink(self._path(name, ".json"))

    # --- listing and purging --------------------------------------------------------------------------------------

    def entries(self) -> list[StoredEntry]:
        """Every live entry, never a secret (``rs-iam cache list``)."""
        found = []
        for path in sorted(self.directory.glob("*.json")):
            name = path.stem
            data = self._read(name)
            if data is None:
                continue
            expires = float(data.get("expiration", 0.0))
            if self._clock() >= expires:
                self._unlink(str(path))
                continue
            found.append(
                StoredEntry(name, str(data.get("kind")), str(data.get("description")), expires,
                            float(data.get("written_at", 0.0)))
            )  # fmt: skip
        return found

    def clear(self) -> int:
        """Delete every entry and lock file; returns how many entries were deleted."""
        count = 0
        for path in self.directory.iterdir():
            if path.suffix in (".json", ".lock") or path.name.startswith(".tmp-"):
                if path.suffix == ".json":
                    count += 1
                self._unlink(str(path))
        return count

    def _maybe_sweep(self) -> None:
        """Delete expired entries and stale temporary files, at most once a minute per process."""
        now = self._clock()
        with self._sweep_lock:
            if now - self._last_sweep < 60.0:
                return
            self._last_sweep = now
        for path in self.directory.iterdir():
            try:
                if path.name.startswith(".tmp-") and now - path.lstat().st_mtime > 60.0:
                    self._unlink(str(path))  # left by a process killed mid-write
                elif path.suffix == ".json":
                    data = self._read(path.stem)
                    if data is not None and now >= float(data.get("expiration", 0.0)):
                        self._unlink(str(path))
            except (OSError, ValueError, ConfigurationError):
                continue
