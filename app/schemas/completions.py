"""The text completion request (POST /v1/completions)."""
from __future__ import annotations

from marshmallow import ValidationError, fields, validates_schema

from app.schemas.fields import InRange, RangeMessage, accept_only, strict_boolean
from app.schemas.sampling import SamplingRequestSchema

MAX_PROMPTS = 2048


def _is_token_ids(value) -> bool:
    return isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)


class Prompts(fields.Field):
    """OpenAI's prompt forms: a string, strings, token ids, or lists of token ids. Loaded as a list whose items
    are each a str or a list of ints (decoded later, with tiktoken, as FastChat does)."""

    default_error_messages = {
        "invalid": "Must be a string, a list of strings, a list of token ids, or a list of token-id lists.",
        "empty": "Must not be empty.",
    }

    def _deserialize(self, value, attr, data, **kwargs) -> list:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise self.make_error("invalid")
        if not value:
            raise self.make_error("empty")
        if _is_token_ids(value):
            return [value]
        if len(value) > MAX_PROMPTS:
            raise ValidationError(RangeMessage(f"At most {MAX_PROMPTS} prompts are allowed in one request."))
        if all(isinstance(item, str) for item in value):
            return value
        if all(_is_token_ids(item) for item in value):
            if not all(value):
                raise ValidationError("A token-id prompt must not be empty.")
            return value
        raise self.make_error("invalid")


class CompletionRequestSchema(SamplingRequestSchema):
    """POST /v1/completions."""

    prompt = Prompts(required=True)
    echo = strict_boolean(allow_none=True)
    logprobs = fields.Integer(strict=True, allow_none=True, validate=InRange(min=0, max=5))
    best_of = fields.Integer(strict=True, allow_none=True, validate=InRange(min=1, max=20))
    use_beam_search = strict_boolean(allow_none=True)
    suffix = fields.String(allow_none=True, validate=accept_only(
        lambda v: v == "", "suffix (insertion) is not supported by FastChat workers."))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._max_choices = self.fields["n"].validators[0].max

    @validates_schema
    def _check_completion_combinations(self, data, **kwargs):
        choices = len(data.get("prompt") or ()) * (data.get("n") or 1)
        if choices > self._max_choices:  # one small request must not fan out into thousands of generations
            raise ValidationError(RangeMessage(f"prompts x n must be at most {self._max_choices}; got {choices}."),
                                  "n")
        if data.get("best_of") is not None and data["best_of"] < (data.get("n") or 1):
            raise ValidationError(RangeMessage("best_of must be greater than or equal to n."), "best_of")
        if data.get("stream") and (data.get("best_of") or 1) > 1:
            raise ValidationError("best_of cannot be used with stream.", "best_of")
        if data.get("stream") and data.get("use_beam_search"):
            raise ValidationError("use_beam_search cannot be used with stream.", "use_beam_search")

    def params(self, data: dict) -> dict:
        params = super().params(data)
        params["prompt"] = data["prompt"]
        params["max_tokens"] = 16 if data.get("max_tokens") is None else data["max_tokens"]  # OpenAI's default
        params["echo"] = bool(data.get("echo"))
        params["logprobs"] = data.get("logprobs")
        params["best_of"] = data.get("best_of")
        params["use_beam_search"] = data.get("use_beam_search")
        return params
