"""The embeddings request (POST /v1/embeddings and FastChat's /v1/engines/{model}/embeddings)."""
from __future__ import annotations

from marshmallow import ValidationError, fields, post_load, validate

from app.schemas.completions import MAX_PROMPTS, _is_token_ids
from app.schemas.fields import InRange, RangeMessage, RequestSchema


class EmbeddingInputs(fields.Field):
    """A string, strings, token ids or token-id lists; nothing empty. Loaded as a list of str / list[int]."""

    default_error_messages = {
        "invalid": "Must be a string, a list of strings, a list of token ids, or a list of token-id lists.",
        "empty": "Must not be empty.",
    }

    def _deserialize(self, value, attr, data, **kwargs) -> list:
        if isinstance(value, str) or (_is_token_ids(value) and value):
            items = [value]
        elif isinstance(value, list) and value and (all(isinstance(item, str) for item in value)
                                                     or all(_is_token_ids(item) for item in value)):
            items = value
        elif isinstance(value, list) and not value:
            raise self.make_error("empty")
        else:
            raise self.make_error("invalid")
        if len(items) > MAX_PROMPTS:
            raise ValidationError(RangeMessage(f"At most {MAX_PROMPTS} inputs are allowed in one request."))
        empty = [index for index, item in enumerate(items) if not item]
        if empty:
            raise ValidationError(f"Input {empty[0]} is empty; every input must have content.")
        return items


class EmbeddingRequestSchema(RequestSchema):
    model = fields.String(allow_none=True)  # may come from the path instead (/v1/engines/{model}/embeddings)
    input = EmbeddingInputs(required=True)
    encoding_format = fields.String(allow_none=True, validate=validate.OneOf(["float", "base64"]))
    dimensions = fields.Integer(strict=True, allow_none=True, validate=InRange(min=1))
    user = fields.String(allow_none=True)

    @post_load
    def _to_params(self, data, **kwargs) -> dict:
        return {"model": data.get("model"), "input": data["input"],
                "encoding_format": data.get("encoding_format") or "float", "dimensions": data.get("dimensions")}
