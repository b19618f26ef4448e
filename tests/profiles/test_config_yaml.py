"""Configs sent as YAML itself, and PATCH by section that keeps the operator's text."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml as pyyaml

from tests.conftest import SUPER_KEY
from tests.factories import World
from tests.helpers import expect, h, running_server, service_env

YAML_TYPE = {"Content-Type": "application/yaml"}

COMMENTED = """\
# edl: name=c2-block refresh_interval_minutes=30
# C2 block list for the perimeter firewalls.
sources:
  # abuse.ch, refreshed hourly upstream
  - name: feodo   # botnet C2
    values: [203.0.113.7]
  - name: ours
    values: [198.51.100.9]

# --- filtering ---
rules:
  exclude_reserved: true  # never block RFC 1918
pipeline:
  outputs: [ipv4]
"""


def _yaml_headers(key: str, media: str = "application/yaml") -> dict[str, str]:
    return {**h(key), "Content-Type": media}


async def test_yaml_body_with_header_comment(client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    url = f"/profiles/{a.profile_id}/configs"
    created = await expect(
        await client.post(url, content=COMMENTED, headers=_yaml_headers(a.profile_key)), 201
    )
    assert created["name"] == "c2-block"
    assert created["refresh_interval_minutes"] == 30
    assert created["yaml"] == COMMENTED  # stored exactly as sent
    # The test server runs with the scheduler off: the interval would do nothing.
    assert any("EDL_AUTO_REFRESH_MINUTES" in w for w in created["warnings"])
    for media in ("text/yaml", "application/x-yaml; charset=utf-8"):
        other = await expect(
            await client.post(
                f"{url}?name=copy&refresh_interval_minutes=off", content=COMMENTED,
                headers=_yaml_headers(a.profile_key, media),
            ),
            201,
        )
        # The query wins, and the stored comment says what is in force (same line count).
        assert other["name"] == "copy"
        assert other["refresh_interval_minutes"] is None
        assert other["yaml"].splitlines()[0] == "# edl: name=copy refresh_interval_minutes=off"
        assert other["yaml"].splitlines()[1:] == COMMENTED.splitlines()[1:]
        assert other["warnings"] == []


async def test_yaml_body_errors_say_what_to_do(client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    url = f"/profiles/{a.profile_id}/configs"
    no_name = await client.post(url, content="sources: []\n", headers=_yaml_headers(a.profile_key))
    assert no_name.status_code == 422
    assert no_name.json()["error"] == "name_required"
    assert "?name=" in no_name.json()["detail"]
    assert "# edl: name=" in no_name.json()["detail"]
    bad = "# edl: name=bad\nsources:\n  - name: x\n    values: [1.2.3.4\nrules: {}\n"
    broken = await client.post(url, content=bad, headers=_yaml_headers(a.profile_key))
    assert broken.status_code == 422
    assert broken.json()["error"] == "invalid_config"
    assert broken.json()["detail"][0]["line"] in (4, 5)  # the operator's own lines
    invalid = "# edl: name=bad\n\nsources:\n  - name: x\n    url: file:///etc/passwd\n"
    refused = await expect(
        await client.post(url, content=invalid, headers=_yaml_headers(a.profile_key)), 422
    )
    assert [(p["line"], p["field"]) for p in refused["detail"]] == [(5, "sources.0.url")]
    unknown = await expect(
        await client.post(
            url, content="\n# edl: name=x every=5\nsources: []\n",
            headers=_yaml_headers(a.profile_key),
        ),
        422,
    )
    assert unknown["detail"][0]["line"] == 2
    assert "refresh_interval_minutes" in str(unknown)
    interval = await expect(
        await client.post(
            f"{url}?name=x&refresh_interval_minutes=soon", content="sources: []\n",
            headers=_yaml_headers(a.profile_key),
        ),
        422,
    )
    assert "off" in interval["detail"][0]["message"]
    # curl --data-binary without -H sends a form type: say which types are accepted.
    form = await client.post(
        url, content=COMMENTED,
        headers={**h(a.profile_key), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    assert "application/yaml" in form.json()["detail"]
    assert "application/json" in form.json()["detail"]
    mixed = await client.post(
        f"{url}?name=x", json={"name": "y", "yaml": "sources: []\n"}, headers=h(a.profile_key)
    )
    assert mixed.status_code == 422
    assert "YAML body" in mixed.json()["detail"]
    not_utf8 = await client.post(url + "?name=x", content=b"\xff\xfe", headers=_yaml_headers(
        a.profile_key))
    assert not_utf8.status_code == 422
    listed = await expect(await client.get(url, headers=h(a.profile_key)))
    assert [c["name"] for c in listed["items"]] == [f"cfg-{'a'}"]  # nothing was created


async def test_put_replaces_the_yaml(client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    url = f"/profiles/{a.profile_id}/configs/{a.config_id}"
    replaced = await expect(
        await client.put(url, content=COMMENTED, headers=_yaml_headers(a.profile_key))
    )
    assert replaced["version"] == 2
    assert replaced["name"] == "c2-block"
    assert replaced["refresh_interval_minutes"] == 30
    body_only = "sources:\n  - name: x\n    values: [192.0.2.1]\n"
    kept = await expect(
        await client.put(url, content=body_only, headers=_yaml_headers(a.profile_key))
    )
    # No name and no interval given: both stay.
    assert (kept["version"], kept["name"], kept["refresh_interval_minutes"]) == (3, "c2-block", 30)
    assert kept["yaml"] == body_only
    as_json = await expect(
        await client.put(url, json={"yaml": body_only, "refresh_interval_minutes": None},
                         headers=h(a.profile_key))
    )
    assert as_json["version"] == 4
    assert as_json["refresh_interval_minutes"] is None
    foreign = await client.put(
        f"/profiles/{world.b.profile_id}/configs/{world.b.config_id}", content=body_only,
        headers=_yaml_headers(a.profile_key),
    )
    assert foreign.status_code == 404
    reader = await client.put(url, content=body_only, headers=_yaml_headers(a.reader_key))
    assert reader.status_code == 403


async def test_patch_keeps_comments_and_untouched_lines(
    client: httpx.AsyncClient, world: World
) -> None:
    a = world.a
    url = f"/profiles/{a.profile_id}/configs"
    created = await expect(
        await client.post(url, content=COMMENTED, headers=_yaml_headers(a.profile_key)), 201
    )
    patched = await expect(
        await client.patch(
            f"{url}/{created['id']}",
            json={"rules": {"exclude_reserved": True, "allow": ["10.0.0.0/8", "*.corp.example"]},
                  "name": "c2-perimeter"},
            headers=h(a.profile_key),
        )
    )
    text = patched["yaml"]
    before, after = COMMENTED.splitlines(), text.splitlines()
    # Everything above the changed section is the operator's text, byte for byte...
    assert after[1:10] == before[1:10]
    # ...the comment inside the section survives, order kept, the new key appended...
    assert after[10:15] == [
        "rules:", "  exclude_reserved: true  # never block RFC 1918", "  allow:",
        "    - 10.0.0.0/8", "    - '*.corp.example'",  # quoted: `*` starts an alias
    ]
    assert after[15:] == before[12:]
    # ...and the header comment follows the rename.
    assert after[0] == "# edl: name=c2-perimeter refresh_interval_minutes=30"
    assert pyyaml.safe_load(text)["rules"]["allow"] == ["10.0.0.0/8", "*.corp.example"]
    # Dropping the first source keeps the second one's text (matched by name, not index).
    dropped = await expect(
        await client.patch(
            f"{url}/{created['id']}",
            json={"sources": [{"name": "ours", "values": ["198.51.100.9"]}]},
            headers=h(a.profile_key),
        )
    )
    assert "# --- filtering ---" in dropped["yaml"]
    assert "# abuse.ch, refreshed hourly upstream" in dropped["yaml"]
    assert "feodo" not in dropped["yaml"]


async def test_invalid_patch_names_the_line_of_the_resulting_document(
    client: httpx.AsyncClient, world: World
) -> None:
    a = world.a
    url = f"/profiles/{a.profile_id}/configs"
    created = await expect(
        await client.post(url, content=COMMENTED, headers=_yaml_headers(a.profile_key)), 201
    )
    sources = [
        {"name": "feodo", "values": ["203.0.113.7"]},
        {"name": "extra", "url": "file:///etc/passwd", "tags": ["c2"]},
    ]
    refused = await expect(
        await client.patch(f"{url}/{created['id']}", json={"sources": sources},
                           headers=h(a.profile_key)),
        422,
    )
    [problem] = refused["detail"]
    assert problem["field"] == "sources.1.url"
    assert problem["text"].strip() == "url: file:///etc/passwd"
    unchanged = await expect(await client.get(f"{url}/{created['id']}", headers=h(a.profile_key)))
    assert unchanged["version"] == 1
    assert unchanged["yaml"] == COMMENTED
    # The same PATCH with a good URL stores the document the line number referred to.
    sources[1]["url"] = "https://feeds.example/extra.txt"
    stored = await expect(
        await client.patch(f"{url}/{created['id']}", json={"sources": sources},
                           headers=h(a.profile_key))
    )
    line = stored["yaml"].splitlines()[problem["line"] - 1]
    assert line.strip() == "url: https://feeds.example/extra.txt"
    assert problem["line"] == 8  # the header, a comment, `sources:`, its comment, feodo


def test_yaml_upload_through_a_real_server(tmp_path: Path) -> None:
    """`curl -H 'Content-Type: application/yaml' --data-binary @c2.yaml`, then a PATCH, a
    diff and a restore, against `edl-api serve` with no other setting."""
    env = service_env(tmp_path, EDL_API_KEY=SUPER_KEY)
    with running_server(env, tmp_path) as (_, base), httpx.Client(
        base_url=base, timeout=10
    ) as http:
        profile = http.post("/profiles", json={"name": "acme"}, headers=h(SUPER_KEY)).json()
        key = profile["api_key"]
        url = f"/profiles/{profile['profile']['id']}/configs"
        created = http.post(url, content=COMMENTED.encode(), headers=_yaml_headers(key))
        assert created.status_code == 201, created.text
        config = created.json()
        assert (config["name"], config["yaml"]) == ("c2-block", COMMENTED)
        assert config["warnings"] == []  # refresh is on by default: nothing to warn about
        patched = http.patch(f"{url}/{config['id']}", json={"pipeline": {"outputs": ["ip"]}},
                             headers=h(key)).json()
        assert "# never block RFC 1918" in patched["yaml"]
        diff = http.get(f"{url}/{config['id']}/versions/1/diff/2",
                        headers={**h(key), "Accept": "text/plain"})
        assert diff.headers["content-type"].startswith("text/plain")
        assert "-  outputs: [ipv4]\n+  outputs: [ip]\n" in diff.text  # flow style kept
        restored = http.post(f"{url}/{config['id']}/versions/1/restore", headers=h(key))
        assert restored.status_code == 201
        assert (restored.json()["version"], restored.json()["yaml"]) == (3, COMMENTED)
