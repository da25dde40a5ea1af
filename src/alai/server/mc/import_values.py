"""Value conversions for the legacy import: timestamps, labels, JSON, statuses, priorities.

Each converter returns the value and, where the source value could not be taken as
it is, a short problem text; the caller records it on the row. None of them raise
on bad data: a legacy row is always imported, with its problems written down.
"""

from __future__ import annotations

import base64
import json
import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Epoch numbers by magnitude: seconds reach 1e11 only in the year 5138, milliseconds
# pass 1e11 in 1973, microseconds pass 1e14 in 1973.
SECONDS_BELOW = 1e11
MILLIS_BELOW = 1e14
MICROS_BELOW = 1e17
NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")
# `new Date().toString()` in Node.js: "Tue Mar 05 2024 10:00:00 GMT+0100 (Central European Standard Time)".
JS_DATE = re.compile(r"^\w{3} (\w{3} \d{1,2} \d{4} \d{2}:\d{2}:\d{2}) GMT([+-]\d{4})")
OTHER_FORMATS = ("%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y")
# JSON escapes PostgreSQL's jsonb refuses: NUL and unpaired surrogates.
JSONB_UNSAFE_ESCAPE = re.compile(r"\\u(0000|d[89a-f][0-9a-f]{2})", re.IGNORECASE)

STATUS_SYNONYMS = {
    "open": "todo", "new": "todo", "backlog": "todo", "pending": "todo", "to_do": "todo", "queued": "todo",
    "doing": "in_progress", "active": "in_progress", "wip": "in_progress", "started": "in_progress",
    "inprogress": "in_progress", "running": "in_progress", "working": "in_progress",
    "on_hold": "blocked", "waiting": "blocked", "stuck": "blocked", "paused": "blocked",
    "in_review": "review", "reviewing": "review", "qa": "review", "testing": "review",
    "closed": "done", "complete": "done", "completed": "done", "resolved": "done", "finished": "done",
    "canceled": "cancelled", "abandoned": "cancelled", "wontfix": "cancelled", "won't_fix": "cancelled",
    "rejected": "cancelled", "dropped": "cancelled",
}
PRIORITY_WORDS = {
    "critical": 0, "urgent": 0, "highest": 0, "blocker": 0, "p0": 0,
    "high": 1, "p1": 1,
    "medium": 2, "normal": 2, "default": 2, "p2": 2,
    "low": 3, "p3": 3,
    "lowest": 4, "trivial": 4, "minor": 4, "someday": 4, "p4": 4,
}
DEFAULT_PRIORITY = 2
# Who did it, when the legacy row does not say.
FALLBACK_ACTOR = "import"


# One encoder for all rows: json.dumps with options builds a new one per call. NaN and
# infinities raise, so that the careful path turns them into something jsonb takes.
_stdlib_json = json.JSONEncoder(ensure_ascii=False, check_circular=False, allow_nan=False).encode


LONG_NUMBER = re.compile(r"\d{19}")


def to_json(value: Any) -> str:
    """JSON text for a jsonb column. orjson (C, ~10x faster: an import encodes every
    row) with the standard library for what orjson refuses but JSON allows: integers
    beyond 64 bits. Unsupported types (bytes) raise TypeError either way. orjson
    writes NaN and infinities as null instead of raising: callers pass only values
    from parse_json (which refuses them) or verbatim_value (which spells them out)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _stdlib_json(value)


class BadText(str):
    """SQLite TEXT that is not valid UTF-8: readable (with U+FFFD) and its raw bytes kept."""

    raw: bytes
    # How many were made; a reader compares it before and after a table to know
    # whether that table needs the careful (slower) verbatim path.
    made = 0


def decode_sqlite_text(raw: bytes) -> str:
    """sqlite3 text_factory: strict UTF-8, else a BadText instead of an exception mid-read."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        text = BadText(raw.decode("utf-8", "replace"))
        text.raw = raw
        BadText.made += 1
        return text


# -- verbatim rows --------------------------------------------------------------------

def verbatim_value(value: Any) -> Any:
    """A SQLite value as JSON that jsonb accepts, losing nothing."""
    if isinstance(value, bytes):
        return {"$blob_base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, BadText):
        return {"$text_base64": base64.b64encode(value.raw).decode("ascii")}
    if isinstance(value, str) and "\x00" in value:
        return {"$text_base64": base64.b64encode(value.encode("utf-8")).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    return value


def verbatim_json(columns: list[str], row: tuple, *, careful: bool = False) -> str:
    """The row as a JSON object. The fast path encodes as is; blobs, NaN and NUL (which
    jsonb refuses) send it down the careful path. `careful` is for tables with BadText."""
    if not careful and (float not in map(type, row) or all(
            value.__class__ is not float or math.isfinite(value) for value in row)):
        try:
            text = to_json(dict(zip(columns, row, strict=True)))
        except (TypeError, ValueError):
            pass
        else:
            if "\\u0000" not in text:
                return text
    return to_json({name: verbatim_value(value) for name, value in zip(columns, row, strict=True)})


# -- text ---------------------------------------------------------------------------------

def clean_text(value: Any) -> tuple[str | None, str | None]:
    """Text for a PostgreSQL text column: blobs decoded, NUL removed."""
    if value.__class__ is str and "\x00" not in value:  # nearly every value: the fast path
        return value, None
    if value is None:
        return None, None
    problem = None
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
        problem = "binary value decoded as UTF-8"
    elif isinstance(value, BadText):
        text, problem = str(value), "text is not valid UTF-8; undecodable bytes replaced"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        text, problem = text.replace("\x00", ""), "NUL characters removed"
    return text, problem


def jsonable(value: Any) -> Any:
    """A SQLite value for a jsonb field (metadata, history values)."""
    return verbatim_value(value)


def parse_json(text: str) -> tuple[Any, bool]:
    """(value, ok): JSON text parsed, made safe for jsonb."""
    try:
        if LONG_NUMBER.search(text):  # orjson would read it as a float, losing digits
            raise orjson.JSONDecodeError("long number", text, 0)
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        # What orjson refuses but may still be JSON: integers beyond 64 bits, lone
        # surrogate escapes (made safe below). NaN/Infinity stay refused: not JSON.
        try:
            value = _STRICT_DECODER.decode(text)
        except ValueError:
            return None, False
    if "\\u" in text and JSONB_UNSAFE_ESCAPE.search(text):
        value = _jsonb_safe(value)
    return value, True


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for JSON numbers")
    return value


def _not_json(constant: str) -> Any:
    # Python's json reads NaN and Infinity; JSON (and jsonb) has neither.
    raise ValueError(f"{constant} is not JSON")


_STRICT_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite_float)


def _jsonb_safe(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_jsonb_safe(item) for item in value]
    if isinstance(value, dict):
        return {_jsonb_safe(key): _jsonb_safe(item) for key, item in value.items()}
    return value


# -- time -------------------------------------------------------------------------------

def from_epoch(number: float) -> datetime:
    magnitude = abs(number)
    if magnitude < SECONDS_BELOW:
        seconds = number
    elif magnitude < MILLIS_BELOW:
        seconds = number / 1e3
    elif magnitude < MICROS_BELOW:
        seconds = number / 1e6
    else:
        seconds = number / 1e9
    return EPOCH + timedelta(seconds=seconds)


def parse_timestamp(value: Any) -> tuple[datetime | None, str | None]:
    """Epoch s/ms/µs/ns (numbers or digit strings), ISO 8601 with or without zone (UTC
    assumed), a date alone, and a few other shapes old tools wrote."""
    if value is None or value == "":
        return None, None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                return None, f"{value!r} is not a timestamp"
            return from_epoch(value), None
        text = str(value).strip()
        if NUMBER.match(text):
            return from_epoch(float(text) if "." in text else int(text)), None
        return _parse_text_time(text), None
    except (ValueError, OverflowError):
        return None, f"{str(value)[:60]!r} is not a timestamp"


def _parse_text_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = _parse_other_time(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parse_other_time(text: str) -> datetime:
    match = JS_DATE.match(text)
    if match:
        return datetime.strptime(f"{match.group(1)} {match.group(2)}", "%b %d %Y %H:%M:%S %z")
    for pattern in OTHER_FORMATS:
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    raise ValueError(text)


def parse_date(value: Any) -> tuple[date | None, str | None]:
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value), None
        except ValueError:
            pass
    moment, problem = parse_timestamp(value)
    return (moment.date() if moment else None), problem


# -- labels ---------------------------------------------------------------------------------

def parse_labels(value: Any) -> tuple[list[str], str | None]:
    """Labels from a JSON array (or string) or comma-separated text; order kept, duplicates dropped."""
    if value is None:
        return [], None
    text, problem = clean_text(value)
    text = (text or "").strip()
    items: list[Any]
    if text.startswith("[") or text.startswith('"'):
        parsed, ok = parse_json(text)
        if ok:
            items = parsed if isinstance(parsed, list) else [parsed]
        else:
            items = text.strip("[]").replace('"', "").split(",")
            problem = "labels are not valid JSON; split at commas"
    else:
        items = text.split(",")
    labels: list[str] = []
    for item in items:
        if item is None or isinstance(item, dict | list):
            continue
        label = (str(item) if not isinstance(item, str) else item).strip().replace("\x00", "")
        if label and label not in labels:
            labels.append(label)
    return labels, problem


# -- ids -----------------------------------------------------------------------------------

def task_key(value: Any, prefix: str) -> str | None:
    """A legacy task reference as an mc_tasks id: numbers get the prefix ("MC-")."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return f"{prefix}{int(value)}"
    text = (clean_text(value)[0] or "").strip()
    if not text:
        return None
    return f"{prefix}{int(text)}" if text.isascii() and text.isdigit() else text


# -- statuses and priorities -------------------------------------------------------------

def normalise_word(value: str) -> str:
    return re.sub(r"[\s\-]+", "_", value.strip().lower())


def guess_status(source: str, workflow: list[str]) -> str | None:
    """The workflow status a legacy status means, or None if unknown."""
    if source in workflow:
        return source
    word = normalise_word(source)
    if word in workflow:
        return word
    synonym = STATUS_SYNONYMS.get(word) or STATUS_SYNONYMS.get(word.replace("_", ""))
    return synonym if synonym in workflow else None


def guess_priority(value: Any) -> tuple[int, str | None]:
    """(priority 0-4, problem): numbers (clamped), numeric strings, and common words."""
    if value is None or value == "":
        return DEFAULT_PRIORITY, None
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        word = normalise_word(value)
        if NUMBER.match(word):
            number = float(word)
        elif word in PRIORITY_WORDS:
            return PRIORITY_WORDS[word], None
    if number is None or not math.isfinite(number):
        return DEFAULT_PRIORITY, f"priority {str(value)[:40]!r} is not understood; imported as {DEFAULT_PRIORITY}"
    clamped = min(4, max(0, round(number)))
    if clamped != number:
        return clamped, f"priority {value!r} is outside 0-4; imported as {clamped}"
    return clamped, None
