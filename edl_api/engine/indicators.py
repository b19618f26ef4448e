"""Classification and normalisation of raw tokens (CONFIG.md "Semantics").

Internally an indicator is a *kind* plus a *key* chosen for speed and exact set
arithmetic: IPv4/IPv6 hosts are ints, networks are `(network_int, prefixlen)`,
names and URLs are their normalised strings. `classify()` is the public,
string-in/string-out face used by config validation and tests.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Final, Literal

# Internal kinds. "cidr4"/"cidr6" both publish as type "cidr".
IPV4: Final = "ipv4"
IPV6: Final = "ipv6"
CIDR4: Final = "cidr4"
CIDR6: Final = "cidr6"
FQDN: Final = "fqdn"
URL: Final = "url"
KIND_TYPE: Final[dict[str, str]] = {
    IPV4: "ipv4",
    IPV6: "ipv6",
    CIDR4: "cidr",
    CIDR6: "cidr",
    FQDN: "fqdn",
    URL: "url",
}

MAX_TOKEN_CHARS: Final = 2048
BITS: Final[dict[int, int]] = {4: 32, 6: 128}

# (kind, key) pairs; key is int | tuple[int, int] | str depending on kind.
Key = int | tuple[int, int] | str
Parts = list[tuple[str, Key]]

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_pton = socket.inet_pton
_ntop = socket.inet_ntop
_from_bytes = int.from_bytes

# Labels of LDH characters (plus "_", common in real malware names), no hyphen at either
# end; the last label must look like a TLD so "1.2.3" or "1.2.3.4.5" never become names.
# Possessive quantifiers (3.11+) keep this linear and ~2x faster than a backtracking form;
# the 63-character label limit is checked separately.
_FQDN_RE = re.compile(r"(?:[a-z0-9_]++(?:-++[a-z0-9_]++)*+\.)++(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})")
# A token this matches whole that starts with a letter and is at most 63 characters long
# is an FQDN as it is: classify_parts gives [(FQDN, token)] (ingest's fast path).
PLAIN_NAME_RE = _FQDN_RE
PLAIN_NAME_MAX = 63
_TLD_RE = re.compile(r"[a-z]{2,63}|xn--[a-z0-9-]{1,59}")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ftp": 21}
_URL_SCHEMES: Final = frozenset(_DEFAULT_PORTS)

# Characters no entry may hold (`control_character`): C0 controls (TAB, CR, ESC, ...), DEL,
# C1 controls (NEL U+0085), the line/paragraph separators U+2028/U+2029 and every bidi
# control (ALM, LRM, RLM, U+202A-U+202E, U+2066-U+2069). A consumer splitting on Unicode
# line breaks would read `a.example/x<NEL>0.0.0.0/0` as a `0.0.0.0/0` line; a bidi
# override shows an entry as another. Renderers check published lines with the same set.
CONTROL_CHARACTERS: Final = (
    r"\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
)
_CONTROL_RE = re.compile(f"[{CONTROL_CHARACTERS}]")
# What trimming an entry removes: plain whitespace, never a line break other than the
# `\r\n` of a CRLF line (str.strip() would also eat U+0085/U+2028 at the ends).
TRIM: Final = " \t\r\n\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u202f\u205f\u3000"


def has_control(text: str) -> bool:
    """Whether `text` holds a control, Unicode line break or bidi control character."""
    # isprintable() is one C pass and true for nearly every entry; the regex decides the
    # rest (a non-printable character such as ZWJ or NBSP is not a control).
    return not text.isprintable() and _CONTROL_RE.search(text) is not None


# --------------------------------------------------------------------------- addresses


def ipv4_to_int(text: str) -> int | None:
    """Strict dotted quad (no leading zeros, no shorthand) to int."""
    try:
        return _from_bytes(_pton(_AF_INET, text), "big")
    except (OSError, ValueError):
        return None


def ipv6_to_int(text: str) -> int | None:
    try:
        return _from_bytes(_pton(_AF_INET6, text), "big")
    except (OSError, ValueError):
        return None


def int_to_ipv4(value: int) -> str:
    return _ntop(_AF_INET, value.to_bytes(4, "big"))


def int_to_ipv6(value: int) -> str:
    """Compressed lowercase form (RFC 5952, as inet_ntop prints it)."""
    return _ntop(_AF_INET6, value.to_bytes(16, "big"))


def int_to_ip(value: int, version: int) -> str:
    return int_to_ipv4(value) if version == 4 else int_to_ipv6(value)


def parse_ip(text: str) -> tuple[int, int] | None:
    """(version, int) of a strict IPv4 or IPv6 literal."""
    if ":" in text:
        value = ipv6_to_int(text)
        return None if value is None else (6, value)
    value = ipv4_to_int(text)
    return None if value is None else (4, value)


def ip_network(text: str) -> tuple[int, int, int] | None:
    """(version, network int, prefixlen) of `addr` or `addr/len` (host bits cleared), or None."""
    address, slash, length = text.partition("/")
    parsed = parse_ip(address)
    if parsed is None:
        return None
    version, value = parsed
    bits = BITS[version]
    if not slash:
        return version, value, bits
    if not (length.isascii() and length.isdigit()) or int(length) > bits:
        return None
    prefixlen = int(length)
    return version, value & ~((1 << (bits - prefixlen)) - 1), prefixlen


def cidr_ok(text: str) -> tuple[int, int, int] | None:
    """(version, first, last) of `addr` or `addr/len` (host bits ignored), or None."""
    network = ip_network(text)
    if network is None:
        return None
    version, number, prefixlen = network
    return version, *network_bounds(number, prefixlen, BITS[version])


def ip_kind(value: str) -> Literal["ipv4", "ipv6", "cidr"] | None:
    """The published type of an address or network ("ipv4", "ipv6" or "cidr"), else None.

    A full-length prefix ("192.0.2.1/32") is a host, as the engine publishes it."""
    network = ip_network(value)
    if network is None:
        return None
    version, _, prefixlen = network
    if prefixlen < BITS[version]:
        return "cidr"
    return IPV4 if version == 4 else IPV6


def network_text(version: int, number: int, prefixlen: int) -> str:
    """Published form of a network: a bare address when it is one host."""
    address = int_to_ip(number, version)
    return address if prefixlen == BITS[version] else f"{address}/{prefixlen}"


def sort_key(value: str) -> tuple[int, int, int, str]:
    """CONFIG.md plain order: IPs numerically (v4 before v6), then names."""
    network = ip_network(value)
    if network is None:
        return (9, 0, 0, value)
    version, number, prefixlen = network
    return (version, number, prefixlen, "")


def range_to_prefixes(
    start: int, end: int, bits: int, min_prefixlen: int = 0
) -> list[tuple[int, int]]:
    """Fewest (network, prefixlen) covering [start, end]; no prefix shorter than min_prefixlen."""
    out: list[tuple[int, int]] = []
    max_size_bits = bits - min_prefixlen
    while start <= end:
        # Largest aligned block at start: lowest set bit (a zero start aligns to anything).
        size_bits = (start & -start).bit_length() - 1 if start else bits
        span_bits = (end - start + 1).bit_length() - 1
        size_bits = min(size_bits, span_bits, max_size_bits)
        out.append((start, bits - size_bits))
        start += 1 << size_bits
    return out


def network_bounds(network: int, prefixlen: int, bits: int) -> tuple[int, int]:
    return network, network | ((1 << (bits - prefixlen)) - 1)


# --------------------------------------------------------------------------- names


def normalise_fqdn(text: str, allow_wildcard: bool = True) -> str | None:
    """Lowercase, IDNA-encoded name with optional leading `*.`; None if not a name."""
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    prefix = ""
    if name.startswith("*."):
        if not allow_wildcard:
            return None
        prefix, name = "*.", name[2:]
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except (UnicodeError, ValueError):
            return None
        # The codec may still have accepted non-LDH characters; the regex decides.
    if len(name) > 253 or not _FQDN_RE.fullmatch(name):
        # "*.com" is a (dangerous) wildcard name: classify it so the public suffix rule
        # drops it and counts it.
        if not (prefix and _TLD_RE.fullmatch(name)):
            return None
    if len(name) > 63 and max(len(label) for label in name.split(".")) > 63:
        return None
    return prefix + name


# --------------------------------------------------------------------------- URLs


def _url_host(host: str) -> tuple[str, Key, str] | None:
    """(kind, key, printable host) of a URL host, or None."""
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        value = ipv6_to_int(host[1:-1])
        if value is None:
            return None
        return IPV6, value, f"[{int_to_ipv6(value)}]"
    if host[:1].isdigit():
        value4 = ipv4_to_int(host)
        if value4 is not None:
            return IPV4, value4, host
    # A whole leading `*.` label is a valid host pattern ("*.evil.example/a.php", as PAN-OS
    # and MineMeld take it); the rules drop one of a public suffix ("*.co.uk/a.php").
    name = normalise_fqdn(host)
    if name is None:
        return None
    return FQDN, name, name


def normalise_url(text: str) -> str | None:
    """`host[:port]/path?query` (scheme, userinfo, fragment and default port dropped)."""
    parsed = split_url(text)
    return None if parsed is None else parsed[0]


_URL_RE = re.compile(
    r"(?:([A-Za-z][A-Za-z0-9+.-]*+)://)?"  # scheme
    r"(?:[^/?#@\x00-\x20\x7f]*+@)?"  # userinfo (dropped)
    r"(\[[0-9A-Fa-f:.]++\]|[^:/?#\[\]@\x00-\x20\x7f\"<>\\^`{|}]++)"  # host
    r"(?::([0-9]{1,5}+))?"  # port
    r"([/?][^#\x00-\x20\x7f\"<>\\^`{|}]*+)?"  # path and query
    r"(?:#[^\x00-\x20\x7f]*+)?"  # fragment (dropped)
)


# The common shape of a URL in feeds: lowercase http(s), a plain name host, an optional
# port and a path (no userinfo, no query-only tail, no fragment). `plain_url` turns it
# into what split_url gives without the general parse; anything else takes split_url.
_PLAIN_URL_RE = re.compile(
    rf"(https?)://({_FQDN_RE.pattern})"  # the host: a name as normalise_fqdn accepts it
    r"(?::([0-9]{1,5}))?"
    r"(/[^#\x00-\x20\x7f\"<>\\^`{|}]*+)"
)


def plain_url(token: str) -> tuple[str, str] | None:
    """(normalised url, host name) of a URL of the common shape, exactly as
    `classify_parts` and `split_url` give them; None means "ask them" (not "invalid")."""
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():  # too long, or maybe controls
        return None
    match = _PLAIN_URL_RE.fullmatch(token)
    if match is None:
        return None
    scheme, host, port, path = match.groups()
    if len(host) > PLAIN_NAME_MAX:  # a label may be too long: normalise_fqdn decides
        return None
    if port is None:
        return host + path, host
    number = int(port)
    if number == _DEFAULT_PORTS[scheme]:
        return host + path, host
    if not 0 < number < 65536 or number == _DEFAULT_PORTS["http"]:
        return None  # invalid, or https on port 80 (no faithful form): split_url says so
    return f"{host}:{number}{path}", host


def split_url(text: str) -> tuple[str, str, Key] | None:
    """(normalised url, host kind, host key) or None when `text` is not a usable URL."""
    if len(text) > MAX_TOKEN_CHARS:
        return None
    match = _URL_RE.fullmatch(text)
    if match is None:
        return None
    scheme, host, port, tail = match.groups()
    scheme = scheme.lower() if scheme else "http"
    if scheme not in _URL_SCHEMES:
        return None
    if port is not None:
        number = int(port)
        if not 0 < number < 65536:
            return None
        if number == _DEFAULT_PORTS["http"] and scheme != "http":
            # The normalised form has no scheme and reads as http, whose default port
            # 80 it drops: `https://h:80/` has no faithful form (counted as bad_url).
            return None
        port = "" if number == _DEFAULT_PORTS[scheme] else f":{number}"
    else:
        port = ""
    parsed_host = _url_host(host)
    if parsed_host is None:
        return None
    kind, key, printable = parsed_host
    if not tail:
        tail = "/"
    elif tail[0] == "?":
        tail = "/" + tail
    value = printable + port + tail
    if len(value) > MAX_TOKEN_CHARS:
        return None
    return value, kind, key


def url_host(value: str) -> tuple[str, Key] | None:
    """(kind, key) of the host of an already-normalised URL value."""
    parsed = split_url(value)
    return None if parsed is None else (parsed[1], parsed[2])


# --------------------------------------------------------------------------- classify


def _network(parsed: tuple[int, int], length: str) -> tuple[str, Key] | str:
    """(version, address) + prefix length text -> (kind, key) with host bits cleared."""
    if not length.isdigit() or not length.isascii() or len(length) > 3:
        return "bad_cidr"
    version, value = parsed
    bits = BITS[version]
    prefixlen = int(length)
    if prefixlen > bits:
        return "bad_cidr"
    if prefixlen == bits:
        return (IPV4, value) if version == 4 else (IPV6, value)
    network = value & ~((1 << (bits - prefixlen)) - 1)
    return (CIDR4 if version == 4 else CIDR6), (network, prefixlen)


def _ip_range(left: str, right: str) -> Parts | str:
    first, last = parse_ip(left.strip()), parse_ip(right.strip())
    if first is None or last is None or first[0] != last[0]:
        return "bad_range"
    version = first[0]
    if first[1] > last[1]:
        return "bad_range"
    bits = BITS[version]
    parts: Parts = []
    for network, prefixlen in range_to_prefixes(first[1], last[1], bits):
        if prefixlen == bits:
            parts.append((IPV4 if version == 4 else IPV6, network))
        else:
            parts.append((CIDR4 if version == 4 else CIDR6, (network, prefixlen)))
    return parts


def classify_parts(token: str, not_ipv4: bool = False) -> Parts | str:
    """Classify one trimmed token into (kind, key) parts, or return the invalid reason.

    `not_ipv4`: the caller already tried the dotted-quad fast path.
    """
    if not token:
        return "empty"
    if len(token) > MAX_TOKEN_CHARS:
        return "too_long"
    if not token.isprintable() and _CONTROL_RE.search(token) is not None:  # has_control()
        return "control_character"
    if not not_ipv4:
        value4 = ipv4_to_int(token)
        if value4 is not None:
            return [(IPV4, value4)]
    if "://" in token:
        url = split_url(token)
        return "bad_url" if url is None else [(URL, url[0])]
    if "/" in token:
        head, _, tail = token.partition("/")
        if tail.isdigit() and (head[:1].isdigit() or ":" in head):
            parsed = parse_ip(head)
            if parsed is not None:
                network = _network(parsed, tail)
                return network if isinstance(network, str) else [network]
        url = split_url(token)
        return "bad_url" if url is None else [(URL, url[0])]
    if token.startswith("["):
        close = token.find("]")
        rest = token[close + 1 :] if close != -1 else ""
        if close == -1 or (rest and not (rest[0] == ":" and _PORT_RE.fullmatch(rest[1:]))):
            return "bad_ipv6"
        value6 = ipv6_to_int(token[1:close])
        return "bad_ipv6" if value6 is None else [(IPV6, value6)]
    if "-" in token and token.count("-") == 1:
        left, _, right = token.partition("-")
        left = left.strip()
        # Most hyphens are in names; only try a range when the left side can be an address.
        if (left[:1].isdigit() or ":" in left) and parse_ip(left) is not None:
            return _ip_range(left, right)
    colons = token.count(":")
    if colons >= 2:
        value6 = ipv6_to_int(token)
        if value6 is None:
            value6 = ipv6_to_int(token.lower())
        return "bad_ipv6" if value6 is None else [(IPV6, value6)]
    if colons == 1:
        host, _, port = token.partition(":")
        if not _PORT_RE.fullmatch(port) or not 0 < int(port) < 65536:
            return "bad_port"
        value4 = ipv4_to_int(host)
        if value4 is not None:
            return [(IPV4, value4)]
        name = normalise_fqdn(host, allow_wildcard=False)
        return "bad_domain" if name is None else [(FQDN, name)]
    if token.replace(".", "").isdigit():
        return "bad_ipv4"
    name = normalise_fqdn(token)
    if name is None:
        return "bad_domain" if "." in token else "unrecognised"
    return [(FQDN, name)]


def key_to_text(kind: str, key: Key) -> str:
    """Printable (published) form of an internal (kind, key)."""
    if kind == IPV4:
        assert isinstance(key, int)
        return int_to_ipv4(key)
    if kind == IPV6:
        assert isinstance(key, int)
        return int_to_ipv6(key)
    if kind in (CIDR4, CIDR6):
        assert isinstance(key, tuple)
        network, prefixlen = key
        return f"{int_to_ip(network, 4 if kind == CIDR4 else 6)}/{prefixlen}"
    assert isinstance(key, str)
    return key


@dataclass(frozen=True, slots=True)
class Indicator:
    indicator_type: str  # ipv4 | ipv6 | cidr | fqdn | url
    value: str


@dataclass(frozen=True, slots=True)
class Classified:
    indicators: tuple[Indicator, ...]  # empty when invalid; a range may give several
    reason: str | None = None

    @property
    def indicator_type(self) -> str | None:
        return self.indicators[0].indicator_type if self.indicators else None

    @property
    def value(self) -> str | None:
        return self.indicators[0].value if self.indicators else None


def classify(token: str) -> Classified:
    """Classify and normalise one token (see CONFIG.md)."""
    parts = classify_parts(token.strip(TRIM))
    if isinstance(parts, str):
        return Classified((), parts)
    return Classified(tuple(Indicator(KIND_TYPE[k], key_to_text(k, key)) for k, key in parts))
