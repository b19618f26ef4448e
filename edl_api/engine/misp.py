"""MISP sources (`format: misp`): a MISP feed, or a MISP server's `attributes/restSearch`.

A **feed** is the static export MISP instances publish and subscribe to (CIRCL's OSINT
feed, PyMISP's `examples/feed-generator/generate.py`): `manifest.json` maps each event
uuid to its metadata and `timestamp`; `<uuid>.json` holds `{"Event": {..., "Attribute":
[...], "Object": [{"Attribute": [...]}]}}`. MISP itself subscribes the same way
(`app/Model/Feed.php`: GET `<url>/manifest.json`, then `<url>/<uuid>.json` for the events
whose manifest timestamp is newer than its copy), and so do we: the state remembers each
event's timestamp and entries, a refresh fetches only new or changed events, reuses the
rest, and drops the events the manifest no longer lists.

**restSearch** (`url` ending `/attributes/restSearch`) is a full pull every run, state
None: MISP's `timestamp`/`last` filters return what changed, never what was deleted or
lost `to_ids`, so an incremental pull could not tell an attribute to leave the feeds.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from edl_api.engine.collect import Collected, Fetcher
from edl_api.engine.config import SourceConfig
from edl_api.engine.observations import Observation, as_tag, parse_when
from edl_api.engine.parsers import is_html
from edl_api.engine.sources import SourceError

# MISP attribute types we take, and which `|`-separated parts of the value are indicators.
# From MISP's describeTypes (PyMISP `pymisp/data/describeTypes.json`, MISP
# `app/Model/Attribute.php` typeDefinitions): composite types join their parts with `|`.
# `uri` is a path without a host (not a URL) and `link` a reference to a report, not an
# IOC: both, like every other type (hashes, filenames, emails …), count `unsupported_type`.
TYPE_PARTS: dict[str, tuple[int, ...]] = {
    "ip-src": (0,),  # an address or a CIDR
    "ip-dst": (0,),
    "ip-src|port": (0,),
    "ip-dst|port": (0,),
    "domain": (0,),
    "hostname": (0,),
    "url": (0,),
    "domain|ip": (0, 1),
    "hostname|port": (0,),
}
REST_SEARCH_PATH = "/attributes/restSearch"
MAX_FEED_EVENTS = 10_000  # a manifest listing more fails: state and first run stay bounded
EVENT_FETCHES = 4  # event files fetched at once
MAX_TAGS = 16  # per observation: event info first, then event tags, then attribute tags
EVENT_TAG_PREFIX = "misp-event:"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HTTP_STATUS = re.compile(r"HTTP (\d{3})")  # how sources.fetch_url reports a non-2xx answer
# Runs of characters outside the tag grammar, dashes included, become one `-`.
_RUNS = re.compile(r"[^A-Za-z0-9._:/+]+")
_FALSE = frozenset({"0", "false", "False", "FALSE", ""})


def is_rest_search(url: str) -> bool:
    return urllib.parse.urlsplit(url).path.rstrip("/").endswith(REST_SEARCH_PATH)


async def collect_misp(
    source: SourceConfig, fetch: Fetcher, previous: dict[str, Any] | None, now: float
) -> Collected:
    """The source's observations; raises `SourceError` when the server or feed is not
    usable (the message says what to check)."""
    assert source.url is not None
    if is_rest_search(source.url):
        return await _rest_search(source, fetch)
    return await _feed(source, fetch, None if source.refetch == "full" else previous)


# --- attributes --------------------------------------------------------------------------


@dataclass
class _Entries:
    """What one event (or one restSearch answer) contributes: entries as (value, seen,
    attribute tags), the tags every entry shares, and the counts of what was read."""

    tags: list[str]
    entries: list[tuple[str, float | None, list[str]]] = field(default_factory=list)
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def _tag_names(tags: Any) -> list[str]:
    """MISP `Tag` lists (`[{"name": "tlp:white", "colour": ...}]`) in our tag grammar."""
    out: list[str] = []
    if isinstance(tags, list):
        for tag in tags:
            name = tag.get("name") if isinstance(tag, dict) else None
            cleaned = as_tag(name) if isinstance(name, str) else None
            if cleaned is not None and cleaned not in out:
                out.append(cleaned)
    return out


def _event_tag(info: Any) -> list[str]:
    """The event's `info` as one tag, `misp-event:<info>` cut to the grammar's 64 chars."""
    if not isinstance(info, str):
        return []
    # Free text: "OSINT - Emotet" reads misp-event:OSINT-Emotet, not OSINT---Emotet.
    cleaned = as_tag(EVENT_TAG_PREFIX + _RUNS.sub("-", info))
    return [cleaned] if cleaned is not None and cleaned != EVENT_TAG_PREFIX.rstrip(":") else []


def _flag(value: Any, missing: bool) -> bool:
    """A MISP boolean: JSON true/false, 1/0, or the strings "1"/"0"/"true"/"false"."""
    if value is None:
        return missing
    if isinstance(value, bool | int):
        return bool(value)
    if isinstance(value, str):
        return value.strip() not in _FALSE
    return missing


def _is_deleted(item: dict[str, Any]) -> bool:
    return _flag(item.get("deleted"), False)


def _take(
    into: _Entries, attributes: Iterable[Any], include_non_ids: bool,
    default_seen: float | None,
) -> None:
    """Attributes into entries; a deleted attribute is gone (neither read nor counted)."""
    for attribute in attributes:
        if not isinstance(attribute, dict):
            into.records += 1
            into.skipped["bad_attribute"] += 1
            continue
        if _is_deleted(attribute):
            continue
        into.records += 1
        value, kind = attribute.get("value"), attribute.get("type")
        if not isinstance(value, str) or not isinstance(kind, str):
            into.skipped["bad_attribute"] += 1
            continue
        parts = TYPE_PARTS.get(kind)
        if parts is None:
            into.skipped["unsupported_type"] += 1
            continue
        if not include_non_ids and not _flag(attribute.get("to_ids"), True):
            into.skipped["not_ids"] += 1
            continue
        seen = parse_when(attribute.get("timestamp"))
        tags = _tag_names(attribute.get("Tag"))
        pieces = value.split("|") if "|" in kind else [value]
        for index in parts:
            # The engine classifies the value: an ip-dst that is no address counts invalid.
            piece = pieces[index].strip() if index < len(pieces) else ""
            into.entries.append((piece, seen if seen is not None else default_seen, tags))


def _observations(part: _Entries) -> Iterator[Observation]:
    for value, seen, tags in part.entries:
        merged = list(part.tags)
        merged.extend(tag for tag in tags if tag not in merged)
        yield Observation(value, seen, None, tuple(merged[:MAX_TAGS]))


def _collected(parts: Iterable[_Entries], state: dict[str, Any] | None, requests: int) -> Collected:
    observations: list[Observation] = []
    invalid: Counter[str] = Counter()
    records = 0
    for part in parts:
        observations.extend(_observations(part))
        invalid.update(part.skipped)
        records += part.records
    return Collected(observations, state, records, invalid, requests)


def _json(data: bytes, content_type: str | None, what: str, hint: str) -> Any:
    if is_html(data, content_type):
        raise SourceError(f"{what} is a web page, not MISP JSON ({hint})")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise SourceError(f"{what} is not JSON ({hint})") from None


def _status(exc: SourceError) -> int | None:
    match = _HTTP_STATUS.fullmatch(str(exc))
    return int(match.group(1)) if match else None


# --- restSearch --------------------------------------------------------------------------


async def _rest_search(source: SourceConfig, fetch: Fetcher) -> Collected:
    assert source.url is not None
    # returnFormat last: a filter may not turn the answer into CSV or STIX.
    body = json.dumps({**(source.filters or {}), "returnFormat": "json"}).encode()
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    try:
        fetched = await fetch(source.url, method="POST", headers=headers, body=body)
    except SourceError as exc:
        if _status(exc) in (401, 403):
            raise SourceError(
                f"MISP refused the search ({exc}): check the API key sent as "
                "headers.Authorization (${secret:NAME}) and that its user may search"
            ) from None
        raise
    hint = (
        "the url must be a MISP server's /attributes/restSearch; a login page means the "
        "Authorization header is missing or wrong"
    )
    answer = _json(fetched.data, fetched.content_type, "the restSearch answer", hint)
    response = answer.get("response") if isinstance(answer, dict) else None
    if response == []:  # what MISP answers when nothing matches
        attributes: Any = []
    else:
        attributes = response.get("Attribute") if isinstance(response, dict) else None
    if not isinstance(attributes, list):
        raise SourceError(
            'the restSearch answer is not MISP JSON (no {"response": {"Attribute": [...]}}; '
            f"{hint})"
        )
    include = bool(source.include_non_ids)
    parts: list[_Entries] = []
    for attribute in attributes:
        event = attribute.get("Event") if isinstance(attribute, dict) else None
        part = _Entries(_event_tag(event.get("info")) if isinstance(event, dict) else [])
        _take(part, [attribute], include, None)
        parts.append(part)
    return _collected(parts, None, 1)


# --- feeds -------------------------------------------------------------------------------


def _feed_base(url: str) -> str:
    """The feed folder's URL with a trailing `/` (`url` may name its manifest.json)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path
    if path.endswith("/manifest.json"):
        path = path[: -len("manifest.json")]
    elif not path.endswith("/"):
        path += "/"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _feed_file(base: str, name: str) -> str:
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path + name, parts.query, ""))


def _manifest_timestamps(manifest: Any) -> dict[str, str]:
    """uuid → the event's timestamp text. Current generators write an object per event
    (`{"info", "Orgc", "Tag", "date", "timestamp", ...}`), the oldest just the timestamp."""
    not_a_feed = (
        "manifest.json is not a MISP feed manifest ({event uuid: {timestamp, ...}}); "
        "url must be the feed's folder"
    )
    if not isinstance(manifest, dict):
        raise SourceError(not_a_feed)
    if len(manifest) > MAX_FEED_EVENTS:
        raise SourceError(
            f"manifest.json lists {len(manifest)} events, more than the {MAX_FEED_EVENTS} "
            "a MISP feed source may hold; subscribe to a smaller feed or use the server's "
            "attributes/restSearch with filters (e.g. last: 30d)"
        )
    out: dict[str, str] = {}
    for uuid, entry in manifest.items():
        stamp = entry.get("timestamp") if isinstance(entry, dict) else entry
        if not _UUID.fullmatch(uuid) or not isinstance(stamp, str | int):
            raise SourceError(f"{not_a_feed}: entry {uuid[:60]!r} is not one")
        out[uuid] = str(stamp)  # as spelled: it names the event's file
    return out


def _event_entries(answer: Any, uuid: str, include_non_ids: bool) -> _Entries:
    # Like MISP's Feed::__prepareEvent, a `{"response": [event]}` wrapping is accepted.
    if isinstance(answer, dict) and "response" in answer:
        answer = answer["response"]
    if isinstance(answer, list) and answer:
        answer = answer[0]
    event = answer.get("Event") if isinstance(answer, dict) else None
    if not isinstance(event, dict):
        raise SourceError(f'event {uuid}.json is not a MISP event ({{"Event": {{...}}}})')
    part = _Entries(_event_tag(event.get("info")))
    part.tags.extend(tag for tag in _tag_names(event.get("Tag")) if tag not in part.tags)
    default_seen = parse_when(event.get("timestamp"))
    attributes = event.get("Attribute")
    _take(part, attributes if isinstance(attributes, list) else [], include_non_ids, default_seen)
    objects = event.get("Object")
    for item in objects if isinstance(objects, list) else []:
        if isinstance(item, dict) and not _is_deleted(item):
            inner = item.get("Attribute")
            _take(part, inner if isinstance(inner, list) else [], include_non_ids, default_seen)
    return part


async def _each(
    uuids: list[str], job: Callable[[str], Awaitable[None]], limit: int
) -> None:
    """`job` for every uuid, `limit` at a time; the first failure stops the others and is
    raised as it is (a SourceError, or the run's byte budget running out)."""
    pending = iter(uuids)

    async def worker() -> None:
        for uuid in pending:  # one shared iterator: each uuid goes to one worker
            await job(uuid)

    workers = [asyncio.create_task(worker()) for _ in range(min(limit, len(uuids)))]
    if not workers:
        return
    try:
        done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    for task in done:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


def _saved(part: _Entries, stamp: str) -> dict[str, Any]:
    return {
        "timestamp": stamp, "tags": part.tags, "records": part.records,
        "skipped": dict(part.skipped),
        "entries": [[value, seen, tags] for value, seen, tags in part.entries],
    }


def _restored(saved: Any, stamp: str) -> _Entries | None:
    """An event from the previous state if its timestamp is unchanged (and the state is
    one this module wrote); None: fetch it."""
    if not isinstance(saved, dict) or saved.get("timestamp") != stamp:
        return None
    try:
        part = _Entries(
            [str(tag) for tag in saved["tags"]], records=int(saved["records"]),
            skipped=Counter({str(k): int(v) for k, v in saved["skipped"].items()}),
        )
        for value, seen, tags in saved["entries"]:
            part.entries.append(
                (str(value), None if seen is None else float(seen), [str(t) for t in tags])
            )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return part


async def _feed(source: SourceConfig, fetch: Fetcher, previous: dict[str, Any] | None) -> Collected:
    assert source.url is not None
    base = _feed_base(source.url)
    headers = {"Accept": "application/json"}
    try:
        fetched = await fetch(_feed_file(base, "manifest.json"), headers=headers)
    except SourceError as exc:
        if _status(exc) == 404:
            raise SourceError(
                f"manifest.json: {exc}; url must be a MISP feed's folder (the one holding "
                "manifest.json), or a MISP server's /attributes/restSearch"
            ) from None
        raise SourceError(f"manifest.json: {exc}") from None
    hint = "url must be a MISP feed's folder"
    stamps = _manifest_timestamps(_json(fetched.data, fetched.content_type, "manifest.json", hint))
    known = previous.get("events") if isinstance(previous, dict) else None
    known = known if isinstance(known, dict) else {}
    parts: dict[str, _Entries] = {}
    wanted: list[str] = []
    for uuid, stamp in stamps.items():
        restored = _restored(known.get(uuid), stamp)
        if restored is None:
            wanted.append(uuid)
        else:
            parts[uuid] = restored
    include = bool(source.include_non_ids)

    async def one(uuid: str) -> None:
        try:
            event = await fetch(_feed_file(base, f"{uuid}.json"), headers=headers)
        except SourceError as exc:
            # A listed event that cannot be read means the feed is mid-publish or broken:
            # fail (the previous run's entries and state stay) rather than publish the
            # feed without that event's indicators.
            raise SourceError(f"event {uuid} (listed in manifest.json): {exc}") from None
        answer = _json(event.data, event.content_type, f"event {uuid}.json", hint)
        parts[uuid] = _event_entries(answer, uuid, include)

    await _each(wanted, one, EVENT_FETCHES)
    ordered = [parts[uuid] for uuid in stamps]  # the manifest's order, run after run
    state = {"events": {uuid: _saved(parts[uuid], stamps[uuid]) for uuid in stamps}}
    return _collected(ordered, state, 1 + len(wanted))
