"""Builders of every OpenAI response object: the only place that spells response field names."""
from __future__ import annotations

import time
import uuid


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def model_card(model: str, created: int) -> dict:
    """An OpenAI model object, with FastChat's card fields (root, parent, permission) kept for its clients."""
    return {
        "id": model, "object": "model", "created": created, "owned_by": "fastchat", "root": model, "parent": None,
        "permission": [{
            "id": new_id("modelperm"), "object": "model_permission", "created": created,
            "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
            "allow_search_indices": True, "allow_view": True, "allow_fine_tuning": False, "organization": "*",
            "group": None, "is_blocking": False,
        }],
    }


def model_list(models: list[str]) -> dict:
    created = now()
    return {"object": "list", "data": [model_card(model, created) for model in models]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_choice(index: int, text: str, finish_reason: str, logprobs: dict | None) -> dict:
    return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
            "finish_reason": finish_reason}


def chat_completion(id: str, created: int, model: str, choices: list[dict], usage: dict) -> dict:
    return {"id": id, "object": "chat.completion", "created": created, "model": model, "choices": choices,
            "usage": usage}


def chat_chunk(id: str, created: int, model: str, index: int, delta: dict, finish_reason: str | None,
               logprobs: dict | None, with_usage: bool) -> dict:
    choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
    return _chunk(id, created, model, "chat.completion.chunk", choice, with_usage)


def completion_choice(index: int, text: str, finish_reason: str | None, logprobs: dict | None) -> dict:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def completion(id: str, created: int, model: str, choices: list[dict], usage: dict) -> dict:
    return {"id": id, "object": "text_completion", "created": created, "model": model, "choices": choices,
            "usage": usage}


def completion_chunk(id: str, created: int, model: str, choice: dict, with_usage: bool) -> dict:
    return _chunk(id, created, model, "text_completion", choice, with_usage)


def _chunk(id: str, created: int, model: str, object: str, choice: dict, with_usage: bool) -> dict:
    chunk = {"id": id, "object": object, "created": created, "model": model, "choices": [choice]}
    if with_usage:
        # With stream_options.include_usage every chunk says usage: null except the final usage chunk.
        chunk["usage"] = None
    return chunk


def usage_chunk(id: str, created: int, model: str, object: str, usage: dict) -> dict:
    """The extra last chunk of include_usage: no choices, the usage of the whole request."""
    return {"id": id, "object": object, "created": created, "model": model, "choices": [], "usage": usage}


def embedding_list(model: str, embeddings: list, prompt_tokens: int) -> dict:
    """embeddings: one list of floats or base64 string per input, in input order."""
    return {
        "object": "list",
        "data": [{"object": "embedding", "embedding": embedding, "index": index}
                 for index, embedding in enumerate(embeddings)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
