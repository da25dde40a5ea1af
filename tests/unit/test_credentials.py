import json
import stat
import threading
import time

from alai.client import credentials, http
from alai.client.profiles import Profile


def login(refresh: str, *, expires_in: float = 600) -> credentials.Login:
    return credentials.Login(server="http://alai.test", issuer="http://alai.test", client_id="alai-cli",
                             token_endpoint="http://127.0.0.1:9/oauth/token", revocation_endpoint=None,
                             access_token=f"access-{refresh}", refresh_token=refresh,
                             expires_at=time.time() + expires_in)


def test_file_store_is_private_and_survives_concurrent_writers():
    def writer(n: int) -> None:
        for round_ in range(20):
            credentials.save(f"profile-{n}", login(f"r{n}-{round_}"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    data = json.loads(credentials.file_path().read_text())
    assert sorted(data) == [f"profile-{n}@http://alai.test" for n in range(4)]  # no login lost
    assert all(entry["refresh_token"].endswith("-19") for entry in data.values())
    assert stat.S_IMODE(credentials.file_path().stat().st_mode) == 0o600
    assert not list(credentials.file_path().parent.glob(".credentials-*.tmp"))


def test_a_login_renewed_by_another_process_is_adopted_not_refreshed_again():
    credentials.save("default", login("fresh-from-other-process"))
    stale = login("spent", expires_in=5)  # what this process loaded before the other one renewed
    profile = Profile(name="default", server="http://alai.test", token=stale.access_token, timeout=5,
                      sources={}, login=stale)
    client = http.Client(profile)
    try:
        client._refresh_login()  # would fail if it went to the (unreachable) token endpoint
    finally:
        client.close()
    assert profile.login.refresh_token == "fresh-from-other-process"
