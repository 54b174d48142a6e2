"""Run the local Redshift stand-in in the foreground (``python -m sqlalchemy_rs_iam.testing``, ``rs-iam standin``).

Prints engine URLs (redshift_connector and psycopg2; serverless workgroup and provisioned cluster), the
``export`` lines that point boto3 at it (``AWS_...``) and make the drivers trust its TLS certificate
(``SSL_CERT_FILE``, ``PGSSLROOTCERT``), and a psql line for the static-password user; then waits until
Ctrl-C or SIGTERM and shuts everything down (PostgreSQL, temp dirs) before exiting.

Options::

    --port-aws N        port of the AWS emulator (default: a free one)
    --port-db N         port of the Redshift front (default: a free one)
    --max-lifetime S    cap issued database credentials at S seconds (e.g. 60, to watch refreshes)
    --region R          AWS region of the workgroup and cluster (default us-east-1)
    --no-tls            a plain front without TLS (URLs then carry ssl=false / sslmode=disable)

:func:`run_standin` is the whole command, reusable by other CLIs (``rs-iam standin``).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

__all__ = ["build_parser", "run_standin"]


def build_parser(prog: str = "python -m sqlalchemy_rs_iam.testing") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a local Amazon Redshift stand-in (PostgreSQL + Redshift front + AWS API emulator) "
        "until Ctrl-C.",
    )
    parser.add_argument(
        "--port-aws", type=int, default=0, metavar="N", help="AWS emulator port (default: free)"
    )
    parser.add_argument(
        "--port-db", type=int, default=0, metavar="N", help="Redshift front port (default: free)"
    )
    parser.add_argument(
        "--max-lifetime",
        type=float,
        default=None,
        metavar="S",
        help="cap issued DB credential lifetimes at S seconds",
    )
    parser.add_argument("--region", default="us-east-1", help="AWS region (default: us-east-1)")
    parser.add_argument(
        "--no-tls",
        dest="tls",
        action="store_false",
        help="plain front: answer TLS requests with N (URLs then carry each driver's TLS opt-out)",
    )
    return parser


def run_standin(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, prog: str | None = None
) -> int:
    """Start the stand-in, print how to use it, block until SIGINT/SIGTERM, stop it. Returns the exit code.

    Prints ``READY`` as the last line of the banner (scripts can wait for it). SIGTERM is handled like
    Ctrl-C when called from the main thread.
    """
    parser = build_parser(prog) if prog else build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    stream = out if out is not None else sys.stdout

    from .postgres import PostgresUnavailableError
    from .standin import RedshiftStandIn

    stop = threading.Event()
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)

    standin = RedshiftStandIn(
        region=args.region,
        aws_port=args.port_aws,
        db_port=args.port_db,
        max_lifetime=args.max_lifetime,
        tls=args.tls,
    )
    try:
        try:
            standin.start()
        except PostgresUnavailableError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # e.g. a requested port is taken
            print(f"error: could not start the stand-in: {exc}", file=sys.stderr)
            return 2
        _print_banner(standin, stream, args.max_lifetime)
        while not stop.wait(0.5):
            pass
        print("stopping ...", file=stream, flush=True)
        return 0
    finally:
        standin.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


def _print_banner(rs: object, stream: TextIO, max_lifetime: float | None) -> None:
    from .standin import RedshiftStandIn

    assert isinstance(rs, RedshiftStandIn)
    w = stream.write
    w(
        f"Redshift stand-in: front {rs.host}:{rs.port}, AWS emulator {rs.aws_endpoint_url}, region {rs.region}\n"
    )
    pg = rs.postgres
    where = f" (throwaway cluster in {pg.tempdir})" if hasattr(pg, "tempdir") else f" ({pg.kind})"
    w(f"PostgreSQL {pg.host}:{pg.port}{where}, database {rs.database}\n")
    if max_lifetime is not None:
        w(f"issued credentials live at most {max_lifetime:g}s\n")
    w("\n# environment (default profile = rs-iam-a; also rs-iam-b, rs-iam-etl = assumes etl-role)\n")
    if rs.tls:
        w(f"# TLS: the front's certificate is signed by the stand-in CA {rs.ca_file}\n")
    for name, value in rs.aws_env().items():
        w(f"export {name}={shlex.quote(value)}\n")
    w("\n# engine URLs\n")
    urls = {
        f"serverless workgroup {rs.workgroup} (redshift_connector)": rs.url("redshift_connector"),
        f"serverless workgroup {rs.workgroup} (psycopg2)": rs.url("psycopg2"),
        f"provisioned cluster {rs.cluster} as {rs.db_user} (redshift_connector)": rs.url(
            "redshift_connector", cluster=rs.cluster, user=rs.db_user
        ),
        f"provisioned cluster {rs.cluster} as {rs.db_user} (psycopg2)": rs.url(
            "psycopg2", cluster=rs.cluster, user=rs.db_user
        ),
    }
    for label, url in urls.items():
        w(f"{label}:\n  URL={url}\n")
    w("\n# static-password user, no IAM (baseline)\n")
    w(
        f"PGPASSWORD={shlex.quote(rs.static_password)} psql -h {rs.host} -p {rs.port} "
        f"-U {rs.static_user} {shlex.quote(rs.database)}\n"
    )
    w(f"static URL={rs.static_url()}\n")
    w("\nCtrl-C to stop.\nREADY\n")
    stream.flush()
