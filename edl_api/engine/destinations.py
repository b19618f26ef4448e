"""Private destinations in a config, found offline for `edl-api check-config` (no DNS):
a run would refuse them unless EDL_SSRF_ALLOW_* or the profile's grant allows them."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

from edl_api.engine.config import PipelineConfig
from edl_api.engine.sources import SSRF_GRANT_HINT, SourceError, SsrfPolicy, literal_address

# Names that only a local resolver answers (RFC 6761 localhost, RFC 6762 .local, RFC 8375
# home.arpa, ICANN's reserved .internal) and common private suffixes.
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa", ".lan", ".corp")


def private_destinations(
    config: PipelineConfig, allow_cidrs: Iterable[str] = (), allow_hosts: Iterable[str] = ()
) -> list[str]:
    """Offline (no DNS): the sources whose URL is a non-global address or a local name, not
    allowed by `allow_*` (EDL_SSRF_ALLOW_*). A run refuses those without a grant; a name
    that resolves to a private address is only found then."""
    policy = SsrfPolicy.build(allow_cidrs, allow_hosts)
    out = []
    for source in config.sources:
        if source.url is None:
            continue
        host = (urllib.parse.urlsplit(source.url).hostname or "").lower().rstrip(".")
        if not host or host in policy.allow_hosts:
            continue
        try:
            literal = literal_address(host)
        except SourceError:
            continue  # the run reports the bad host itself
        if literal is not None:
            reason = policy.refusal(*literal)
        elif host == "localhost" or "." not in host or host.endswith(_LOCAL_SUFFIXES):
            reason = "local name"
        else:
            reason = None
        if reason is not None:
            out.append(
                f"source {source.name}: {host} is a {reason}; runs refuse it unless allowed "
                f"({SSRF_GRANT_HINT})"
            )
    return out
