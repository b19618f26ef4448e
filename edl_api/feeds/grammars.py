"""What each firewall's list loader accepts: one `VendorGrammar` per vendor format, as data.

Every field cites the vendor document it comes from (title, version, address). Where a
document says nothing, the field takes the conservative value — the line is dropped and
counted, never published in a form the device might read more widely — and says so.
`check()` is the one function the renderers ask: `None` (publish) or the drop reason.

Entries arrive normalised by the engine: no scheme, lowercase host, `*.` only as a whole
leading host label, so these rules only have to refuse what a vendor cannot load.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

# Why a renderer left an entry out (run detail and the sample show these words).
DropReason = Literal[
    "port", "wildcard_token", "too_long", "type_not_supported", "invalid_char", "whole_internet",
]
DROP_REASONS: tuple[DropReason, ...] = (
    "port", "wildcard_token", "too_long", "type_not_supported", "invalid_char", "whole_internet",
)


class Wildcards(StrEnum):
    """Where a `*` may stand in a URL or domain entry."""

    TOKEN = "token"  # PAN-OS: `*` / `^` only as a whole token between `. / ? & = ; +`
    LABEL = "label"  # Cisco: `*` only as a whole domain label of the host, never in the path
    ENDS = "ends"  # FortiGate: `*` only at the start or the end of the entry
    NONE = "none"  # Check Point: no wildcard syntax documented


@dataclass(frozen=True)
class VendorGrammar:
    fmt: str
    vendor: str
    # Indicator types (engine names) the list format can carry.
    types: frozenset[str]
    max_url_chars: int
    max_domain_chars: int
    url_ports: bool  # may a URL line carry ":port"
    url_ipv6_host: bool  # may a URL's host be an IPv6 literal
    url_wildcards: Wildcards
    domain_wildcards: Wildcards
    zero_prefix: bool  # may a network be /0 (the whole address family)


# PAN-OS: "Formatting Guidelines for an External Dynamic List" (PAN-OS 10.1 / 10.2 and Network
# Security docs), https://docs.paloaltonetworks.com/pan-os/10-1/pan-os-admin/policy/
# use-an-external-dynamic-list-in-policy/formatting-guidelines-for-an-external-dynamic-list
# (/domain-list, /url-list, /ip-address-list).
PANOS = VendorGrammar(
    fmt="panos", vendor="Palo Alto Networks PAN-OS",
    # IP Address List: "individual IP addresses, subnet addresses (address/mask), or range of
    # IP addresses" incl. IPv6 (the page's example list has 2001:db8:123:1::/64).
    types=frozenset({"ipv4", "ipv6", "cidr", "fqdn", "url"}),
    # Domain List: "Each domain entry can be up to 255 characters in length." The URL List
    # page states the same limit for URL entries (not re-read here: the stored copy of the
    # URL List page was not found; the domain page's rule is applied to both).
    max_url_chars=255, max_domain_chars=255,
    # "Do not prefix the domain name with the protocol"; URL entries carry no port (the URL
    # List page; a ported URL is refused at import). Unverified in a stored copy: dropped.
    url_ports=False,
    url_ipv6_host=False,  # not documented for URL lists: dropped and counted
    # "The following characters are considered token separators: . / ? & = ; + ... Wildcard
    # characters must be the only character within a token" (asterisk and caret).
    url_wildcards=Wildcards.TOKEN, domain_wildcards=Wildcards.TOKEN,
    zero_prefix=True,  # address/mask with any mask; /0 is never produced by the engine
)

# FortiGate: "Threat feeds" / "External feeds", FortiOS 7.0.1-7.6.2 Administration Guide,
# https://docs.fortinet.com/document/fortigate/7.0.11/administration-guide/9463 — "IP Address:
# one IP/IP range/subnet per line" (IPv4 and IPv6 policies); "Domain Name: one domain per
# line. Simple wildcards are supported"; "FortiGuard Category: one URL per line", example
# `http://example.com:8080/url` (FortiGuard category threat feed, 7.2.10 guide, .../995517).
FORTINET = VendorGrammar(
    fmt="fortinet", vendor="Fortinet FortiGate",
    types=frozenset({"ipv4", "ipv6", "cidr", "fqdn", "url"}),
    # Line length limit 4K characters (Fortinet Community, "Technical Tip: How to use an
    # external resource on a remote HTTP server", article 225335); 2048 kept for URLs as
    # before (stricter). Domains: `wildcard-fqdn` max length 255 (FortiOS 6.4.4 CLI
    # Reference, config firewall wildcard-fqdn custom, .../fortigate/6.4.4/cli-reference/255620).
    max_url_chars=2048, max_domain_chars=255,
    url_ports=True,  # the guide's own example list has ":8080"
    # "IPv6 URLs must be in [ ] format" (FortiMail 7.4 Administration Guide, "Types and file
    # formats of threat feeds", same Fortinet feed format); our hosts are bracketed.
    url_ipv6_host=True,
    # "Wildcards (*) at the start or end are supported" (same FortiMail page; not found in
    # a stored FortiGate page: a `*` elsewhere is dropped and counted).
    url_wildcards=Wildcards.ENDS, domain_wildcards=Wildcards.ENDS,
    zero_prefix=True,
)

# Check Point: "Supported Indicator Files", R81.10 Threat Prevention Administration Guide,
# https://sc1.checkpoint.com/documents/R81.10/WebAdminGuides/EN/CP_R81.10_ThreatPrevention_
# AdminGuide/Topics-TPG/Supported-Indicator-Files.htm — observable types: "IP: Standard IPv4
# address", "IP Range: A range of valid IPv4 addresses, separated by a hyphen", "Domain: Any
# URL domain", "URL: Any valid URL". Record syntax: sk132193 "What is the Custom
# Intelligence Feeds feature?" (header `# UNIQ-NAME,VALUE,TYPE,...`, "Quoted fields are
# accepted").
CHECKPOINT = VendorGrammar(
    fmt="checkpoint", vendor="Check Point (Custom Intelligence Feeds, CSV)",
    # No IPv6 observable type is documented: IPv6 hosts and networks are dropped, counted.
    types=frozenset({"ipv4", "cidr", "fqdn", "url"}),
    max_url_chars=2048, max_domain_chars=253,  # no limit documented: URL and DNS practice
    url_ports=True,  # "Any valid URL": a port is part of a valid URL
    url_ipv6_host=False,  # the IP types are IPv4 only; not risked in a URL either
    # No wildcard syntax is documented: `*.x` would be a literal (or a wider) match.
    url_wildcards=Wildcards.NONE, domain_wildcards=Wildcards.NONE,
    zero_prefix=True,
)

# Cisco Secure Firewall Management Center, Security Intelligence lists and feeds
# (cdFMC / FMC 7.x configuration guide): "Custom Lists and Feeds: Requirements",
# https://docs.defenseorchestrator.com/cdfmc/r_custom-list-and-feed-requirements_2.html —
# "one entry or comment per line", "comment lines ... must start with the pound (#)
# character", "In a DNS list entry, you can specify an asterisk (*) wildcard character for a
# domain label", file ≤ 500 MB; "For feed update intervals of 30 minutes or less, you must
# specify an MD5 URL ... the checksum must be stored in a simple text file with only the
# checksum. Comments are not supported." URL syntax: "URL Lists and Feeds: URL Syntax and
# Matching Criteria", .../cdfmc/r_url-lists-and-feeds--url-syntax-and-matching-criteria.html
# — "An asterisk can represent a complete domain string separated by dots, but not a partial
# domain string, and not any part of the URL following the first slash"; URL lists take
# "IP addresses (IPv4)". Network lists: "Custom Security Intelligence Lists" — netmasks
# "0 to 32 or 0 to 128", "You cannot add address blocks ... using a /0 netmask".
CISCO = VendorGrammar(
    fmt="cisco", vendor="Cisco Secure Firewall (FMC Security Intelligence)",
    types=frozenset({"ipv4", "ipv6", "cidr", "fqdn", "url"}),
    # No per-entry limit documented (only the 500 MB file): DNS name and common URL limits.
    max_url_chars=2048, max_domain_chars=253,
    url_ports=False,  # ports are not mentioned in the URL syntax: dropped (or ?ports=strip)
    url_ipv6_host=False,  # "IP addresses (IPv4)" in URL lists
    url_wildcards=Wildcards.LABEL, domain_wildcards=Wildcards.LABEL,
    zero_prefix=False,
)

GRAMMARS: dict[str, VendorGrammar] = {g.fmt: g for g in (PANOS, FORTINET, CHECKPOINT, CISCO)}

# PAN-OS token separators, exactly as documented (`. / ? & = ; +`, see PANOS above).
_PANOS_SPLIT = re.compile(r"[./?&=;+]")
# Control characters and whitespace never belong in a list line (PAN-OS reads a space as
# the start of a comment in IP lists; every vendor reads one entry per line).
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f]")


def url_parts(value: str) -> tuple[str, str | None, str]:
    """(host, port or None, rest from the first / or ?) of a normalised URL value."""
    cut = len(value)
    for ch in "/?":
        pos = value.find(ch)
        if pos != -1 and pos < cut:
            cut = pos
    authority, rest = value[:cut], value[cut:]
    if authority.startswith("["):
        close = authority.find("]")
        host, after = authority[: close + 1], authority[close + 1 :]
        return host, after[1:] if after.startswith(":") else None, rest
    host, colon, port = authority.partition(":")
    return host, port if colon else None, rest


def strip_port(value: str) -> str:
    """The URL without its ":port" (`?ports=strip`: block the host/path on every port)."""
    host, port, rest = url_parts(value)
    return value if port is None else host + rest


def panos_tokens_ok(value: str) -> bool:
    """`*` and `^` only as whole tokens between PAN-OS's separators."""
    if "*" not in value and "^" not in value:
        return True
    return all(
        tok in ("*", "^") or ("*" not in tok and "^" not in tok)
        for tok in _PANOS_SPLIT.split(value)
    )


def _label_wildcards_ok(host: str) -> bool:
    return all(label == "*" or "*" not in label for label in host.split("."))


def _wildcards_ok(rule: Wildcards, value: str, host: str, rest: str) -> bool:
    if "*" not in value and "^" not in value:
        return True
    if rule is Wildcards.TOKEN:
        return panos_tokens_ok(value)
    if "^" in value:
        return False  # only PAN-OS gives `^` a meaning
    if rule is Wildcards.LABEL:
        return "*" not in rest and _label_wildcards_ok(host)
    if rule is Wildcards.ENDS:
        return "*" not in value[1:-1]
    return False


# A value this short with none of these characters passes every rule below (the quick
# answer for nearly every line of a million-entry feed).
_SAFE_LENGTH = min(min(g.max_url_chars, g.max_domain_chars) for g in GRAMMARS.values())
_SUSPECT = re.compile(r"[*^:\[\x00-\x20\x7f-\x9f]|/0$")


def plainly_ok(value: str) -> bool:
    """True when no length, port, wildcard, IPv6 or character rule of any grammar can
    apply to `value` (only the grammar's types remain to be checked)."""
    return len(value) <= _SAFE_LENGTH and _SUSPECT.search(value) is None


# `_SUSPECT` over many lines joined by newlines (a newline is no suspect there).
_SUSPECT_CHARS = re.compile(r"[*^:\[\x00-\x09\x0b-\x20\x7f-\x9f]")  # a set: a fast scan
SUSPECT_SLICE = 20_000  # lines screened per join/search call (each one short C call)


def suspect_lines(lines: Sequence[str]) -> list[str]:
    """The lines `plainly_ok` does not pass, in order. A slice of lines with no suspect
    character and none too long is passed whole by one search over its joined text (a
    million-line IPv4 feed: ~50 ms instead of a Python call per line); the others line
    by line."""
    found: list[str] = []
    for start in range(0, len(lines), SUSPECT_SLICE):
        part = lines[start:start + SUSPECT_SLICE]
        text = "\n".join(part)
        if (max(map(len, part)) <= _SAFE_LENGTH and text.count("\n") == len(part) - 1
                and _SUSPECT_CHARS.search(text) is None
                and "/0\n" not in text and not text.endswith("/0")):
            continue  # (a line break inside a value would add to the count)
        found.extend(value for value in part if not plainly_ok(value))
    return found


def check(grammar: VendorGrammar, indicator_type: str, value: str) -> DropReason | None:
    """None if `grammar`'s device loads `value` as it is, else why it is left out."""
    if indicator_type not in grammar.types:
        return "type_not_supported"
    if plainly_ok(value):
        return None
    if _BAD_CHARS.search(value):
        return "invalid_char"
    if indicator_type == "url":
        if len(value) > grammar.max_url_chars:
            return "too_long"
        host, port, rest = url_parts(value)
        if port is not None and not grammar.url_ports:
            return "port"
        if host.startswith("[") and not grammar.url_ipv6_host:
            return "type_not_supported"
        if not _wildcards_ok(grammar.url_wildcards, value, host, rest):
            return "wildcard_token"
        return None
    if indicator_type == "fqdn":
        if len(value) > grammar.max_domain_chars:
            return "too_long"
        if not _wildcards_ok(grammar.domain_wildcards, value, value, ""):
            return "wildcard_token"
        return None
    if indicator_type == "cidr":
        if ":" in value and "ipv6" not in grammar.types:
            return "type_not_supported"  # an IPv6 network where only IPv4 is documented
        if not grammar.zero_prefix and value.endswith("/0"):
            return "whole_internet"
    return None
