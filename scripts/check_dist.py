"""Check built distributions before they are installed (run by scripts/smoke_wheel; standard library only).

    python scripts/check_dist.py SOURCE_TREE DIST_DIR

SOURCE_TREE is the clean copy the distributions were built from; DIST_DIR holds exactly one sdist and one
wheel. Checks:

* the version is read from ``sqlalchemy_rs_iam/__init__.py`` without importing the package (so building
  never needs boto3), and both distributions carry that version;
* the wheel holds every file under ``sqlalchemy_rs_iam/`` in the source tree (``testing/`` and ``py.typed``
  included), the LICENSE and the ``rs_iam`` plugin entry point;
* the sdist holds the package, LICENSE, CHANGELOG.md, README.md, pyproject.toml and the docs, and no
  compiled files or tests (they need the whole repository).

Prints one ``ok:`` line per check; exits non-zero at the first failure.
"""

from __future__ import annotations

import configparser
import email.parser
import sys
import tarfile
import zipfile
from pathlib import Path

PACKAGE = "sqlalchemy_rs_iam"
PROJECT = "sqlalchemy-rs-iam"


def fail(message: str) -> None:
    raise SystemExit(f"check_dist: FAILED: {message}")


def ok(message: str) -> None:
    print(f"check_dist: ok: {message}", flush=True)


def static_version(src: Path) -> str:
    """The version as setuptools reads it for ``attr = "sqlalchemy_rs_iam.__version__"``, proving it does so
    without importing: importing the package (or boto3) is made to fail first."""
    from importlib.abc import MetaPathFinder

    class Refuse(MetaPathFinder):
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name.split(".")[0] in {PACKAGE, "boto3", "botocore", "sqlalchemy"}:
                raise ImportError(f"{name} must not be imported to read the version")
            return None

    try:
        from setuptools.config.expand import read_attr
    except ImportError:
        fail("setuptools is not installed in the interpreter running check_dist.py")
    sys.meta_path.insert(0, Refuse())
    try:
        version = str(read_attr(f"{PACKAGE}.__version__", root_dir=str(src)))
    except ImportError as exc:
        fail(f"setuptools could not read {PACKAGE}.__version__ statically ({exc}); keep it a string literal")
    finally:
        sys.meta_path.pop(0)
    return version


def package_files(src: Path) -> set[str]:
    return {
        p.relative_to(src).as_posix()
        for p in (src / PACKAGE).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo"}
    }


def check_wheel(wheel: Path, version: str, expected: set[str]) -> None:
    if not wheel.name.startswith(f"{PACKAGE}-{version}-"):
        fail(f"wheel {wheel.name} does not carry version {version}")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = sorted(expected - names)
        if missing:
            fail(f"wheel lacks package files: {missing}")
        dist_info = f"{PACKAGE}-{version}.dist-info"
        if f"{dist_info}/licenses/LICENSE" not in names:
            fail(f"wheel lacks {dist_info}/licenses/LICENSE")
        meta = email.parser.Parser().parsestr(zf.read(f"{dist_info}/METADATA").decode())
        if meta["Version"] != version or meta.get("License-Expression") != "Apache-2.0":
            fail(
                f"wheel METADATA: Version={meta['Version']!r} License-Expression={meta.get('License-Expression')!r}"
            )
        eps = configparser.ConfigParser()
        eps.read_string(zf.read(f"{dist_info}/entry_points.txt").decode())
        plugin = eps.get("sqlalchemy.plugins", "rs_iam", fallback=None)
        if plugin != f"{PACKAGE}.plugin:RedshiftIAMPlugin":
            fail(f"wheel entry point sqlalchemy.plugins rs_iam = {plugin!r}")
        if eps.get("console_scripts", "rs-iam", fallback=None) != f"{PACKAGE}.cli:main":
            fail("wheel lacks the rs-iam console script")
        stray = sorted(n for n in names if not n.startswith((f"{PACKAGE}/", f"{dist_info}/")))
        if stray:
            fail(f"wheel holds files outside the package: {stray}")
    ok(f"wheel {wheel.name}: all {len(expected)} package files, LICENSE, entry points, version {version}")


def check_sdist(sdist: Path, version: str, expected: set[str]) -> None:
    root = f"{PACKAGE}-{version}"
    if sdist.name != f"{root}.tar.gz":
        fail(f"sdist {sdist.name} is not {root}.tar.gz")
    with tarfile.open(sdist) as tf:
        names = {m.name.removeprefix(f"{root}/") for m in tf.getmembers() if m.isfile()}
    required = {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "PKG-INFO", "docs/development.md"}
    missing = sorted((required | expected) - names)
    if missing:
        fail(f"sdist lacks: {missing}")
    unwanted = sorted(
        n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo")) or n.startswith("tests/")
    )
    if unwanted:
        fail(f"sdist holds compiled files or a partial test tree: {unwanted}")
    ok(f"sdist {sdist.name}: package, LICENSE, CHANGELOG.md, README.md, docs ({len(names)} files)")


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    src, dist = Path(argv[1]), Path(argv[2])
    version = static_version(src)
    ok(f"version {version} read statically from {PACKAGE}/__init__.py (nothing imported)")
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        fail(f"expected one wheel and one sdist in {dist}, found {[p.name for p in dist.iterdir()]}")
    expected = package_files(src)
    if f"{PACKAGE}/py.typed" not in expected or not any(
        n.startswith(f"{PACKAGE}/testing/") for n in expected
    ):
        fail(f"{src} does not look like the source tree (no py.typed or testing/)")
    check_wheel(wheels[0], version, expected)
    check_sdist(sdists[0], version, expected)
    print(version)  # last line: the version, for scripts/smoke_wheel


if __name__ == "__main__":
    main(sys.argv)
