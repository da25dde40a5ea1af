"""Structured logs: JSON lines in production, readable lines on a terminal.

Every line carries the request id of the request it belongs to (bound by the
request middleware through contextvars). Values under keys that name a credential
are replaced before anything is written: secrets never reach logs.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

SENSITIVE_KEY = re.compile(r"(pass(word)?|secret|token|authorization|api[_-]?key|cookie|credential|dsn|database_url)", re.I)
REDACTED = "[redacted]"
# URLs with a password in them: postgresql://user:pw@host → postgresql://user:[redacted]@host
URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<password>[^@\s]+)@", re.I)


def redact_url_passwords(text: str) -> str:
    return URL_PASSWORD.sub(lambda m: m.group("scheme") + REDACTED + "@", text)


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event.items()):
        if key == "event":
            if isinstance(value, str):
                event[key] = redact_url_passwords(value)
        elif SENSITIVE_KEY.search(key) and value is not None:
            event[key] = REDACTED
        elif isinstance(value, str):
            event[key] = redact_url_passwords(value)
    return event


def configure(*, level: str = "info", fmt: str = "auto") -> None:
    """Route structlog and the standard library (uvicorn, psycopg) through one renderer."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        # Level filtering first: a filtered-out line should cost nothing else.
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if use_json else _keep,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own handlers would print a second, unstructured copy; our middleware
    # writes the access log with the request id, so uvicorn's is off.
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def _keep(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    return event
