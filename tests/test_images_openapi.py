"""The OpenAPI document describes image_url parts as the chat schema accepts them (shape-wise: whether a data:
URL really holds an image, or a host is allowed, is for the server to say)."""
import pytest
from jsonschema import Draft4Validator

from app.openapi import build_spec
from tests.fakes import MODEL
from tests.image_samples import data_url
from tests.openapi_json_schema import to_json_schema

PNG_URL = data_url()


def user(*parts):
    return [{"role": "user", "content": list(parts)}]


IMAGE_BODIES = [
    (user({"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": PNG_URL}}), True),
    (user({"type": "image_url", "image_url": {"url": PNG_URL, "detail": "high"}}), True),
    (user({"type": "image_url", "image_url": PNG_URL}), True),
    (user({"type": "image_url", "image_url": {"url": PNG_URL, "detail": "max"}}), False),
    (user({"type": "image_url", "image_url": {"detail": "low"}}), False),
    (user({"type": "image_url"}), False),
    (user({"type": "image_url", "image_url": 3}), False),
    ([{"role": "system", "content": [{"type": "image_url", "image_url": PNG_URL}]},
      {"role": "user", "content": "x"}], False),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}], True),
    ([{"role": "user", "content": "x"},
      {"role": "assistant", "content": [{"type": "image_url", "image_url": PNG_URL}]}], False),
]


@pytest.mark.parametrize("messages, accepted", IMAGE_BODIES)
def test_documented_image_parts_match_what_the_server_accepts(app, messages, accepted):
    body = {"model": MODEL, "messages": messages}
    assert not app.extensions["schemas"]["chat"].validate(body) if accepted else \
        app.extensions["schemas"]["chat"].validate(body), "the server's verdict changed"
    spec = build_spec(app)
    root = {**to_json_schema({"$ref": "#/components/schemas/ChatCompletionRequest"}),
            "components": to_json_schema(spec["components"])}
    assert Draft4Validator(root).is_valid(body) == accepted
