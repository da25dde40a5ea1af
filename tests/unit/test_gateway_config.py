"""The gateway's configuration file: what it accepts, and one-line reasons for what it refuses."""

import pytest

from alai.server.gateway import config as gateway_config
from alai.server.gateway.backends import BackendState


def write(tmp_path, text: str):
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_a_full_configuration_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("TOGETHER_KEY", "tg-secret")
    loaded = gateway_config.load(write(tmp_path, """
backends:
  - {name: anvil, kind: ollama, url: "http://anvil:11434/"}
  - {name: together, kind: openai, url: "https://api.together.xyz", api_key: "env:TOGETHER_KEY"}
models:
  "alaiml-task": {routes: [{backend: anvil}], when_down: pause, retry_after_seconds: 60}
  "qwen3.5:27b": {routes: [{backend: anvil}, {backend: together, model: "meta-llama/Llama-3.3-70B-Instruct-Turbo"}]}
"""))
    assert loaded.backend("anvil").url == "http://anvil:11434"  # trailing slash dropped
    assert loaded.backend("together").api_key.get_secret_value() == "tg-secret"
    assert "tg-secret" not in repr(loaded) and "tg-secret" not in loaded.model_dump_json()
    assert loaded.models["alaiml-task"].when_down == "pause"
    assert loaded.models["qwen3.5:27b"].routes[1].model == "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    assert gateway_config.load(None).backends == []


@pytest.mark.parametrize(("text", "message"), [
    ("backends: [{name: a, kind: ollama, url: 'ftp://x'}]", "http:// or https://"),
    ("backends: [{name: a, kind: llama, url: 'http://x'}]", "backends.0.kind"),
    ("backends: [{name: a, kind: ollama, url: 'http://x'}]\nmodels: {m: {routes: [{backend: b}]}}",
     "unknown backend 'b'"),
    ("backends: [{name: a, kind: ollama, url: 'http://x'}, {name: a, kind: ollama, url: 'http://y'}]", "unique"),
    ("backends: [{name: a, kind: openai, url: 'http://x', api_key: 'env:ALAI_TEST_NOT_SET'}]",
     "ALAI_TEST_NOT_SET is not set"),
    ("backends: [{name: a, kind: ollama, url: 'http://x', colour: red}]", "colour"),
    ("backends: [unclosed", "not valid YAML"),
])
def test_a_bad_configuration_is_refused_in_one_line(tmp_path, text, message):
    with pytest.raises(gateway_config.ConfigError) as refused:
        gateway_config.load(write(tmp_path, text))
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_model_names_match_with_and_without_the_latest_tag():
    state = BackendState(gateway_config.BackendConfig(name="a", kind="ollama", url="http://x"),
                         models=[{"name": "bge-m3:latest"}, {"name": "qwen3.5:27b"}])
    assert state.has_model("bge-m3") and state.has_model("bge-m3:latest") and state.has_model("qwen3.5:27b")
    assert not state.has_model("qwen3.5") and not state.has_model("bge-m3:v2")


def test_model_lists_in_every_shape_backends_send():
    from alai.server.gateway.backends import models_in, redact_url

    assert models_in("openai", {"data": [{"id": "a"}, {"id": 3}, "junk"]}) == [{"name": "a", "model": "a"}]
    assert models_in("openai", [{"id": "together/x", "type": "chat"}]) == [{"name": "together/x",
                                                                            "model": "together/x"}]
    assert models_in("ollama", {"models": [{"name": "q"}, None]}) == [{"name": "q"}]
    with pytest.raises(ValueError):
        models_in("openai", {"object": "error"})
    assert redact_url("https://user:key@api.example.com/v1") == "https://***@api.example.com/v1"
    assert redact_url("http://anvil:11434") == "http://anvil:11434"
