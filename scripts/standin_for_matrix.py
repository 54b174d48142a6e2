"""Start the local stand-in for scripts/matrix and describe it in a JSON file; stop it on SIGTERM.

    python scripts/standin_for_matrix.py OUT.json

Runs in the full development environment (the stand-in needs the ``[testing]`` extra), so the venvs under
test can hold one extra alone: they only read OUT.json (AWS environment, one URL per dialect, the database
user a login must show) and connect to the running stand-in.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

from sqlalchemy_rs_iam.testing import RedshiftStandIn


def main(out: Path) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    rs = RedshiftStandIn().start()
    try:
        description = {
            "env": rs.aws_env(),
            "urls": {
                driver: rs.url(driver)
                for driver in ("redshift_connector", "psycopg2", "postgresql+psycopg2", "psycopg", "asyncpg")
            },
            "user": f"IAM:{rs.identities['rs-iam-a'].principal}",
            "workgroup": rs.workgroup,
            "database": rs.database,
        }
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(description))
        os.replace(tmp, out)  # readers never see half a file
        print(f"standin_for_matrix: ready ({rs.host}:{rs.port})", flush=True)
        stop.wait()
    finally:
        rs.stop()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
