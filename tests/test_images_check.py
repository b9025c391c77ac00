"""app.images.check: which URLs an image part may have, data: URLs decoded strictly, bytes verified with Pillow."""
import base64
import struct
import zlib

import pytest

from app.images.check import checked_image, decode_data_url, load_part
from app.images.parts import Image, ImageError, ImageUrl
from app.images.rules import ImageRules
from tests.image_samples import data_url, image_bytes

RULES = ImageRules()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds one tiny IDAT: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def refusal(call, *args) -> ImageError:
    with pytest.raises(ImageError) as caught:
        call(*args)
    return caught.value


@pytest.mark.parametrize("media_type", ["image/png", "image/jpeg", "image/webp", "image/gif"])
def test_each_accepted_type_decodes_to_its_bytes(media_type):
    data = image_bytes(media_type)
    image = decode_data_url(data_url(media_type, data), RULES, "messages[0].content[0]")
    assert image == Image(media_type, data, "messages[0].content[0]")
    assert image.base64 == base64.b64encode(data).decode()


def test_the_media_type_and_scheme_are_case_insensitive():
    data = image_bytes("image/png")
    assert decode_data_url("DATA:Image/PNG;BASE64," + base64.b64encode(data).decode(), RULES).media_type == \
        "image/png"


@pytest.mark.parametrize("declared, actual", [("image/png", "image/jpeg"), ("image/jpeg", "image/png"),
                                              ("image/gif", "image/webp"), ("image/webp", "image/gif")])
def test_bytes_of_another_type_are_refused(declared, actual):
    error = refusal(checked_image, image_bytes(actual), declared, RULES)
    assert (error.code, error.message) == ("invalid_image_format", f"The image data is not a valid {declared} "
                                                                   "image.")


def test_a_png_with_a_broken_checksum_is_refused():
    data = bytearray(image_bytes("image/png"))
    data[-20] ^= 0xFF  # inside the IDAT chunk: its CRC no longer matches
    assert refusal(checked_image, bytes(data), "image/png", RULES).code == "invalid_image_format"


def test_empty_data_is_refused():
    assert refusal(decode_data_url, "data:image/png;base64,", RULES).message == "The image is empty."


@pytest.mark.parametrize("url", ["data:image/png;base64,AAA", "data:image/png;base64,AA=A",
                                 "data:image/png;base64,AA AA", "data:image/png;base64,AA-_"])
def test_base64_is_decoded_strictly(url):
    assert "not valid base64" in refusal(decode_data_url, url, RULES).message


@pytest.mark.parametrize("url", ["data:image/png;charset=x;base64,AAAA", "data:;base64,AAAA", "data:image/png,x",
                                 "data:image/bmp;base64,Qk0=", "data:text/plain;base64,aGk=", "data:"])
def test_only_the_plain_base64_form_of_the_four_types(url):
    assert refusal(decode_data_url, url, RULES).code == "invalid_image_format"


def test_a_data_url_too_long_is_refused_before_decoding():
    rules = ImageRules(max_bytes=30)
    error = refusal(decode_data_url, "data:image/png;base64," + "!" * 60, rules)  # not even valid base64
    assert (error.code, error.message) == ("image_too_large", "The image is larger than 30 bytes "
                                                              "(IMAGE_MAX_BYTES).")


def test_a_decompression_bomb_is_refused_from_its_header():
    error = refusal(checked_image, png_header_only(100_000, 100_000), "image/png", RULES)
    assert error.code == "image_too_large"
    assert "pixels" in error.message


def test_pixels_over_the_limit_are_refused_without_decoding():
    error = refusal(checked_image, png_header_only(5000, 5000), "image/png", RULES)
    assert error.message == f"The image is 5000x5000 pixels, more than {4096 * 4096} (IMAGE_MAX_PIXELS)."


class TestLoadPart:
    def test_a_data_url_is_an_image(self):
        assert isinstance(load_part(data_url(), RULES, "p"), Image)

    @pytest.mark.parametrize("url", ["file:///etc/passwd", "/etc/passwd", "cat.png", "C:\\cat.png",
                                     "ftp://x.test/a.png", "gopher://x.test/", "//x.test/a.png", "http:///a.png",
                                     "javascript:alert(1)"])
    def test_never_read(self, url):
        rules = ImageRules(fetch_hosts=("*",))
        assert "local paths, file: and other schemes are never read" in refusal(load_part, url, rules).message
        assert refusal(load_part, url, RULES).code == "unsupported_parameter"

    def test_http_only_when_fetching_is_on(self):
        assert "does not fetch image URLs" in refusal(load_part, "https://x.test/a.png", RULES).message
        part = load_part("https://X.test/a.png", ImageRules(fetch_hosts=("x.test",)), "messages[1].content[0]")
        assert part == ImageUrl("https://X.test/a.png", "messages[1].content[0]")

    def test_placeholders_never_show_the_data_or_the_path(self):
        assert repr(Image("image/png", b"\x89PNG...", "p")) == "<image/png 7 bytes>"
        assert str(ImageUrl("https://x.test/a.png?token=secret")) == "<image at x.test>"
