"""Waiting for a condition that other processes or background tasks make true."""

from __future__ import annotations

import asyncio
import time


def wait_until(check, timeout: float = 30.0, what: str = "condition", interval: float = 0.05):
    """`check()`'s first true value, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


async def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05):
    """`await predicate()`'s first true value, polled until `timeout` seconds have passed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(interval)
