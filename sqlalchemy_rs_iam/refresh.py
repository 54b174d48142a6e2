"""The two refresh modes as types: :class:`Background` (a refresh thread) and :class:`Lazy` (no thread).

A mode is chosen once, from the configuration (:func:`strategy_for`), and handed to the process tier; the
single-flight core (:mod:`sqlalchemy_rs_iam.cache`) asks the strategy, never a function's identity, whether
a refresh runs on the caller's thread::

    strategy = strategy_for("auto", os.environ)   # Lazy() inside AWS Lambda, else Background()
    strategy.inline                               # True: the caller that starts a refresh runs it
    Background(spawn=pending.append)              # tests: background semantics, run when the test wants

Both modes check wall-clock expiry on every use, so a frozen process never serves an expired password.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Literal

__all__ = ["Background", "Lazy", "RefreshMode", "RefreshStrategy", "Spawn", "spawn_thread", "strategy_for"]

#: Runs a refresh: must run each callable exactly once, soon.
Spawn = Callable[[Callable[[], None]], None]
RefreshMode = Literal["background", "lazy"]


def spawn_thread(target: Callable[[], None]) -> None:
    """Run ``target`` on a daemon thread named ``rs-iam-refresh``."""
    threading.Thread(target=target, name="rs-iam-refresh", daemon=True).start()


class Background:
    """``refresh=background``: a refresh due is started with ``spawn`` (a daemon thread by default) and the
    caller leaves at once with the cached value. An event loop may start one too (``peek``)."""

    inline = False
    mode: RefreshMode = "background"
    __slots__ = ("spawn",)

    def __init__(self, spawn: Spawn = spawn_thread) -> None:
        self.spawn = spawn

    def run(self, target: Callable[[], None]) -> None:
        self.spawn(target)

    def __repr__(self) -> str:
        return "Background()" if self.spawn is spawn_thread else f"Background(spawn={self.spawn!r})"


class Lazy:
    """``refresh=lazy``: no thread; the caller that finds a refresh due runs it and leaves with its result
    (no thread can be frozen mid-call). An event loop never refreshes inline: ``peek`` reports a miss."""

    inline = True
    mode: RefreshMode = "lazy"
    __slots__ = ()

    def run(self, target: Callable[[], None]) -> None:
        target()

    def __call__(self, target: Callable[[], None]) -> None:  # usable where a Spawn is expected
        target()

    def __repr__(self) -> str:
        return "Lazy()"


RefreshStrategy = Background | Lazy


def as_strategy(how: RefreshStrategy | Spawn | None, default: RefreshStrategy) -> RefreshStrategy:
    """A strategy as given; a bare spawn function means background refreshes run by it; ``None``: default."""
    if how is None:
        return default
    if isinstance(how, (Background, Lazy)):
        return how
    return Background(how)


def strategy_for(mode: str, environ: Mapping[str, str] = os.environ) -> RefreshStrategy:
    """The strategy of ``refresh=`` ``mode``: ``auto`` is lazy inside AWS Lambda (``AWS_LAMBDA_FUNCTION_NAME``
    set), where the environment is frozen between invocations, and background elsewhere."""
    if mode == "auto":
        mode = "lazy" if environ.get("AWS_LAMBDA_FUNCTION_NAME") else "background"
    return Lazy() if mode == "lazy" else Background()
