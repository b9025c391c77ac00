"""The request fields chat and text completions share, and the plain params dict both are loaded into."""
from __future__ import annotations

from marshmallow import ValidationError, fields, post_load, validates_schema

from app.schemas.fields import (InRange, RequestSchema, StrictFloat, StringOrList, accept_only, not_zero_top_k,
                                strict_boolean)


class SamplingRequestSchema(RequestSchema):
    """Base of the generation requests. Subclasses add their fields and extend `params`."""

    model = fields.String(required=True)
    temperature = StrictFloat(allow_none=True, validate=InRange(min=0, max=2))
    top_p = StrictFloat(allow_none=True, validate=InRange(min=0, max=1))
    top_k = fields.Integer(strict=True, allow_none=True, validate=not_zero_top_k)
    n = fields.Integer(strict=True, allow_none=True, validate=InRange(min=1))
    max_tokens = fields.Integer(strict=True, allow_none=True, validate=InRange(min=1))
    stop = StringOrList(allow_none=True)
    stream = strict_boolean(allow_none=True)
    stream_options = fields.Dict(allow_none=True)
    presence_penalty = StrictFloat(allow_none=True, validate=InRange(min=-2, max=2))
    frequency_penalty = StrictFloat(allow_none=True, validate=InRange(min=-2, max=2))
    repetition_penalty = StrictFloat(allow_none=True, validate=InRange(min=0, min_inclusive=False))
    seed = fields.Integer(strict=True, allow_none=True)
    user = fields.String(allow_none=True)
    logit_bias = fields.Dict(allow_none=True, validate=accept_only(
        lambda v: not v, "logit_bias is not supported by FastChat workers."))

    def __init__(self, *, max_n: int = 128, max_stop: int = 16, max_tokens: int = 131072, **kwargs):
        """The operator's caps (MAX_N, MAX_STOP_SEQUENCES, MAX_TOKENS_CAP) apply per app."""
        super().__init__(**kwargs)
        self.fields["n"].validators = [InRange(min=1, max=max_n)]
        self.fields["stop"].max_items = max_stop
        for name in ("max_tokens", "max_completion_tokens"):
            if name in self.fields:
                self.fields[name].validators = [InRange(min=1, max=max_tokens)]

    @validates_schema
    def _check_stream_options(self, data, **kwargs):
        if data.get("stream_options") is not None:
            if not data.get("stream"):
                raise ValidationError("stream_options is only allowed when stream is true.", "stream_options")
            if not isinstance(data["stream_options"].get("include_usage", False), bool):
                raise ValidationError({"include_usage": ["Not a valid boolean."]}, "stream_options")

    @post_load
    def _to_params(self, data, **kwargs) -> dict:
        return self.params(data)

    def params(self, data: dict) -> dict:
        """The loaded request with defaults filled in. Explicit nulls mean "default" (FastChat forwarded them
        and the worker crashed on float(None))."""
        return {
            "model": data["model"],
            "temperature": _default(data.get("temperature"), 1.0),
            "top_p": _default(data.get("top_p"), 1.0),
            "top_k": _default(data.get("top_k"), -1),
            "n": _default(data.get("n"), 1),
            "max_tokens": data.get("max_tokens"),
            "stop": list(dict.fromkeys(s for s in data.get("stop") or () if s)),
            "stream": bool(data.get("stream")),
            "include_usage": bool((data.get("stream_options") or {}).get("include_usage")),
            "presence_penalty": _default(data.get("presence_penalty"), 0.0),
            "frequency_penalty": _default(data.get("frequency_penalty"), 0.0),
            "repetition_penalty": data.get("repetition_penalty"),
            "seed": data.get("seed"),
        }


def _default(value, default):
    return default if value is None else value
