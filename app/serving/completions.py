"""Text completions: raw prompts (strings or token ids), n choices per prompt, all generated concurrently.

Choice `index` is prompt_index * n + choice, streamed or not (FastChat restarted it at 0 for every prompt).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from app.serving import payloads
from app.serving.cluster import Cluster
from app.serving.deltas import choice_deltas, finish_reason
from app.serving.logprobs import LogprobsTracker, completion_logprobs
from app.serving.token_ids import decode_inputs
from app.serving.usage import StreamCut, total_usage
from app.serving.worker_request import choice_payloads, worker_payload
from app.upstream.worker import WorkerStream


@dataclass(frozen=True)
class PreparedCompletion:
    payloads: list[dict]  # one per prompt
    prompt_tokens: list[int | None]  # our count of each prompt


def prepare_completion(params: dict, cluster: Cluster, address: str, *, streaming: bool) -> PreparedCompletion:
    """Decode the prompts and check every one against the context of the worker at `address`."""
    model = params["model"]
    prompts = decode_inputs(params["prompt"], model, "prompt")
    # FastChat applies the template's stop strings and stop ids to raw completions too.
    template = cluster.template(address, model)
    fitted = cluster.map(lambda prompt: cluster.fit_max_tokens(address, model, prompt, params["max_tokens"],
                                                               param="prompt"), prompts)
    generation_payloads = []
    for prompt, (max_new_tokens, _) in zip(prompts, fitted):
        payload = worker_payload(params, prompt, max_new_tokens, template, echo=params["echo"],
                                 logprobs=params["logprobs"])
        if not streaming:  # the worker can only return one sequence per call on a stream
            for key in ("best_of", "use_beam_search"):
                if params[key] is not None:
                    payload[key] = params[key]
        generation_payloads.append(payload)
    return PreparedCompletion(generation_payloads, [count for _, count in fitted])


def create_completion(params: dict, cluster: Cluster) -> dict:
    """A whole completion: every choice of every prompt generated concurrently, each worker call made once."""
    n = params["n"]

    def attempt(address: str) -> tuple[PreparedCompletion, list[dict]]:
        prepared = prepare_completion(params, cluster, address, streaming=False)
        choices = [choice for payload in prepared.payloads for choice in choice_payloads(payload, n)]
        return prepared, cluster.generate(address, choices)

    prepared, replies = cluster.run_on_worker(params["model"], attempt)
    choices = [payloads.completion_choice(index, reply.get("text") or "", finish_reason(reply.get("finish_reason")),
                                          completion_logprobs(reply.get("logprobs"))
                                          if params["logprobs"] is not None else None)
               for index, reply in enumerate(replies)]
    usage = total_usage([([reply.get("usage") for reply in replies[p * n:(p + 1) * n]], counted)
                         for p, counted in enumerate(prepared.prompt_tokens)])
    return payloads.completion(payloads.new_id("cmpl"), payloads.now(), params["model"], choices, usage)


def stream_completion(params: dict, cluster: Cluster) -> Iterator[dict]:
    """Check every prompt and open every stream now (so failures get a status); return the chunk generator."""
    def attempt(address: str) -> tuple[PreparedCompletion, list[WorkerStream]]:
        prepared = prepare_completion(params, cluster, address, streaming=True)
        payloads = [choice for payload in prepared.payloads for choice in choice_payloads(payload, params["n"])]
        return prepared, cluster.open_streams(address, payloads)

    return _chunks(params, *cluster.run_on_worker(params["model"], attempt))


def _chunks(params: dict, prepared: PreparedCompletion, streams: list[WorkerStream]) -> Iterator[dict]:
    id, created, model, n = payloads.new_id("cmpl"), payloads.now(), params["model"], params["n"]
    with_usage = params["include_usage"]
    usages: list[dict | None] = [None] * len(streams)
    trackers = [LogprobsTracker() for _ in streams]
    try:
        for delta in choice_deltas(streams):
            usages[delta.index] = delta.frame.get("usage") or usages[delta.index]
            logprobs = trackers[delta.index].delta(delta.frame.get("logprobs")) \
                if params["logprobs"] is not None else None
            choice = payloads.completion_choice(delta.index, delta.text, delta.finish_reason, logprobs)
            yield payloads.completion_chunk(id, created, model, choice, with_usage)
        # Always: the SSE layer sends it only on include_usage, and records the usage either way.
        usage = total_usage([(usages[p * n:(p + 1) * n], counted) for p, counted in enumerate(prepared.prompt_tokens)])
        yield payloads.usage_chunk(id, created, model, "text_completion", usage)
    except StreamCut:  # the client left: what was generated so far, for its key's token limit
        usage = total_usage([(usages[p * n:(p + 1) * n], counted) for p, counted in enumerate(prepared.prompt_tokens)])
        yield payloads.usage_chunk(id, created, model, "text_completion", usage)
    finally:
        for stream in streams:
            stream.close()
