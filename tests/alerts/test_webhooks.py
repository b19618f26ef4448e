"""Webhooks through the API: create, read, delete; the secret never comes back; a loopback
address needs a grant; readers read, writers write."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from edl_api.models import Webhook
from edl_api.secrets import maintenance
from edl_api.secrets.crypto import Keyring, SecretsKeyError, key_file
from edl_api.state import AppState
from tests.factories import World
from tests.helpers import expect, h

SECRET = "s3cret-shared-with-the-receiver"


async def test_webhook_lifecycle_and_roles(client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    body = {"url": "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
            "events": ["run_failed", "guard_held", "run_failed"], "secret": SECRET,
            "format": "slack"}
    created = await expect(await client.post(
        f"/profiles/{a.profile_id}/webhooks", json=body, headers=h(a.operator_key)), 201)
    assert created["events"] == ["run_failed", "guard_held"]
    assert created["signed"] is True
    assert created["format"] == "slack"
    # The Slack URL's credential (its path) and the secret are never shown back.
    assert created["url"] == "https://hooks.slack.com/services/…"
    path = f"/profiles/{a.profile_id}/webhooks/{created['id']}"
    for key in (a.reader_key, a.profile_key):
        listed = await client.get(f"/profiles/{a.profile_id}/webhooks", headers=h(key))
        one = await client.get(path, headers=h(key))
        for answer in (listed, one):
            assert answer.status_code == 200
            assert SECRET not in answer.text
            assert "XXXXSECRET" not in answer.text
    assert (await client.delete(path, headers=h(a.reader_key))).status_code == 403
    refused = await client.post(f"/profiles/{a.profile_id}/webhooks", json=body,
                                headers=h(a.reader_key))
    assert refused.status_code == 403
    deliveries = await expect(await client.get(f"{path}/deliveries", headers=h(a.reader_key)))
    assert deliveries["total"] == 0
    assert (await client.delete(path, headers=h(a.operator_key))).status_code == 204
    assert (await client.get(path, headers=h(a.operator_key))).status_code == 404


async def test_bad_bodies_are_422(client: httpx.AsyncClient, world: World) -> None:
    url = f"/profiles/{world.a.profile_id}/webhooks"
    for body in (
        {"url": "https://x.example/h", "events": ["coffee_ready"]},
        {"url": "https://x.example/h", "events": []},
        {"url": "ftp://x.example/h", "events": ["run_failed"]},
        {"url": "https://user:pw@x.example/h", "events": ["run_failed"]},
        {"url": "https://x.example/h", "events": ["run_failed"], "secret": "short"},
        {"url": "https://x.example/h", "events": ["run_failed"], "format": "xml"},
    ):
        answer = await client.post(url, json=body, headers=h(world.a.profile_key))
        assert answer.status_code == 422, (body, answer.text)


async def test_loopback_literal_needs_a_grant(client: httpx.AsyncClient, world: World) -> None:
    """Without EDL_SSRF_ALLOW_CIDRS (or the profile's grant) a tenant cannot point a
    webhook at the service's own host; the answer names the settings that would allow it."""
    for url in ("http://127.0.0.1:8080/hook", "http://[::1]/hook", "http://2130706433/x",
                "http://10.0.0.5/hook", "http://169.254.169.254/latest"):
        answer = await client.post(
            f"/profiles/{world.a.profile_id}/webhooks",
            json={"url": url, "events": ["run_failed"]}, headers=h(world.a.profile_key),
        )
        assert answer.status_code == 422, (url, answer.text)
        assert "EDL_SSRF_ALLOW_CIDRS" in answer.text
        assert "ssrf_allow_cidrs" in answer.text


async def test_rotating_the_master_key_keeps_webhook_secrets_readable(
    app: Any, client: httpx.AsyncClient, world: World
) -> None:
    """`edl-api rotate-secrets-key` re-encrypts webhook signing secrets too: after it, the
    delivery worker still opens them with the new key alone."""
    a = world.a
    await expect(await client.post(
        f"/profiles/{a.profile_id}/webhooks",
        json={"url": "https://alerts.example.net/edl", "events": ["run_failed"],
              "secret": SECRET},
        headers=h(a.operator_key)), 201)
    settings = AppState.of(app).settings
    old = key_file(settings).read_bytes()
    count, _ = await maintenance.rotate_master_key(settings, AppState.of(app).sessionmaker)
    assert count == 1
    new = key_file(settings).read_bytes().strip()
    async with AppState.of(app).sessionmaker() as session:
        [hook] = (await session.execute(select(Webhook))).scalars().all()
    assert hook.secret_ciphertext is not None
    assert Keyring([new]).decrypt(hook.secret_ciphertext) == SECRET
    with pytest.raises(SecretsKeyError):
        Keyring([old.strip()]).decrypt(hook.secret_ciphertext)
