"""Opaque cursors for lists paged by a descending id (`?cursor=` → `next_cursor`)."""

from __future__ import annotations

import base64
import json

from alai.server.problems import ProblemError


def encode_id(value: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([value]).encode()).decode().rstrip("=")


def decode_id(cursor: str) -> int:
    """The id in a cursor this API gave out; 400 for anything else."""
    try:
        return int(json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))[0])
    except (ValueError, TypeError, IndexError, KeyError):
        raise ProblemError(400, "the cursor is not one this API gave out", slug="bad-cursor") from None
