"""Chat completions: render the prompt from the worker's template, generate, and shape OpenAI's objects.

Streaming keeps an eager prefix (everything that can fail with its own status, up to opening the worker
streams) and a lazy tail that only turns worker frames into chunks.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from app.serving import payloads
from app.serving.cluster import Cluster, finish_reason
from app.serving.deltas import DeltaTracker
from app.serving.interleave import interleave
from app.serving.prompt import build_prompt, merge_stop
from app.upstream.worker import WorkerStream


@dataclass(frozen=True)
class PreparedChat:
    address: str
    payload: dict
    prompt_tokens: int | None


def prepare_chat(params: dict, cluster: Cluster) -> PreparedChat:
    """Resolve the worker, render the prompt, fit max_tokens and build the exact worker payload."""
    model = params["model"]
    address = cluster.resolve_worker(model)
    template = cluster.template(address, model)
    messages = params["messages"]
    # A string is FastChat's raw-prompt extension: used verbatim, no template applied.
    prompt = messages if isinstance(messages, str) else build_prompt(template, messages)
    max_new_tokens, prompt_tokens = cluster.fit_max_tokens(address, model, prompt, params["max_tokens"])
    payload = {
        "model": model, "prompt": prompt, "temperature": params["temperature"], "logprobs": None,
        "top_p": params["top_p"], "top_k": params["top_k"], "presence_penalty": params["presence_penalty"],
        "frequency_penalty": params["frequency_penalty"], "max_new_tokens": max_new_tokens, "echo": False,
        "stop_token_ids": None if template.stop_token_ids is None else list(template.stop_token_ids),
        "stop": merge_stop(params["stop"], template),
    }
    if max_new_tokens is None:
        del payload["max_new_tokens"]
    for optional in ("repetition_penalty", "seed"):
        if params[optional] is not None:
            payload[optional] = params[optional]
    return PreparedChat(address, payload, prompt_tokens)


def create_chat_completion(params: dict, cluster: Cluster) -> dict:
    """A whole chat completion; the n choices are generated concurrently."""
    prepared = prepare_chat(params, cluster)
    replies = cluster.generate(prepared.address, prepared.payload, params["n"])
    contents = [(reply.get("text") or "", finish_reason(reply.get("finish_reason"))) for reply in replies]
    return payloads.chat_completion(payloads.new_id("chatcmpl"), payloads.now(), params["model"], contents,
                                    _usage([reply.get("usage") for reply in replies], prepared.prompt_tokens))


def stream_chat_completion(params: dict, cluster: Cluster) -> Iterator[dict]:
    """Open the worker streams now (so failures get a status) and return the generator of chunks."""
    prepared = prepare_chat(params, cluster)
    streams = cluster.open_streams(prepared.address, prepared.payload, params["n"])
    return _chunks(params, prepared, streams)


def _chunks(params: dict, prepared: PreparedChat, streams: list[WorkerStream]) -> Iterator[dict]:
    id, created, model = payloads.new_id("chatcmpl"), payloads.now(), params["model"]
    with_usage = params["include_usage"]

    def chunk(index: int, delta: dict, finish: str | None) -> dict:
        return payloads.chat_chunk(id, created, model, index, delta, finish, with_usage)

    trackers = [DeltaTracker() for _ in streams]
    finished: list[str | None] = [None] * len(streams)
    usages: list[dict | None] = [None] * len(streams)
    try:
        for index in range(len(streams)):
            yield chunk(index, {"role": "assistant", "content": ""}, None)
        for index, frame in interleave(streams):
            if finished[index]:
                continue  # vLLM workers repeat their final frame
            text = frame.get("text")
            delta = trackers[index].delta(text if isinstance(text, str) else "")
            usages[index] = frame.get("usage") or usages[index]
            if frame.get("finish_reason") is not None:
                finished[index] = finish_reason(frame["finish_reason"])
            if delta or finished[index]:
                yield chunk(index, {"content": delta} if delta else {}, finished[index])
        for index, done in enumerate(finished):
            if not done:  # the worker ended its stream cleanly without saying why
                yield chunk(index, {}, "stop")
        if with_usage:
            yield payloads.chat_usage_chunk(id, created, model, _usage(usages, prepared.prompt_tokens))
    finally:
        for stream in streams:
            stream.close()


def _usage(worker_usages: list[dict | None], counted_prompt_tokens: int | None) -> dict:
    """Prompt tokens once (FastChat summed them per choice), completion tokens summed over the choices.

    The worker's own prompt count wins over ours; ours stands in for workers that report no usage.
    """
    reported = [usage for usage in worker_usages if isinstance(usage, dict)]
    prompt_tokens = next((u["prompt_tokens"] for u in reported if isinstance(u.get("prompt_tokens"), int)),
                         counted_prompt_tokens or 0)
    completion_tokens = sum(u["completion_tokens"] for u in reported if isinstance(u.get("completion_tokens"), int))
    return payloads.usage(prompt_tokens, completion_tokens)
