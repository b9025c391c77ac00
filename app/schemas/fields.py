"""Building blocks shared by the request schemas: tagged messages, range validation, union fields, the base schema.

Validation messages are plain strings, so the two kinds that need a special error code travel as str subclasses.
"""
from __future__ import annotations

import logging

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate

logger = logging.getLogger(__name__)


class RangeMessage(str):
    """A value of the right type outside its allowed range (FastChat's PARAM_OUT_OF_RANGE, 40302)."""

    fastchat_code = 40302
    error_code = None


class UnsupportedMessage(str):
    """A parameter the gateway cannot honour; rejected rather than silently dropped."""

    fastchat_code = 40001
    error_code = "unsupported_parameter"


class CodedMessage(str):
    """A message carrying its own OpenAI error code (an image part's "invalid_image_format", ...)."""

    fastchat_code = 40001

    def __new__(cls, message: str, error_code: str):
        tagged = super().__new__(cls, message)
        tagged.error_code = error_code
        return tagged


def unsupported(message: str) -> ValidationError:
    return ValidationError(UnsupportedMessage(message))


def accept_only(accept, message: str):
    """A validator rejecting, as unsupported, any value `accept` refuses (null never reaches validators)."""

    def check(value) -> None:
        if not accept(value):
            raise unsupported(message)

    return check


class StrictFloat(fields.Float):
    """A JSON number only: marshmallow would also take the string "1.5"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    """JSON true/false only: marshmallow would also take "yes", "on", 1 (and 1 == True in Python)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


def strict_boolean(**kwargs) -> fields.Boolean:
    return StrictBoolean(**kwargs)


class InRange(validate.Range):
    """validate.Range whose failures are reported as out-of-range parameters."""

    def _format_error(self, value, message: str) -> str:
        return RangeMessage(super()._format_error(value, message))


def not_zero_top_k(value: int) -> None:
    if value == 0 or value < -1:
        raise ValidationError(RangeMessage(f"{value} is out of range: set top_k to -1 (disabled) or >= 1."))


class StringOrList(fields.Field):
    """A string or a list of strings (OpenAI's `stop`), loaded as a list."""

    default_error_messages = {"invalid": "Must be a string or a list of strings."}

    def __init__(self, *, max_items: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.max_items = max_items

    def _deserialize(self, value, attr, data, **kwargs) -> list[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise self.make_error("invalid")
        if self.max_items is not None and len(items) > self.max_items:
            raise ValidationError(RangeMessage(f"At most {self.max_items} stop sequences are allowed."))
        return items


class RequestSchema(Schema):
    """Base of every request schema: unknown fields are ignored (clients keep adding new ones) but logged."""

    class Meta:
        unknown = EXCLUDE

    @pre_load
    def _log_unknown(self, data, **kwargs):
        if isinstance(data, dict) and logger.isEnabledFor(logging.DEBUG):
            ignored = sorted(set(data) - set(self.fields))
            if ignored:
                logger.debug("ignoring unknown request fields: %s", ", ".join(ignored))
        return data
