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
    order (the order of the JSON keys), without the FIXED ones, which it fills in, and without the fields that
    are not required unless `optional`.

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
            if value is not None and type(value) not in (str, bool, int):
                raise TypeError(f"{schema.__name__}.{name}: a fixed value must be a str, bool, int or None")
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

_USAGE_CHUNK_BUILDERS = {"chat.completion.chunk": _chat_chunk_with_usage,
                         "text_completion": _completion_chunk_with_usage}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


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
