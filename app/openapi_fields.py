"""How the request schemas' fields read in the OpenAPI document: what apispec cannot read from app/schemas by
itself (the custom union fields, exclusive bounds, null-only nested fields) and FIELD_DOCS, the descriptions and
constraints that the validators hold in code."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.schemas.chat import ROLES, ChatCompletionRequestSchema, MessageContent, Messages, MessageSchema
from app.schemas.completions import MAX_PROMPTS, CompletionRequestSchema, Prompts
from app.schemas.embeddings import EmbeddingInputs, EmbeddingRequestSchema
from app.schemas.fields import StringOrList
from app.schemas.responses import BodyUnion
from app.schemas.responses_api import (INCLUDE_WITHOUT_EFFECT, MAX_METADATA, REASONING_EFFORTS_WITHOUT_EFFECT,
                                       CreateResponseRequestSchema, ResponseReasoningOptionsSchema, ResponseInput,
                                       ResponseTextFormat, ResponseToolChoice, ResponseTools, ResponseTextOptionsSchema)
from app.schemas.sampling import SamplingRequestSchema
from app.schemas.tools import (CHOICES, MAX_SCHEMA_CHARS, MAX_SCHEMA_DEPTH, MAX_TOOLS, FunctionSchema,
                               JsonSchemaFormat, ResponseFormat, ToolChoice, Tools, ToolSchema)

TOKEN_ID = {"type": "integer", "minimum": 0}
_NULL = {"nullable": True, "enum": [None]}
TEXT_PART = {"type": "object", "required": ["type", "text"],
             "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}}
IMAGE_PART = {
    "type": "object", "required": ["type", "image_url"],
    "description": "User messages only, for models whose workers registered as multimodal. A "
                   "data:image/(png|jpeg|webp|gif);base64 URL, checked to be such an image within IMAGE_MAX_BYTES "
                   "and IMAGE_MAX_PIXELS; an http(s) URL only for a host IMAGE_FETCH_HOSTS lists; never a local "
                   "path or another scheme. At most IMAGE_MAX_COUNT per request.",
    "properties": {"type": {"type": "string", "enum": ["image_url"]}, "image_url": {"oneOf": [
        {"type": "string", "description": "The URL alone."},
        {"type": "object", "required": ["url"], "properties": {
            "url": {"type": "string"},
            "detail": {"type": "string", "enum": ["auto", "low", "high", None], "nullable": True,
                       "description": "Accepted; FastChat's vision workers have no such setting."}}}]}}}

# What app.schemas.tools.check_message says across a message's fields: content may be null or absent only on an
# assistant message with tool_calls; a tool message needs tool_call_id (and content); images only from the user.
MESSAGE_RULES = {"allOf": [
    {"anyOf": [{"required": ["content"], "properties": {"content": {"not": _NULL}}},
               {"required": ["role", "tool_calls"], "properties": {
                   "role": {"enum": ["assistant"]}, "tool_calls": {"type": "array", "minItems": 1}}}]},
    {"anyOf": [{"properties": {"role": {"not": {"enum": ["tool"]}}}},
               {"required": ["tool_call_id"], "properties": {"tool_call_id": {"not": _NULL}}}]},
    # Image parts only in user messages.
    {"anyOf": [{"properties": {"role": {"enum": ["user"]}}},
               {"properties": {"content": {"anyOf": [{"not": {"type": "array"}},
                                                     {"type": "array", "items": TEXT_PART}]}}}]},
]}

# --- the Responses API's request: its input items, tools, tool_choice and text.format ------------------------------

def _part(kind: str, key: str) -> dict:
    return {"type": "object", "required": ["type", key],
            "properties": {"type": {"type": "string", "enum": [kind]}, key: {"type": "string"}}}


INPUT_IMAGE = {"type": "object", "required": ["type", "image_url"], "description": "An image by URL (data URLs; "
               "http(s) only where the server fetches images), as a chat image_url part. file_id is refused.",
               "properties": {"type": {"type": "string", "enum": ["input_image"]}, "image_url": {"type": "string"},
                              "detail": {"type": "string"}}}
CONTENT_PARTS = {"type": "array", "items": {"oneOf": [
    _part("input_text", "text"), INPUT_IMAGE, _part("output_text", "text"), _part("refusal", "refusal")]}}
CALL_ID = {"type": "string", "minLength": 1, "maxLength": 256}
FUNCTION_NAME = {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"}
INPUT_ITEMS = [
    {"type": "object", "title": "message", "required": ["role", "content"], "properties": {
        "type": {"type": "string", "enum": ["message"]},
        "role": {"type": "string", "enum": ["user", "system", "developer", "assistant"]},
        "content": {"oneOf": [{"type": "string"}, CONTENT_PARTS],
                    "description": "Text, or parts: input_text, input_image, and (from earlier responses) "
                                   "output_text and refusal."}}},
    {"type": "object", "title": "function_call", "required": ["type", "call_id", "name", "arguments"],
     "description": "A call from an earlier response; consecutive calls make one assistant turn.", "properties": {
         "type": {"type": "string", "enum": ["function_call"]}, "call_id": CALL_ID, "name": FUNCTION_NAME,
         "arguments": {"type": "string"}}},
    {"type": "object", "title": "function_call_output", "required": ["type", "call_id", "output"],
     "description": "The result of a call of an earlier item.", "properties": {
         "type": {"type": "string", "enum": ["function_call_output"]}, "call_id": CALL_ID,
         "output": {"oneOf": [{"type": "string"},
                              {"type": "array", "items": {"oneOf": [_part("input_text", "text"), INPUT_IMAGE]}}]}}},
]
FUNCTION_TOOL = {"type": "object", "required": ["type", "name"], "properties": {
    "type": {"type": "string", "enum": ["function"]}, "name": FUNCTION_NAME,
    "description": {"type": "string", "nullable": True},
    "parameters": {"type": "object", "nullable": True, "description": f"A JSON Schema (Draft 2020-12 unless it "
                   f"names its $schema), at most {MAX_SCHEMA_CHARS} characters and {MAX_SCHEMA_DEPTH} levels "
                   f"deep, only local $refs."},
    "strict": {"type": "boolean", "nullable": True}}}


def _falsy(description: str) -> dict:
    """A field the server accepts only when it is absent, null or empty (any JSON value Python finds false)."""
    return {"description": description + " Only null or an empty value is accepted.", "oneOf": [
        {"type": "array", "maxItems": 0, "nullable": True},
        {"type": "object", "maxProperties": 0},
        {"type": "string", "maxLength": 0},
        {"type": "number", "enum": [0]},
        {"type": "boolean", "enum": [False]},
    ]}


def _null_only(description: str) -> dict:
    return {"description": description + " Only null is accepted.", "nullable": True, "enum": [None]}


_NONE_OR_AUTO = {"type": "string", "enum": ["none", "auto", None], "nullable": True}

# (schema class, field name) -> OpenAPI properties the validators say but apispec cannot read from them. An entry
# with "oneOf" or "enum": [None] replaces the field's property; others are merged into it.
FIELD_DOCS: dict[tuple[type[Schema], str], dict] = {
    (MessageSchema, "role"): {"enum": list(ROLES), "description": "`developer` is treated as `system`."},
    (MessageSchema, "content"): {"description": "null (or absent) only on an assistant message with "
                                 "tool_calls."},
    (MessageSchema, "tool_calls"): {"description": "An assistant message's earlier calls, written back into the "
                                    "prompt in the model's tool format."},
    (MessageSchema, "tool_call_id"): {"description": "Required on a `tool` message (and only there): the id of "
                                      "a call of an earlier assistant message."},
    (MessageSchema, "function_call"): _falsy("The legacy function calling is not supported: use tool_calls."),
    (ToolSchema, "type"): {"enum": ["function"], "description": "Only function tools."},
    (FunctionSchema, "parameters"): {
        "type": "object", "description": f"A JSON Schema (Draft 2020-12 unless it names its $schema), at most "
                                         f"{MAX_SCHEMA_CHARS} characters and {MAX_SCHEMA_DEPTH} levels deep, "
                                         f"only local $refs."},
    (JsonSchemaFormat, "schema"): {
        "type": "object", "description": f"The JSON Schema the reply is validated against (Draft 2020-12 unless "
                                         f"it names its $schema), bounded as tool parameters are."},
    (JsonSchemaFormat, "strict"): {"description": "Accepted; the reply is validated, not constrained."},
    (SamplingRequestSchema, "model"): {"description": "A model some worker serves."},
    (SamplingRequestSchema, "top_k"): {"minimum": -1, "not": {"enum": [0]}, "description": "-1 disables; 0 is "
                                       "rejected. Forwarded to the worker."},
    (SamplingRequestSchema, "max_tokens"): {"description": "Default: the rest of the context for chat, 16 for "
                                            "text completions. Over the context: 400 context_length_exceeded "
                                            "(or clipped with CONTEXT_OVERFLOW=clip)."},
    (SamplingRequestSchema, "stop"): {"description": "Up to MAX_STOP_SEQUENCES strings, merged with the "
                                      "template's stop strings."},
    (SamplingRequestSchema, "stream"): {"description": "Reply with server-sent events (text/event-stream)."},
    (SamplingRequestSchema, "stream_options"): {
        "description": "Only with `stream: true`. `include_usage: true` adds `usage: null` to every chunk and a "
                       "last chunk with no choices and the usage of the whole request.",
        "properties": {"include_usage": {"type": "boolean"}}},
    (SamplingRequestSchema, "repetition_penalty"): {"description": "Forwarded to the worker."},
    (SamplingRequestSchema, "seed"): {"description": "Forwarded to the worker."},
    (SamplingRequestSchema, "user"): {"description": "Ignored."},
    (SamplingRequestSchema, "logit_bias"): {"maxProperties": 0, "description": "Not supported: only null or {} "
                                            "is accepted."},
    (ChatCompletionRequestSchema, "messages"): {"description": "The conversation, or (FastChat's extension) a "
                                                "string sent to the worker verbatim as the prompt."},
    (ChatCompletionRequestSchema, "max_completion_tokens"): {"description": "max_tokens under its new name; "
                                                              "when both are set they must be equal."},
    (ChatCompletionRequestSchema, "logprobs"): {"description": "Return the logprobs of the generated tokens (when "
                                                "the worker computes them; null otherwise)."},
    (ChatCompletionRequestSchema, "top_logprobs"): {"description": "Alternatives per token; requires `logprobs: "
                                                    "true`."},
    (ChatCompletionRequestSchema, "tools"): {"description": "Function tools with distinct names, written into "
                                             "the prompt in the model's tool format (a 400 naming `tools` for a "
                                             "model without one); not with `logprobs`."},
    (ChatCompletionRequestSchema, "tool_choice"): {"description": "Default auto with tools, none without. "
                                                   "required and a named function need tools (the name one of "
                                                   "them); they are an instruction in the prompt, best effort."},
    (ChatCompletionRequestSchema, "parallel_tool_calls"): {"description": "Default true. false: the prompt asks "
                                                           "for one call and only the first call is returned."},
    (ChatCompletionRequestSchema, "functions"): _falsy("The legacy function calling is not supported: use tools."),
    (ChatCompletionRequestSchema, "function_call"): {**_NONE_OR_AUTO, "description": "Only none or auto: use "
                                                     "tool_choice."},
    (ChatCompletionRequestSchema, "response_format"): {
        "description": "json_object and json_schema add an instruction to the prompt and check the reply (its "
                       "first JSON object is the content); a whole reply that does not comply is generated again "
                       "(STRUCTURED_OUTPUT_RETRIES), then fails with 502 response_format_not_followed; a stream "
                       "ends with that error event. Not with `logprobs`."},
    (ChatCompletionRequestSchema, "modalities"): {
        "type": "array", "items": {"type": "string", "enum": ["text"]}, "minItems": 1, "maxItems": 1,
        "description": "Only [\"text\"]."},
    (ChatCompletionRequestSchema, "audio"): _null_only("Audio output is not supported."),
    (ChatCompletionRequestSchema, "prediction"): _null_only("Predicted outputs are not supported."),
    (ChatCompletionRequestSchema, "web_search_options"): _null_only("Web search is not supported."),
    (CompletionRequestSchema, "prompt"): {"description": "A string, strings, token ids or token-id lists (token "
                                          "ids are decoded with tiktoken; ids outside its vocabulary are a 400)."},
    (CompletionRequestSchema, "echo"): {"description": "Prepend the prompt to each choice's text."},
    (CompletionRequestSchema, "logprobs"): {"description": "Return the logprobs of the tokens (the worker "
                                            "decides how many alternatives)."},
    (CompletionRequestSchema, "best_of"): {"description": "At least n; not with `stream`. Forwarded to the "
                                           "worker."},
    (CompletionRequestSchema, "use_beam_search"): {"description": "Not with `stream`. Forwarded to the worker."},
    (CompletionRequestSchema, "suffix"): {"enum": ["", None], "description": "Insertion is not supported: only "
                                          "\"\" or null."},
    (CreateResponseRequestSchema, "model"): {"description": "A model some worker serves."},
    (CreateResponseRequestSchema, "input"): {"description": "The conversation: a string, or message, "
                                             "function_call and function_call_output items (stored items and "
                                             "other item types are refused)."},
    (CreateResponseRequestSchema, "instructions"): {"description": "A system message before the input."},
    (CreateResponseRequestSchema, "tools"): {"description": "Function tools (the flat Responses shape) with "
                                             "distinct names, written into the prompt in the model's tool format "
                                             "(a 400 naming `tools` for a model without one). Hosted tools are "
                                             "refused by type."},
    (CreateResponseRequestSchema, "tool_choice"): {"description": "Default auto with tools, none without; "
                                                   "required and a named function are an instruction in the "
                                                   "prompt, best effort."},
    (CreateResponseRequestSchema, "parallel_tool_calls"): {"description": "Default true. false: the prompt asks "
                                                           "for one call and only the first is returned."},
    (CreateResponseRequestSchema, "max_output_tokens"): {"description": "Default: the rest of the context. Over "
                                                         "the context: 400 context_length_exceeded."},
    (CreateResponseRequestSchema, "stream"): {"description": "Reply with the Responses API's named server-sent "
                                              "events (text/event-stream)."},
    (CreateResponseRequestSchema, "stream_options"): {"description": "Accepted; events carry no obfuscation."},
    (CreateResponseRequestSchema, "user"): {"description": "Echoed."},
    (CreateResponseRequestSchema, "metadata"): {"maxProperties": MAX_METADATA, "description": "Up to 16 "
                                                "string pairs (keys up to 64 characters), echoed."},
    (CreateResponseRequestSchema, "store"): {"description": "Accepted and treated as false: nothing is stored."},
    (CreateResponseRequestSchema, "max_tool_calls"): {"description": "Accepted and echoed; it limits hosted "
                                                      "tools, which this server has none of."},
    (CreateResponseRequestSchema, "truncation"): {"enum": ["disabled", None], "description": "Only disabled."},
    (CreateResponseRequestSchema, "top_logprobs"): {"enum": [0, None], "description": "Only 0 (no logprobs)."},
    (CreateResponseRequestSchema, "include"): {"items": {"type": "string", "enum": list(INCLUDE_WITHOUT_EFFECT)},
                                               "description": "Only values without effect here (they concern "
                                                              "items this server never produces)."},
    (CreateResponseRequestSchema, "service_tier"): {"description": "Ignored."},
    (CreateResponseRequestSchema, "safety_identifier"): {"description": "Ignored."},
    (CreateResponseRequestSchema, "prompt_cache_key"): {"description": "Ignored."},
    (CreateResponseRequestSchema, "prompt_cache_retention"): {"description": "Ignored."},
    (CreateResponseRequestSchema, "previous_response_id"): _null_only("Responses are not stored: send the whole "
                                                                      "conversation as input."),
    (CreateResponseRequestSchema, "conversation"): _null_only("Conversations are not stored: send the whole "
                                                              "conversation as input."),
    (CreateResponseRequestSchema, "prompt"): _null_only("Stored prompts are not supported."),
    (CreateResponseRequestSchema, "background"): {"type": "boolean", "enum": [False, None], "nullable": True,
                                                  "description": "Only false: nothing runs in the background."},
    (CreateResponseRequestSchema, "context_management"): _falsy("Compaction is not supported."),
    (ResponseTextOptionsSchema, "verbosity"): {"enum": ["medium", None], "description": "Only the default."},
    (ResponseReasoningOptionsSchema, "effort"): {"enum": [*REASONING_EFFORTS_WITHOUT_EFFECT, None],
                                  "description": "FastChat workers do not reason on request."},
    (ResponseReasoningOptionsSchema, "summary"): _null_only("Reasoning summaries are not supported."),
    (ResponseReasoningOptionsSchema, "generate_summary"): _null_only("Reasoning summaries are not supported."),
    (EmbeddingRequestSchema, "model"): {"description": "Required here unless the path names the model."},
    (EmbeddingRequestSchema, "input"): {"description": "A string, strings, token ids or token-id lists, nothing "
                                        "empty (token ids are decoded with tiktoken)."},
    (EmbeddingRequestSchema, "encoding_format"): {"description": "base64 is always little-endian float32."},
    (EmbeddingRequestSchema, "dimensions"): {"description": "Only the model's own dimensions (reduced dimensions "
                                             "are not supported)."},
    (EmbeddingRequestSchema, "user"): {"description": "Ignored."},
}


def gateway_field_properties(self, field: fields.Field, ret: dict, **kwargs) -> dict:
    """apispec attribute function (bound to its OpenAPIConverter), run after the built-in ones: the custom union
    fields as oneOf, ranges with exclusive bounds, nullable nested schemas that accept only null besides the
    schema, and FIELD_DOCS. Edits `ret` in place."""
    branches = _union_branches(self, field)
    if branches is not None:
        nullable = ret.pop("nullable", False)
        for key in ("type", "format"):
            ret.pop(key, None)
        if nullable:
            branches[0] = {**branches[0], "nullable": True}
        ret["oneOf"] = branches
    _exclusive_bounds(field, ret)
    if isinstance(field, fields.Nested) and field.allow_none and "anyOf" in ret:
        # apispec's {"type": "object", "nullable": true} branch would accept any object: accept only null there.
        refs = [branch for branch in ret["anyOf"] if "$ref" in branch]
        ret["anyOf"] = [*refs, {"type": "object", "nullable": True, "enum": [None]}]
    docs = _field_docs(field)
    if docs:
        if "oneOf" in docs or docs.get("enum") == [None]:
            description = ret.get("description")
            ret.clear()
            if description:
                ret["description"] = description
        ret.update(docs)
    return {}


def _union_branches(converter, field: fields.Field) -> list[dict] | None:
    """The shapes each custom field of app/schemas accepts, exactly (None for other fields)."""
    if isinstance(field, StringOrList):
        strings = {"type": "array", "items": {"type": "string"}}
        if field.max_items is not None:
            strings["maxItems"] = field.max_items
        return [{"type": "string"}, strings]
    if isinstance(field, MessageContent):
        return [{"type": "string"},
                {"type": "array", "items": {"oneOf": [TEXT_PART, IMAGE_PART]},
                 "description": "Text parts, joined with newlines, and image parts."}]
    if isinstance(field, Messages):
        messages = {"type": "array", "minItems": 1,
                    "items": {"allOf": [converter.resolve_nested_schema(MessageSchema), MESSAGE_RULES]}}
        if getattr(field, "max_items", None) is not None:
            messages["maxItems"] = field.max_items
        return [{"type": "string", "description": "A raw prompt, used verbatim (FastChat's extension)."}, messages]
    if isinstance(field, Prompts):
        return [{"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_PROMPTS},
                {"type": "array", "items": TOKEN_ID, "minItems": 1, "description": "One prompt as token ids."},
                {"type": "array", "items": {"type": "array", "items": TOKEN_ID, "minItems": 1}, "minItems": 1,
                 "maxItems": MAX_PROMPTS}]
    if isinstance(field, Tools):
        return [{"type": "array", "maxItems": MAX_TOOLS, "items": converter.resolve_nested_schema(ToolSchema)}]
    if isinstance(field, ToolChoice):
        return [{"type": "string", "enum": list(CHOICES)},
                {"type": "object", "required": ["type", "function"], "properties": {
                    "type": {"type": "string", "enum": ["function"]},
                    "function": {"type": "object", "required": ["name"],
                                 "properties": {"name": {"type": "string"}}}}}]
    if isinstance(field, ResponseFormat):
        return [{"type": "object", "required": ["type"],
                 "properties": {"type": {"type": "string", "enum": ["text", "json_object"]}}},
                {"type": "object", "required": ["type", "json_schema"], "properties": {
                    "type": {"type": "string", "enum": ["json_schema"]},
                    "json_schema": converter.resolve_nested_schema(JsonSchemaFormat)}}]
    if isinstance(field, EmbeddingInputs):
        return [{"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": MAX_PROMPTS},
                {"type": "array", "items": TOKEN_ID, "minItems": 1, "description": "One input as token ids."},
                {"type": "array", "items": {"type": "array", "items": TOKEN_ID, "minItems": 1}, "minItems": 1,
                 "maxItems": MAX_PROMPTS}]
    return _responses_branches(converter, field)


def _responses_branches(converter, field: fields.Field) -> list[dict] | None:
    """The Responses API's union fields: its request's custom fields and the response bodies' BodyUnion."""
    if isinstance(field, BodyUnion):
        strings = [{"type": "string", "enum": list(field.strings)}] if field.strings else []
        return strings + [converter.resolve_nested_schema(schema) for schema in field.schemas]
    if isinstance(field, ResponseInput):
        return [{"type": "string", "description": "One user message."},
                {"type": "array", "minItems": 1, "items": {"oneOf": INPUT_ITEMS}}]
    if isinstance(field, ResponseTools):
        return [{"type": "array", "maxItems": MAX_TOOLS, "items": FUNCTION_TOOL}]
    if isinstance(field, ResponseToolChoice):
        return [{"type": "string", "enum": list(CHOICES)},
                {"type": "object", "required": ["type", "name"], "properties": {
                    "type": {"type": "string", "enum": ["function"]}, "name": {"type": "string"}}}]
    if isinstance(field, ResponseTextFormat):
        return [{"type": "object", "required": ["type"],
                 "properties": {"type": {"type": "string", "enum": ["text", "json_object"]}}},
                {"type": "object", "required": ["type", "name", "schema"], "properties": {
                    "type": {"type": "string", "enum": ["json_schema"]}, "name": FUNCTION_NAME,
                    "description": {"type": "string", "nullable": True},
                    "schema": {"type": "object", "description": "The JSON Schema the reply is validated against, "
                                                                "bounded as tool parameters are."},
                    "strict": {"type": "boolean", "nullable": True,
                               "description": "Accepted; the reply is validated, not constrained."}}}]
    return None


def _exclusive_bounds(field: fields.Field, ret: dict) -> None:
    """apispec reads Range's min and max but not min_inclusive/max_inclusive (OpenAPI 3.0: boolean exclusive*)."""
    for validator in field.validators:
        if not isinstance(validator, validate.Range):
            continue
        if validator.min is not None and not validator.min_inclusive and ret.get("minimum") == validator.min:
            ret["exclusiveMinimum"] = True
        if validator.max is not None and not validator.max_inclusive and ret.get("maximum") == validator.max:
            ret["exclusiveMaximum"] = True


def _field_docs(field: fields.Field) -> dict | None:
    parent = getattr(field, "parent", None)
    if not isinstance(parent, Schema):
        return None
    for cls in type(parent).__mro__:
        docs = FIELD_DOCS.get((cls, field.name))
        if docs is not None:
            return docs
    return None
