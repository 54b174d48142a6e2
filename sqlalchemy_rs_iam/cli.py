"""``rs-iam``: fetch, inspect and check Redshift IAM credentials from a shell.

Same parameter names as the engine URL, written as options (``db_user`` -> ``--db-user``), validated by the
same code; results on stdout, progress and errors on stderr, a distinct exit code per kind of failure::

    rs-iam credentials --workgroup analytics --database dev --region us-east-1 [--json] [--show-password]
    rs-iam check "redshift+redshift_connector:///dev?plugin=rs_iam&workgroup=analytics&region=us-east-1"
    eval "$(rs-iam env --workgroup analytics --database dev)" && psql
    rs-iam standin --help          # the local Redshift stand-in, in the foreground

Exit codes (see docs/cli.md, online: the URL in DOCS_URL): 0 ok, 1 unexpected error, 2 usage or configuration error, 3 AWS refused
(not found, access denied, invalid request, no AWS credentials), 4 AWS unreachable / throttled / failing,
5 database connect, login or query failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NoReturn, TypeVar

from . import __version__
from .config import FORBIDDEN_QUERY_PARAMETERS, PARAMETERS, IamConfig, parse_config, parse_int
from .errors import (
    AccessDeniedError,
    AwsCredentialsError,
    AwsError,
    AwsValidationError,
    ClockSkewError,
    ConfigurationError,
    ResourceNotFoundError,
    RsIamError,
    ServiceUnavailableError,
)

T = TypeVar("T")

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_AWS_REFUSED = 3
EXIT_AWS_UNAVAILABLE = 4
EXIT_DATABASE = 5
EXIT_INTERRUPTED = 130

# URL parameters that become options. "iam" is redshift_connector's own switch: meaningless here.
_OPTION_PARAMETERS = tuple(p for p in PARAMETERS if p != "iam")
_FLAG_OF_PART = {"host": "--host", "port": "--port", "username": "--user", "database": "--database"}


# Where the documentation lives for a pip install (the wheel carries no docs/ folder).
DOCS_URL = "https://github.com/sqlalchemy-rs-iam/sqlalchemy-rs-iam/blob/main/docs/cli.md"


def flag(parameter: str) -> str:
    """The command-line spelling of a URL parameter: ``db_user`` -> ``--db-user``."""
    return _FLAG_OF_PART.get(parameter) or "--" + parameter.replace("_", "-")


class CliError(Exception):
    """A failure already diagnosed for the user: ``message`` goes to stderr, ``code`` is the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- diagnosis: exception -> (exit code, what it means, what to do) -------------------------------------------


def diagnose(exc: BaseException, *, cli_flags: bool = True) -> CliError:
    """Turn any error of a credential fetch or connect into a one-paragraph diagnosis and an exit code."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, ConfigurationError):
        name = flag(exc.parameter) if cli_flags else exc.parameter
        return CliError(EXIT_CONFIG, f"configuration error: {name}: {exc.detail}")
    if isinstance(exc, ResourceNotFoundError):
        return CliError(
            EXIT_AWS_REFUSED,
            f"not found: {exc}\n  A workgroup or cluster exists in exactly one region: is {exc.region} (from "
            f"{_name('region', cli_flags)}, AWS_REGION or the profile) the region it lives in?",
        )
    if isinstance(exc, ClockSkewError):
        return CliError(
            EXIT_AWS_REFUSED,
            f"clock skew: {exc}\n  AWS accepts a signed request only within 15 minutes of its own clock. Fix "
            "this host's clock (`timedatectl set-ntp true`, chrony or ntpd; in a container, the host's "
            "clock) and run the command again; the IAM policy is not the problem.",
        )
    if isinstance(exc, AccessDeniedError):
        return CliError(
            EXIT_AWS_REFUSED,
            f"access denied: {exc}\n  The AWS identity lacks permission for {exc.operation} on {exc.resource}. "
            "Run `aws sts get-caller-identity` to see who you are, then grant e.g. "
            "redshift-serverless:GetCredentials (Serverless) or redshift:GetClusterCredentials / "
            "redshift:GetClusterCredentialsWithIAM (provisioned) on that resource.",
        )
    if isinstance(exc, AwsCredentialsError):
        return CliError(
            EXIT_AWS_REFUSED,
            f"no AWS credentials: {exc}\n  Configure a profile ({_name('aws_profile', cli_flags)} / AWS_PROFILE), "
            "environment "
            "keys, or an instance / container role.",
        )
    if isinstance(exc, AwsValidationError):
        return CliError(EXIT_AWS_REFUSED, f"AWS rejected the request: {exc}")
    if isinstance(exc, ServiceUnavailableError):
        return CliError(
            EXIT_AWS_UNAVAILABLE,
            f"AWS unavailable: {exc}\n  Check network access to the AWS endpoint (proxy, VPC endpoint, "
            f"{_name('aws_endpoint_url', cli_flags)}), or retry later if AWS throttled the calls.",
        )
    if isinstance(exc, AwsError):
        return CliError(EXIT_AWS_REFUSED, f"AWS error: {exc}")
    if isinstance(exc, RsIamError):
        return CliError(EXIT_DATABASE, str(exc))
    return CliError(EXIT_INTERNAL, f"unexpected error: {type(exc).__name__}: {exc}")


def _name(parameter: str, cli_flags: bool) -> str:
    return flag(parameter) if cli_flags else parameter


def diagnose_database(exc: BaseException, where: str, *, cli_flags: bool = True) -> CliError:
    """A failure while connecting to / querying the database itself."""
    from .connector import classify_connect_error

    root: BaseException = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    kind = classify_connect_error(root)
    text = _one_line(root)
    if kind == "auth":
        return CliError(
            EXIT_DATABASE,
            f"login refused by {where}: {text}\n  The database rejected freshly issued credentials, even after "
            "one retry with new ones. Check that the database user exists and may log in (provisioned: "
            f"{_name('db_user', cli_flags)}, {_name('auto_create', cli_flags)}), and that the database "
            "name is right.",
        )
    if kind == "network":
        return CliError(
            EXIT_DATABASE,
            f"cannot reach {where}: {text}\n  Check the security group / network path to the endpoint "
            "(Redshift listens on 5439 by default), and TLS options of the driver.",
        )
    return CliError(EXIT_DATABASE, f"database error at {where}: {text}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:500]}"


# --- argument parsing ----------------------------------------------------------------------------------------


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("target and AWS options (the engine URL's query parameters)")
    for name in _OPTION_PARAMETERS:
        if name == "auto_create":
            group.add_argument(
                flag(name),
                dest=name,
                nargs="?",
                const="true",
                metavar="BOOL",
                help="auto_create (default true if given)",
            )
        elif name == "db_groups":
            group.add_argument(
                flag(name),
                dest=name,
                action="append",
                metavar="GROUPS",
                help="db_groups (comma list; repeatable)",
            )
        else:
            group.add_argument(flag(name), dest=name, metavar=name.upper(), help=name)
    parts = parser.add_argument_group("URL parts")
    parts.add_argument("-d", "--database", help="database name (the URL path), e.g. dev")
    parts.add_argument("--host", help="endpoint host (omit: resolved with GetWorkgroup / DescribeClusters)")
    parts.add_argument("--port", help="endpoint port (default: resolved, or 5439)")
    parts.add_argument("--user", help="database user (provisioned; same as --db-user)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rs-iam",
        description="Amazon Redshift IAM temporary credentials: fetch, check, export for psql.",
        epilog="Exit codes: 0 ok, 1 unexpected, 2 usage/config, 3 AWS refused, 4 AWS unavailable, "
        "5 database, 130 interrupted. Docs: " + DOCS_URL,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log to stderr (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    creds = sub.add_parser(
        "credentials",
        help="fetch temporary credentials and show user and expiry",
        description="Fetch temporary database credentials and print dbUser, expiration and nextRefreshTime. "
        "The password is printed only with --show-password.",
    )
    _add_target_options(creds)
    creds.add_argument("--json", action="store_true", help="print one JSON object")
    creds.add_argument("--show-password", action="store_true", help="also print the temporary password")

    check = sub.add_parser(
        "check",
        help="check an engine URL end to end: resolve, fetch, connect, query",
        description="Check an engine URL step by step (configuration, AWS identity, endpoint, credentials, "
        "connect, `select current_user, version()`), timing each step and diagnosing the first failure.",
    )
    check.add_argument("url", help="the SQLAlchemy URL; plugin=rs_iam is added if missing")
    check.add_argument("--json", action="store_true", help="print the steps as JSON on stdout")

    env = sub.add_parser(
        "env",
        help="print `export PG...=` lines for psql (includes the password)",
        description="Print shell `export` lines for PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE, for "
        'eval "$(rs-iam env ...)". The password is printed by design, to stdout only.',
    )
    _add_target_options(env)

    cache = sub.add_parser(
        "cache",
        help="list or clear the host cache of cache=host (never shows a secret)",
        description="The host cache (cache=host) of this OS user: `list` shows each entry's key, expiry and "
        "age, never a password; `clear` deletes every entry. RS_IAM_CACHE_DIR selects another directory.",
    )
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    cache_list = cache_sub.add_parser("list", help="show the entries")
    cache_list.add_argument("--json", action="store_true", help="print a JSON array")
    cache_sub.add_parser("clear", help="delete every entry (lock files held by a running process stay)")

    sub.add_parser(
        "standin",
        help="run the local Redshift stand-in in the foreground (see `rs-iam standin --help`)",
        add_help=False,
    )
    return parser


def config_from_args(args: argparse.Namespace) -> IamConfig:
    """Validate the target options exactly like URL parameters (errors name the option)."""
    params: dict[str, object] = {}
    for name in _OPTION_PARAMETERS:
        value = getattr(args, name, None)
        if value is not None:
            params[name] = value
    port = parse_int("port", args.port, 1, 65535) if args.port is not None else None
    return parse_config(
        params,
        database=args.database,
        host=args.host,
        port=port,
        username=args.user,
        host_parameter="host",
        username_parameter="username",
        database_parameter="database",
    )


# --- commands --------------------------------------------------------------------------------------------------


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return (
        dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def cmd_credentials(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    config = config_from_args(args)
    err.write(f"fetching credentials for {config.target.describe()} (database {config.database!r})...\n")
    from .registry import REGISTRY

    connector = REGISTRY.new_connector(config)
    creds = connector.credentials()
    data: dict[str, Any] = {
        "dbUser": creds.user,
        "expiration": _iso(creds.expiration),
        "nextRefreshTime": _iso(creds.next_refresh),
        "target": config.target.describe(),
        "region": connector.identity.region,
        "database": config.database,
    }
    if args.show_password:
        data["dbPassword"] = creds.password
    if args.json:
        out.write(json.dumps(data) + "\n")
        return EXIT_OK
    remaining = creds.expiration - time.time()
    lines = [
        ("dbUser", creds.user),
        ("expiration", f"{data['expiration']} (in {remaining:.0f} s)"),
        ("nextRefreshTime", data["nextRefreshTime"] or "-"),
        ("target", f"{data['target']} in {data['region']}, database {config.database!r}"),
    ]
    if args.show_password:
        lines.append(("dbPassword", creds.password))
    for key, value in lines:
        out.write(f"{key:<16} {value}\n")
    if not args.show_password:
        err.write("(password not shown; add --show-password to print it)\n")
    return EXIT_OK


def cmd_env(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    config = config_from_args(args)
    from .registry import REGISTRY

    connector = REGISTRY.new_connector(config)
    host, port = connector.endpoint()
    creds = connector.credentials()
    values = {
        "PGHOST": host,
        "PGPORT": str(port),
        "PGUSER": creds.user,
        "PGPASSWORD": creds.password,
        "PGDATABASE": config.database,
    }
    for name, value in values.items():
        out.write(f"export {name}={shlex.quote(value)}\n")
    err.write(f"# credentials for {creds.user} valid until {_iso(creds.expiration)}\n")
    return EXIT_OK


@dataclass
class Step:
    name: str
    status: str = "pending"  # ok | failed | skipped
    seconds: float = 0.0
    detail: str = ""


@dataclass
class CheckReport:
    steps: list[Step] = field(default_factory=list)
    exit_code: int = EXIT_OK
    diagnosis: str | None = None
    result: dict[str, str] = field(default_factory=dict)


class _Checker:
    def __init__(self, err: IO[str]) -> None:
        self.err = err
        self.report = CheckReport()

    def step(self, name: str, fn: Callable[[], T], describe: Callable[[T], str] = str) -> T:
        step = Step(name)
        self.report.steps.append(step)
        start = time.perf_counter()
        try:
            value = fn()
        except BaseException:
            step.seconds = time.perf_counter() - start
            step.status = "failed"
            self._show(step)
            raise
        step.seconds = time.perf_counter() - start
        step.status = "ok"
        step.detail = describe(value)
        self._show(step)
        return value

    def skip(self, name: str, why: str) -> None:
        step = Step(name, "skipped", 0.0, why)
        self.report.steps.append(step)
        self._show(step)

    def _show(self, step: Step) -> None:
        mark = {"ok": "ok", "failed": "FAIL", "skipped": "skip"}[step.status]
        detail = f"  {step.detail}" if step.detail else ""
        self.err.write(f"[{mark:>4}] {step.name:<34} {step.seconds * 1000:6.0f} ms{detail}\n")


def _prepare_url(raw: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ConfigurationError("url", f"not a SQLAlchemy URL: {exc}") from None
    plugins = url.query.get("plugin", ())
    plugin_list = [plugins] if isinstance(plugins, str) else list(plugins)
    if "rs_iam" not in plugin_list:
        url = url.update_query_dict({"plugin": [*plugin_list, "rs_iam"]})
    return url


def cmd_check(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    checker = _Checker(err)
    report = checker.report
    try:
        url = checker.step("parse URL", lambda: _prepare_url(args.url), _show_url)

        def validate() -> IamConfig:
            params = {
                name: url.query[name] for name in PARAMETERS + FORBIDDEN_QUERY_PARAMETERS if name in url.query
            }
            return parse_config(
                params, database=url.database, host=url.host, port=url.port, username=url.username,
                password=url.password,
            )  # fmt: skip

        config = checker.step(
            "validate parameters", validate, lambda c: f"{c.target.describe()}, {c.operation}"
        )
        connector = checker.step(
            "AWS identity",
            lambda: _with_identity(config),
            lambda c: f"{c.identity.label} in {c.identity.region}",
        )
        if connector.needs_lookup:
            op = "GetWorkgroup" if config.target.workgroup else "DescribeClusters"
            host, port = checker.step(f"resolve ({op})", connector.endpoint, lambda hp: f"{hp[0]}:{hp[1]}")
        else:
            host, port = connector.endpoint()
            checker.skip("resolve endpoint", f"explicit host {host}:{port}")
        checker.step(
            f"fetch ({config.operation})",
            connector.credentials,
            lambda c: f"dbUser={c.user}, expires {_iso(c.expiration)}",
        )
        # The engine takes the credentials just fetched from the process-wide cache: this checks the
        # plugin path the application will use, not a parallel one.
        engine = checker.step("create engine", lambda: _create_engine(url), lambda e: e.dialect.name)
        try:
            row = checker.step("connect and query", lambda: _query(engine), lambda r: f"current_user={r[0]}")
        except Exception as exc:
            raise diagnose_database(
                exc, f"{config.target.describe()} ({host}:{port})", cli_flags=False
            ) from exc
        report.result = {"current_user": str(row[0]), "version": str(row[1])}
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        problem = diagnose(exc, cli_flags=False)
        report.exit_code, report.diagnosis = problem.code, problem.message
    if args.json:
        steps = [
            {"name": s.name, "status": s.status, "ms": round(s.seconds * 1000, 1), "detail": s.detail}
            for s in report.steps
        ]
        document = {
            "ok": report.exit_code == EXIT_OK,
            "exit_code": report.exit_code,
            "diagnosis": report.diagnosis,
            "steps": steps,
            **report.result,
        }
        out.write(json.dumps(document) + "\n")
    elif report.exit_code == EXIT_OK:
        out.write(f"ok: connected as {report.result['current_user']}\n{report.result['version']}\n")
    if report.diagnosis is not None:
        err.write(f"rs-iam check: {report.diagnosis}\n")
    return report.exit_code


def _show_url(url: Any) -> str:
    # render_as_string hides a password; external_id (a cross-account shared secret) is masked too.
    if "external_id" in url.query:
        url = url.update_query_dict({"external_id": "***"})
    return str(url.render_as_string(hide_password=True))


def _with_identity(config: IamConfig) -> Any:
    from .registry import REGISTRY

    connector = REGISTRY.new_connector(config)
    # Resolve the AWS credential chain now, so that a missing or unusable key fails in this step.
    REGISTRY.clients(connector.identity, config.aws).ensure_credentials()  # type: ignore[attr-defined]
    return connector


class _AsyncEngineBox:
    """An async engine and the loop-free way to query it (``rs-iam check`` is synchronous)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.dialect = engine.dialect


def _create_engine(url: Any) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    from sqlalchemy.pool import NullPool

    try:
        if url.get_dialect().is_async:
            from sqlalchemy.ext.asyncio import create_async_engine

            return _AsyncEngineBox(create_async_engine(url, poolclass=NullPool))
        return create_engine(url, poolclass=NullPool)
    except (NoSuchModuleError, ImportError, ArgumentError) as exc:
        raise ConfigurationError(
            "url", f"cannot use {url.drivername!r}: {type(exc).__name__}: {exc} (is the driver installed?)"
        ) from exc


_PROBE = "select current_user, version()"


def _query(engine: Any) -> tuple[Any, ...]:
    from sqlalchemy import text

    if isinstance(engine, _AsyncEngineBox):
        import asyncio

        async def probe() -> tuple[Any, ...]:
            try:
                async with engine.engine.connect() as conn:
                    return tuple((await conn.execute(text(_PROBE))).one())
            finally:
                await engine.engine.dispose()

        return asyncio.run(probe())
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(text(_PROBE)).one())
    finally:
        engine.dispose()


def cmd_cache(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from .store import HostStore

    store = HostStore.open()
    if args.cache_command == "clear":
        out.write(f"cleared {store.clear()} entries from {store.directory}\n")
        return EXIT_OK
    now = time.time()
    listed = store.entries()
    entries = [
        {"name": e.name, "kind": e.kind, "description": e.description, "expires": _iso(e.expires_at),
         "expires_in_s": round(e.expires_at - now), "age_s": round(now - e.written_at)}
        for e in listed if e.problem is None
    ]  # fmt: skip
    bad = [{"name": e.name, "problem": e.problem} for e in listed if e.problem is not None]
    if args.json:
        out.write(json.dumps(entries) + "\n")
        for b in bad:
            err.write(
                f"unusable entry {b['name']}.json: {b['problem']} (ignored; `rs-iam cache clear` deletes it)\n"
            )
        return EXIT_OK
    err.write(
        f"{len(entries)} entries in {store.directory}" + (f", {len(bad)} unusable" if bad else "") + "\n"
    )
    for e in entries:
        out.write(f"{str(e['name'])[:12]}  {e['kind']:<11} expires in {e['expires_in_s']:>5} s  age {e['age_s']:>5} s  "
                  f"{e['description']}\n")  # fmt: skip
    for b in bad:
        out.write(
            f"{str(b['name'])[:12]}  UNUSABLE    {b['problem']} (ignored; `rs-iam cache clear` deletes it)\n"
        )
    return EXIT_OK


def cmd_standin(argv: Sequence[str]) -> int:
    from importlib.util import find_spec

    # The stand-in imports these only once it starts: check first, so a missing extra is one clear line.
    missing = [name for name in ("psycopg2", "trustme", "certifi") if find_spec(name) is None]
    if missing:
        raise CliError(
            EXIT_CONFIG,
            f"`rs-iam standin` needs the [testing] extra ({', '.join(missing)} not installed): "
            'pip install "sqlalchemy-rs-iam[testing]", and PostgreSQL server binaries',
        )
    try:
        from .testing.foreground import run_standin
    except ImportError as exc:
        raise CliError(
            EXIT_CONFIG,
            f"the local stand-in is not available ({exc}); it needs psycopg2 and PostgreSQL 15 binaries "
            '(pip install "sqlalchemy-rs-iam[testing]")',
        ) from exc
    return run_standin(list(argv), prog="rs-iam standin")


# --- entry point -----------------------------------------------------------------------------------------------


def _fail(err: IO[str], problem: CliError) -> int:
    err.write(f"rs-iam: {problem.message}\n")
    return problem.code


def run(argv: Sequence[str] | None = None, *, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run the CLI and return its exit code (``main`` exits with it)."""
    out = out or sys.stdout
    err = err or sys.stderr
    args_list = list(sys.argv[1:] if argv is None else argv)
    # `standin` owns its own options (including --help): hand everything after it over untouched.
    if args_list and args_list[0] == "standin":
        try:
            return cmd_standin(args_list[1:])
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except CliError as exc:
            return _fail(err, exc)
    parser = build_parser()
    args = parser.parse_args(args_list)  # exits 2 with a usage message on bad syntax
    if args.verbose:
        logging.basicConfig(
            stream=err,
            level=logging.DEBUG if args.verbose > 1 else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    commands: dict[str, Callable[[argparse.Namespace, IO[str], IO[str]], int]] = {
        "credentials": cmd_credentials,
        "check": cmd_check,
        "env": cmd_env,
        "cache": cmd_cache,
    }
    try:
        return commands[args.command](args, out, err)
    except KeyboardInterrupt:
        err.write("rs-iam: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        return _fail(err, diagnose(exc))


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point (``rs-iam`` and ``python -m sqlalchemy_rs_iam``)."""
    sys.exit(run(argv))
