"""An air-gapped SOC gets working API docs: `/docs` (Swagger UI) and `/redoc` load every file
from this service, and headless Chromium with the network blocked renders every operation."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import httpx
import pytest

from tests.helpers import running_server, service_env

PAGES = ("docs", "redoc")
CHROMIUM_SECONDS = 40


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("docs_offline")
    with running_server(service_env(tmp), tmp) as (_, base):
        yield base


@pytest.fixture(scope="module")
def operation_ids(server: str) -> list[str]:
    spec = httpx.get(f"{server}/openapi.json", timeout=10).json()
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()
           if isinstance(op, dict) and "operationId" in op]
    assert len(ids) > 20
    return ids


def chromium() -> str:
    """Debian's `chromium`; missing fails in CI (.ci/run installs it) and skips elsewhere."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return found


def _resources(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page)


@pytest.mark.parametrize("page", PAGES)
def test_page_names_only_this_service(server: str, page: str) -> None:
    answer = httpx.get(f"{server}/{page}", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert re.findall(r"https?://|//[a-z0-9.-]+\.[a-z]", answer.text) == [], "outside URL"
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "<script>" not in answer.text  # no inline script: the CSP would refuse it
    assert answer.headers["cache-control"] == "no-cache"
    links = _resources(answer.text)
    assert any(link.endswith(".js") or ".js?" in link for link in links)
    for link in links:
        url = urljoin(f"{server}/{page}", link)
        assert urlparse(url).netloc == urlparse(server).netloc
        got = httpx.get(url, timeout=10)
        assert got.status_code == 200, url
    # The schema link the page gives (and the UI loads) answers the spec.
    spec = httpx.get(urljoin(f"{server}/{page}", "openapi.json"), timeout=10)
    assert spec.json()["info"]["title"] == "EDL platform"


def test_assets_are_cached_compressed_and_revalidated(server: str) -> None:
    page = httpx.get(f"{server}/docs", timeout=10).text
    bundle = next(link for link in _resources(page) if "swagger-ui-bundle.js" in link)
    url = urljoin(f"{server}/docs", bundle)
    first = httpx.get(url, headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/javascript")
    assert first.headers["content-encoding"] == "gzip"
    assert int(first.headers["content-length"]) < len(first.content) / 2  # sent compressed
    assert "SwaggerUIBundle" in first.text
    # Versioned URL: kept a year; the same file without the version is revalidated.
    assert "immutable" in first.headers["cache-control"]
    unversioned = httpx.get(url.split("?")[0], timeout=10)
    assert unversioned.headers["cache-control"] == "no-cache"
    assert unversioned.content == first.content
    again = httpx.get(url.split("?")[0], headers={"If-None-Match": first.headers["etag"]},
                      timeout=10)
    assert again.status_code == 304
    assert again.content == b""
    missing = httpx.get(f"{server}/docs/assets/..%2Fsettings.py", timeout=10)
    assert missing.status_code == 404
    assert httpx.get(f"{server}/docs/assets/nope.js", timeout=10).json()["error"] == "not_found"


def _page_requests(net_log: Path, origin: str) -> list[str]:
    """URLs the page's own documents and scripts asked for (initiated by its origin, so not
    the browser's own update, sign-in or autofill traffic)."""
    text = net_log.read_text().rstrip().rstrip(",")
    log: dict[str, Any] = json.loads(text if text.endswith("}") else text + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    started = [event.get("params", {}) for event in log["events"] if event["type"] == start]
    return [params["url"] for params in started if params.get("initiator") == origin]


def _render_offline(browser: str, url: str, workdir: Path) -> tuple[str, str, list[str]]:
    """(DOM after scripts ran, Chromium's log, the page's requests) with every name but
    127.0.0.1 unresolvable and every proxied request sent to a closed port."""
    net_log = workdir / "net.json"
    proc = subprocess.Popen(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={workdir / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
            "--disable-background-networking", "--disable-component-update",
            "--disable-features=AutofillServerCommunication,Translate",
            "--enable-logging=stderr", "--v=0", f"--log-net-log={net_log}",
            "--virtual-time-budget=5000", "--dump-dom", url,
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        dom, log = proc.communicate(timeout=CHROMIUM_SECONDS)
    finally:
        # Its own session: the renderer, GPU and zygote children go with it.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, log.decode(errors="replace")[-2000:]
    origin = "{0.scheme}://{0.netloc}".format(urlparse(url))
    return dom.decode(), log.decode(errors="replace"), _page_requests(net_log, origin)


@pytest.mark.parametrize("page", PAGES)
def test_docs_render_offline_in_chromium(
    server: str, operation_ids: list[str], page: str, tmp_path: Path
) -> None:
    browser = chromium()
    raw = httpx.get(f"{server}/{page}", timeout=10).text
    assert "hosted feed" not in raw  # so finding it below means the UI rendered the spec
    dom, log, requested = _render_offline(browser, f"{server}/{page}", tmp_path)
    # Rendered by the UI from the spec: a summary, and every operation's own anchor.
    assert "A pipeline's hosted feed" in dom or "A pipeline&#x27;s hosted feed" in dom
    # Swagger UI: id="operations-<tag>-<operationId>"; ReDoc: data-section-id="…operation/<id>"
    anchor = (r'id="operations-[^"]*-{op}"' if page == "docs" else r'operation/{op}"')
    missing = [op for op in operation_ids if not re.search(anchor.format(op=re.escape(op)), dom)]
    assert missing == [], f"{len(missing)} operations not rendered"
    assert f"{server}/openapi.json" in requested
    assert any("/docs/assets/" in url and ".js" in url for url in requested)
    assert [url for url in requested if not url.startswith(server + "/")] == []
    # The CSP refuses nothing the UI needs; ReDoc's side-menu logo from cdn.redoc.ly is the one
    # outside load tried, and refusing it (the logo hides itself) is the CSP doing its job.
    refused = [line for line in log.splitlines() if "Content Security Policy" in line
               and "Loading the image 'https://cdn.redoc.ly/" not in line]
    assert refused == []
