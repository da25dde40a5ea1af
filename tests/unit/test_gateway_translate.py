"""Ollama ↔ OpenAI translation: requests, whole answers, streams (including a stream that
ends without [DONE], which must not look like a clean end)."""

import asyncio
import json

from alai.server.gateway import translate


def test_chat_and_generate_requests_become_chat_completions():
    path, body = translate.request("/api/chat", {
        "model": "q", "messages": [{"role": "user", "content": "hi"}], "format": "json",
        "options": {"temperature": 0.2, "num_predict": 50, "stop": ["\n"], "mirostat": 1}}, "meta/llama", stream=True)
    assert path == "/v1/chat/completions"
    assert body == {"model": "meta/llama", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                    "temperature": 0.2, "max_tokens": 50, "stop": ["\n"], "response_format": {"type": "json_object"},
                    "stream_options": {"include_usage": True}}
    _, generate = translate.request("/api/generate", {"model": "q", "prompt": "p", "system": "s"}, "m", stream=False)
    assert generate["messages"] == [{"role": "system", "content": "s"}, {"role": "user", "content": "p"}]
    assert "stream_options" not in generate
    assert translate.request("/api/embeddings", {"model": "e", "prompt": "t"}, "E", stream=False) == (
        "/v1/embeddings", {"model": "E", "input": "t"})


def test_a_whole_answer_and_errors():
    answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": "done it"},
                                      "finish_reason": "length"}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).encode()
    ollama = json.loads(translate.response("/api/chat", answer, "asked", 0.0))
    assert ollama["model"] == "asked" and ollama["message"]["content"] == "done it" and ollama["done"]
    assert ollama["done_reason"] == "length" and ollama["prompt_eval_count"] == 3 and ollama["eval_count"] == 2
    assert translate.error_message(b'{"error": {"message": "Unable to access model x"}}') == "Unable to access model x"
    assert translate.error_message(b"upstream exploded") == "upstream exploded"


def _run(lines: list[str], path: str = "/api/chat") -> list[dict]:
    async def source():
        for line in lines:
            yield line

    async def collect():
        return [json.loads(chunk) async for chunk in translate.stream(path, source(), "asked", 0.0)]

    return asyncio.run(collect())


def test_a_stream_delta_by_delta_then_done_with_usage():
    def event(choices, **extra):
        return "data: " + json.dumps({"choices": choices, **extra})

    got = _run([event([{"delta": {"role": "assistant", "content": "Hel"}}]), "",
                event([{"delta": {"content": "lo"}, "finish_reason": "stop"}]),
                event([], usage={"prompt_tokens": 1, "completion_tokens": 2}), "data: [DONE]"])
    assert [g["message"]["content"] for g in got] == ["Hel", "lo", ""]
    assert got[-1]["done"] and got[-1]["eval_count"] == 2 and not got[0]["done"]
    generated = _run([event([{"delta": {"content": "x"}}]), "data: [DONE]"], "/api/generate")
    assert generated[0]["response"] == "x" and generated[-1]["done"]


def test_a_stream_cut_short_or_failing_ends_with_an_error():
    cut = _run(['data: {"choices": [{"delta": {"content": "par"}}]}'])
    assert cut[-1] == {"error": "the backend ended the answer early"}
    failed = _run(['data: {"error": {"message": "overloaded"}}'])
    assert failed == [{"error": "overloaded"}]


def test_anthropic_requests_and_answers_translate_to_and_from_openai_chat():
    from alai.server.gateway import anthropic_messages

    body = anthropic_messages.to_openai({
        "model": "claude", "max_tokens": 64, "system": [{"type": "text", "text": "brief"}], "stream": True,
        "stop_sequences": ["END"], "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                           {"type": "text", "text": "b"}]}]}, "up")
    assert body == {"model": "up", "messages": [{"role": "system", "content": "brief"},
                                                {"role": "user", "content": "ab"}],
                    "stream": True, "max_tokens": 64, "stop": ["END"], "stream_options": {"include_usage": True}}
    whole = json.loads(anthropic_messages.from_openai(json.dumps({
        "choices": [{"message": {"content": "hi"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1}}).encode(), "claude"))
    assert whole["content"] == [{"type": "text", "text": "hi"}] and whole["stop_reason"] == "max_tokens"
    assert whole["usage"] == {"input_tokens": 2, "output_tokens": 1} and whole["model"] == "claude"

    async def events(lines):
        async def source():
            for line in lines:
                yield line
        out = []
        async for chunk in anthropic_messages.stream_from_openai(source(), "claude"):
            name, data = chunk.decode().strip().split("\n")
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
        return out

    got = asyncio.run(events(['data: {"choices": [{"delta": {"content": "Hi"}, "finish_reason": "stop"}]}',
                              'data: {"choices": [], "usage": {"completion_tokens": 1}}', "data: [DONE]"]))
    assert [name for name, _ in got] == ["message_start", "content_block_start", "content_block_delta",
                                         "content_block_stop", "message_delta", "message_stop"]
    assert got[2][1]["delta"] == {"type": "text_delta", "text": "Hi"}
    assert got[4][1]["delta"]["stop_reason"] == "end_turn" and got[4][1]["usage"]["output_tokens"] == 1
    cut = asyncio.run(events(['data: {"choices": [{"delta": {"content": "H"}}]}']))
    assert cut[-1][0] == "error" and cut[-1][1]["error"]["type"] == "api_error"


def test_an_anthropic_answer_becomes_openai_chat():
    from alai.server.gateway import anthropic_messages

    request = anthropic_messages.from_openai_request({"messages": [
        {"role": "system", "content": "s1"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "stop": "END", "temperature": 0.5}, "claude-x")
    assert request == {"model": "claude-x", "system": "s1", "stream": False, "max_tokens": 4096, "temperature": 0.5,
                       "stop_sequences": ["END"], "messages": [{"role": "user", "content": "q"},
                                                               {"role": "assistant", "content": "a"}]}
    whole = json.loads(anthropic_messages.to_openai_response(json.dumps({
        "id": "msg_1", "content": [{"type": "text", "text": "hi"}], "stop_reason": "max_tokens",
        "usage": {"input_tokens": 3, "output_tokens": 1}}).encode(), "asked"))
    assert whole["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": "hi"},
                                   "finish_reason": "length"}
    assert whole["usage"]["total_tokens"] == 4 and whole["model"] == "asked"

    def event(kind, **data):
        return "data: " + json.dumps({"type": kind, **data})

    async def lines(source):
        async def gen():
            for line in source:
                yield line
        return [line async for line in anthropic_messages.openai_sse_from_anthropic(gen(), "asked") if line]

    got = asyncio.run(lines([event("message_start", message={"usage": {"input_tokens": 5}}),
                             event("content_block_delta", delta={"type": "text_delta", "text": "Hi"}),
                             event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 1}),
                             event("message_stop")]))
    assert got[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in got[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"content": "Hi"} and chunks[1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[2]["usage"] == {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    failed = asyncio.run(lines([event("error", error={"type": "overloaded_error", "message": "busy"})]))
    assert json.loads(failed[0][6:]) == {"error": {"message": "busy", "type": "upstream_error"}}


def test_tool_calls_translate_with_ids_and_object_arguments():
    _, body = translate.request("/api/chat", {"model": "m", "tools": [{"type": "function", "function": {"name": "f"}}],
                                              "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}},
                                                            {"function": {"name": "g", "arguments": {}}}]},
        {"role": "tool", "content": "r1"}, {"role": "tool", "content": "r2"}]}, "up", stream=False)
    assert body["tools"] == [{"type": "function", "function": {"name": "f"}}]
    calls = body["messages"][1]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_0", "call_1"] and calls[0]["function"]["arguments"] == '{"a":1}'
    assert [m["tool_call_id"] for m in body["messages"][2:]] == ["call_0", "call_1"]
    answer = json.loads(translate.response("/api/chat", json.dumps({"choices": [{"finish_reason": "tool_calls",
        "message": {"content": None, "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": '{"b": 2}'}}]}}]
    }).encode(), "m", 0.0))
    assert answer["message"]["tool_calls"] == [{"function": {"name": "f", "arguments": {"b": 2}}}]
    streamed = _run(['data: {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "f", '
                     '"arguments": "{\\"c\\""}}]}}]}',
                     'data: {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 3}"}}]},'
                     ' "finish_reason": "tool_calls"}]}', "data: [DONE]"])
    assert streamed[-2]["message"]["tool_calls"] == [{"function": {"name": "f", "arguments": {"c": 3}}}]
    assert streamed[-1]["done"] and streamed[-1]["done_reason"] == "stop"


def test_anthropic_tool_use_translates_to_openai_tools_and_back():
    from alai.server.gateway import anthropic_messages

    body = anthropic_messages.to_openai({"model": "c", "max_tokens": 9, "tools": [
        {"name": "f", "description": "d", "input_schema": {"type": "object"}}], "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "text", "text": "let me"},
                                          {"type": "tool_use", "id": "tu1", "name": "f", "input": {"x": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": "42"},
                                     {"type": "text", "text": "and?"}]}]}, "up")
    assert body["tools"] == [{"type": "function", "function": {"name": "f", "description": "d",
                                                               "parameters": {"type": "object"}}}]
    assert body["messages"][1] == {"role": "assistant", "content": "let me", "tool_calls": [
        {"id": "tu1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}]}
    assert body["messages"][2:] == [{"role": "tool", "tool_call_id": "tu1", "content": "42"},
                                    {"role": "user", "content": "and?"}]

    async def events(lines):
        async def source():
            for line in lines:
                yield line
        out = []
        async for chunk in anthropic_messages.stream_from_openai(source(), "c"):
            name, data = chunk.decode().strip().split("\n")
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
        return out

    got = asyncio.run(events([
        'data: {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", '
        '"arguments": "{\\"x\\""}}]}}]}',
        'data: {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 2}"}}]}, '
        '"finish_reason": "tool_calls"}]}', "data: [DONE]"]))
    names = [name for name, _ in got]
    assert names == ["message_start", "content_block_start", "content_block_stop", "content_block_start",
                     "content_block_delta", "content_block_delta", "content_block_stop", "message_delta",
                     "message_stop"]
    assert got[3][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}
    assert "".join(d["delta"]["partial_json"] for n, d in got if n == "content_block_delta") == '{"x": 2}'
    assert got[6][1]["index"] == 1 and got[7][1]["delta"]["stop_reason"] == "tool_use"


def test_openai_tools_translate_for_an_anthropic_backend_and_back():
    from alai.server.gateway import anthropic_messages

    request = anthropic_messages.from_openai_request({"tools": [{"type": "function", "function": {
        "name": "f", "description": "d", "parameters": {"type": "object"}}}], "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "f",
                                                                                     "arguments": '{"x": 1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}, {"role": "user", "content": "and?"}]}, "claude")
    assert request["tools"] == [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]
    assert request["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": 1}}]}
    assert request["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "c1", "content": "42"}, {"type": "text", "text": "and?"}]}
    whole = json.loads(anthropic_messages.to_openai_response(json.dumps({"content": [
        {"type": "tool_use", "id": "tu", "name": "f", "input": {"y": 2}}], "stop_reason": "tool_use"}).encode(), "c"))
    assert whole["choices"][0]["finish_reason"] == "tool_calls"
    assert whole["choices"][0]["message"]["tool_calls"] == [
        {"id": "tu", "type": "function", "function": {"name": "f", "arguments": '{"y":2}'}}]

    def event(kind, **data):
        return "data: " + json.dumps({"type": kind, **data})

    async def lines(source):
        async def gen():
            for line in source:
                yield line
        return [json.loads(line[6:]) for line in
                [x async for x in anthropic_messages.openai_sse_from_anthropic(gen(), "c") if x]
                if line != "data: [DONE]"]

    got = asyncio.run(lines([event("content_block_start", index=0, content_block={"type": "tool_use", "id": "tu",
                                                                                    "name": "f", "input": {}}),
                             event("content_block_delta", index=0, delta={"type": "input_json_delta",
                                                                          "partial_json": '{"z"'}),
                             event("content_block_delta", index=0, delta={"type": "input_json_delta",
                                                                          "partial_json": ": 3}"}),
                             event("message_delta", delta={"stop_reason": "tool_use"}), event("message_stop")]))
    calls = [call for chunk in got for choice in chunk["choices"] for call in choice["delta"].get("tool_calls", [])]
    assert calls[0]["id"] == "tu" and calls[0]["function"]["name"] == "f"
    assert "".join(c["function"]["arguments"] for c in calls) == '{"z": 3}'
    assert got[-2]["choices"][0]["finish_reason"] == "tool_calls"
