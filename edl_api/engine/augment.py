"""Augment (CONFIG.md `augment:`): derived indicators and tag rules.

Derived indicators inherit the source mask of what they came from, so provenance
(sources, confidence) carries over and every rule still applies to them.
"""

from __future__ import annotations

from collections import Counter

from edl_api.engine.config import AugmentConfig
from edl_api.engine.rules import url_host_of
from edl_api.engine.store import IndicatorStore


def augment(store: IndicatorStore, config: AugmentConfig) -> Counter[str]:
    """Add URL hosts and wildcard parents to the store; returns how many were new per type.

    Whatever this adds still meets every rule (public suffixes, allowlist) afterwards."""
    added: Counter[str] = Counter()
    if config.wildcard_parent:
        # "*.evil.example/a.php" also yields "evil.example/a.php" (before url_hosts, so the
        # parent URL's host is derived as well).
        parents = [(url[2:], mask) for url, mask in store.url.items() if url.startswith("*.")]
        for parent, mask in parents:
            if parent not in store.url:
                added["url"] += 1
            store.url[parent] = store.url.get(parent, 0) | mask
    if config.url_hosts:
        hosts = store.url_hosts
        for url, mask in store.url.items():
            host = hosts.get(url)
            if host is None:
                host = hosts[url] = url_host_of(url)
            if isinstance(host, tuple):
                version, value = host
                mapping = store.ipv4 if version == 4 else store.ipv6
                kind_type = "ipv4" if version == 4 else "ipv6"
                if value not in mapping:
                    added[kind_type] += 1
                mapping[value] = mapping.get(value, 0) | mask
            else:
                if host not in store.fqdn:
                    added["fqdn"] += 1
                store.fqdn[host] = store.fqdn.get(host, 0) | mask
    if config.wildcard_parent:
        parents = [(name[2:], mask) for name, mask in store.fqdn.items() if name.startswith("*.")]
        for parent, mask in parents:
            if parent not in store.fqdn:
                added["fqdn"] += 1
            store.fqdn[parent] = store.fqdn.get(parent, 0) | mask
    return added
