"""The legacy import's value conversions: times, labels, priorities, statuses, verbatim JSON."""

import json
from datetime import UTC, date, datetime

import pytest

from alai.server.mc import import_values as values

MOMENT = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
WORKFLOW = ["todo", "in_progress", "blocked", "review", "done", "cancelled"]


@pytest.mark.parametrize("raw", [
    1709632800, 1709632800.0, "1709632800", 1709632800000, "1709632800000", 1709632800000000, 1709632800000000000,
    "2024-03-05T10:00:00Z", "2024-03-05T11:00:00+01:00", "2024-03-05 10:00:00", "2024-03-05T10:00:00.000000",
    "Tue Mar 05 2024 11:00:00 GMT+0100 (Central European Standard Time)", "2024/03/05 10:00:00",
])
def test_timestamps_in_every_legacy_shape(raw):
    assert values.parse_timestamp(raw) == (MOMENT, None)


def test_a_date_alone_is_midnight_utc_and_garbage_is_a_problem():
    assert values.parse_timestamp("2024-03-05") == (datetime(2024, 3, 5, tzinfo=UTC), None)
    assert values.parse_timestamp(None) == (None, None)
    moment, problem = values.parse_timestamp("soon")
    assert moment is None and "not a timestamp" in problem
    assert values.parse_timestamp(float("nan"))[0] is None
    assert values.parse_date("2024-04-01") == (date(2024, 4, 1), None)
    assert values.parse_date(1709632800000) == (date(2024, 3, 5), None)


@pytest.mark.parametrize("raw, labels, problem", [
    ('["bug", "infra", "bug"]', ["bug", "infra"], False),
    ("bug, infra ,, docs", ["bug", "infra", "docs"], False),
    ('"solo"', ["solo"], False),
    ('["broken", ', ["broken"], True),
    (None, [], False),
    ('["café", "日本語", 3]', ["café", "日本語", "3"], False),
])
def test_labels(raw, labels, problem):
    found, found_problem = values.parse_labels(raw)
    assert found == labels and bool(found_problem) == problem


@pytest.mark.parametrize("raw, priority, problem", [
    (0, 0, False), (4, 4, False), ("2", 2, False), (2.0, 2, False), ("high", 1, False), ("P0", 0, False),
    ("Critical", 0, False), (7, 4, True), (-1, 0, True), ("whenever", 2, True), (None, 2, False),
])
def test_priorities(raw, priority, problem):
    found, found_problem = values.guess_priority(raw)
    assert found == priority and bool(found_problem) == problem


@pytest.mark.parametrize("raw, status", [
    ("todo", "todo"), ("In Progress", "in_progress"), ("in-progress", "in_progress"), ("open", "todo"),
    ("Closed", "done"), ("canceled", "cancelled"), ("on hold", "blocked"), ("weird", None),
])
def test_statuses(raw, status):
    assert values.guess_status(raw, WORKFLOW) == status


def test_a_synonym_outside_the_workflow_is_unknown():
    assert values.guess_status("closed", ["open", "shut"]) is None


def test_task_keys():
    assert values.task_key(12, "MC-") == "MC-12" and values.task_key("12", "MC-") == "MC-12"
    assert values.task_key(" MC-3 ", "MC-") == "MC-3" and values.task_key("", "MC-") is None
    assert values.task_key(None, "MC-") is None and values.task_key("٣", "MC-") == "٣"


def test_verbatim_rows_keep_everything_jsonb_can_hold():
    bad = values.decode_sqlite_text(b"caf\xe9")
    assert isinstance(bad, values.BadText) and bad == "caf\ufffd"
    row = ("plain", b"\x00\x01", "nul\x00inside", float("inf"), 3, None)
    data = json.loads(values.verbatim_json(["a", "b", "c", "d", "e", "f"], row))
    assert data == {"a": "plain", "b": {"$blob_base64": "AAE="}, "c": {"$text_base64": "bnVsAGluc2lkZQ=="},
                    "d": {"$float": "inf"}, "e": 3, "f": None}
    careful = json.loads(values.verbatim_json(["t"], (bad,), careful=True))
    assert careful == {"t": {"$text_base64": "Y2Fm6Q=="}}


def test_json_that_jsonb_would_refuse_is_cleaned():
    parsed, ok = values.parse_json('{"a": "x\\u0000y", "b": "\\ud800"}')
    assert ok and parsed == {"a": "xy", "b": "?"}
    assert values.parse_json("{not json") == (None, False)
    assert values.clean_text("a\x00b") == ("ab", "NUL characters removed")


def test_json_that_python_reads_but_json_does_not_have_is_refused():
    assert values.parse_json('{"a": NaN}') == (None, False)
    assert values.parse_json("[Infinity]") == (None, False)
    assert values.parse_json("[1e999]") == (None, False)
    assert values.parse_json('{"n": 18446744073709551616}') == ({"n": 18446744073709551616}, True)  # exact
    assert values.parse_json('{"a": 1}') == ({"a": 1}, True)


def test_to_json_takes_integers_beyond_64_bits_and_refuses_bytes():
    assert json.loads(values.to_json({"n": 2**70})) == {"n": 2**70}
    assert values.to_json(["é"]) == '["é"]'
    with pytest.raises(TypeError):
        values.to_json({"b": b"x"})
