"""The transport rule (sqlalchemy_rs_iam.transport): verified TLS unless the URL opts out. Pure, no server."""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path
from typing import Any

import certifi
import pytest

from sqlalchemy_rs_iam import transport
from sqlalchemy_rs_iam.transport import ca_bundle_path, secure_connect_params


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(transport, "_bundle", None)


def secured(driver: str, dialect: str = "postgresql", **params: Any) -> dict[str, Any]:
    secure_connect_params(driver, dialect, params)
    return params


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg", "psycopg_async"])
def test_libpq_drivers_get_verify_full_with_the_bundle(driver: str) -> None:
    assert secured(driver, host="h") == {
        "host": "h",
        "sslmode": "verify-full",
        "sslrootcert": str(ca_bundle_path()),
    }


@pytest.mark.parametrize("mode", sorted(transport.LIBPQ_SSLMODES))
def test_libpq_explicit_sslmode_is_respected(mode: str) -> None:
    assert secured("psycopg2", sslmode=mode) == {"sslmode": mode}


def test_libpq_explicit_root_cert_is_kept() -> None:
    assert secured("psycopg", sslrootcert="/ca.pem") == {"sslmode": "verify-full", "sslrootcert": "/ca.pem"}


def test_libpq_pgsslrootcert_is_left_to_libpq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSSLROOTCERT", "/env-ca.pem")
    assert secured("psycopg2") == {"sslmode": "verify-full"}


def test_sqlalchemy_redshift_psycopg2_dialect_is_left_alone() -> None:
    # its create_connect_args always passes verify-full and its own Redshift bundle
    params = {
        "sslmode": "verify-full",
        "sslrootcert": "/site-packages/sqlalchemy_redshift/redshift-ca-bundle.crt",
    }
    assert secured("psycopg2", "redshift", **params) == params


def test_redshift_connector_gets_an_explicit_verify_full() -> None:
    # its own default (sslmode unset) only warns on a host name mismatch
    assert secured("redshift_connector", "redshift") == {"sslmode": "verify-full"}
    assert secured("redshift_connector", "redshift", ssl=True) == {"ssl": True, "sslmode": "verify-full"}


@pytest.mark.parametrize("off", [False, "false", "0"])
def test_redshift_connector_opt_out_is_respected(off: Any) -> None:
    assert secured("redshift_connector", "redshift", ssl=off) == {"ssl": off}


def test_redshift_connector_explicit_mode_is_respected() -> None:
    assert secured("redshift_connector", "redshift", sslmode="verify-ca") == {"sslmode": "verify-ca"}


def test_asyncpg_gets_a_verifying_context_with_the_bundle() -> None:
    params = secured("asyncpg", host="h")
    context = params["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.cert_store_stats()["x509_ca"] > 100  # certifi's roots plus the Redshift bundle


def test_asyncpg_sslrootcert_is_translated(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme", reason="makes the test CA ([testing] extra)")

    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    params = secured("asyncpg", sslrootcert=str(ca_file))
    assert set(params) == {"ssl"}  # asyncpg.connect takes no sslrootcert keyword
    assert params["ssl"].cert_store_stats()["x509_ca"] == 1


@pytest.mark.parametrize("value", ["disable", "prefer", "require", False])
def test_asyncpg_explicit_ssl_is_respected(value: Any) -> None:
    assert secured("asyncpg", ssl=value) == {"ssl": value}


def test_unknown_driver_is_untouched() -> None:
    assert secured("pg8000", host="h") == {"host": "h"}


def test_bundle_holds_certifi_and_the_redshift_bundles() -> None:
    content = ca_bundle_path().read_bytes()
    assert Path(certifi.where()).read_bytes().strip() in content
    from importlib import resources

    for package, name in (
        ("redshift_connector", "files/redshift-ca-bundle.crt"),
        ("sqlalchemy_redshift", "redshift-ca-bundle.crt"),
    ):
        try:
            bundle = resources.files(package).joinpath(name).read_bytes()
        except ModuleNotFoundError:
            continue  # that driver extra is not installed: its bundle is rightly absent
        assert bundle.strip() in content


def test_bundle_is_written_once_privately(tmp_path: Path) -> None:
    first = ca_bundle_path()
    assert first.parent == tmp_path / "cache" / "sqlalchemy-rs-iam"
    assert first.parent.stat().st_mode & 0o777 == 0o700
    mtime = first.stat().st_mtime_ns
    transport._bundle = None
    assert ca_bundle_path() == first and first.stat().st_mtime_ns == mtime


def test_bundle_skips_a_cache_dir_others_can_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "cache" / "sqlalchemy-rs-iam"
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = ca_bundle_path()
    assert path.parent != shared and path.exists()
    assert path.parent.parent == tmp_path / "tmp"  # a private temporary directory of this process
    assert path.parent.stat().st_mode & 0o777 == 0o700
