"""FastChat's POST /api/v1/token_check request."""
from __future__ import annotations

from marshmallow import fields, post_load, validate

from app.schemas.fields import InRange, RequestSchema


class TokenCheckItemSchema(RequestSchema):
    model = fields.String(required=True)
    prompt = fields.String(required=True)
    max_tokens = fields.Integer(strict=True, required=True, validate=InRange(min=0))


class TokenCheckRequestSchema(RequestSchema):
    prompts = fields.List(fields.Nested(TokenCheckItemSchema), required=True,
                          validate=validate.Length(min=1, max=2048))

    @post_load
    def _to_params(self, data, **kwargs) -> dict:
        return {"prompts": data["prompts"]}
