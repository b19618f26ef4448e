"""One POST to a webhook behind the same SSRF guard as source fetches (`engine.sources`).

The host is resolved once; every address must be global unless the global
`EDL_SSRF_ALLOW_CIDRS`/`EDL_SSRF_ALLOW_HOSTS` or the profile's own grants allow it; the
connection goes to the checked address (TLS still verifies the name). Redirects are not
followed: a webhook that answers 3xx is a failed attempt.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx

from edl_api import __version__
from edl_api.engine.sources import (
    SSRF_GRANT_HINT,
    Resolver,
    SourceError,
    SsrfPolicy,
    literal_address,
    name_the_host,
    resolve_checked,
)

USER_AGENT = f"edl-api/{__version__} (webhook)"


class SendError(Exception):
    """The attempt failed before an HTTP status came back; the text is safe to store."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str


def policy_for(
    cidrs: Iterable[str], hosts: Iterable[str], profile_cidrs: Iterable[str],
    profile_hosts: Iterable[str],
) -> SsrfPolicy:
    """The global grants ∪ the profile's (as `runs.reach` gives a run)."""
    return SsrfPolicy.build(
        dict.fromkeys([*cidrs, *profile_cidrs]), dict.fromkeys([*hosts, *profile_hosts])
    )


def parse_target(url: str) -> Target:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise SendError("the URL must be http or https")
    host = parts.hostname or ""
    if not host:
        raise SendError("the URL names no host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise SendError("the host is not a valid name") from None
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise SendError("invalid port in URL") from None
    path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    return Target(scheme, host, port, path)


def literal_refusal(url: str, policy: SsrfPolicy) -> str | None:
    """Why a URL whose host is an IP literal may never be reached (None: allowed, or a
    name, which is judged when a delivery resolves it)."""
    try:
        target = parse_target(url)
        literal = literal_address(target.host)
    except (SendError, SourceError) as exc:
        return str(exc)
    if literal is None or target.host.lower().rstrip(".") in policy.allow_hosts:
        return None
    reason = policy.refusal(*literal)
    return None if reason is None else f"refused: {target.host} is a {reason}; {SSRF_GRANT_HINT}"


async def post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: Mapping[str, str],
    policy: SsrfPolicy, timeout: float, resolver: Resolver | None = None,
) -> int:
    """POST `body`; the HTTP status (any), or SendError when none came back."""
    target = parse_target(url)
    try:
        version, address = await resolve_checked(target.host, target.port, policy, resolver)
    except SourceError as exc:  # the sources' wording: the host and what to do
        raise SendError(name_the_host(str(exc), target.host)) from None
    literal = socket.inet_ntop(
        socket.AF_INET if version == 4 else socket.AF_INET6,
        address.to_bytes(4 if version == 4 else 16, "big"),
    )
    netloc = literal if version == 4 else f"[{literal}]"
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    if target.port != default_port:
        host_header = f"{host_header}:{target.port}"
    extensions = {}
    if target.scheme == "https" and literal_address(target.host) is None:
        extensions["sni_hostname"] = target.host  # verify the name, not the pinned address
    request = client.build_request(
        "POST", f"{target.scheme}://{netloc}:{target.port}{target.path}", content=body,
        headers={"User-Agent": USER_AGENT, "Content-Type": "application/json",
                 **headers, "Host": host_header},
        extensions=extensions, timeout=httpx.Timeout(timeout),
    )
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise SendError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    await response.aclose()  # the answer's body is not needed
    return response.status_code


def make_client() -> httpx.AsyncClient:
    # trust_env=False: no proxy or netrc from the environment; no redirects followed.
    return httpx.AsyncClient(
        trust_env=False, follow_redirects=False,
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=0),
    )
