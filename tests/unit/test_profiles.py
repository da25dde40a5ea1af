import os
import stat

import pytest

from alai.client import profiles


def test_defaults_without_a_config_file():
    profile = profiles.resolve()
    assert profile.name == "default"
    assert profile.server == profiles.DEFAULT_SERVER
    assert profile.token is None
    assert profile.sources["server"] == "default"


def test_profile_values_and_environment_precedence(monkeypatch):
    data = profiles.load()
    data["profiles"]["work"] = {"server": "https://alai.example.com", "timeout": 5.0}
    data["current"] = "work"
    profiles.save(data)
    profile = profiles.resolve()
    assert (profile.name, profile.server, profile.timeout) == ("work", "https://alai.example.com", 5.0)
    monkeypatch.setenv("ALAI_SERVER", "http://10.1.2.3:9000/")
    profile = profiles.resolve()
    assert profile.server == "http://10.1.2.3:9000"
    assert profile.sources["server"] == "env ALAI_SERVER"


def test_saved_file_is_private_and_whole():
    profiles.save({"current": "default", "profiles": {"default": {"token": "sekret"}}})
    mode = stat.S_IMODE(os.stat(profiles.config_path()).st_mode)
    assert mode == 0o600
    assert not profiles.config_path().with_suffix(".toml.tmp").exists()


@pytest.mark.parametrize(("key", "value"), [("server", "ftp://x"), ("server", "localhost:8420"),
                                            ("timeout", "soon"), ("timeout", "0"), ("colour", "red")])
def test_invalid_values_are_refused_with_the_fix(key, value):
    with pytest.raises(profiles.ProfileError):
        profiles.validate(key, value)


def test_unknown_named_profile_says_how_to_create_it():
    with pytest.raises(profiles.ProfileError, match="alai config set --profile nope server"):
        profiles.resolve("nope")


def test_broken_config_file_is_reported_not_crashed():
    profiles.config_path().parent.mkdir(parents=True)
    profiles.config_path().write_text("current = [unclosed")
    with pytest.raises(profiles.ProfileError, match="not valid TOML"):
        profiles.load()


def test_local_admin_token_is_used_only_for_loopback_servers(monkeypatch, isolated_home):
    data_dir = isolated_home / "data"
    data_dir.mkdir()
    (data_dir / "admin-token").write_text("local-token\n")
    assert profiles.resolve().token == "local-token"
    assert profiles.resolve().sources["token"] == "local admin token"
    monkeypatch.setenv("ALAI_SERVER", "https://alai.example.com")
    assert profiles.resolve().token is None
    monkeypatch.setenv("ALAI_TOKEN", "explicit")
    assert profiles.resolve().token == "explicit"


@pytest.mark.parametrize(("url", "loopback"), [("http://127.0.0.1:1", True), ("http://localhost", True),
                                               ("http://[::1]:8420", True), ("https://example.com", False),
                                               ("http://10.0.0.2:8420", False)])
def test_is_loopback(url, loopback):
    assert profiles.is_loopback(url) is loopback
