import json

from click.testing import CliRunner

from alai.cli.main import root


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(root, list(args), env=env or {}, catch_exceptions=False)


def test_profiles_can_be_created_switched_and_removed():
    assert run("config", "set", "server", "https://cloud.example.com").exit_code == 0
    assert run("config", "set", "--profile", "home", "server", "http://anvil.tail:8420").exit_code == 0
    listed = json.loads(run("config", "profiles", "--json").output)
    assert {p["name"]: p["current"] for p in listed} == {"default": True, "home": False}
    assert run("config", "use", "home").exit_code == 0
    shown = json.loads(run("config", "show", "--json").output)
    assert shown["profile"] == "home" and shown["server"] == "http://anvil.tail:8420"
    assert shown["sources"]["server"] == "profile home"
    assert run("config", "rm", "home").exit_code == 0
    assert json.loads(run("config", "show", "--json").output)["profile"] == "default"


def test_the_global_profile_option_picks_a_profile():
    run("config", "set", "--profile", "work", "server", "https://work.example.com")
    shown = json.loads(run("--profile", "work", "config", "show", "--json").output)
    assert shown["server"] == "https://work.example.com"


def test_tokens_are_masked_when_shown():
    run("config", "set", "token", "abcdefghijklmnopqrstuvwxyz")
    result = run("config", "show", "--json")
    assert "abcdefghijklmnopqrstuvwxyz" not in result.output
    assert json.loads(result.output)["token"].startswith("abcd…")


def test_bad_input_is_one_line_with_the_fix():
    result = run("config", "set", "server", "not-a-url")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: server must be an http(s) URL such as http://127.0.0.1:8420, not 'not-a-url'"
    ]
    unknown = run("config", "use", "ghost")
    assert unknown.exit_code == 1 and "alai config set --profile ghost server URL" in unknown.output
    usage = run("config", "set", "server")
    assert usage.exit_code == 2


def test_unset_restores_the_default():
    run("config", "set", "timeout", "5")
    assert json.loads(run("config", "show", "--json").output)["timeout"] == 5.0
    assert run("config", "unset", "timeout").exit_code == 0
    assert json.loads(run("config", "show", "--json").output)["timeout"] == 30.0
    assert run("config", "unset", "timeout").exit_code == 1
