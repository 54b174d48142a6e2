"""``python -m sqlalchemy_rs_iam.testing``: the stand-in in the foreground (see :mod:`.foreground`)."""

from __future__ import annotations

from .foreground import run_standin

if __name__ == "__main__":
    raise SystemExit(run_standin())
