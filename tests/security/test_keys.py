"""Profile keys against a real `edl-api serve`: a rotated or revoked key stops at once,
and forged keys for a known key id are refused cheaply without starving anyone."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from edl_api.auth import keys
from tests.conftest import SUPER_KEY
from tests.factories import MINIMAL_YAML
from tests.helpers import basic, h
from tests.security.conftest import Live


def forge(key: str) -> str:
    parsed = keys.parse_key(key)
    assert parsed is not None
    return keys.format_key(parsed.prefix, parsed.key_id, keys.random_secret())


def test_rotated_and_revoked_profile_keys_stop_at_once(live: Live) -> None:
    a, b, client = live.a, live.b, live.client
    url = f"/profiles/{a.profile_id}"
    assert client.get(url, headers=h(a.key)).status_code == 200  # cached by the server now
    token = client.post(f"{url}/feed-tokens", json={"name": "fw"}, headers=h(a.key))
    assert token.status_code == 201, token.text
    pipeline_id = live.pipeline(a, MINIMAL_YAML)
    assert live.run(a, pipeline_id)["state"] == "succeeded"
    unknown = client.get(url, headers=h(keys.format_key("edlp", "Z" * 12, keys.random_secret())))

    rotated = client.post(f"{url}/key", headers=h(a.key))  # the key rotates itself
    assert rotated.status_code == 201, rotated.text
    new_key = rotated.json()["api_key"]
    old = client.get(url, headers=h(a.key))
    assert old.status_code == 401
    assert old.json() == unknown.json()  # nothing tells a rotated key from a made-up one
    assert client.get(url, headers=h(new_key)).status_code == 200
    # A feed token is its own credential: made with the old key, it keeps serving.
    feed = client.get(f"/pipelines/{pipeline_id}/edl/fqdn",
                      headers=basic(token.json()["token"]))
    assert (feed.status_code, feed.text) == (200, "evil.example\n")

    assert client.delete(f"{url}/key", headers=h(new_key)).status_code == 204
    assert client.get(url, headers=h(new_key)).status_code == 401
    shown = client.get(url, headers=h(SUPER_KEY))  # admin keys still reach the profile
    assert shown.status_code == 200
    assert shown.json()["key_rotated_at"] is not None
    assert client.get(f"/profiles/{b.profile_id}", headers=h(b.key)).status_code == 200
    # the other tenant can neither rotate nor revoke A's key (not even learn it exists)
    for method in ("POST", "DELETE"):
        assert client.request(method, f"{url}/key", headers=h(b.key)).status_code == 404


def test_forgeries_cool_down_and_spare_working_keys(live: Live) -> None:
    a, b, client = live.a, live.b, live.client
    me = "/me"
    assert client.get(me, headers=h(a.key)).status_code == 200  # a firewall's working key
    answers = [client.get(me, headers=h(forge(a.key))) for _ in range(6)]
    assert {r.status_code for r in answers} == {401}
    assert len({r.text for r in answers}) == 1  # cool-down or wrong secret: one plain 401
    # A flood on random key ids (each a dummy bcrypt, at most EDL_BCRYPT_MAX_PENDING at
    # once) meets a working key's request: no 5xx, and the working key is answered.
    flood = [keys.format_key("edlf", keys.random_secret()[:12], keys.random_secret())
             for _ in range(60)]
    with ThreadPoolExecutor(16) as pool:
        forged = [pool.submit(client.get, me, headers=h(k)) for k in flood]
        started = time.perf_counter()
        working = client.get(me, headers=h(a.key))
        elapsed = time.perf_counter() - started
        statuses = {f.result().status_code for f in forged}
    assert statuses == {401}
    assert working.status_code == 200
    assert elapsed < 1.0, f"a cached key waited {elapsed:.2f}s behind forgeries"
    assert client.get(me, headers=h(b.key)).status_code == 200  # another id: unaffected
