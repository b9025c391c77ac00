"""Tiny real images for the image tests, made with Pillow (no files committed)."""
from __future__ import annotations

import base64
import io

from PIL import Image

FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF"}


def image_bytes(media_type: str = "image/png", size: tuple[int, int] = (4, 3), color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, FORMATS[media_type])
    return buffer.getvalue()


def data_url(media_type: str = "image/png", data: bytes | None = None, **kwargs) -> str:
    data = image_bytes(media_type, **kwargs) if data is None else data
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def image_part(url: str, detail: str | None = None) -> dict:
    return {"type": "image_url", "image_url": {"url": url, **({"detail": detail} if detail else {})}}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
