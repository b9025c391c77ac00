"""Builders of every OpenAI response object, derived from app/schemas/responses.py (which spells the fields)."""
from __future__ import annotations

import keyword
import time
import uuid
from collections.abc import Callable

from marshmallow import Schema

from app.schemas import responses

def builder(schema: type[Schema], *, optional: bool = False) -> Callable[..., dict]:
    """A function returning a body of `schema` as a dict. Its parameters are the schema's fields in declaration
    order (the order of the JSON keys), without the FIXED ones, which it fills in (an empty list fixed is a new
    one in every body), and without the fields that are not required unless `optional`.

    The function is compiled once from a dict literal, so building a body costs what the literal costs: it runs
    for every streamed chunk.
    """
    params, items = [], []
    for name, field in schema._declared_fields.items():
        if not field.required and not optional:
            continue
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"{schema.__name__}.{name} cannot be a parameter name")
        if responses.FIXED in field.metadata:
            value = field.metadata[responses.FIXED]
            if value is not None and type(value) not in (str, bool, int) and value != []:
                raise TypeError(f"{schema.__name__}.{name}: a fixed value must be a str, bool, int, None or []")
            items.append(f"{name!r}: {value!r}")
        else:
            params.append(name)
            items.append(f"{name!r}: {name}")
    name = f"build_{schema.__name__}"
    namespace: dict = {}
    # The source is made of the schema's field names (checked to be identifiers) and literals only.
    exec(f"def {name}({', '.join(params)}):\n    return {{{', '.join(items)}}}", namespace)  # noqa: S102
    return namespace[name]


_model_permission = builder(responses.ModelPermissionSchema)
_model_card = builder(responses.ModelCardSchema)
_model_list = builder(responses.ModelListSchema)
_usage = builder(responses.UsageSchema)
_chat_message = builder(responses.ChatCompletionMessageSchema)
_tool_call_function = builder(responses.ChatToolCallFunctionSchema)
_tool_call = builder(responses.ChatToolCallSchema)
_delta_tool_call = builder(responses.ChatDeltaToolCallSchema)
_chat_choice = builder(responses.ChatCompletionChoiceSchema)
_chat_completion = builder(responses.ChatCompletionSchema)
_chat_chunk_choice = builder(responses.ChatCompletionChunkChoiceSchema)
_chat_chunk = builder(responses.ChatCompletionChunkSchema)
_chat_chunk_with_usage = builder(responses.ChatCompletionChunkSchema, optional=True)
_completion_choice = builder(responses.CompletionChoiceSchema)
_completion = builder(responses.CompletionSchema)
_completion_chunk = builder(responses.CompletionChunkSchema)
_completion_chunk_with_usage = builder(responses.CompletionChunkSchema, optional=True)
_embedding = builder(responses.EmbeddingSchema)
_embedding_usage = builder(responses.EmbeddingUsageSchema)
_embedding_list = builder(responses.EmbeddingListSchema)

_output_text = builder(responses.ResponseOutputTextSchema)
_output_message = builder(responses.ResponseOutputMessageSchema)
_function_call = builder(responses.ResponseFunctionCallSchema)
_function_tool = builder(responses.ResponseFunctionToolSchema)
_response_text = builder(responses.ResponseTextSchema)
_text_format = builder(responses.ResponseTextFormatSchema)
_json_schema_format = builder(responses.ResponseJsonSchemaFormatSchema)
_tool_choice_function = builder(responses.ResponseToolChoiceFunctionSchema)
_reasoning = builder(responses.ResponseReasoningSchema)
_input_tokens_details = builder(responses.ResponseInputTokensDetailsSchema)
_output_tokens_details = builder(responses.ResponseOutputTokensDetailsSchema)
_response_usage = builder(responses.ResponseUsageSchema)
_incomplete_details = builder(responses.ResponseIncompleteDetailsSchema)
_response_error = builder(responses.ResponseErrorSchema)
_response = builder(responses.ResponseSchema)
# A streamed response's events by type (each schema's fixed `type`).
_RESPONSE_EVENTS = {schema._declared_fields["type"].metadata[responses.FIXED]: builder(schema)
                    for schema in responses.RESPONSE_EVENTS}

_USAGE_CHUNK_BUILDERS = {"chat.completion.chunk": _chat_chunk_with_usage,
                         "text_completion": _completion_chunk_with_usage}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def new_item_id(prefix: str) -> str:
    """The Responses API's ids: `resp_`, `msg_`, `fc_` followed by 32 hex digits."""
    return f"{prefix}_{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def model_card(model: str, created: int) -> dict:
    """An OpenAI model object, with FastChat's card fields (root, parent, permission) kept for its clients."""
    return _model_card(model, created, model, [_model_permission(new_id("modelperm"), created)])


def model_list(models: list[str]) -> dict:
    created = now()
    return _model_list([model_card(model, created) for model in models])


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return _usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)


def chat_message(content: str | None, tool_calls: list[dict] | None = None) -> dict:
    """tool_calls: message_tool_call's; the key is left out without calls."""
    message = _chat_message(content)
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def message_tool_call(id: str, name: str, arguments: str) -> dict:
    return _tool_call(id, _tool_call_function(name, arguments))


def delta_tool_call(index: int, id: str, name: str, arguments: str) -> dict:
    """The one delta a complete call is streamed as: `index` on it (the SDK's stream helper needs it), and the
    whole arguments string, so nothing is diffed from partial JSON."""
    return _delta_tool_call(index, id, _tool_call_function(name, arguments))


def chat_choice(index: int, message: dict, finish_reason: str, logprobs: dict | None) -> dict:
    """message: chat_message's."""
    return _chat_choice(index, message, logprobs, finish_reason)


def chat_completion(id: str, created: int, model: str, choices: list[dict], usage: dict) -> dict:
    return _chat_completion(id, created, model, choices, usage)


def chat_chunk(id: str, created: int, model: str, index: int, delta: dict, finish_reason: str | None,
               logprobs: dict | None, with_usage: bool) -> dict:
    choices = [_chat_chunk_choice(index, delta, logprobs, finish_reason)]
    if with_usage:  # with stream_options.include_usage every chunk says usage: null but the final usage chunk
        return _chat_chunk_with_usage(id, created, model, choices, None)
    return _chat_chunk(id, created, model, choices)


def completion_choice(index: int, text: str, finish_reason: str | None, logprobs: dict | None) -> dict:
    return _completion_choice(index, text, logprobs, finish_reason)


def completion(id: str, created: int, model: str, choices: list[dict], usage: dict) -> dict:
    return _completion(id, created, model, choices, usage)


def completion_chunk(id: str, created: int, model: str, choice: dict, with_usage: bool) -> dict:
    if with_usage:
        return _completion_chunk_with_usage(id, created, model, [choice], None)
    return _completion_chunk(id, created, model, [choice])


def usage_chunk(id: str, created: int, model: str, object: str, usage: dict) -> dict:
    """The extra last chunk of include_usage (`object` says whose): no choices, the usage of the whole request."""
    return _USAGE_CHUNK_BUILDERS[object](id, created, model, [], usage)


def embedding_list(model: str, embeddings: list, prompt_tokens: int) -> dict:
    """embeddings: one list of floats or base64 string per input, in input order."""
    return _embedding_list([_embedding(embedding, index) for index, embedding in enumerate(embeddings)], model,
                           _embedding_usage(prompt_tokens, prompt_tokens))


# --- the Responses API -------------------------------------------------------------------------------------------

def output_text(text: str) -> dict:
    return _output_text(text)


def output_message(id: str, status: str, content: list[dict]) -> dict:
    """content: output_text's (none while the message is being streamed)."""
    return _output_message(id, status, content)


def function_call_item(id: str, status: str, call_id: str, name: str, arguments: str) -> dict:
    return _function_call(id, status, call_id, name, arguments)


def function_tool(name: str, description: str | None, parameters: dict | None, strict: bool | None) -> dict:
    return _function_tool(name, description, parameters, strict)


def response_text(kind: str, name: str | None = None, schema: dict | None = None, strict: bool | None = None) -> dict:
    """The text settings of a response: kind text, json_object, or json_schema (with name, schema, strict)."""
    if kind == "json_schema":
        return _response_text(_json_schema_format(name, schema, strict))
    return _response_text(_text_format(kind))


def tool_choice(choice: str | None, function: str | None = None) -> str | dict:
    """A response's tool_choice: none, auto, required, or (choice None) the function named."""
    return _tool_choice_function(function) if choice is None else choice


def response_usage(input_tokens: int, output_tokens: int) -> dict:
    return _response_usage(input_tokens, _input_tokens_details(), output_tokens, _output_tokens_details(),
                           input_tokens + output_tokens)


def response(id: str, created_at: int, status: str, model: str, output: list[dict], usage: dict | None,
             settings: dict, error_message: str | None = None) -> dict:
    """A response object. settings: the request's settings it echoes, by field name (instructions, tools, ...);
    error_message: set on a failed one."""
    return _response(id=id, created_at=created_at, status=status,
                     completed_at=now() if status == "completed" else None,
                     error=_response_error(error_message) if error_message is not None else None,
                     incomplete_details=_incomplete_details() if status == "incomplete" else None, model=model,
                     output=output, reasoning=_reasoning(), usage=usage, **settings)


def response_event(type: str, sequence_number: int, **fields) -> dict:
    """The streamed event of `type`; fields: the event's own (item, delta, response, ...)."""
    return _RESPONSE_EVENTS[type](sequence_number=sequence_number, **fields)
