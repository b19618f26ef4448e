"""Broken sources fail loudly: a web page, a missing CSV column, a body that is mostly not
indicators. Optional ones warn and contribute nothing; a filter that keeps nothing warns."""

from __future__ import annotations

import asyncio
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from edl_api.engine.config import validate_config_document
from edl_api.engine.pipeline import EngineResult, EngineSettings, run_pipeline
from tests.helpers import answer, loopback

LOGIN_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body>1.2.3.4</body>"
GOOD = ["9.9.9.1", "9.9.9.2"]


def run(tmp_path: Path, files: dict[str, bytes], sources: list[dict[str, Any]],
        **pipeline: Any) -> EngineResult:
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)
    doc = {"sources": sources, "pipeline": {"outputs": ["ipv4"], **pipeline}}
    settings = EngineSettings(source_dir=str(tmp_path))
    return asyncio.run(run_pipeline(validate_config_document(doc), settings))


def values(result: EngineResult, output: str = "ipv4") -> list[str]:
    return [entry.value for entry in result.feeds[output]]


def test_a_web_page_fails_a_required_source(tmp_path: Path) -> None:
    result = run(tmp_path, {"page.txt": LOGIN_PAGE}, [{"name": "up", "path": "page.txt"}])
    assert not result.ok
    assert result.errors == ["source up: returned HTML, not a list"]
    [source] = result.report["sources"]
    assert source["status"] == "failed"
    assert source["error"] == "returned HTML, not a list"


def test_a_web_page_only_warns_for_an_optional_source_and_adds_nothing(tmp_path: Path) -> None:
    result = run(
        tmp_path, {"page.txt": LOGIN_PAGE},
        [{"name": "good", "values": GOOD},
         {"name": "portal", "path": "page.txt", "optional": True}],
    )
    assert result.ok, result.errors
    assert result.warnings == ["source portal: returned HTML, not a list"]
    assert values(result) == GOOD  # the 1.2.3.4 inside the page is not published


def test_html_content_type_needs_markup_too() -> None:
    """A text/html page fails; a plain list a script mislabels text/html still loads."""
    def page(handler: BaseHTTPRequestHandler) -> bool:
        return answer(handler, 200, b"<body>session expired</body>",
                      {"Content-Type": "text/html; charset=utf-8"})

    def mislabelled(handler: BaseHTTPRequestHandler) -> bool:
        return answer(handler, 200, b"9.9.9.9\n", {"Content-Type": "text/html"})

    with loopback(routes={"/page": page, "/list": mislabelled}) as server:
        doc = {
            "sources": [{"name": "page", "url": f"{server.url}/page", "optional": True},
                        {"name": "list", "url": f"{server.url}/list"}],
            "pipeline": {"outputs": ["ipv4"]},
        }
        result = asyncio.run(run_pipeline(
            validate_config_document(doc), EngineSettings(ssrf_allow_cidrs=("127.0.0.0/8",))
        ))
    assert result.warnings == ["source page: returned HTML, not a list"]
    assert values(result) == ["9.9.9.9"]


def test_a_csv_column_missing_from_the_header_fails(tmp_path: Path) -> None:
    body = b"id,url,status\n1,http://evil.example/a,online\n"
    result = run(tmp_path, {"urls.csv": body},
                 [{"name": "urlhaus", "path": "urls.csv", "format": "csv", "column": "ioc"}],
                 outputs=["url"])
    assert result.errors == ["source urlhaus: column ioc not in header: id, url, status"]
    wide = ",".join(f"c{i}" for i in range(12)).encode() + b"\n"
    result = run(tmp_path, {"wide.csv": wide + b"1,2\n"},
                 [{"name": "wide", "path": "wide.csv", "format": "csv", "column": "ioc"}])
    assert result.errors == [
        "source wide: column ioc not in header: c0, c1, c2, c3, c4, c5, c6, c7, …"
    ]


def test_a_body_that_is_mostly_not_indicators_fails(tmp_path: Path) -> None:
    garbage = b"".join(f"not an indicator {i}\n".encode() for i in range(23))
    body = garbage + b"9.9.9.1\n9.9.9.2\n"  # 2 valid of 25 lines: 8 %
    result = run(tmp_path, {"mostly.txt": body}, [{"name": "up", "path": "mostly.txt"}])
    assert result.errors == [
        "source up: only 8% of 25 records are valid indicators (min_valid_percent is 10)"
    ]
    assert result.report["counts"]["published"] == {"ipv4": 0}
    # switched off, the same body publishes its two addresses
    result = run(tmp_path, {}, [{"name": "up", "path": "mostly.txt", "min_valid_percent": 0}])
    assert result.ok
    assert values(result) == GOOD


def test_the_default_floor_spares_short_lists_and_a_set_one_applies_to_all(
    tmp_path: Path
) -> None:
    short = b"typo\n" * 17 + b"9.9.9.1\n9.9.9.2\n"  # 19 lines: below the default
    result = run(tmp_path, {"short.txt": short}, [{"name": "up", "path": "short.txt"}])
    assert result.ok
    assert values(result) == GOOD
    result = run(tmp_path, {}, [{"name": "up", "path": "short.txt", "min_valid_percent": 50}])
    assert result.errors == [
        "source up: only 10% of 19 records are valid indicators (min_valid_percent is 50)"
    ]


def test_an_optional_source_below_the_floor_contributes_nothing(tmp_path: Path) -> None:
    body = b"junk\n" * 30 + b"9.9.9.1\n9.9.9.250\n"
    result = run(
        tmp_path, {"junk.txt": body},
        [{"name": "good", "values": ["9.9.9.1"]},
         {"name": "junk", "path": "junk.txt", "optional": True}],
        outputs=["ipv4"],
    )
    assert result.ok
    assert result.warnings == [
        "source junk: only 6% of 32 records are valid indicators (min_valid_percent is 10)"
    ]
    [entry] = result.feeds["ipv4"]
    assert (entry.value, entry.sources) == ("9.9.9.1", ["good"])


def test_a_types_filter_that_keeps_nothing_warns(tmp_path: Path) -> None:
    result = run(tmp_path, {}, [
        {"name": "mixed", "values": ["9.9.9.1", "evil.example"], "types": ["url"]},
        {"name": "ips", "values": GOOD},
    ])
    assert result.ok
    assert result.warnings == [
        "source mixed: types [url] kept nothing (2 indicators of other types)"
    ]


def test_a_failed_run_reports_nothing_published(tmp_path: Path) -> None:
    result = run(tmp_path, {}, [{"name": "good", "values": GOOD},
                                {"name": "gone", "path": "missing.txt"}], outputs=["ipv4", "ip"])
    assert not result.ok
    assert result.report["counts"]["published"] == {"ipv4": 0, "ip": 0}
    assert result.report["counts"]["tokens"] == 2


@pytest.mark.parametrize(("value", "published"), [
    ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8: globally reachable (IANA)
    ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1: RFC 6052 forbids it, still reserved
    ("64:ff9b:1::808:808", False),  # local-use NAT64 (RFC 8215): not globally reachable
])
def test_nat64_follows_the_iana_registry(tmp_path: Path, value: str, published: bool) -> None:
    result = run(tmp_path, {}, [{"name": "s", "values": [value]}], outputs=["ipv6"])
    assert (values(result, "ipv6") == [value]) is published
    dropped = result.report["feeds"]["ipv6"]["dropped"]
    assert dropped == ({} if published else {"exclude_reserved": 1})
