"""Checking an image part: which kinds of URL are accepted, data: URLs decoded strictly, and image bytes verified
with Pillow to be what their media type says, within the size and pixel limits."""
from __future__ import annotations

import binascii
import io
import re
from base64 import b64decode
from urllib.parse import urlsplit

from PIL import Image as Pillow
from PIL import UnidentifiedImageError

from app.images.parts import (IMAGE_TOO_LARGE, INVALID_IMAGE_FORMAT, INVALID_IMAGE_URL, MEDIA_TYPES, UNSUPPORTED,
                              Image, ImageError, ImageUrl)
from app.images.rules import ImageRules

_DATA_URL = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),", re.I)
_TYPES = ", ".join(MEDIA_TYPES)


def load_part(url: str, rules: ImageRules, param: str = "") -> Image | ImageUrl:
    """An image_url part's URL as a checked Image (data: URLs) or an ImageUrl to fetch (http(s), when the rules
    allow its host). Raises ImageError for anything else: local paths, file: and other schemes are never read."""
    if url[:5].lower() == "data:":
        return decode_data_url(url, rules, param)
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ImageError("Images must be data:image/(png|jpeg|webp|gif);base64 URLs" +
                         (" or http(s) URLs" if rules.fetching else "") +
                         ": local paths, file: and other schemes are never read.", UNSUPPORTED)
    if not rules.fetching:
        raise ImageError("This gateway does not fetch image URLs: send the image inline as a "
                         "data:image/(png|jpeg|webp|gif);base64 URL.", UNSUPPORTED)
    if parts.username is not None or parts.password is not None:
        raise ImageError("Image URLs with credentials (user@host) are not fetched.", INVALID_IMAGE_URL)
    host = parts.hostname.lower()
    if not rules.host_allowed(host):
        raise ImageError(f"Images are not fetched from {host}: the gateway's IMAGE_FETCH_HOSTS does not list it.",
                         INVALID_IMAGE_URL)
    try:
        parts.port  # noqa: B018 - urlsplit raises ValueError here for a port that is not a number
    except ValueError:
        raise ImageError("The image URL has an invalid port.", INVALID_IMAGE_URL) from None
    return ImageUrl(url, param)


def decode_data_url(url: str, rules: ImageRules, param: str = "") -> Image:
    """A data:image/...;base64 URL's image, strictly decoded and verified. Raises ImageError."""
    match = _DATA_URL.match(url)
    media_type = match.group(1).lower() if match else ""
    if not match or match.group(2).lower() != ";base64" or media_type not in MEDIA_TYPES:
        raise ImageError(f"A data: image URL must be data:<type>;base64,<data> with type one of {_TYPES}.",
                         INVALID_IMAGE_FORMAT)
    encoded = url[match.end():]
    # Refused before decoding: base64 is 4 characters per 3 bytes.
    if len(encoded) // 4 * 3 > rules.max_bytes + 2:
        raise _too_large(rules)
    try:
        data = b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("The data: image URL is not valid base64 (only A-Z, a-z, 0-9, +, / and = padding, no "
                         "whitespace).", INVALID_IMAGE_FORMAT) from None
    return checked_image(data, media_type, rules, param)


def checked_image(data: bytes, media_type: str, rules: ImageRules, param: str = "") -> Image:
    """`data` as an Image once Pillow confirms it is a `media_type` image (its header, structure and checksums
    where the format has them; the pixels are not decoded) of at most max_pixels. Raises ImageError."""
    if len(data) > rules.max_bytes:
        raise _too_large(rules)
    if not data:
        raise ImageError("The image is empty.", INVALID_IMAGE_FORMAT)
    expected = MEDIA_TYPES[media_type]
    try:
        # Only the header is read here: the size is known before any pixel is decoded. Only the declared
        # format's parser runs, so bytes of another type are refused rather than parsed.
        with Pillow.open(io.BytesIO(data), formats=[expected]) as image:
            width, height = image.size
            if width * height > rules.max_pixels:
                raise _too_many_pixels(width, height, rules)
            image.verify()
    except (Pillow.DecompressionBombError, Pillow.DecompressionBombWarning):
        # Pillow's own bomb check (past Image.MAX_IMAGE_PIXELS; its warning is an error where warnings are).
        raise ImageError(f"The image has more than {rules.max_pixels} pixels (IMAGE_MAX_PIXELS).",
                         IMAGE_TOO_LARGE) from None
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError):
        # Pillow's decoders report broken data with any of these (SyntaxError for a bad PNG chunk).
        raise ImageError(f"The image data is not a valid {media_type} image.", INVALID_IMAGE_FORMAT) from None
    return Image(media_type, data, param)


def _too_large(rules: ImageRules) -> ImageError:
    return ImageError(f"The image is larger than {rules.max_bytes} bytes (IMAGE_MAX_BYTES).", IMAGE_TOO_LARGE)


def _too_many_pixels(width: int, height: int, rules: ImageRules) -> ImageError:
    return ImageError(f"The image is {width}x{height} pixels, more than {rules.max_pixels} (IMAGE_MAX_PIXELS).",
                      IMAGE_TOO_LARGE)
