"""Smoke test of an installed sqlalchemy-rs-iam, run by scripts/smoke_wheel inside a fresh virtual environment.

    python -I smoke_wheel.py EXPECTED_VERSION

Checks that the package comes from the environment (not a source checkout, not editable), that importing it
is cheap, that SQLAlchemy's plugin entry point and the ``rs-iam`` command work, and makes one real IAM login
through the wheel's own Redshift stand-in. Exits non-zero at the first failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

PROJECT = "sqlalchemy-rs-iam"


def check(condition: object, message: str) -> None:
    if not condition:
        raise SystemExit(f"smoke_wheel.py: FAILED: {message}")
    print(f"smoke_wheel.py: ok: {message}", flush=True)


def main(expected_version: str) -> None:
    check(sys.prefix != sys.base_prefix, f"running in a virtual environment ({sys.prefix})")

    import sqlalchemy_rs_iam

    where = Path(sqlalchemy_rs_iam.__file__).resolve()
    check(where.is_relative_to(Path(sys.prefix).resolve()), f"package imported from the venv ({where})")
    dist = metadata.distribution(PROJECT)
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    check(
        not direct_url.get("dir_info", {}).get("editable"),
        f"installed from a wheel, not editable ({direct_url.get('url')})",
    )
    check(
        sqlalchemy_rs_iam.__version__ == dist.version == expected_version,
        f"version {expected_version} (__version__ {sqlalchemy_rs_iam.__version__}, metadata {dist.version})",
    )

    probe = (
        "import sys, sqlalchemy_rs_iam; print(sorted({'boto3', 'botocore', 'sqlalchemy'} & set(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=True)
    check(
        loaded.stdout.strip() == "[]",
        f"import sqlalchemy_rs_iam loads no boto3/SQLAlchemy ({loaded.stdout.strip()})",
    )

    plugins = [ep for ep in metadata.entry_points(group="sqlalchemy.plugins") if ep.name == "rs_iam"]
    check(len(plugins) == 1, f"one sqlalchemy.plugins entry point rs_iam ({plugins})")
    from sqlalchemy_rs_iam.plugin import RedshiftIAMPlugin

    check(plugins[0].load() is RedshiftIAMPlugin, "entry point rs_iam loads RedshiftIAMPlugin")

    exe = shutil.which("rs-iam")
    scripts = Path(sysconfig.get_path("scripts")).resolve()
    check(
        exe is not None and Path(exe).resolve().parent == scripts,
        f"rs-iam is the venv's console script ({exe})",
    )
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    check(out == f"rs-iam {expected_version}", f"rs-iam --version prints {out!r}")

    # One real IAM login through the plugin, against the stand-in shipped in the wheel. Only what the
    # stand-in documents is used: its URL and the AWS environment it hands out (real AWS_* variables are
    # removed first, as its pytest fixture does). Any driver/TLS environment it documents goes here too.
    from sqlalchemy import create_engine, text

    from sqlalchemy_rs_iam.testing import RedshiftStandIn

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    rs = RedshiftStandIn().start()
    try:
        os.environ.update(rs.aws_env())
        engine = create_engine(rs.url())
        with engine.connect() as conn:
            user = conn.execute(text("select current_user")).scalar_one()
        engine.dispose()
        iam_user = f"IAM:{rs.identities['rs-iam-a'].principal}"  # the default profile's IAM user
    finally:
        rs.stop()
    check(user == iam_user, f"connected through the stand-in as {user!r} (expected {iam_user!r})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
    print("smoke_wheel.py: all checks passed", flush=True)
