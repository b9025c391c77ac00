"""Chat completions: render the prompt from the worker's template, generate, and shape OpenAI's objects.

Tools, earlier calls and tool results are written into the messages in the model's tool format
(app.serving.tools), and a JSON response_format adds its instruction, before the template frames them; the
replies are shaped by app.serving.chat_replies.

Streaming keeps an eager prefix (everything that can fail with its own status, up to opening the worker
streams) and a lazy tail that only turns worker frames into chunks.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from app.errors import unsupported_parameter
from app.serving import payloads, vision
from app.serving.chat_replies import Reply, ReplyRules, StreamedReply, whole_reply
from app.serving.cluster import Cluster
from app.serving.deltas import choice_deltas, finish_reason
from app.serving.logprobs import LogprobsTracker, chat_logprobs, completion_logprobs
from app.serving.prompt import Template, build_prompt
from app.serving.tools import registry, structured
from app.serving.tools.calls import CallIds
from app.serving.tools.formats import ToolFormat
from app.serving.tools.render import render_messages
from app.serving.usage import StreamCut, total_usage
from app.serving.worker_request import choice_payloads, worker_payload
from app.upstream.worker import WorkerStream


@dataclass(frozen=True)
class PreparedChat:
    payload: dict
    prompt_tokens: int | None
    rules: ReplyRules


def prepare_chat(params: dict, cluster: Cluster, address: str) -> PreparedChat:
    """Render the prompt with the worker's template, fit max_tokens and build the exact worker payload."""
    model = params["model"]
    template = cluster.template(address, model)
    messages = params["messages"]
    tool_format = None
    if isinstance(messages, str):  # FastChat's raw-prompt extension: used verbatim, no template applied
        prompt = messages
    else:
        tool_format = _tool_format(params, cluster, template)
        if tool_format is not None:
            messages = render_messages(tool_format, messages, params["tools"], params["tool_choice"],
                                       params["parallel_tool_calls"], template.system_message)
        messages = structured.with_instruction(messages, params["response_format"], template.system_message)
        prompt = build_prompt(template, messages)
    max_new_tokens, prompt_tokens = cluster.fit_max_tokens(address, model, prompt, params["max_tokens"])
    payload = worker_payload(params, prompt, max_new_tokens, template, logprobs=params["top_logprobs"],
                             images=vision.images_of(messages))
    return PreparedChat(payload, prompt_tokens, ReplyRules.of(params, tool_format))


def _tool_format(params: dict, cluster: Cluster, template: Template) -> ToolFormat | None:
    """The model's tool format when the request offers tools or its messages hold calls or results; a 400
    when it needs one and the model has none (tools are never dropped)."""
    model = params["model"]
    if params["tools"] and params["tool_choice"] != "none":
        return registry.require_format(model, template, cluster.tool_formats)
    if not any(message["role"] == "tool" or message.get("tool_calls") for message in params["messages"]):
        return None
    tool_format = registry.format_for(model, template, cluster.tool_formats)
    if tool_format is None:
        raise unsupported_parameter(
            "messages", f"The model `{model}` has no tool-call format (its conversation template is "
                        f"{template.name!r}), so tool calls and tool results cannot be written into its prompt.")
    return tool_format


def create_chat_completion(params: dict, cluster: Cluster) -> dict:
    """A whole chat completion; the n choices are generated concurrently."""
    ids = CallIds()  # one per response: call ids unique across its choices
    params = vision.with_images_ready(params, cluster)

    def attempt(address: str) -> tuple[PreparedChat, list[dict], list[Reply], list[dict]]:
        prepared = prepare_chat(params, cluster, address)
        worker_payloads = choice_payloads(prepared.payload, params["n"])
        generated = cluster.generate(address, worker_payloads)
        return (prepared, *_complying_replies(prepared.rules, cluster, address, worker_payloads, generated, ids))

    prepared, replies, shaped, retried = cluster.run_on_worker(params["model"], attempt)
    choices = [payloads.chat_choice(index, reply.message, reply.finish_reason,
                                    _logprobs(params, generated.get("logprobs")))
               for index, (generated, reply) in enumerate(zip(replies, shaped))]
    # Every generation counts, retries included: the worker did that work.
    usage = total_usage([([reply.get("usage") for reply in retried + replies], prepared.prompt_tokens)])
    return payloads.chat_completion(payloads.new_id("chatcmpl"), payloads.now(), params["model"], choices, usage)


def _complying_replies(rules: ReplyRules, cluster: Cluster, address: str, worker_payloads: list[dict],
                       generated: list[dict], ids: CallIds) -> tuple[list[dict], list[Reply], list[dict]]:
    """The choices shaped, the ones that break a JSON response_format generated again (at most
    cluster.structured_retries more times); raises non_compliant when one still breaks it. Returns the final
    worker replies, the shaped choices and the replies that were generated again."""
    def shape(reply: dict):
        return whole_reply(rules, reply.get("text") or "", finish_reason(reply.get("finish_reason")), ids)

    final, shaped = list(generated), [shape(reply) for reply in generated]
    earlier: list[dict] = []
    for retry in range(1, cluster.structured_retries + 1):
        failing = [index for index, reply in enumerate(shaped) if reply.problem]
        if not failing:
            break
        again = cluster.generate(address, [_retry_payload(worker_payloads[index], retry, len(worker_payloads))
                                           for index in failing])
        for index, reply in zip(failing, again):
            earlier.append(final[index])
            final[index], shaped[index] = reply, shape(reply)
    problem = next((reply.problem for reply in shaped if reply.problem), None)
    if problem is not None:
        raise structured.non_compliant(problem)
    return final, shaped, earlier


def _retry_payload(payload: dict, retry: int, n: int) -> dict:
    """A seeded choice is generated again with a seed no choice of the request had (seed + i + retry * n): with
    its own seed, a worker that honours seeds would only repeat the same reply. Still reproducible."""
    if payload.get("seed") is None:
        return payload
    return {**payload, "seed": payload["seed"] + retry * n}


def stream_chat_completion(params: dict, cluster: Cluster) -> Iterator[dict]:
    """Open the worker streams now (so failures get a status) and return the generator of chunks."""
    params = vision.with_images_ready(params, cluster)

    def attempt(address: str) -> tuple[PreparedChat, list[WorkerStream]]:
        prepared = prepare_chat(params, cluster, address)
        return prepared, cluster.open_streams(address, choice_payloads(prepared.payload, params["n"]))

    return _chunks(params, *cluster.run_on_worker(params["model"], attempt))


def _chunks(params: dict, prepared: PreparedChat, streams: list[WorkerStream]) -> Iterator[dict]:
    id, created, model = payloads.new_id("chatcmpl"), payloads.now(), params["model"]
    with_usage = params["include_usage"]
    usages: list[dict | None] = [None] * len(streams)
    logprobs = [LogprobsTracker() for _ in streams]
    ids = CallIds()
    replies = [StreamedReply(prepared.rules, ids) for _ in streams]
    try:
        for index in range(len(streams)):
            yield payloads.chat_chunk(id, created, model, index, {"role": "assistant", "content": ""}, None, None,
                                      with_usage)
        for delta in choice_deltas(streams):
            usages[delta.index] = delta.frame.get("usage") or usages[delta.index]
            new_logprobs = _logprobs(params, delta.frame.get("logprobs"), logprobs[delta.index])
            chunk_delta, finish = replies[delta.index].delta(delta.text, delta.finish_reason)
            if "tool_calls" in chunk_delta and finish:
                # The finish gets a chunk of its own, as OpenAI sends it: the SDK's stream helper closes a call
                # (its arguments.done event) only on a later chunk.
                yield payloads.chat_chunk(id, created, model, delta.index, chunk_delta, None, new_logprobs,
                                          with_usage)
                chunk_delta, new_logprobs = {}, None
            if chunk_delta or finish or new_logprobs:  # text a parser holds back makes no empty chunk
                yield payloads.chat_chunk(id, created, model, delta.index, chunk_delta, finish, new_logprobs,
                                          with_usage)
        # Always: the SSE layer sends it only on include_usage, and records the usage either way.
        yield payloads.usage_chunk(id, created, model, "chat.completion.chunk",
                                   total_usage([(usages, prepared.prompt_tokens)]))
    except StreamCut:  # the client left: what was generated so far, for its key's token limit
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
