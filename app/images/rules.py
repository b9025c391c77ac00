"""The operator's image rules (the IMAGE_* settings), in one value the schemas and the fetcher share."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ImageRules:
    """max_bytes: decoded bytes of one image; max_pixels: width x height of one image; max_count: images per
    request; fetch_hosts: hosts whose http(s) URLs are fetched (empty: fetching off; `*.example.com` for its
    subdomains; `*` for any host with a public address); allow_private: fetch from non-public addresses too;
    fetch_timeout: seconds for connecting, for each read, and for the whole download of one image."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_count: int = 8
    fetch_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    fetch_timeout: float = 5.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ImageRules:
        return cls(max_bytes=config["IMAGE_MAX_BYTES"], max_pixels=config["IMAGE_MAX_PIXELS"],
                   max_count=config["IMAGE_MAX_COUNT"],
                   fetch_hosts=tuple(host.lower() for host in config["IMAGE_FETCH_HOSTS"]),
                   allow_private=config["IMAGE_FETCH_ALLOW_PRIVATE"], fetch_timeout=config["IMAGE_FETCH_TIMEOUT"])

    @property
    def fetching(self) -> bool:
        return bool(self.fetch_hosts)

    def host_allowed(self, host: str) -> bool:
        """Whether IMAGE_FETCH_HOSTS lets the gateway fetch from `host` (a lowercase hostname or IP literal)."""
        for allowed in self.fetch_hosts:
            if allowed == "*" or host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
                return True
        return False
