"""One helper for the tests that release N threads at once (single flight, concurrent refusals)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_together(
    n: int, fn: Callable[[], T], *, timeout: float = 60.0
) -> tuple[list[T], list[BaseException]]:
    """Run ``fn`` on ``n`` threads released together by a barrier; return (results, exceptions raised).

    >>> run_together(4, lambda: 1)
    ([1, 1, 1, 1], [])
    """
    barrier = threading.Barrier(n, timeout=timeout)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait()
            value = fn()
        except BaseException as exc:  # handed back to the test, which asserts on it
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(value)

    threads = [threading.Thread(target=worker, name=f"together-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    if any(t.is_alive() for t in threads):
        raise AssertionError(
            f"{sum(t.is_alive() for t in threads)} of {n} threads still running after {timeout} s"
        )
    return results, errors
