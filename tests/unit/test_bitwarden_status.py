"""Reading `bw status` (the check `alai login` makes of the user's Bitwarden CLI)."""

from alai.client.bitwarden import parse_status


def test_states_of_bw_status():
    locked = parse_status(0, '{"serverUrl":null,"lastSync":"2026-11-27T10:00:00.000Z","userEmail":"a@b.c",'
                             '"userId":"u1","status":"locked"}\n', "")
    assert (locked.state, locked.user, locked.server) == ("locked", "a@b.c", "bitwarden.com")
    unlocked = parse_status(0, '{"serverUrl":"https://vault.example.com","userEmail":"a@b.c","status":"unlocked"}', "")
    assert (unlocked.state, unlocked.server) == ("unlocked", "https://vault.example.com")
    assert parse_status(0, '{"serverUrl":null,"status":"unauthenticated"}', "").state == "unauthenticated"


def test_failures_are_one_line_errors():
    failed = parse_status(1, "", "You are not logged in.\nmore")
    assert failed.state == "error" and failed.detail == "bw status failed: You are not logged in."
    assert parse_status(0, "not json", "").state == "error"
    assert parse_status(0, '{"status":"sleeping"}', "").state == "error"
    assert parse_status(0, "", "").detail == "bw status failed: exit code 0"
