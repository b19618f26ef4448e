"""A real TAXII 2.1 server for tests: OASIS medallion on a loopback port, its memory backend
loaded from a JSON file generated here, Basic auth on, its request log captured.

    with medallion(tmp_path, sample_objects()) as server:
        server.root            # the API root URL: http://127.0.0.1:<port>/api1/
        server.collection_id   # the (first) collection's id; server.collection_title
        server.add_objects([...])   # POST …/objects/ as the writer user -> the status
        server.requests()      # request lines logged so far: "GET /api1/…?… HTTP/1.1" 200

Users: `reader`/`READER_PASSWORD` (reads), `writer`/`WRITER_PASSWORD` (medallion has no
per-user rights: both may read and write). The process is stopped by pid when the block
ends. Dates in the seed are in 2025, so objects POSTed during a test (dated by the
server's clock) always come after them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import free_port, stop

TAXII = "application/taxii+json;version=2.1"
STIX = "application/stix+json;version=2.1"
API_ROOT = "api1"
COLLECTION_ID = "365fed99-08fa-fdcd-a1b3-fb247eb41d01"
COLLECTION_TITLE = "EDL Test Indicators"
SECRET_COLLECTION_ID = "64993447-4d7e-4f70-b94d-d7f33742ee63"
SECRET_COLLECTION_TITLE = "Secret Indicators"
READER_PASSWORD = "reader-pass-1"
WRITER_PASSWORD = "writer-pass-1"
_REQUEST = re.compile(r'"((?:GET|POST|DELETE|HEAD|PUT) [^"]*)" (\d{3})')


def indicator(
    number: int, pattern: str, *, modified: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A STIX 2.1 indicator with a deterministic id (`indicator--…-<number>`)."""
    stamp = modified or f"2025-06-01T00:00:{number % 60:02d}.000Z"
    return {
        "type": "indicator", "spec_version": "2.1",
        "id": f"indicator--00000000-0000-4000-8000-{number:012d}",
        "created": "2025-06-01T00:00:00.000Z", "modified": stamp,
        "pattern": pattern, "pattern_type": "stix", "valid_from": "2025-06-01T00:00:00Z",
        **extra,
    }


def sample_objects() -> list[dict[str, Any]]:
    """The seed bundle: one of each publishable shape, and each kind we must not publish.

    Published: 185.220.101.10 (tag malicious-activity), 2a03:b0c0:3:d0::10, evil-taxii.example,
    http://evil-taxii.example/gate.php, 185.220.101.7 + bad-or.example (an OR),
    185.220.101.99 (valid_until 2025-07-01: expired by a 2026 clock).
    Not published: an AND (unsupported_pattern), a file hash (unsupported_pattern), a
    revoked indicator (185.220.101.66), a malware SDO.
    """
    return [
        indicator(1, "[ipv4-addr:value = '185.220.101.10']",
                  indicator_types=["malicious-activity"], labels=["tlp:amber"]),
        indicator(2, "[ipv6-addr:value = '2a03:b0c0:3:d0::10']"),
        indicator(3, "[domain-name:value = 'evil-taxii.example']"),
        indicator(4, "[url:value = 'http://evil-taxii.example/gate.php']"),
        indicator(5, "[ipv4-addr:value = '185.220.101.7'] OR "
                     "[domain-name:value = 'bad-or.example']"),
        indicator(6, "[ipv4-addr:value = '185.220.101.77' AND url:value = 'http://and.example/']"),
        indicator(7, "[file:hashes.'SHA-256' = "
                     "'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']"),
        indicator(8, "[ipv4-addr:value = '185.220.101.66']", revoked=True),
        indicator(9, "[ipv4-addr:value = '185.220.101.99']", valid_until="2025-07-01T00:00:00Z"),
        {
            "type": "malware", "spec_version": "2.1",
            "id": "malware--31b940d4-6f7f-459a-80ea-9c1f17b5891b",
            "created": "2025-06-01T00:00:00.000Z", "modified": "2025-06-01T00:00:00.000Z",
            "name": "Test RAT", "is_family": True,
        },
    ]


SAMPLE_VALUES = {
    "185.220.101.10", "2a03:b0c0:3:d0::10", "evil-taxii.example", "http://evil-taxii.example/gate.php",
    "185.220.101.7", "bad-or.example", "185.220.101.99",
}


def _version(obj: dict[str, Any]) -> str:
    return str(obj.get("modified") or obj.get("created") or "2025-06-01T00:00:00.000Z")


def _collection(
    collection_id: str, title: str, objects: Sequence[dict[str, Any]], *, can_read: bool = True
) -> dict[str, Any]:
    return {
        "id": collection_id, "title": title, "description": "indicators for the EDL tests",
        "can_read": can_read, "can_write": True, "media_types": [STIX],
        "objects": list(objects),
        # One manifest record per object, added one second apart in 2025.
        "manifest": [
            {"id": obj["id"], "version": _version(obj), "media_type": STIX,
             "date_added": f"2025-06-02T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.000000Z"}
            for i, obj in enumerate(objects)
        ],
    }


def backend_data(port: int, objects: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medallion's memory-backend file: discovery, one API root, a readable collection of
    `objects` and an unreadable one."""
    base = f"http://127.0.0.1:{port}"
    return {
        "/discovery": {
            "title": "EDL test TAXII server", "default": f"{base}/{API_ROOT}/",
            "api_roots": [f"{base}/{API_ROOT}/"],
        },
        API_ROOT: {
            "information": {
                "title": "EDL tests", "versions": [TAXII], "max_content_length": 10_000_000,
            },
            "status": [],
            "collections": [
                _collection(COLLECTION_ID, COLLECTION_TITLE, objects),
                _collection(SECRET_COLLECTION_ID, SECRET_COLLECTION_TITLE, [], can_read=False),
            ],
        },
    }


@dataclass
class Medallion:
    process: subprocess.Popen[bytes]
    base: str
    log: Path
    collection_id: str = COLLECTION_ID
    collection_title: str = COLLECTION_TITLE

    @property
    def root(self) -> str:
        return f"{self.base}/{API_ROOT}/"

    def objects_url(self, collection_id: str | None = None) -> str:
        return f"{self.root}collections/{collection_id or self.collection_id}/objects/"

    def requests(self) -> list[str]:
        """Request lines werkzeug logged (`GET /api1/… HTTP/1.1 200`), oldest first."""
        text = self.log.read_text("utf-8", "replace") if self.log.exists() else ""
        return [f"{line} {status}" for line, status in _REQUEST.findall(text)]

    def mark(self) -> int:
        """How many requests are logged now: `requests()[mark:]` are the ones after."""
        return len(self.requests())

    def add_objects(self, objects: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """POST the objects (TAXII 2.1 Add Objects) as `writer`; the memory backend completes
        the status at once — it is returned, and must say every object succeeded."""
        body = json.dumps({"objects": list(objects)}).encode()
        response = httpx.post(
            self.objects_url(), content=body, auth=("writer", WRITER_PASSWORD), timeout=10,
            headers={"Accept": TAXII, "Content-Type": TAXII},
        )
        assert response.status_code == 202, response.text
        status: dict[str, Any] = response.json()
        assert status["status"] == "complete", status
        assert status["success_count"] == len(objects), status
        return status


@contextmanager
def medallion(
    tmp_path: Path, objects: Sequence[dict[str, Any]] | None = None, *,
    max_page_size: int = 100,
) -> Iterator[Medallion]:
    """Medallion on 127.0.0.1:<free port> serving `objects` (default: `sample_objects()`),
    until the block ends (then stopped by pid)."""
    port = free_port()
    folder = tmp_path / f"medallion-{port}"
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.json"
    seed = sample_objects() if objects is None else objects
    data.write_text(json.dumps(backend_data(port, seed)))
    config = folder / "config.json"
    config.write_text(json.dumps({
        "backend": {
            "module": "medallion.backends.memory_backend", "module_class": "MemoryBackend",
            "filename": str(data),
        },
        "users": {"reader": READER_PASSWORD, "writer": WRITER_PASSWORD},
        "taxii": {"max_page_size": max_page_size},
    }))
    log = folder / "requests.log"
    executable = Path(sys.executable).with_name("medallion")
    with log.open("ab") as output:
        process = subprocess.Popen(
            [str(executable), "--host", "127.0.0.1", "--port", str(port), str(config)],
            stdout=output, stderr=subprocess.STDOUT, cwd=folder,
        )
    server = Medallion(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.get(
                    f"{server.base}/taxii2/", auth=("reader", READER_PASSWORD),
                    headers={"Accept": TAXII}, timeout=1,
                )
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, f"medallion exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "medallion did not start"
            time.sleep(0.1)
        yield server
    finally:
        stop(process)
