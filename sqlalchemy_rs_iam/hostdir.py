"""The host cache's directory, opened so that nobody else can steer it: StrictModes checks and a held fd.

:func:`open_private_dir` walks the path from ``/`` one component at a time with ``O_DIRECTORY |
O_NOFOLLOW`` relative to the previous component's descriptor, and checks each one as OpenSSH's
StrictModes does: owned by root or by this user, and not writable by group or others unless the sticky
bit is set (``/tmp``). The last component must be this user's own, mode 0700. Missing components are
created 0700. It returns the directory's descriptor: every later operation is relative to it
(``dir_fd=``), so swapping the path afterwards (a rename, a symlink) changes nothing::

    fd = open_private_dir(Path("/run/user/1000/sqlalchemy-rs-iam"))   # or ConfigurationError(cache)
    os.open("entry.json", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)

Symbolic links in the *ancestors* are resolved first (``/var/run`` -> ``/run``), then the resolved path is
checked; the directory itself may not be a symbolic link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from .errors import ConfigurationError

__all__ = ["check_ancestor", "check_private_dir", "open_private_dir", "refuse"]

# getattr: POSIX-only flags (cache=host is refused on Windows before this is used)
_DIR_FLAGS = (
    os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)


def refuse(path: Path | str, why: str) -> ConfigurationError:
    return ConfigurationError(
        "cache", f"refusing the host cache at {path}: {why} (set RS_IAM_CACHE_DIR to a private directory)"
    )


def check_ancestor(st: os.stat_result, path: Path | str) -> None:
    """An ancestor may be root's or ours, and writable by others only if sticky (as ``/tmp``)."""
    me = os.geteuid()
    if st.st_uid not in (0, me):
        raise refuse(path, f"{path} is owned by uid {st.st_uid}, neither root nor this user (uid {me})")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise refuse(
            path,
            f"{path} is writable by group or others without the sticky bit (mode {stat.S_IMODE(st.st_mode):o}),"
            " so another user could swap the cache directory",
        )


def check_private_dir(st: os.stat_result, path: Path | str) -> None:
    """The cache directory itself: a directory, ours, 0700."""
    if stat.S_ISLNK(st.st_mode):
        raise refuse(path, "it is a symbolic link")
    if not stat.S_ISDIR(st.st_mode):
        raise refuse(path, "it is not a directory")
    if st.st_uid != os.geteuid():
        raise refuse(path, f"it is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
    if st.st_mode & 0o077:
        raise refuse(path, f"it is open to group or others (mode {stat.S_IMODE(st.st_mode):o}; must be 700)")


def _open_child(parent_fd: int, name: str, *, create: bool) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
    with contextlib.suppress(FileExistsError):  # made meanwhile by someone: checked like any other
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


def open_private_dir(directory: Path) -> int:
    """Check every ancestor and the directory (creating what is missing); return its held descriptor."""
    directory = Path(os.path.abspath(directory))
    parent = Path(os.path.realpath(directory.parent))
    if directory.name in ("", ".", ".."):
        raise refuse(directory, "it names no directory of its own")
    fd = -1
    try:
        fd = os.open("/", _DIR_FLAGS)
        check_ancestor(os.fstat(fd), "/")
        shown = Path("/")
        for part in parent.parts[1:]:
            shown = shown / part
            child = _open_child(fd, part, create=True)
            os.close(fd)
            fd = child
            check_ancestor(os.fstat(fd), shown)
        try:
            child = _open_child(fd, directory.name, create=True)
        except OSError:
            with contextlib.suppress(OSError):
                st = os.stat(directory.name, dir_fd=fd, follow_symlinks=False)
                check_private_dir(st, directory)  # a symlink or a file: say so
            raise
        os.close(fd)
        fd = child
        check_private_dir(os.fstat(fd), directory)
        return fd
    except ConfigurationError:
        if fd >= 0:
            os.close(fd)
        raise
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else f"it cannot be opened ({exc.strerror})"
        raise refuse(directory, why) from exc
