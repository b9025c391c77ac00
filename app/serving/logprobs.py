"""FastChat workers' logprobs ({text_offset, token_logprobs, tokens, top_logprobs}, cumulative while streaming)
in OpenAI's completion and chat shapes."""
from __future__ import annotations

KEYS = ("text_offset", "token_logprobs", "tokens", "top_logprobs")


def completion_logprobs(worker: object) -> dict | None:
    """The worker's logprobs with only the four known lists (None when the worker sent none)."""
    if not isinstance(worker, dict) or not isinstance(worker.get("tokens"), list):
        return None
    tokens = worker["tokens"]
    return {key: list(worker.get(key) or [])[:len(tokens)] if key != "tokens" else list(tokens) for key in KEYS}


class LogprobsTracker:
    """Cumulative worker logprobs to the entries of the tokens not sent yet, for streamed chunks."""

    def __init__(self) -> None:
        self._sent = 0

    def delta(self, worker: object) -> dict | None:
        logprobs = completion_logprobs(worker)
        if logprobs is None:
            return None
        start, self._sent = self._sent, max(self._sent, len(logprobs["tokens"]))
        return {key: values[start:] for key, values in logprobs.items()}


def chat_logprobs(logprobs: dict | None, top_logprobs: int) -> dict | None:
    """Completion-shaped logprobs as chat's {"content": [{token, logprob, bytes, top_logprobs}]}."""
    if logprobs is None:
        return None
    content = []
    for position, token in enumerate(logprobs["tokens"]):
        logprob = _at(logprobs["token_logprobs"], position)
        alternatives = _at(logprobs["top_logprobs"], position) or {}
        content.append({
            "token": token, "logprob": logprob if logprob is not None else 0.0, "bytes": _bytes(token),
            "top_logprobs": [{"token": alt, "logprob": value, "bytes": _bytes(alt)}
                             for alt, value in list(alternatives.items())[:top_logprobs]],
        })
    return {"content": content, "refusal": None}


def _at(values: list, position: int):
    return values[position] if position < len(values) else None


def _bytes(token: object) -> list[int]:
    return list(str(token).encode("utf-8"))
