"""What a user message's image part is once loaded: an Image checked to be what it says, or an ImageUrl the
gateway fetches at serving time. Both know where they were in the request (`param`) and print as placeholders,
so image data never reaches a log line."""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import urlsplit

# The image types OpenAI accepts, by media type, with the Pillow format each must really be.
MEDIA_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF"}


class ImageError(ValueError):
    """An image part the gateway refuses; `code` is the OpenAI error code the client gets."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


# The error codes, OpenAI's where it has one.
INVALID_IMAGE_URL = "invalid_image_url"  # unreachable, refused host or address, redirect, HTTP error
INVALID_IMAGE_FORMAT = "invalid_image_format"  # bad base64, wrong media type, bytes that are not that image
IMAGE_TOO_LARGE = "image_too_large"  # bytes or pixels over the limits
IMAGE_TOO_MANY = "too_many_images"  # more images than IMAGE_MAX_COUNT
UNSUPPORTED = "unsupported_parameter"  # a kind of URL never accepted, or fetching off


@dataclass(frozen=True)
class Image:
    """Image bytes verified to be of `media_type`; `param` names the part (messages[i].content[j])."""

    media_type: str
    data: bytes = field(repr=False)
    param: str = ""

    @cached_property
    def base64(self) -> str:
        """The bytes as a worker receives them: plain base64, no data: prefix (see app.serving.vision)."""
        return base64.b64encode(self.data).decode("ascii")

    def __repr__(self) -> str:
        return f"<{self.media_type} {len(self.data)} bytes>"

    __str__ = __repr__


@dataclass(frozen=True)
class ImageUrl:
    """An http(s) image URL whose host IMAGE_FETCH_HOSTS allows, fetched (and checked) at serving time."""

    url: str
    param: str = ""

    def __repr__(self) -> str:
        # The host only: a path or query may carry a signature or token.
        return f"<image at {urlsplit(self.url).hostname}>"

    __str__ = __repr__
