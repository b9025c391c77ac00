"""What a simulated vision worker (``--multimodal``) checks and says about a request's images. No HTTP here.

FastChat's sglang_worker, the one FastChat worker that reads ``images``, splits the prompt at ``$$<image>$$`` (the
placeholder FastChat's templates render for an image message) and refuses a request whose placeholder count is not
``len(images)`` with a ValueError, which its generate_stream_gate answers with the in-band error frame
``{"text": SERVER_ERROR_MSG + "\\n\\n(" + message + ")", "error_code": 50001}``; each image then goes to sglang's
``load_image``: a ``data:`` URL or base64 decodes, anything else fails. The simulated worker checks the same (base64
strictly; an ``http(s)`` URL is refused, never fetched) and answers with a reply that describes what it got
(``description``), so a test sees the images arrive through the gateway without reading the worker's logs.

``report`` describes one logged payload for ``/sim/images``; it runs when that endpoint is read, never while a
request is served.
"""
from __future__ import annotations

import base64
import binascii
import hashlib

from bench.simworker.faults import SERVER_ERROR_MSG

PLACEHOLDER = "$$<image>$$"  # fastchat.conversation.IMAGE_PLACEHOLDER_STR
COUNT_MISMATCH = "The number of images passed in does not match the number of <image> tokens in the prompt!"
INTERNAL_ERROR = 50001
DIGEST_CHARS = 12
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"))


class Refused(Exception):
    """The request is refused the way sglang_worker refuses it; ``frame`` is the error frame to answer with."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.frame = {"text": f"{SERVER_ERROR_MSG}\n\n({message})", "error_code": INTERNAL_ERROR}


def _form(image: object) -> str:
    if not isinstance(image, str):
        return "not-a-string"
    if image.startswith("data:"):
        return "data-url"
    if image.startswith(("http://", "https://")):
        return "url"
    return "base64"


def decoded(image: object) -> bytes | None:
    """The bytes of a base64 string or a ``data:...;base64,`` URL (strict base64), else None."""
    form = _form(image)
    if form == "data-url":
        header, comma, image = image.partition(",")
        if not comma or not header.endswith(";base64"):
            return None
    elif form != "base64":
        return None
    try:
        return base64.b64decode(image, validate=True) or None
    except (binascii.Error, ValueError):
        return None


def image_type(data: bytes) -> str | None:
    """The image format by its magic bytes (png, jpeg, gif, webp), or None."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return "webp" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else None


def check(prompt: str, images: object) -> list[bytes]:
    """The decoded `images` (the payload's, ``[]`` when it has none) of a request whose prompt is `prompt`; raises
    Refused where sglang_worker would fail."""
    if not isinstance(images, list):
        raise Refused("images must be a list")
    if prompt.count(PLACEHOLDER) != len(images):
        raise Refused(COUNT_MISMATCH)
    datas = []
    for i, image in enumerate(images):
        data = decoded(image)
        if data is None:
            raise Refused(f"image {i} is not base64 ({_form(image)}); the simulated worker fetches nothing")
        datas.append(data)
    return datas


def description(prompt: str, datas: list[bytes]) -> str:
    """The reply to a request with images: their count, the prompt's placeholder count, then per image its size,
    format and the first hex digits of its sha256."""
    parts = [f"image {i + 1}: {len(data)} bytes {image_type(data) or 'unknown'} "
             f"sha256:{hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]}" for i, data in enumerate(datas)]
    placeholders = prompt.count(PLACEHOLDER)
    return (f"I received {len(datas)} image{'s' if len(datas) != 1 else ''} for {placeholders} "
            f"placeholder{'s' if placeholders != 1 else ''}. " + "; ".join(parts) + ".")


def report(payload: dict) -> dict:
    """What one generation payload carried, without the image data: its prompt, the placeholder count, and per
    image its form (base64, data-url, url, not-a-string), decoded size, format and sha256 (None when it does not
    decode)."""
    prompt = payload.get("prompt")
    images = payload.get("images")
    described = []
    for image in images if isinstance(images, list) else []:
        data = decoded(image)
        described.append({"form": _form(image), "bytes": len(data) if data else None,
                          "type": image_type(data) if data else None,
                          "sha256": hashlib.sha256(data).hexdigest() if data else None})
    return {"prompt": prompt, "placeholders": prompt.count(PLACEHOLDER) if isinstance(prompt, str) else 0,
            "has_images": "images" in payload, "images": described}
