"""The Bitwarden backends against fakes of `bws` and `bw` run as real subprocesses (no database).

Each fake keeps its state in a JSON file that a test seeds and changes between calls: a
secret added or deleted elsewhere, the vault locked or logged out behind the backend's
back, the network down, the token revoked, a CLI that does not answer.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from alai.server.secrets import bitwarden
from alai.server.secrets.backend import Ambiguous, BackendDown, BackendError, NotFound, ReadOnly
from alai.server.secrets.config import MountConfig
from tests.fakes import bw as fake_bw
from tests.fakes import bws as fake_bws

PROJECT = "0f5e4d3c-2b1a-4a9b-8c7d-6e5f4a3b2c1d"
ODD_VALUE = "-dash=first\nzweite Zeile: äöü ✓ 🔑\ttab \"quoted\" $HOME `x`"


def calls(state: Path) -> list[list[str]]:
    return fake_bws.read_state(state)["calls"]


def change(module, state: Path, **changes) -> None:
    current = module.read_state(state)
    current.update(changes)
    module.write_state(state, current)


def age_out_listing(backend) -> None:
    """As if refresh_seconds had passed since the backend last listed."""
    backend._listing.at = time.monotonic() - backend._listing.every - 1


# -- bws --------------------------------------------------------------------------------------


@dataclass
class BwsFake:
    state: Path
    binary: Path
    token: str

    def config(self, **overrides) -> MountConfig:
        settings = {"prefix": "bws", "kind": "bws", "access_token": self.token, "project_id": PROJECT,
                    "binary": str(self.binary), "timeout_seconds": 10.0, **overrides}
        return MountConfig(**settings)

    def add(self, key: str, value: str, project: str | None = PROJECT) -> dict:
        current = fake_bws.read_state(self.state)
        entry = fake_bws.secret(key, value, project)
        current["secrets"].append(entry)
        fake_bws.write_state(self.state, current)
        return entry

    def commands(self) -> list[str]:
        return [" ".join(argv[:2]) for argv in calls(self.state)]


@pytest.fixture
def bws_fake(tmp_path: Path) -> BwsFake:
    token = fake_bws.make_token()
    state = tmp_path / "bws.json"
    fake_bws.write_state(state, {"tokens": [token], "projects": [PROJECT], "secrets": []})
    return BwsFake(state, fake_bws.install(tmp_path / "bin", state), token)


@pytest.fixture
async def bws(bws_fake: BwsFake):
    backend = bitwarden.BwsBackend(bws_fake.config(), miss_refresh_seconds=0, retry_down_seconds=0)
    yield backend
    await backend.close()


async def test_bws_resolves_a_key_through_the_listing_then_fetches_by_id(bws, bws_fake):
    bws_fake.add("together/api-key", ODD_VALUE)
    bws_fake.add("other", "x")
    assert await bws.get("together/api-key") == ODD_VALUE
    assert await bws.get("together/api-key") == ODD_VALUE
    assert bws_fake.commands() == ["secret list", "secret get", "secret get"]  # one listing, a get per value
    assert PROJECT in calls(bws_fake.state)[0]
    assert all(bws_fake.token not in " ".join(argv) for argv in calls(bws_fake.state))  # by environment only


async def test_bws_not_found_lists_again_once_then_says_so(bws, bws_fake):
    bws_fake.add("a", "1")
    with pytest.raises(NotFound, match="no secret has the key missing"):
        await bws.get("missing")
    assert bws_fake.commands() == ["secret list", "secret list"]
    bws_fake.add("made-elsewhere", "2")  # after the listing: a miss lists again and finds it
    assert await bws.get("made-elsewhere") == "2"


async def test_bws_lists_again_on_a_miss_at_most_every_miss_refresh_seconds(bws_fake):
    backend = bitwarden.BwsBackend(bws_fake.config(), miss_refresh_seconds=3600)
    try:
        bws_fake.add("a", "1")
        assert await backend.get("a") == "1"
        for _ in range(3):
            with pytest.raises(NotFound):
                await backend.get("missing")
        assert bws_fake.commands() == ["secret list", "secret get"]
    finally:
        await backend.close()


async def test_bws_two_secrets_with_one_key_are_ambiguous_and_reachable_by_id(bws, bws_fake):
    first, second = bws_fake.add("db/password", "value-1st"), bws_fake.add("db/password", "value-2nd")
    with pytest.raises(Ambiguous) as caught:
        await bws.get("db/password")
    assert first["id"] in str(caught.value) and second["id"] in str(caught.value)
    assert "value-" not in str(caught.value)
    assert await bws.get(f"id:{second['id']}") == "value-2nd"
    listed = {item.path for item in await bws.list("")}
    assert listed == {f"id:{first['id']}", f"id:{second['id']}"}


async def test_bws_a_secret_deleted_since_the_listing_is_not_found(bws, bws_fake):
    entry = bws_fake.add("gone", "1")
    assert await bws.get("gone") == "1"
    current = fake_bws.read_state(bws_fake.state)
    current["secrets"] = [secret for secret in current["secrets"] if secret["id"] != entry["id"]]
    fake_bws.write_state(bws_fake.state, current)
    age_out_listing(bws)
    with pytest.raises(NotFound):
        await bws.get("gone")


async def test_bws_secrets_of_other_projects_are_out_of_the_mount(bws, bws_fake):
    bws_fake.add("elsewhere", "x", project=str(uuid.uuid4()))
    with pytest.raises(NotFound):
        await bws.get("elsewhere")


@pytest.mark.parametrize("style", ["report", "short"])
async def test_bws_down_and_revoked_token_are_backend_down_with_the_reason(bws, bws_fake, style):
    bws_fake.add("a", "1")
    change(fake_bws, bws_fake.state, down=True, error_style=style)
    with pytest.raises(BackendDown, match="(?i)connection refused|could not connect"):
        await bws.get("a")
    assert "connection refused" in (await bws.check() or "").lower()
    change(fake_bws, bws_fake.state, down=False, revoked=[bws_fake.token])
    with pytest.raises(BackendDown, match="access token") as caught:
        await bws.get("a")
    assert bws_fake.token not in str(caught.value)
    change(fake_bws, bws_fake.state, revoked=[])
    assert await bws.get("a") == "1" and await bws.check() is None


async def test_an_outage_is_not_asked_about_again_for_retry_down_seconds(bws_fake, bw_fake):
    bws_fake.add("a", "1")
    change(fake_bws, bws_fake.state, down=True)
    backend = bitwarden.BwsBackend(bws_fake.config(), retry_down_seconds=3600)
    with pytest.raises(BackendDown, match="Connection refused"):
        await backend.get("a")
    change(fake_bws, bws_fake.state, down=False)
    with pytest.raises(BackendDown, match=r"Connection refused.*tried 0 s ago"):
        await backend.list("")
    assert bws_fake.commands() == ["secret list"]  # held down: no second process
    assert await backend.check() is None  # a health check always asks, and ends the hold
    assert await backend.get("a") == "1"
    await backend.close()
    change(fake_bw, bw_fake.state, down=True)
    vault = bitwarden.BwBackend(bw_fake.config(), retry_down_seconds=3600)
    with pytest.raises(BackendDown, match="getaddrinfo"):
        await vault.get("github")
    count = len(bw_fake.commands())
    with pytest.raises(BackendDown, match="tried"):
        await vault.get("github")
    assert len(bw_fake.commands()) == count
    await vault.close()


async def test_bws_a_project_that_is_not_there_is_a_configuration_error(bws_fake):
    backend = bitwarden.BwsBackend(bws_fake.config(project_id=str(uuid.uuid4())))
    with pytest.raises(BackendDown, match="404 Not Found.*is project_id right"):
        await backend.get("a")
    await backend.close()


async def test_bws_without_a_usable_token(bws_fake):
    for token, reason in ((None, "no access token"), ("garbage", "decryption key")):
        backend = bitwarden.BwsBackend(bws_fake.config(access_token=token))
        with pytest.raises(BackendDown, match=reason):
            await backend.get("a")
        await backend.close()


async def test_bws_writes_create_then_edit_and_delete(bws, bws_fake):
    await bws.put("new/key", ODD_VALUE, actor="user:alice")
    assert await bws.get("new/key") == ODD_VALUE
    stored = [s for s in fake_bws.read_state(bws_fake.state)["secrets"] if s["key"] == "new/key"]
    assert len(stored) == 1 and stored[0]["projectId"] == PROJECT and "user:alice" in stored[0]["note"]
    await bws.put("new/key", "second", actor="user:alice")
    assert await bws.get("new/key") == "second"
    assert len([s for s in fake_bws.read_state(bws_fake.state)["secrets"] if s["key"] == "new/key"]) == 1
    assert [item.path for item in await bws.list("new")] == ["new/key"]
    await bws.delete("new/key")
    with pytest.raises(NotFound):
        await bws.get("new/key")
    with pytest.raises(NotFound):
        await bws.delete("new/key")


async def test_bws_put_edits_a_secret_made_elsewhere_instead_of_duplicating_it(bws, bws_fake):
    await bws.list("")
    bws_fake.add("late", "old")
    await bws.put("late", "new", actor="user:alice")
    assert [s["value"] for s in fake_bws.read_state(bws_fake.state)["secrets"] if s["key"] == "late"] == ["new"]


async def test_bws_without_a_project_is_read_only(bws_fake):
    bws_fake.add("a", "1")
    backend = bitwarden.BwsBackend(bws_fake.config(project_id=None))
    try:
        assert backend.read_only
        assert await backend.get("a") == "1"
        with pytest.raises(ReadOnly):
            await backend.put("a", "2", actor="user:alice")
        with pytest.raises(ReadOnly):
            await backend.delete("a")
    finally:
        await backend.close()


async def test_bws_list_filters_by_prefix_and_dates_the_entries(bws, bws_fake):
    for key in ("team/a", "team/b", "teams", "other", "has space"):
        bws_fake.add(key, "v")
    odd = [s for s in fake_bws.read_state(bws_fake.state)["secrets"] if s["key"] == "has space"][0]
    everything = await bws.list("")
    assert [item.path for item in everything] == sorted(["team/a", "team/b", "teams", "other", f"id:{odd['id']}"])
    assert all(item.updated_at is not None and item.updated_at.tzinfo is not None for item in everything)
    assert [item.path for item in await bws.list("team/")] == ["team/a", "team/b"]


async def test_bws_a_cli_that_does_not_answer_is_down_and_killed(bws_fake):
    bws_fake.add("a", "1")
    change(fake_bws, bws_fake.state, delay=30)
    backend = bitwarden.BwsBackend(bws_fake.config(timeout_seconds=0.5))
    started = time.monotonic()
    with pytest.raises(BackendDown, match=r"bws secret list: no answer within 0.5 s"):
        await backend.get("a")
    assert time.monotonic() - started < 5
    await backend.close()


async def test_bws_a_missing_binary_is_down(bws_fake, tmp_path):
    backend = bitwarden.BwsBackend(bws_fake.config(binary=str(tmp_path / "nowhere" / "bws")))
    with pytest.raises(BackendDown, match="was not found"):
        await backend.get("a")
    assert "was not found" in (await backend.check() or "")


# -- bw ---------------------------------------------------------------------------------------


@dataclass
class BwFake:
    state: Path
    binary: Path
    secrets: dict

    def config(self, **overrides) -> MountConfig:
        settings = {"prefix": "vault", "kind": "bw", "client_id": self.secrets["client_id"],
                    "client_secret": self.secrets["client_secret"], "password": self.secrets["password"],
                    "binary": str(self.binary), "timeout_seconds": 10.0, **overrides}
        return MountConfig(**settings)

    def commands(self) -> list[str]:
        return [argv[0] for argv in fake_bw.read_state(self.state)["calls"]]

    def add(self, item: dict) -> dict:
        current = fake_bw.read_state(self.state)
        current["items"].append(item)
        fake_bw.write_state(self.state, current)
        return item


@pytest.fixture
def bw_fake(tmp_path: Path) -> BwFake:
    items = [
        fake_bw.login_item("github", ODD_VALUE, username="octo", notes="two\nlines", totp="JBSWY3DPEHPK3PXP",
                           fields=[fake_bw.field("token", "ghp_123"), fake_bw.field("login-name", None, 3, 100)]),
        fake_bw.login_item("github-work", "work-pass"),
        fake_bw.note_item("tls-key", "-----BEGIN KEY-----\nabc\n-----END KEY-----"),
        fake_bw.login_item("shared", "shared-1st"),
        fake_bw.login_item("shared", "shared-2nd"),
    ]
    state = fake_bw.new_state(items=items)
    path = tmp_path / "bw.json"
    fake_bw.write_state(path, state)
    return BwFake(path, fake_bw.install(tmp_path / "bin", path), state)


@pytest.fixture
async def bw(bw_fake: BwFake):
    backend = bitwarden.BwBackend(bw_fake.config(), miss_refresh_seconds=0, retry_down_seconds=0)
    yield backend
    await backend.close()


async def test_bw_logs_in_unlocks_once_and_serves_lookups_from_one_listing(bw, bw_fake):
    assert await bw.get("github") == ODD_VALUE
    assert bw_fake.commands() == ["status", "login", "unlock", "sync", "list"]
    assert await bw.get("github/password") == ODD_VALUE
    assert await bw.get("github/username") == "octo"
    assert await bw.get("github/notes") == "two\nlines"
    assert await bw.get("github/totp") == "JBSWY3DPEHPK3PXP"  # the seed, not a code
    assert await bw.get("github/token") == "ghp_123"
    assert await bw.get("github/login-name") == "octo"  # a linked field shows the username
    assert await bw.get("tls-key") == "-----BEGIN KEY-----\nabc\n-----END KEY-----"  # a secure note: its notes
    assert await bw.get("github-work") == "work-pass"  # bw's own `get item github` would call this ambiguous
    assert len(bw_fake.commands()) == 5  # not a process per lookup
    state = fake_bw.read_state(bw_fake.state)
    for argv in state["calls"]:
        for secret in (state["password"], state["client_secret"], state["client_id"], ODD_VALUE):
            assert secret not in " ".join(argv)
    assert state["session"] not in str(state["calls"])


async def test_bw_concurrent_lookups_share_one_session_and_one_listing(bw, bw_fake):
    paths = ["github", "github/username", "github-work", "tls-key", "github/token"] * 4
    values = await asyncio.gather(*(bw.get(path) for path in paths))
    assert values[:5] == [ODD_VALUE, "octo", "work-pass", "-----BEGIN KEY-----\nabc\n-----END KEY-----", "ghp_123"]
    assert bw_fake.commands() == ["status", "login", "unlock", "sync", "list"]


async def test_bw_already_logged_in_only_unlocks(bw_fake):
    change(fake_bw, bw_fake.state, logged_in=True, local=fake_bw.read_state(bw_fake.state)["items"])
    backend = bitwarden.BwBackend(bw_fake.config(client_id=None, client_secret=None))
    try:
        assert await backend.get("github/username") == "octo"
        assert bw_fake.commands() == ["status", "unlock", "sync", "list"]
    finally:
        await backend.close()


async def test_bw_locked_mid_way_unlocks_again_once(bw, bw_fake):
    assert await bw.get("github") == ODD_VALUE
    change(fake_bw, bw_fake.state, session=None)  # `bw lock` elsewhere, or the session expired
    bw_fake.add(fake_bw.login_item("new-item", "fresh"))
    assert await bw.get("new-item") == "fresh"  # the miss syncs, the listing finds the vault locked
    assert bw_fake.commands()[5:] == ["sync", "list", "status", "unlock", "list"]


async def test_bw_logged_out_mid_way_logs_in_again(bw, bw_fake):
    assert await bw.get("github") == ODD_VALUE
    change(fake_bw, bw_fake.state, logged_in=False, session=None, local=[])
    bw_fake.add(fake_bw.login_item("new-item", "fresh"))
    assert await bw.get("new-item") == "fresh"
    assert bw_fake.commands()[5:] == ["sync", "status", "login", "unlock", "sync", "list"]


async def test_bw_a_session_that_will_not_hold_is_down(bw, bw_fake):
    assert await bw.get("github") == ODD_VALUE
    change(fake_bw, bw_fake.state, session=None, relocks=True)  # locked now, and every new unlock is lost at once
    age_out_listing(bw)
    with pytest.raises(BackendDown, match="Vault is locked.*again"):
        await bw.get("github")


async def test_bw_bad_credentials_are_down_with_bw_s_reason(bw_fake):
    state = bw_fake.secrets
    cases = [({"password": "wrong"}, "Invalid master password"),
             ({"client_secret": "wrong"}, "client_id or client_secret is incorrect"),
             ({"client_id": None}, "no client_id/client_secret"),
             ({"password": None}, "no password")]
    for overrides, reason in cases:
        change(fake_bw, bw_fake.state, logged_in=False, session=None)
        backend = bitwarden.BwBackend(bw_fake.config(**overrides))
        with pytest.raises(BackendDown, match=reason) as caught:
            await backend.get("github")
        for secret in (state["password"], state["client_secret"], "wrong"):
            assert secret not in str(caught.value)
        await backend.close()


async def test_bw_names_are_exact_and_shared_names_are_ambiguous(bw, bw_fake):
    with pytest.raises(Ambiguous) as caught:
        await bw.get("shared")
    ids = [item["id"] for item in fake_bw.read_state(bw_fake.state)["items"] if item["name"] == "shared"]
    assert all(ident in str(caught.value) for ident in ids)
    assert "shared-" not in str(caught.value)
    assert await bw.get(f"id:{ids[1]}") == "shared-2nd"
    assert await bw.get(f"id:{ids[1].upper()}/password") == "shared-2nd"
    with pytest.raises(NotFound):
        await bw.get("git")  # a substring is not a name


def test_the_real_cli_s_own_search_would_guess_or_refuse(bw_fake):
    """What the backend avoids by resolving names itself: bw's `get item` searches substrings."""
    change(fake_bw, bw_fake.state, logged_in=True, session="s", local=fake_bw.read_state(bw_fake.state)["items"])
    run = subprocess.run([str(bw_fake.binary), "get", "item", "github", "--session", "s"], capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith("More than one result was found. Try getting a specific object by `id` instead. "
                                 "The following objects were found:\n")
    assert len(run.stderr.splitlines()) == 3
    missing = subprocess.run([str(bw_fake.binary), "get", "item", "nothing-like-it", "--session", "s"],
                             capture_output=True, text=True, timeout=30)
    assert (missing.returncode, missing.stderr) == (1, "Not found.")
    locked = subprocess.run([str(bw_fake.binary), "list", "items"], capture_output=True, text=True, timeout=30)
    assert (locked.returncode, locked.stderr) == (1, "Vault is locked.")


async def test_bw_an_item_named_like_a_field_path_is_ambiguous(bw, bw_fake):
    bw_fake.add(fake_bw.login_item("github/token", "from-the-other-item"))
    with pytest.raises(Ambiguous, match="2 items match github/token"):
        await bw.get("github/token")
    bw_fake.add(fake_bw.login_item("gitlab/api", "whole"))
    bw_fake.add(fake_bw.login_item("gitlab", "head"))  # without a field `api`: no doubt
    assert await bw.get("gitlab/api") == "whole"


async def test_bw_missing_items_and_fields_are_not_found(bw, bw_fake):
    for path, reason in (("nope", "no item matches nope"), ("github-work/username", "has no username"),
                         ("github/nope", "has no field nope"), ("tls-key/password", "has no password"),
                         ("id:00000000-0000-4000-8000-000000000000", "no item")):
        with pytest.raises(NotFound, match=reason):
            await bw.get(path)


async def test_bw_down_is_backend_down_and_comes_back(bw, bw_fake):
    assert await bw.get("github") == ODD_VALUE
    change(fake_bw, bw_fake.state, down=True)
    age_out_listing(bw)
    with pytest.raises(BackendDown, match="Syncing failed"):
        await bw.get("github")
    assert "Syncing failed" in (await bw.check() or "")
    change(fake_bw, bw_fake.state, down=False)
    assert await bw.check() is None
    assert await bw.get("github") == ODD_VALUE


async def test_bw_points_itself_at_the_configured_server(bw_fake):
    backend = bitwarden.BwBackend(bw_fake.config(server_url="https://vault.example.com/"))
    try:
        assert await backend.get("github-work") == "work-pass"
        assert fake_bw.read_state(bw_fake.state)["server_url"] == "https://vault.example.com"
        assert bw_fake.commands()[:3] == ["status", "config", "login"]
    finally:
        await backend.close()
    other = bitwarden.BwBackend(bw_fake.config(server_url="https://vault.bitwarden.eu"))
    with pytest.raises(BackendDown, match="logged in to https://vault.example.com"):
        await other.get("github-work")
    await other.close()


async def test_bw_writes_never_put_a_value_on_a_command_line(bw, bw_fake):
    await bw.put("github", "new ✓ pass\nline 2", actor="user:alice")
    await bw.put("github/token", "-new-token", actor="user:alice")
    await bw.put("github/api-key", "added field", actor="user:alice")
    await bw.put("tls-key", "new note", actor="user:alice")
    await bw.put("brand/new", ODD_VALUE, actor="user:alice")
    assert await bw.get("github") == "new ✓ pass\nline 2"
    assert await bw.get("github/token") == "-new-token"
    assert await bw.get("brand/new") == ODD_VALUE
    state = fake_bw.read_state(bw_fake.state)
    github = next(item for item in state["items"] if item["name"] == "github")
    assert github["login"]["password"] == "new ✓ pass\nline 2" and github["login"]["username"] == "octo"
    assert {entry["name"]: entry["value"] for entry in github["fields"]}["api-key"] == "added field"
    assert next(item for item in state["items"] if item["name"] == "tls-key")["notes"] == "new note"
    assert next(item for item in state["items"] if item["name"] == "brand/new")["type"] == 1
    written = " ".join(" ".join(argv) for argv in state["calls"])
    for value in ("new ✓ pass", "-new-token", "added field", "new note", "zweite Zeile"):
        assert value not in written
    fresh = bitwarden.BwBackend(bw_fake.config())  # what was written is what a new session reads
    try:
        assert await fresh.get("github/api-key") == "added field"
    finally:
        await fresh.close()


async def test_bw_refuses_writes_it_cannot_place(bw, bw_fake):
    with pytest.raises(Ambiguous):
        await bw.put("shared", "x", actor="user:alice")
    with pytest.raises(ReadOnly, match="not a login"):
        await bw.put("tls-key/password", "x", actor="user:alice")
    with pytest.raises(ReadOnly, match="shows another field"):
        await bw.put("github/login-name", "x", actor="user:alice")
    read_only = bitwarden.BwBackend(bw_fake.config(read_only=True))
    assert read_only.read_only
    with pytest.raises(ReadOnly):
        await read_only.put("github", "x", actor="user:alice")
    await read_only.close()


async def test_bw_delete_moves_the_item_to_the_trash(bw, bw_fake):
    await bw.delete("github-work")
    with pytest.raises(NotFound):
        await bw.get("github-work")
    item = next(item for item in fake_bw.read_state(bw_fake.state)["items"] if item["name"] == "github-work")
    assert item["deletedDate"] is not None
    with pytest.raises(ReadOnly):
        await bw.delete("github/token")


async def test_bw_list_names_logins_and_notes(bw, bw_fake):
    bw_fake.add({**fake_bw.login_item("a card"), "type": 3, "login": None})
    items = fake_bw.read_state(bw_fake.state)["items"]
    shared = sorted(f"id:{item['id']}" for item in items if item["name"] == "shared")
    listed = await bw.list("")
    assert [item.path for item in listed] == sorted(["github", "github-work", "tls-key", *shared])
    assert all(item.updated_at is not None for item in listed)
    assert [item.path for item in await bw.list("github")] == ["github", "github-work"]


async def test_bw_a_cli_that_does_not_answer_is_down(bw_fake):
    change(fake_bw, bw_fake.state, delay=30)
    backend = bitwarden.BwBackend(bw_fake.config(timeout_seconds=0.5))
    started = time.monotonic()
    with pytest.raises(BackendDown, match="bw status: no answer within 0.5 s"):
        await backend.get("github")
    assert time.monotonic() - started < 5
    await backend.close()


async def test_bw_close_locks_the_vault(bw_fake):
    backend = bitwarden.BwBackend(bw_fake.config())
    assert await backend.get("github-work") == "work-pass"
    assert fake_bw.read_state(bw_fake.state)["session"] is not None
    await backend.close()
    assert fake_bw.read_state(bw_fake.state)["session"] is None


# -- values stay out of errors and logs -------------------------------------------------------


CANARY = "canary-Zq7uX4-never-log-me"


async def test_no_value_or_credential_reaches_an_error_or_a_log(bws_fake, bw_fake, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    errors: list[BackendError] = []

    async def collect(call) -> None:
        try:
            await call
        except BackendError as error:
            errors.append(error)

    echoing = tmp_path / "echoing-bws"  # a CLI that repeats its arguments when it fails, as clap does
    echoing.write_text("#!/bin/sh\nif [ \"$2\" = list ]; then echo '[]'; exit 0; fi\n"
                       "echo \"error: unexpected argument '$*' found\" >&2; exit 2\n")
    echoing.chmod(0o755)
    with structlog.testing.capture_logs() as logs:
        bws_backend = bitwarden.BwsBackend(bws_fake.config(), miss_refresh_seconds=0, retry_down_seconds=0)
        await bws_backend.put("canary", CANARY, actor="user:alice")
        assert await bws_backend.get("canary") == CANARY
        bws_fake.add("canary", CANARY + "-2")
        age_out_listing(bws_backend)
        await collect(bws_backend.get("canary"))  # ambiguous
        change(fake_bws, bws_fake.state, down=True)
        await collect(bws_backend.put("canary-3", CANARY, actor="user:alice"))
        await bws_backend.close()
        echo_backend = bitwarden.BwsBackend(bws_fake.config(binary=str(echoing)))
        await collect(echo_backend.put("canary", CANARY + "\nsecond line of it", actor="user:alice"))
        await echo_backend.close()

        change(fake_bw, bw_fake.state, password=CANARY)
        bw_backend = bitwarden.BwBackend(bw_fake.config(password=CANARY + "-wrong"))
        await collect(bw_backend.get("github"))  # the wrong master password
        await bw_backend.close()
        bw_backend = bitwarden.BwBackend(bw_fake.config(password=CANARY), miss_refresh_seconds=0,
                                         retry_down_seconds=0)
        await bw_backend.put("canary", CANARY, actor="user:alice")
        assert await bw_backend.get("canary") == CANARY
        change(fake_bw, bw_fake.state, down=True)
        await collect(bw_backend.put("canary", CANARY + "-2", actor="user:alice"))
        change(fake_bw, bw_fake.state, down=False, delay=5)
        bw_backend._cli.timeout = 0.3
        await collect(bw_backend.put("canary", CANARY + "-3", actor="user:alice"))
        await bw_backend.close()
    captured = capsys.readouterr()
    assert len(errors) == 6, errors
    assert any("unexpected argument" in str(error) and "***" in str(error) for error in errors)
    events = [str(entry) for entry in logs]
    assert any("bw vault unlocked" in text for text in [*events, caplog.text, captured.out, captured.err])
    for text in [*(str(error) for error in errors), *(repr(error) for error in errors), *events, caplog.text,
                 captured.out, captured.err]:
        for secret in (CANARY, "second line of it", bws_fake.token, bw_fake.secrets["client_secret"]):
            assert secret not in text
