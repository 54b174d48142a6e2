"""Shared by the examples: use the URL given on the command line, or start the local stand-in.

python examples/pandas_read_sql.py                      # against a throwaway local stand-in
python examples/pandas_read_sql.py 'redshift+redshift_connector:///dev?plugin=rs_iam&workgroup=...'
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def engine_url(build: Callable[[Any], str]) -> Iterator[str]:
    """Yield ``sys.argv[1]`` if given; else start the stand-in, point boto3 at it, yield ``build(standin)``."""
    if len(sys.argv) > 1:
        yield sys.argv[1]
        return
    from sqlalchemy_rs_iam.testing.standin import RedshiftStandIn

    with RedshiftStandIn() as standin:
        saved = dict(os.environ)
        os.environ.update(standin.aws_env())
        try:
            yield build(standin)
        finally:
            os.environ.clear()
            os.environ.update(saved)
