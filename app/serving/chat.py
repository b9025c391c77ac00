"""Chat completions: render the prompt from the worker's template, generate, and shape OpenAI's objects.

Streaming keeps an eager prefix (everything that can fail with its own status, up to opening the worker
streams) and a lazy tail that only turns worker frames into chunks.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from app.serving import payloads
from app.serving.cluster import Cluster
from app.serving.deltas import choice_deltas, finish_reason
from app.serving.logprobs import LogprobsTracker, chat_logprobs, completion_logprobs
from app.serving.prompt import build_prompt
from app.serving.usage import total_usage
from app.serving.worker_request import choice_payloads, worker_payload
from app.upstream.worker import WorkerStream


@dataclass(frozen=True)
class PreparedChat:
    payload: dict
    prompt_tokens: int | None


def prepare_chat(params: dict, cluster: Cluster, address: str) -> PreparedChat:
    """Render the prompt with the worker's template, fit max_tokens and build the exact worker payload."""
    model = params["model"]
    template = cluster.template(address, model)
    messages = params["messages"]
    # A string is FastChat's raw-prompt extension: used verbatim, no template applied.
    prompt = messages if isinstance(messages, str) else build_prompt(template, messages)
    max_new_tokens, prompt_tokens = cluster.fit_max_tokens(address, model, prompt, params["max_tokens"])
    payload = worker_payload(params, prompt, max_new_tokens, template, logprobs=params["top_logprobs"])
    return PreparedChat(payload, prompt_tokens)


def create_chat_completion(params: dict, cluster: Cluster) -> dict:
    """A whole chat completion; the n choices are generated concurrently."""
    def attempt(address: str) -> tuple[PreparedChat, list[dict]]:
        prepared = prepare_chat(params, cluster, address)
        return prepared, cluster.generate(address, choice_payloads(prepared.payload, params["n"]))

    prepared, replies = cluster.run_on_worker(params["model"], attempt)
    choices = [payloads.chat_choice(index, reply.get("text") or "", finish_reason(reply.get("finish_reason")),
                                    _logprobs(params, reply.get("logprobs")))
               for index, reply in enumerate(replies)]
    usage = total_usage([([reply.get("usage") for reply in replies], prepared.prompt_tokens)])
    return payloads.chat_completion(payloads.new_id("chatcmpl"), payloads.now(), params["model"], choices, usage)


def stream_chat_completion(params: dict, cluster: Cluster) -> Iterator[dict]:
    """Open the worker streams now (so failures get a status) and return the generator of chunks."""
    def attempt(address: str) -> tuple[PreparedChat, list[WorkerStream]]:
        prepared = prepare_chat(params, cluster, address)
        return prepared, cluster.open_streams(address, choice_payloads(prepared.payload, params["n"]))

    return _chunks(params, *cluster.run_on_worker(params["model"], attempt))


def _chunks(params: dict, prepared: PreparedChat, streams: list[WorkerStream]) -> Iterator[dict]:
    id, created, model = payloads.new_id("chatcmpl"), payloads.now(), params["model"]
    with_usage = params["include_usage"]
    usages: list[dict | None] = [None] * len(streams)
    logprobs = [LogprobsTracker() for _ in streams]
    try:
        for index in range(len(streams)):
            yield payloads.chat_chunk(id, created, model, index, {"role": "assistant", "content": ""}, None, None,
                                      with_usage)
        for delta in choice_deltas(streams):
            usages[delta.index] = delta.frame.get("usage") or usages[delta.index]
            new_logprobs = _logprobs(params, delta.frame.get("logprobs"), logprobs[delta.index])
            yield payloads.chat_chunk(id, created, model, delta.index, {"content": delta.text} if delta.text else {},
                                      delta.finish_reason, new_logprobs, with_usage)
        # Always: the SSE layer sends it only on include_usage, and records the usage either way.
        yield payloads.usage_chunk(id, created, model, "chat.completion.chunk",
                                   total_usage([(usages, prepared.prompt_tokens)]))
    finally:
        for stream in streams:
            stream.close()


def _logprobs(params: dict, worker_logprobs, tracker: LogprobsTracker | None = None) -> dict | None:
    if params["top_logprobs"] is None:
        return None
    logprobs = tracker.delta(worker_logprobs) if tracker else completion_logprobs(worker_logprobs)
    return chat_logprobs(logprobs, params["top_logprobs"])
