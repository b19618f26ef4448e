"""Augment (CONFIG.md `augment:`): derived indicators and tag rules.

Derived indicators inherit the source mask of what they came from, so provenance
(sources, confidence) carries over and every rule still applies to them.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

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
        ipv4 = store.hosts4.sink()  # written in order; which were new is counted below
        fresh4: set[int] = set()
        for url, mask in store.url.items():
            host = hosts.get(url)
            if host is None:
                host = hosts[url] = url_host_of(url)
            if isinstance(host, tuple):
                version, value = host
                if version == 4:
                    if value not in ipv4:
                        fresh4.add(value)
                    ipv4[value] = ipv4.get(value, 0) | mask
                    continue
                if value not in store.ipv6:
                    added["ipv6"] += 1
                store.ipv6[value] = store.ipv6.get(value, 0) | mask
            else:
                if host not in store.fqdn:
                    added["fqdn"] += 1
                store.fqdn[host] = store.fqdn.get(host, 0) | mask
        if fresh4:
            # New to the sink; those the other parts (the bulk arrays) hold are not new.
            values = np.fromiter(fresh4, dtype=np.int64, count=len(fresh4))
            added["ipv4"] += len(values) - int(np.count_nonzero(store.hosts4.known(values, ipv4)))
    if config.wildcard_parent:
        parents = [(name[2:], mask) for name, mask in store.fqdn.items() if name.startswith("*.")]
        for parent, mask in parents:
            if parent not in store.fqdn:
                added["fqdn"] += 1
            store.fqdn[parent] = store.fqdn.get(parent, 0) | mask
    return added
