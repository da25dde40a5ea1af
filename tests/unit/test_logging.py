import json
import logging

import structlog

from alai.server import logging as alai_logging


def test_json_logs_never_carry_credentials(capsys):
    alai_logging.configure(level="info", fmt="json")
    try:
        structlog.get_logger("t").info(
            "connecting to postgresql://alai:hunter2@db.example.com/alai",
            token="tok-123", api_key="key-456", database_url="postgresql://u:pw@h/db",
            note="dsn postgresql://u:pw2@h/db",
        )
        logging.getLogger("uvicorn.error").warning("plain stdlib line with Authorization=%s", "Bearer abc")
        err = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert len(lines) == 2
    first = lines[0]
    assert first["token"] == first["api_key"] == first["database_url"] == "[redacted]"
    assert "hunter2" not in err and "pw2" not in err and "tok-123" not in err and "key-456" not in err
    assert first["event"] == "connecting to postgresql://alai:[redacted]@db.example.com/alai"
    assert lines[1]["logger"] == "uvicorn.error" and lines[1]["level"] == "warning"


def test_request_id_is_bound_to_every_line(capsys):
    alai_logging.configure(level="info", fmt="json")
    try:
        structlog.contextvars.bind_contextvars(request_id="req-1")
        structlog.get_logger("t").info("inside a request")
        structlog.contextvars.clear_contextvars()
        err = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert json.loads(err.strip())["request_id"] == "req-1"
