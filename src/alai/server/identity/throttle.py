"""Failed sign-ins are throttled per username and per client address (per replica).

Argon2 makes every guess cost ~90 ms of CPU and 64 MiB; without a limit, anyone can
keep a replica busy or try passwords as fast as it answers.
"""

from __future__ import annotations

import time
from collections import deque


class FailureLimiter:
    def __init__(self, *, limit: int, window_seconds: float, max_keys: int = 50_000) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and now - failures[0] > self.window:
            failures.popleft()
        if not failures:
            self._failures.pop(key, None)
        return failures

    def retry_after(self, key: str) -> int | None:
        """Seconds until `key` may try again, or None if it may now."""
        now = time.monotonic()
        failures = self._recent(key, now)
        if len(failures) < self.limit:
            return None
        return max(1, int(self.window - (now - failures[0])) + 1)

    def failed(self, key: str) -> None:
        if len(self._failures) >= self.max_keys:
            self._failures.clear()  # crude, but bounded memory under a flood of keys
        self._failures.setdefault(key, deque()).append(time.monotonic())

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
