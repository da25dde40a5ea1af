"""Pausing Python's cyclic garbage collector around bulk work.

An import allocates hundreds of thousands of objects (rows, mapped values, problem
lists) that all live until it ends. Every few hundred allocations the collector runs,
and its full passes walk all of them again and again: a third of the Mission Control
import's time in Python, measured (bench/mc_import.py). Reference counting still frees
everything acyclic while the collector is paused; it resumes when the last pause ends,
also after a failure. Pauses may overlap (two imports, in threads or tasks).
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_lock = threading.Lock()
_holders = 0
_resume = False


@contextmanager
def paused() -> Iterator[None]:
    global _holders, _resume
    with _lock:
        if _holders == 0:
            _resume = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _resume:
                gc.enable()


def pausing(function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Decorates a coroutine function: the collector is paused while it runs."""
    @functools.wraps(function)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with paused():
            return await function(*args, **kwargs)
    return wrapper
