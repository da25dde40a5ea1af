"""Hiding secret values in a stream of bytes (the output of `alai run`'s child).

    masker = Masker(values)
    write(masker.feed(chunk))   # for every chunk read, as it arrives
    write(masker.finish())      # at the end of the stream

Every byte that belongs to an occurrence of a value is replaced; occurrences that
overlap (`abcd` and `cdef` in `abcdef`, or a value and a longer one it begins) become
one `*****`. The output is the same however the stream is cut into chunks: a value
split across two writes is still hidden, because `feed` holds back the longest end of
what it has seen that is a proper prefix of some value — and nothing else, so text
after a partial match that fails goes out at once. (A program that prints the first
characters of a value and then waits keeps them back until more output or the end.)

Matching is on bytes (the values' UTF-8), so a value cut inside a multibyte character,
or surrounded by binary data, is still found. Values shorter than MIN_LENGTH
characters are not masked: `1`, `yes` or `true` would turn ordinary output into noise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = b"*****"
MIN_LENGTH = 4


class Masker:
    def __init__(self, values: Iterable[str]) -> None:
        # Longest first: at a position where several values match, the regex takes the longest.
        self._values = sorted({value.encode() for value in values if len(value) >= MIN_LENGTH}, key=len, reverse=True)
        self._pending = b""  # held back: a proper prefix of some value, the rest still to come
        self._covered = 0  # bytes at the start of _pending already written as MASK
        if self._values:
            alternatives = b"|".join(re.escape(value) for value in self._values)
            # A lookahead finds every start position, so overlapping occurrences are all seen.
            self._occurrence = re.compile(b"(?=(" + alternatives + b"))")
            first_bytes = sorted({value[:1] for value in self._values})
            self._first_byte = re.compile(b"[" + b"".join(re.escape(byte) for byte in first_bytes) + b"]")
            self._longest = len(self._values[0])

    def feed(self, data: bytes) -> bytes:
        """What can be written now of everything fed so far."""
        if not self._values:
            return data
        return self._release(self._pending + data, final=False)

    def finish(self) -> bytes:
        """The rest, at the end of the stream: nothing more can complete a value."""
        if not self._values:
            return b""
        return self._release(self._pending, final=True)

    def _release(self, buffer: bytes, *, final: bool) -> bytes:
        hold = len(buffer) if final else self._hold_start(buffer)
        out = bytearray()
        cursor = self._covered  # buffer[:cursor] is written already (as text, or inside a MASK)
        for match in self._occurrence.finditer(buffer):
            start = match.start()
            # Past `hold` the bytes are undecided (a longer value may still begin there), unless
            # a complete value already covers them: its MASK is certain and goes out now.
            if start > hold and start >= cursor:
                break
            stop = start + len(match[1])
            if start < cursor:  # overlaps the MASK just written: widen it
                cursor = max(cursor, stop)
                continue
            out += buffer[cursor:start]
            out += MASK
            cursor = stop
        out += buffer[cursor:hold]
        self._pending = buffer[hold:]
        self._covered = max(0, cursor - hold)
        return bytes(out)

    def _hold_start(self, buffer: bytes) -> int:
        """Where the longest end of `buffer` that is a proper prefix of some value begins (len when none)."""
        size = len(buffer)
        for candidate in self._first_byte.finditer(buffer, max(0, size - self._longest + 1)):
            tail = buffer[candidate.start():]
            if any(len(value) > len(tail) and value.startswith(tail) for value in self._values):
                return candidate.start()
        return size


def mask(values: Iterable[str], data: bytes) -> bytes:
    """`data` with the values hidden, all at once."""
    masker = Masker(values)
    return masker.feed(data) + masker.finish()
