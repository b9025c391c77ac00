"""Fetching an http(s) image URL without letting a client reach what it should not (FastChat #3873: its loader
fetched any URL or local path). Only when the operator allows the host (IMAGE_FETCH_HOSTS); the name is resolved
once and refused unless every address is public (IMAGE_FETCH_ALLOW_PRIVATE lifts that); the connection goes to
that very address (a second lookup could answer differently: DNS rebinding) with the URL's own Host header and TLS
name; no redirects; Content-Type must be an image type; the body is read as a stream up to a byte cap within a
short deadline; then the bytes are checked like a data: URL's.

requests (with a Session of its own, so no proxy or .netrc from the environment applies) does the HTTP; a small
adapter gives urllib3 the TLS server name and certificate name for a connection made to an IP address.
"""
from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

import requests
from requests.adapters import HTTPAdapter

from app.images.check import checked_image
from app.images.parts import IMAGE_TOO_LARGE, INVALID_IMAGE_URL, MEDIA_TYPES, Image, ImageError, ImageUrl
from app.images.rules import ImageRules

CHUNK_BYTES = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}

Resolver = Callable[..., list]


class ImageFetcher:
    """Downloads the ImageUrl parts the rules allow; safe to share between threads (each fetch has its own
    Session). `resolve` is socket.getaddrinfo, replaceable in tests."""

    def __init__(self, rules: ImageRules, resolve: Resolver | None = None):
        self.rules = rules
        self._resolve = resolve

    def fetch(self, part: ImageUrl, max_bytes: int) -> Image:
        """The image at part.url, at most `max_bytes` long, checked. Raises ImageError saying what went wrong
        (a host that cannot be reached is the URL's problem: the client gets a 400 naming the part)."""
        url = urlsplit(part.url)
        scheme, host = url.scheme.lower(), url.hostname.lower()
        address = self._public_address(host, url.port or _DEFAULT_PORTS[scheme])
        headers = {"Host": url.netloc, "Accept": ", ".join(MEDIA_TYPES), "Accept-Encoding": "identity",
                   "User-Agent": "fastchat-gateway"}
        deadline = time.monotonic() + self.rules.fetch_timeout
        with requests.Session() as session:
            session.trust_env = False
            session.mount(f"{scheme}://", PinnedNameAdapter(host))
            try:
                with session.get(pinned_url(url, address), headers=headers, stream=True, allow_redirects=False,
                                 timeout=(self.rules.fetch_timeout, self.rules.fetch_timeout)) as response:
                    media_type = _image_type(response, host)
                    data = _read_capped(response, max_bytes, deadline, host)
            except requests.Timeout:
                raise _error(f"The image at {host} did not arrive within {self.rules.fetch_timeout:g} s.") from None
            except requests.RequestException:
                raise _error(f"The image at {host} could not be fetched (connection failed).") from None
        return checked_image(data, media_type, self.rules, part.param)

    def _public_address(self, host: str, port: int) -> str:
        """The one address the fetch connects to. Raises ImageError when the name does not resolve or any of its
        addresses is not public (one public answer among private ones is still refused)."""
        try:
            infos = (self._resolve or socket.getaddrinfo)(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise _error(f"The image host {host} could not be resolved.") from None
        addresses = [info[4][0] for info in infos]
        if not addresses:
            raise _error(f"The image host {host} could not be resolved.")
        if not self.rules.allow_private and not all(is_public(address) for address in addresses):
            raise _error(f"The image host {host} resolves to an address that is not public; images are only "
                         f"fetched from public addresses.")
        return addresses[0]


def is_public(address: str) -> bool:
    """A globally routable unicast address: not loopback, private, link-local, shared, reserved or multicast
    (an IPv4-mapped IPv6 address is judged by its IPv4 address)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def pinned_url(url: SplitResult, address: str) -> str:
    """The URL with its host replaced by the resolved address (port, path and query kept, fragment dropped)."""
    host = f"[{address}]" if ":" in address else address
    port = url.port or _DEFAULT_PORTS[url.scheme.lower()]
    return f"{url.scheme.lower()}://{host}:{port}{url.path or '/'}" + (f"?{url.query}" if url.query else "")


class PinnedNameAdapter(HTTPAdapter):
    """Connects where the URL says (an IP address) but sends SNI for, and verifies the certificate against, the
    name the client gave."""

    def __init__(self, hostname: str):
        super().__init__(max_retries=0)
        self.hostname = hostname

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = self.hostname
            pool_kwargs["assert_hostname"] = self.hostname
        return host_params, pool_kwargs


def _image_type(response: requests.Response, host: str) -> str:
    if 300 <= response.status_code < 400:
        raise _error(f"The image URL at {host} answered with a redirect (HTTP {response.status_code}); redirects "
                     f"are not followed: give the image's own URL.")
    if response.status_code != 200:
        raise _error(f"The image URL at {host} answered HTTP {response.status_code}.")
    media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if media_type not in MEDIA_TYPES:
        raise _error(f"The image URL at {host} sent Content-Type {media_type or 'none'!r}, not one of "
                     f"{', '.join(MEDIA_TYPES)}.")
    if response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        # A compressed body could expand past any cap in one read.
        raise _error(f"The image URL at {host} sent a compressed body; only identity encoding is accepted.")
    return media_type


def _read_capped(response: requests.Response, max_bytes: int, deadline: float, host: str) -> bytes:
    """The body, refused as soon as it passes max_bytes (announced or read) or the deadline passes."""
    too_large = ImageError(f"The image at {host} is larger than the {max_bytes} bytes allowed.", IMAGE_TOO_LARGE)
    announced = response.headers.get("Content-Length", "")
    if announced.isdigit() and int(announced) > max_bytes:
        raise too_large
    body = bytearray()
    for chunk in response.iter_content(CHUNK_BYTES):
        body += chunk
        if len(body) > max_bytes:
            raise too_large
        if time.monotonic() > deadline:
            raise requests.Timeout()
    return bytes(body)


def _error(message: str) -> ImageError:
    return ImageError(message, INVALID_IMAGE_URL)
