"""A TAXII collection's objects, built once per published feed version.

The view holds every object's JSON in one buffer, sorted by (date_added, id) and joined by
commas, with two arrays (byte offsets, date_added in epoch ms) and the ids. A page is a
bisect and, without an id or version filter, one slice of the buffer: no request renders
the feed. An object's `date_added` is the entry's first_seen (its `created`, `modified`
and `valid_from` too), so its one version is its date_added.

Size: the JSON (~330 bytes an object with a source and a tag) plus ~120 bytes of
offsets, stamp and id per object: ~45 MB for 100k entries, beside the feed's own bodies.
"""

from __future__ import annotations

import base64
import binascii
import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from edl_api.engine.entries import FeedEntry
from edl_api.feeds.stix import STIX_MEDIA_TYPE, epoch_ms, indicator, stix_timestamp

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
_ID = re.compile(r"indicator--[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class CollectionView:
    blob: bytes  # the objects' JSON in (date_added, id) order, each followed by ","
    starts: array[int]  # where object i begins; starts[n] == len(blob)
    added: array[int]  # date_added of object i, epoch ms
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return len(self.blob) + len(self.ids) * 120


def build_view(entries: Sequence[FeedEntry], published_at: datetime | None) -> CollectionView:
    """The view of one feed version (CPU work: call it in a worker thread)."""
    published = published_at or datetime.now(UTC)
    rows = []
    for entry in entries:
        found = indicator(entry, published)
        rows.append((epoch_ms(entry.first_seen or published), found["id"], orjson.dumps(found)))
    rows.sort(key=lambda row: (row[0], row[1]))
    starts = array("q")
    position = 0
    for _, _, payload in rows:
        starts.append(position)
        position += len(payload) + 1
    starts.append(position)
    blob = b"".join(payload + b"," for _, _, payload in rows)
    return CollectionView(blob, starts, array("q", (row[0] for row in rows)),
                          [row[1] for row in rows])


class BadQuery(ValueError):
    """A filter or paging value the server cannot read (answered 400, saying which)."""


def ms_timestamp(added_ms: int) -> str:
    """The STIX timestamp of epoch ms (exact: no float on the way)."""
    seconds, ms = divmod(added_ms, 1000)
    return stix_timestamp(datetime.fromtimestamp(seconds, UTC).replace(microsecond=ms * 1000))


def parse_timestamp(text: str, name: str) -> int:
    """Epoch ms of a TAXII/STIX timestamp (`2026-01-02T03:04:05.678Z`)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadQuery(f"{name} must be a timestamp like 2026-01-02T03:04:05.000Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return epoch_ms(moment)


def next_token(added_ms: int, object_id: str) -> str:
    """The `next` of a page: where it ended, (date_added, id), so the following page
    starts after that object even when a new version of the feed was published since
    (objects removed meanwhile are simply gone; none is served twice)."""
    return base64.urlsafe_b64encode(f"{added_ms}.{object_id}".encode()).decode().rstrip("=")


def read_token(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    stamp, _, object_id = raw.partition(".")
    if not (stamp.isdigit() and len(stamp) <= 15 and _ID.fullmatch(object_id)):
        raise BadQuery("next is not a token this server gave; start again without it "
                       "(added_after = the X-TAXII-Date-Added-Last you got)")
    return int(stamp), object_id


@dataclass(frozen=True, slots=True)
class Query:
    limit: int = DEFAULT_LIMIT
    added_after: int | None = None  # epoch ms; objects added strictly later
    after: tuple[int, str] | None = None  # the `next` cursor
    ids: frozenset[str] | None = None  # match[id]
    versions: frozenset[int] | None = None  # match[version] timestamps (None: any)
    nothing: bool = False  # match[type] / match[spec_version] rule every object out


@dataclass(frozen=True, slots=True)
class Page:
    indexes: range | list[int]
    more: bool
    next: str | None


def _start(view: CollectionView, query: Query) -> int:
    start = 0 if query.added_after is None else bisect_right(view.added, query.added_after)
    if query.after is not None:
        stamp, object_id = query.after
        low, high = bisect_left(view.added, stamp), bisect_right(view.added, stamp)
        start = max(start, bisect_right(view.ids, object_id, low, high))
    return start


def select(view: CollectionView, query: Query) -> Page:
    if query.nothing:
        return Page(range(0), False, None)
    start = _start(view, query)
    if query.ids is None and query.versions is None:
        end = min(start + query.limit, len(view))
        indexes: range | list[int] = range(start, end)
        more = end < len(view)
    else:
        picked: list[int] = []
        more = False
        for index in range(start, len(view)):
            if query.ids is not None and view.ids[index] not in query.ids:
                continue
            if query.versions is not None and view.added[index] not in query.versions:
                continue
            if len(picked) == query.limit:
                more = True
                break
            picked.append(index)
        indexes = picked
    token = None
    if more and indexes:
        last = indexes[-1]
        token = next_token(view.added[last], view.ids[last])
    return Page(indexes, more, token)


def _head(page: Page) -> bytes:
    head = b'{"more":' + (b"true" if page.more else b"false")
    if page.next is not None:
        head += b',"next":"' + page.next.encode() + b'"'
    return head


def objects_envelope(view: CollectionView, page: Page) -> bytes:
    if not page.indexes:
        return _head(page) + b"}"
    if isinstance(page.indexes, range):  # one slice, less the last comma
        objects = view.blob[view.starts[page.indexes.start]:view.starts[page.indexes.stop] - 1]
    else:
        objects = b",".join(view.blob[view.starts[i]:view.starts[i + 1] - 1] for i in page.indexes)
    return _head(page) + b',"objects":[' + objects + b"]}"


def manifest_envelope(view: CollectionView, page: Page) -> bytes:
    records = []
    for index in page.indexes:
        stamp = ms_timestamp(view.added[index])
        records.append({"id": view.ids[index], "date_added": stamp, "version": stamp,
                        "media_type": STIX_MEDIA_TYPE})
    if not records:
        return _head(page) + b"}"
    return _head(page) + b',"objects":' + orjson.dumps(records) + b"}"


def added_range(view: CollectionView, page: Page) -> tuple[str, str] | None:
    """(X-TAXII-Date-Added-First, -Last) of a page with objects."""
    if not page.indexes:
        return None
    return ms_timestamp(view.added[page.indexes[0]]), ms_timestamp(view.added[page.indexes[-1]])
