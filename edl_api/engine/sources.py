"""Fetching sources: `url:` (httpx behind an SSRF guard), `path:` (below the run's folder).

SSRF guard: the host is resolved once, every address must be global (wrapped IPv4
forms are unwrapped first) unless an allow CIDR/host says otherwise, and the
connection goes to the checked address — httpx never does a second lookup. Redirects
are followed here, at most 5, each one checked again.

Secrets: `${secret:NAME}` in headers are expanded at fetch time only, from the run's own
profile secrets (the run layer sends exactly those); errors raised here never contain
header values (the pipeline also redacts them defensively). `path:` sources read only
below `source_dir`, which the run layer sets to the run's profile folder.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
import re
import socket
import urllib.parse
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edl_api.engine.config import BasicAuth, SourceConfig
from edl_api.engine.indicators import cidr_ok, ipv4_to_int, ipv6_to_int
from edl_api.engine.limits import ByteBudget, read_capped
from edl_api.engine.special import RESERVED_V4, RESERVED_V6, IntervalSet, embedded_ipv4

if TYPE_CHECKING:  # httpx is imported when a run has a url source (`make_client`)
    import httpx

MAX_REDIRECTS = 5
# Inflate at most this much per step: a bomb's next step is refused before it is made.
INFLATE_STEP = 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
USER_AGENT = "edl-api/0.1 (+https://github.com/)"
_SECRET_REF = re.compile(r"\$\{secret:([A-Z][A-Z0-9_]{0,63})\}")
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")

# resolver(host, port) -> addresses (sync or async); injectable for tests.
Resolver = Callable[[str, int], Awaitable[Iterable[str]] | Iterable[str]]


class SourceError(Exception):
    """A source could not be fetched; the message is safe to log and store."""


@dataclass(frozen=True)
class SsrfPolicy:
    allow_v4: IntervalSet
    allow_v6: IntervalSet
    allow_hosts: frozenset[str]

    @classmethod
    def build(cls, cidrs: Iterable[str], hosts: Iterable[str]) -> SsrfPolicy:
        ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for cidr in cidrs:
            parsed = cidr_ok(cidr.strip())
            if parsed is None:
                raise ValueError(f"EDL_SSRF_ALLOW_CIDRS: {cidr!r} is not a network")
            version, first, last = parsed
            ranges[version].append((first, last))
        return cls(
            IntervalSet(ranges[4]),
            IntervalSet(ranges[6]),
            frozenset(h.strip().lower().rstrip(".") for h in hosts if h.strip()),
        )

    def refusal(self, version: int, value: int) -> str | None:
        """Why connecting to this address is refused, or None when it is allowed."""
        if version == 4:
            if value in self.allow_v4:
                return None
            return "non-global address" if value in RESERVED_V4 else None
        if value in self.allow_v6:
            return None
        wrapped = embedded_ipv4(value)
        if wrapped is not None:
            # A wrapper is only as safe as every IPv4 address inside it.
            for inner in wrapped:
                if inner not in self.allow_v4 and inner in RESERVED_V4:
                    return "non-global address (wrapped IPv4)"
            return None
        return "non-global address" if value in RESERVED_V6 else None


def literal_address(host: str) -> tuple[int, int] | None:
    """(version, int) when `host` is an IP literal, including inet_aton forms.

    "2130706433", "0x7f.1" and "0177.0.0.1" all mean 127.0.0.1 to a C resolver, so
    they must be judged as addresses, never handed to a resolver as names.
    """
    host = host.strip("[]")
    if ":" in host:
        value6 = ipv6_to_int(host.split("%", 1)[0])
        return None if value6 is None else (6, value6)
    value4 = ipv4_to_int(host)
    if value4 is not None:
        return 4, value4
    last = host.rstrip(".").rsplit(".", 1)[-1]
    if _NUMERIC_HOST.fullmatch(host) and last[:1].isdigit():
        try:
            return 4, int.from_bytes(socket.inet_aton(host), "big")
        except OSError:
            raise SourceError("host is neither a name nor a valid address") from None
    return None


async def default_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# What to change when a source (or webhook) points at a private address on purpose.
SSRF_GRANT_HINT = (
    "a private destination needs a grant: EDL_SSRF_ALLOW_CIDRS / EDL_SSRF_ALLOW_HOSTS "
    "(every profile) or the profile's ssrf_allow_cidrs / ssrf_allow_hosts "
    "(PATCH /profiles/{id}, super-admin)"
)


def resolver_error(exc: BaseException) -> str:
    """The resolver's own words (`gaierror [Errno -2] Name or service not known`), short."""
    text = str(exc).strip().split("\n", 1)[0][:200]
    return f"{exc.__class__.__name__} {text}" if text else exc.__class__.__name__


def name_the_host(message: str, host: str) -> str:
    """A resolve/refusal message of `resolve_checked` with the host and what to do."""
    if message.startswith("cannot resolve host: "):
        detail = message.removeprefix("cannot resolve host: ")
        return f"cannot resolve host {host}: {detail} (check the name and this host's DNS)"
    if message.startswith("refused: "):
        return f"{message} ({host}); {SSRF_GRANT_HINT}"
    return message


async def resolve_checked(
    host: str, port: int, policy: SsrfPolicy, resolver: Resolver | None
) -> tuple[int, int]:
    """Resolve once and return the address to connect to; raise if any address is refused."""
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            result = (resolver or default_resolver)(host, port)
            if inspect.isawaitable(result):
                result = await result
            names = list(result)
        except (OSError, UnicodeError) as exc:
            raise SourceError(f"cannot resolve host: {resolver_error(exc)}") from None
        addresses = []
        for name in names:
            parsed = literal_address(str(name).split("%", 1)[0])
            if parsed is None:
                raise SourceError("resolver returned a non-address")
            addresses.append(parsed)
        if not addresses:
            raise SourceError("host has no addresses")
    if host.lower().rstrip(".") in policy.allow_hosts:
        return addresses[0]
    for version, value in addresses:
        reason = policy.refusal(version, value)
        if reason is not None:
            # Every address must pass: a name with one private record is refused outright.
            raise SourceError(f"refused: host resolves to a {reason}")
    return addresses[0]


def expand_secrets(
    headers: dict[str, str], available: Mapping[str, str], secrets: set[str]
) -> dict[str, str]:
    """Expand `${secret:NAME}` from the run's own secrets; used values join `secrets`."""
    out = {}
    for name, value in headers.items():

        def replace(match: re.Match[str], header: str = name) -> str:
            secret = available.get(match.group(1))
            if secret is None:
                raise SourceError(
                    f"header {header}: secret {match.group(1)} is not set for this profile"
                )
            if secret:
                secrets.add(secret)
            return secret

        out[name] = _SECRET_REF.sub(replace, value)
    return out


def basic_authorization(auth: BasicAuth, available: Mapping[str, str], secrets: set[str]) -> str:
    """The `Authorization: Basic` value of a source's `basic_auth` (its password secret
    expanded from the run's own secrets; the whole value joins `secrets` for redaction)."""
    password = available.get(auth.secret_name)
    if password is None:
        raise SourceError(
            f"basic_auth: secret {auth.secret_name} is not set for this profile"
        )
    token = base64.b64encode(f"{auth.username}:{password}".encode()).decode("ascii")
    if password:
        secrets.update((password, token))
    return f"Basic {token}"


class _BodyDecoder:
    """Content-Encoding decoding with a hard cap on decoded bytes (gzip bombs stop early):
    the source's `max_bytes`, and the run's byte budget shared with its other sources."""

    def __init__(
        self, encoding: str, max_bytes: int, budget: ByteBudget | None = None,
        source: str = "",
    ) -> None:
        encoding = encoding.strip().lower()
        self.max_bytes = max_bytes
        self.budget = budget
        self.source = source
        self.size = 0
        self.parts: list[bytes] = []
        if encoding in ("", "identity"):
            self.inflater: Any = None
        elif encoding in ("gzip", "x-gzip"):
            self.inflater = zlib.decompressobj(wbits=47)
        elif encoding == "deflate":
            self.inflater = zlib.decompressobj(wbits=47)  # zlib or gzip header, auto-detected
        else:
            raise SourceError(f"unsupported Content-Encoding {encoding[:40]!r}")

    def _add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise SourceError(f"source is larger than max_bytes ({self.max_bytes})")
        if self.budget is not None:
            self.budget.charge(len(chunk), self.source)
        self.parts.append(chunk)

    def _inflate(self, inflater: Any, data: bytes, corrupt: str) -> None:
        try:
            while True:
                out = inflater.decompress(data, INFLATE_STEP)
                self._add(out)
                data = inflater.unconsumed_tail
                # A full step may leave output inside zlib even with no input left.
                if not data and len(out) < INFLATE_STEP:
                    return
        except zlib.error:
            raise SourceError(corrupt) from None

    def feed(self, chunk: bytes) -> None:
        if self.inflater is None:
            self._add(chunk)
        else:
            self._inflate(self.inflater, chunk, "corrupt compressed body")

    def finish(self) -> bytes:
        return maybe_gunzip(b"".join(self.parts), self.max_bytes, self.budget, self.source)


def maybe_gunzip(
    data: bytes, max_bytes: int, budget: ByteBudget | None = None, source: str = ""
) -> bytes:
    """A `.gz` file served as-is (no Content-Encoding) is unpacked, still capped (its
    inflated bytes are charged to the budget, its compressed ones given back after)."""
    if not data.startswith(GZIP_MAGIC):
        return data
    inner = _BodyDecoder("", max_bytes, budget, source)
    inner._inflate(zlib.decompressobj(wbits=31), data, "corrupt gzip data")
    if budget is not None:
        budget.refund(len(data))
    return b"".join(inner.parts)


@dataclass
class Fetched:
    data: bytes
    status: int | None = None
    redirects: int = 0
    content_type: str | None = None  # media type only, lowercased (no parameters)
    # Response headers, names lowercased (a TAXII page's X-TAXII-Date-Added-Last)
    headers: dict[str, str] = field(default_factory=dict)


def redirect_target(url: str, location: str) -> str:
    """The next URL of a redirect; never to a non-HTTP scheme, never from https to http."""
    next_url = urllib.parse.urljoin(url, location.strip())
    next_scheme = urllib.parse.urlsplit(next_url).scheme.lower()
    if next_scheme not in ("http", "https"):
        raise SourceError("redirect to a non-HTTP URL refused")
    if urllib.parse.urlsplit(url).scheme.lower() == "https" and next_scheme == "http":
        raise SourceError("redirect from https to http refused")
    return next_url


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


async def fetch_url(
    client: httpx.AsyncClient,
    source: SourceConfig,
    policy: SsrfPolicy,
    resolver: Resolver | None,
    available: Mapping[str, str],
    secrets: set[str],
    budget: ByteBudget | None = None,
    *,
    url: str | None = None,
    method: str = "GET",
    body: bytes | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> Fetched:
    """GET the source's `url` (or another `url` of the same source: a TAXII page, a MISP
    event), every hop through the SSRF guard; `method`/`body` for a search API (POST)."""
    import httpx

    assert source.url is not None
    headers = {**(extra_headers or {}), **expand_secrets(source.headers, available, secrets)}
    if source.basic_auth is not None:
        headers["Authorization"] = basic_authorization(source.basic_auth, available, secrets)
    url = url or source.url
    origin: tuple[str, str, int] | None = None
    for redirects in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        if not host.isascii():
            try:
                host = host.encode("idna").decode("ascii")
            except UnicodeError:
                raise SourceError("host is not a valid name") from None
        try:
            port = parts.port or _default_port(scheme)
        except ValueError:
            raise SourceError("invalid port in URL") from None
        if origin is None:
            origin = (scheme, host, port)
        elif (scheme, host, port) != origin:
            headers = {}  # configured credentials never follow a redirect to another origin
        try:
            version, address = await resolve_checked(host, port, policy, resolver)
        except SourceError as exc:
            raise SourceError(name_the_host(str(exc), host)) from None
        literal = socket.inet_ntop(
            socket.AF_INET if version == 4 else socket.AF_INET6,
            address.to_bytes(4 if version == 4 else 16, "big"),
        )
        netloc = literal if version == 4 else f"[{literal}]"
        target = urllib.parse.urlunsplit(
            (scheme, f"{netloc}:{port}", parts.path or "/", parts.query, "")
        )
        host_header = host if ":" not in host else f"[{host}]"
        if port != _default_port(scheme):
            host_header = f"{host_header}:{port}"
        request_headers = {
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "gzip, deflate",
            **headers,
            "Host": host_header,
        }
        extensions = {}
        if scheme == "https" and literal_address(host) is None:
            # TLS must verify the name we resolved, not the pinned address.
            extensions["sni_hostname"] = host
        request = client.build_request(
            method,
            target,
            headers=request_headers,
            content=body,
            extensions=extensions,
            timeout=httpx.Timeout(source.timeout_seconds),
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise SourceError(f"{exc.__class__.__name__}: {_safe(str(exc), secrets)}") from None
        try:
            if response.status_code in (301, 302, 303, 307, 308):
                location = response.headers.get("location")
                if not location:
                    raise SourceError(f"HTTP {response.status_code} without Location")
                url = redirect_target(url, location)
                if response.status_code in (301, 302, 303) and method != "GET":
                    method, body = "GET", None  # what browsers and curl do
                continue
            if not 200 <= response.status_code < 300:
                raise SourceError(f"HTTP {response.status_code}")
            decoder = _BodyDecoder(
                response.headers.get("content-encoding", ""), source.max_bytes, budget,
                source.name,
            )
            try:
                async for chunk in response.aiter_raw():
                    decoder.feed(chunk)
            except httpx.HTTPError as exc:
                raise SourceError(f"{exc.__class__.__name__} while reading body") from None
            media_type = response.headers.get("content-type", "").split(";", 1)[0]
            return Fetched(
                decoder.finish(), response.status_code, redirects,
                media_type.strip().lower() or None,
                {name.lower(): value for name, value in response.headers.items()},
            )
        finally:
            await response.aclose()
    raise SourceError(f"more than {MAX_REDIRECTS} redirects")


def read_path(
    source: SourceConfig, source_dir: str | None, budget: ByteBudget | None = None
) -> Fetched:
    """Read a file source strictly below `source_dir` (the run's profile folder; symlinks
    are resolved before the check, so one pointing at another profile's files is refused)."""
    assert source.path is not None
    if not source_dir:
        raise SourceError("file sources need EDL_SOURCE_DIR to be set")
    base = os.path.realpath(source_dir)
    target = os.path.realpath(os.path.join(base, source.path))
    if os.path.commonpath([base, target]) != base or target == base:
        raise SourceError("path escapes the profile's source folder")
    try:
        with open(target, "rb") as handle:
            if not os.path.isfile(target):
                raise SourceError("path is not a regular file")
            # Never read more than the budget has left (+1 to see it is over).
            left = budget.remaining() if budget is not None else None
            cap = source.max_bytes if left is None else min(source.max_bytes, left)
            data = read_capped(handle, cap)
    except OSError as exc:
        raise SourceError(f"cannot read file: {exc.strerror or exc.__class__.__name__}") from None
    if len(data) > source.max_bytes:
        raise SourceError(f"source is larger than max_bytes ({source.max_bytes})")
    if budget is not None:
        budget.charge(len(data), source.name)
    return Fetched(maybe_gunzip(data, source.max_bytes, budget, source.name))


def _safe(text: str, secrets: set[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text[:300]


def make_client() -> httpx.AsyncClient:
    import httpx

    # trust_env=False: no proxy or netrc from the environment may redirect or decorate requests.
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(30.0),
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=0),
    )
