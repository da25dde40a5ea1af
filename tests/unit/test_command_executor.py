"""The command executor reads Claude Code's stream-JSON (print mode) from a real child
process: text, tool calls, the result and its usage, whatever the length of a line."""

import asyncio
import json
import sys
import textwrap

from alai.node import executors
from alai.node.executors import RunSpec

# A stand-in for `claude -p --output-format stream-json`: the same line shapes.
CLAUDE_LIKE = textwrap.dedent("""
    import json, sys
    prompt = sys.stdin.read()
    big = "x" * 300_000  # a tool result or a long answer: one line far past 64 KiB
    lines = [
        {"type": "system", "subtype": "init", "session_id": "s1"},
        {"type": "assistant", "message": {"content": [
            {"type": "text", "text": "reading " + prompt},
            {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "a.py"}}]}},
        {"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t1", "content": big}]}},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": big}]}},
        {"type": "result", "subtype": "success", "is_error": False, "result": "done: " + prompt,
         "usage": {"input_tokens": 10, "output_tokens": 5}},
    ]
    for line in lines:
        print(json.dumps(line), flush=True)
    print("a warning", file=sys.stderr)
""")


def spec() -> RunSpec:
    return RunSpec(run_id=1, attempt=1, agent="coder", model=None, system_prompt="You code.", input="the plan",
                   command="claude")


async def test_stream_json_with_lines_past_64_kib(tmp_path):
    script = tmp_path / "claude_like.py"
    script.write_text(CLAUDE_LIKE)
    events: list[tuple[str, dict]] = []
    outcome = await executors.run_command(f"{sys.executable} {script}", spec(), lambda kind, data:
                                          events.append((kind, data)))
    assert outcome.outcome == "succeeded", outcome.error
    assert outcome.output == "done: the plan" and outcome.usage == {"input_tokens": 10, "output_tokens": 5}
    kinds = [kind for kind, _ in events]
    assert kinds.count("tool_call") == 1 and kinds.count("usage") == 1
    texts = [data["text"] for kind, data in events if kind == "output"]
    assert texts == ["reading the plan", "x" * 300_000]
    tool_result = [data["json"] for kind, data in events if kind == "log" and data.get("json", {}).get("type") == "user"]
    assert len(tool_result[0]["message"]["content"][0]["content"]) == 300_000
    assert ("log", {"stream": "stderr", "text": "a warning"}) in events


async def test_a_line_past_the_limit_comes_in_pieces():
    reader = asyncio.StreamReader(limit=1024)
    reader.feed_data(b"short\n" + b"y" * 5000 + b"\nlast")
    reader.feed_eof()
    pieces = [piece async for piece in executors._lines(reader)]
    assert pieces[0] == b"short\n" and pieces[-1] == b"last"
    assert b"".join(pieces) == b"short\n" + b"y" * 5000 + b"\nlast"
    assert all(len(piece) <= 5001 for piece in pieces)


async def test_a_failing_command_reports_its_exit_and_stderr(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("import sys\nprint('partial')\nprint('it broke', file=sys.stderr)\nsys.exit(3)\n")
    outcome = await executors.run_command(f"{sys.executable} {script}", spec(), lambda kind, data: None)
    assert outcome.outcome == "failed" and outcome.output == "partial\n"
    assert outcome.error == "exit code 3: it broke"


def test_stream_json_is_only_json_objects_with_a_type():
    state = {"text": [], "result": None, "failed": False, "usage": None}
    assert not executors._stream_json("plain text", lambda *a: None, state)
    assert not executors._stream_json(json.dumps([1, 2]), lambda *a: None, state)
    assert not executors._stream_json(json.dumps({"no": "type"}), lambda *a: None, state)


def test_what_a_node_sends_holds_no_nul():
    from alai.node.daemon import storable

    assert storable({"text": "a\x00b", "n": 1, "list": ["\x00", None], "\x00k": True}) == {
        "text": "a\ufffdb", "n": 1, "list": ["\ufffd", None], "\ufffdk": True}
