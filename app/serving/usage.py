"""Token usage of a whole request, from what the workers reported for each choice and what we counted."""
from __future__ import annotations

from app.serving import payloads


def total_usage(prompts: list[tuple[list[dict | None], int | None]]) -> dict:
    """Usage over (worker usages of a prompt's choices, our count of that prompt) pairs: each prompt's tokens
    once (FastChat summed them per choice), completion tokens of every choice. The worker's own prompt count
    wins over ours; ours stands in for workers that report no usage."""
    prompt_tokens = completion_tokens = 0
    for usages, counted in prompts:
        reported = [usage for usage in usages if isinstance(usage, dict)]
        prompt_tokens += next((u["prompt_tokens"] for u in reported if isinstance(u.get("prompt_tokens"), int)),
                              counted or 0)
        completion_tokens += sum(u["completion_tokens"] for u in reported
                                 if isinstance(u.get("completion_tokens"), int))
    return payloads.usage(prompt_tokens, completion_tokens)


class StreamCut(Exception):
    """Thrown into a chunk generator whose client left (app.streaming): it answers with its usage chunk so far,
    what the key's token limit counts."""


def usage_so_far(chunks) -> dict | None:
    """The usage a paused chunk generator reports when told its client left (StreamCut); None when it cannot."""
    throw = getattr(chunks, "throw", None)
    if throw is None:
        return None
    try:
        chunk = throw(StreamCut())
    except Exception:  # StreamCut itself (not handled, or not started), StopIteration, a generator running
        return None
    return chunk.get("usage") if isinstance(chunk, dict) and chunk.get("choices") == [] else None
