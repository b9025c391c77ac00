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


def chat_completion(id: str, created: int, model: str, contents: list[tuple[str, str]], usage: dict) -> dict:
    """contents: (text, finish_reason) per choice, in index order."""
    return {
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [
            {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None,
             "finish_reason": finish_reason}
            for index, (text, finish_reason) in enumerate(contents)
        ],
        "usage": usage,
    }


def chat_chunk(id: str, created: int, model: str, index: int, delta: dict, finish_reason: str | None,
               with_usage: bool) -> dict:
    chunk = {
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage:
        # With stream_options.include_usage every chunk says usage: null except the final usage chunk.
        chunk["usage"] = None
    return chunk


def chat_usage_chunk(id: str, created: int, model: str, usage: dict) -> dict:
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
            "usage": usage}
