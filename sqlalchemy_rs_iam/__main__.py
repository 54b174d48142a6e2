"""``python -m sqlalchemy_rs_iam``: the ``rs-iam`` command line (see :mod:`sqlalchemy_rs_iam.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
