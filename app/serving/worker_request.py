"""The generation request a FastChat worker gets, built from the validated OpenAI parameters."""
from __future__ import annotations

from collections.abc import Sequence

from app.images.parts import Image
from app.serving.prompt import Template, merge_stop


def worker_payload(params: dict, prompt: str, max_new_tokens: int | None, template: Template, *,
                   echo: bool = False, logprobs: int | None = None, images: Sequence[Image] = ()) -> dict:
    """The generation request for a worker, keys in the order FastChat's server sends them. `images` only when
    there are some: each as plain base64 (app.serving.vision says why)."""
    payload = {
        "model": params["model"], "prompt": prompt, "temperature": params["temperature"], "logprobs": logprobs,
        "top_p": params["top_p"], "top_k": params["top_k"], "presence_penalty": params["presence_penalty"],
        "frequency_penalty": params["frequency_penalty"], "max_new_tokens": max_new_tokens, "echo": echo,
        "stop_token_ids": None if template.stop_token_ids is None else list(template.stop_token_ids),
    }
    if images:
        payload["images"] = [image.base64 for image in images]
    payload["stop"] = merge_stop(params["stop"], template)
    if max_new_tokens is None:  # the worker did not say its context length: its own default applies
        del payload["max_new_tokens"]
    for optional in ("repetition_penalty", "seed"):
        if params[optional] is not None:
            payload[optional] = params[optional]
    return payload


def choice_payloads(payload: dict, n: int) -> list[dict]:
    """The worker requests of one prompt's n choices. With a seed, choice i gets seed + i: one seed for all would
    make a worker that honours seeds return n identical choices, where OpenAI's differ and stay reproducible."""
    if "seed" not in payload:
        return [payload] * n
    return [{**payload, "seed": payload["seed"] + index} for index in range(n)]
