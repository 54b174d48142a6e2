"""An AWS Lambda handler on an rs_iam engine, ready for SnapStart.

Deploy with ``sqlalchemy-rs-iam[redshift-connector]`` and set ``RS_IAM_URL`` (or edit ``URL``). The
engine is made once per execution environment, at module scope, and reused by every invocation. Under
Lambda (``AWS_LAMBDA_FUNCTION_NAME`` is set) ``refresh=auto`` means ``lazy``: a refresh runs inside the
invocation that needs it, never on a background thread that Lambda could freeze between invocations.

SnapStart restores many environments from one snapshot: each must forget the AWS clients, identity and
credentials cached before the snapshot (the function's role credentials change on restore), and the
pool's connections, whose sockets belong to the snapshot. ``after_restore`` does both.

Locally, against the stand-in::

    python examples/lambda_handler.py [URL]
"""

from __future__ import annotations

import json
import os
from typing import Any

import sqlalchemy as sa

import sqlalchemy_rs_iam

try:  # in the Lambda Python runtimes; absent elsewhere (tests, local runs), where nothing is restored
    from snapshot_restore_py import register_after_restore
except ImportError:

    def register_after_restore(func: Any, *args: Any, **kwargs: Any) -> Any:
        return func


URL = os.environ.get(
    "RS_IAM_URL", "redshift+redshift_connector:///dev?plugin=rs_iam&workgroup=analytics&region=us-east-1"
)
# One connection per environment (Lambda runs one invocation at a time in it); pre-ping because the
# server may have closed it while the environment was frozen.
engine = sa.create_engine(URL, pool_size=1, max_overflow=0, pool_pre_ping=True)


@register_after_restore
def after_restore() -> None:
    """Runs once in each environment restored from a SnapStart snapshot (must finish within 10 s)."""
    sqlalchemy_rs_iam.reset()  # AWS clients, identities, credentials and endpoints cached before the snapshot
    engine.dispose(close=False)  # the snapshot's sockets: drop them without talking to the server


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Sum of sales per region, optionally only ``event["region"]``."""
    query = sa.text("select region, sum(amount) as total from sales group by region order by 1")
    with engine.connect() as conn:
        rows = [{"region": r, "total": float(t)} for r, t in conn.execute(query)]
    if event.get("region"):
        rows = [row for row in rows if row["region"] == event["region"]]
    return {"statusCode": 200, "body": json.dumps(rows)}


if __name__ == "__main__":
    import sys

    from _common import engine_url

    with engine_url(lambda rs: rs.url()) as url:
        engine = sa.create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)
        print(handler({}, None))
        after_restore()  # as if restored from a snapshot: the next invocation fetches anew
        print(handler({"region": "us-east-1"}, None))
        print("plugin counters:", dict(sqlalchemy_rs_iam.stats(engine)), file=sys.stderr)
