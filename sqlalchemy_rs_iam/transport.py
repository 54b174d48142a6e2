"""The transport rule: an IAM-issued password only travels over an encrypted, verified connection.

Unless the URL opts out explicitly, :func:`secure_connect_params` makes every supported driver ask for TLS,
verify the server certificate against a CA bundle that covers Amazon Redshift, and check the host name --
before the plugin hands the driver a password. Without it, ``postgresql+psycopg2`` / ``postgresql+psycopg``
(libpq's ``sslmode=prefer``) and ``postgresql+asyncpg`` (``prefer``) would send the password in cleartext to
a man in the middle that declines TLS, and redshift_connector only *warns* on a host name mismatch unless
``sslmode`` is given.

What the rule does per driver, when the connect parameters say nothing about TLS:

* psycopg2 / psycopg 3: ``sslmode="verify-full"``, and ``sslrootcert=`` :func:`ca_bundle_path` unless
  ``sslrootcert`` is given or ``PGSSLROOTCERT`` is set (libpq reads it). sqlalchemy-redshift's
  ``redshift+psycopg2`` dialect already passes ``verify-full`` with its own Redshift bundle: left alone.
* asyncpg: ``ssl=`` an :class:`ssl.SSLContext` with ``CERT_REQUIRED`` and host name checking that loads
  ``sslrootcert`` (a URL parameter asyncpg itself does not take), else ``PGSSLROOTCERT``, else the bundle.
* redshift_connector: ``sslmode="verify-full"`` (an explicit mode makes it enforce the host name; ``ssl``
  already defaults to True and it loads the default store plus its Redshift bundle). sqlalchemy-redshift's
  ``redshift+redshift_connector`` dialect passes ``sslmode="verify-full"`` already; the rule covers any
  other way the driver is reached.

Explicit opt-outs are respected: ``sslmode=disable|allow|prefer|require|verify-ca`` (libpq), ``ssl=false``
(redshift_connector), ``ssl=disable|prefer|require|...`` or any ``ssl`` value (asyncpg). Example::

    params = {"host": "wg.123.us-east-1.redshift-serverless.amazonaws.com", "dbname": "dev"}
    secure_connect_params("psycopg2", "postgresql", params)
    assert params["sslmode"] == "verify-full" and params["sslrootcert"] == str(ca_bundle_path())

The bundle: certifi's roots (Amazon Trust Services, which serverless and current provisioned endpoints
chain to) plus the ``redshift-ca-bundle.crt`` files that redshift_connector and sqlalchemy-redshift ship, where
installed (older clusters), written once per content to a private per-user cache file. libpq's ``sslrootcert=system`` is not
used: the binary wheels bundle an OpenSSL whose default store paths need not exist on the host.

This module is pure: no boto3, no SQLAlchemy, no network.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import ssl
import tempfile
import threading
from collections.abc import MutableMapping
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["ca_bundle_path", "secure_connect_params"]

#: libpq sslmode values: any of them in the URL is an explicit choice the rule respects.
LIBPQ_SSLMODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})

_LIBPQ_DRIVERS = frozenset({"psycopg2", "psycopg", "psycopg_async"})
_lock = threading.Lock()
_bundle: Path | None = None


def secure_connect_params(driver: str, dialect_name: str, cparams: MutableMapping[str, Any]) -> None:
    """Fill in verified TLS for ``driver`` in ``cparams`` (DB-API connect keywords) where they say nothing.

    ``driver`` is the SQLAlchemy dialect's driver name (``psycopg2``, ``psycopg``, ``psycopg_async``,
    ``asyncpg``, ``redshift_connector``), ``dialect_name`` its name (``postgresql`` or ``redshift``).
    Unknown drivers are left alone. Changes ``cparams`` in place.

    >>> p = {"ssl": "disable"}; secure_connect_params("asyncpg", "postgresql", p); p
    {'ssl': 'disable'}
    """
    for name in ("ssl", "sslmode", "sslrootcert"):
        if name in cparams and cparams[name] is None:
            del cparams[name]  # None is absent (an unset os.getenv), never an opt-out
    if driver == "redshift_connector":
        if "sslmode" not in cparams and _truthy(cparams.get("ssl", True)):
            cparams["sslmode"] = "verify-full"
    elif driver in _LIBPQ_DRIVERS:
        if "sslmode" in cparams:
            return  # explicit (sqlalchemy-redshift's dialect always passes verify-full plus its bundle)
        cparams["sslmode"] = "verify-full"
        if "sslrootcert" not in cparams and not os.environ.get("PGSSLROOTCERT"):
            cparams["sslrootcert"] = str(ca_bundle_path())
    elif driver == "asyncpg":
        rootcert = cparams.pop("sslrootcert", None)
        if "ssl" in cparams:
            return
        cafile = rootcert or os.environ.get("PGSSLROOTCERT") or str(ca_bundle_path())
        context = ssl.create_default_context(cafile=cafile)  # CERT_REQUIRED, check_hostname
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        cparams["ssl"] = context


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "")
    return bool(value)


def ca_bundle_path() -> Path:
    """A PEM file that verifies Amazon Redshift's certificates (see the module docstring); made once.

    It lives in ``$XDG_CACHE_HOME/sqlalchemy-rs-iam`` (``~/.cache/...``) in a directory only this user can
    write, named by the content's hash, so differing certifi / driver versions never share a file. If that
    directory cannot be used, a private temporary directory of this process is used instead.
    """
    global _bundle
    with _lock:
        if _bundle is not None and _bundle.exists():
            return _bundle
        content = _bundle_content()
        name = f"redshift-ca-{hashlib.sha256(content).hexdigest()[:16]}.pem"
        for directory in (_cache_dir(), None):
            try:
                if directory is None:
                    folder = Path(tempfile.mkdtemp(prefix="sqlalchemy-rs-iam-ca-"))
                    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # only this process uses it
                else:
                    folder = directory
                path = folder / name
                if not (path.exists() and path.read_bytes() == content):
                    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ca-")
                    with os.fdopen(fd, "wb") as f:
                        f.write(content)
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, path)  # atomic: concurrent processes never read a half-written file
                _bundle = path
                return path
            except OSError:
                continue
        raise OSError("could not write the CA bundle file")  # pragma: no cover - mkdtemp failed too


def _cache_dir() -> Path | None:
    try:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = Path(base) / "sqlalchemy-rs-iam"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.stat()
    except (OSError, RuntimeError):  # RuntimeError: no home directory
        return None
    # Trust anchors must not come from a directory someone else can write to.
    getuid = getattr(os, "getuid", None)
    if getuid is not None and (st.st_uid != getuid() or st.st_mode & 0o022):
        return None
    return folder


def _bundle_content() -> bytes:
    # Declared in pyproject: botocore does not depend on certifi (urllib3 uses the OS store), and the
    # OS store may lack Amazon Trust Services on slim images; certifi's copy of Mozilla's roots has them.
    import certifi

    parts = [Path(certifi.where()).read_bytes()]
    for package, resource in (
        ("redshift_connector", "files/redshift-ca-bundle.crt"),
        ("sqlalchemy_redshift", "redshift-ca-bundle.crt"),
    ):
        try:
            parts.append(resources.files(package).joinpath(resource).read_bytes())
        except (ModuleNotFoundError, FileNotFoundError, OSError):
            continue
    return b"\n".join(part.rstrip(b"\n") for part in parts) + b"\n"
