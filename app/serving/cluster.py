"""The FastChat cluster as the use cases see it: the steps every generation shares, built on the upstream clients.

Everything here runs before the first response byte, so each failure still gets its own HTTP status.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from app.errors import context_length_exceeded, model_not_found
from app.serving import payloads
from app.serving.prompt import Template, TemplateError, merge_stop
from app.upstream.controller import Controller
from app.upstream.static_workers import StaticWorkers
from app.upstream.errors import BAD_RESPONSE, UNAVAILABLE, UpstreamError
from app.upstream.worker import Workers, WorkerStream

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Cluster:
    """controller: the FastChat controller, or StaticWorkers (same interface) when there is none;
    workers: calls to model workers; executor: runs the n > 1 choices concurrently;
    numbering: SEP_STYLE_NUMBERING; clip_overflow: CONTEXT_OVERFLOW == "clip"; embedding_batch_size: inputs per
    worker embeddings call; failover_attempts: other workers tried when one cannot be reached."""

    controller: Controller | StaticWorkers
    workers: Workers
    executor: Executor
    numbering: str = "auto"
    clip_overflow: bool = False
    embedding_batch_size: int = 4
    failover_attempts: int = 2

    def run_on_worker(self, model: str, attempt: Callable[[str], T]) -> T:
        """attempt(worker address) on a worker serving `model`; raises 404 for a model nobody serves.

        When the worker cannot be reached (nothing was generated, nothing sent to the client), the failure is
        reported (cooldown, controller refresh) and up to `failover_attempts` other workers are tried. Any other
        failure is raised as it is: a timed-out or erring worker may have done the work already.
        """
        if not self.controller.has_model(model):
            raise model_not_found(model)
        for tries_left in range(self.failover_attempts, -1, -1):
            address = self.controller.get_worker_address(model)
            try:
                return attempt(address)
            except UpstreamError as exc:
                if exc.kind != UNAVAILABLE or exc.upstream != "worker":
                    raise
                self.controller.report_failure(address)
                if not tries_left:
                    raise
                logger.warning("worker %s for %s unreachable; trying another (%s)", address, model, exc.message)
        raise AssertionError("unreachable")  # the loop returns or raises

    def template(self, address: str, model: str) -> Template:
        """The worker's conversation template, in the sep_style numbering it uses."""
        try:
            return Template.from_wire(self.workers.conv_template(address, model), self.numbering)
        except TemplateError as exc:
            raise UpstreamError(BAD_RESPONSE, f"The worker's conversation template is unusable: {exc}") from None

    def fit_max_tokens(self, address: str, model: str, prompt: str, max_tokens: int | None,
                       param: str = "messages") -> tuple[int | None, int | None]:
        """Return (max_new_tokens to send, prompt token count), checking the prompt against the context.

        An absent max_tokens takes the rest of the context. Raises 400 context_length_exceeded when the prompt
        fills the context, or when an explicit max_tokens does not fit (unless clipping is configured). Nothing is
        counted (a round trip saved; the worker reports the count in its usage) when the worker does not report
        a context length, or when an explicit max_tokens fits whatever the tokenizer does with the prompt.
        """
        context = self.workers.context_length(address, model)
        if context is None or (max_tokens is not None and most_tokens(prompt) + max_tokens <= context):
            return max_tokens, None
        prompt_tokens = self.workers.count_tokens(address, model, prompt)
        room = context - prompt_tokens
        if room <= 0:
            raise context_length_exceeded(context, prompt_tokens, None, param)
        if max_tokens is None or (max_tokens > room and self.clip_overflow):
            return room, prompt_tokens
        if max_tokens > room:
            raise context_length_exceeded(context, prompt_tokens, max_tokens, param)
        return max_tokens, prompt_tokens

    def map(self, function, items: list) -> list:
        """function(item) for every item, concurrently when there are several."""
        if len(items) == 1:
            return [function(items[0])]
        return list(self.executor.map(function, items))

    def generate(self, address: str, payloads: list[dict]) -> list[dict]:
        """One whole generation per payload, run concurrently; the first failure is raised."""
        return self.map(lambda payload: self.workers.generate(address, payload), payloads)

    def open_streams(self, address: str, payloads: list[dict]) -> list[WorkerStream]:
        """One open generation stream per payload; if one cannot be opened, the others are closed and the
        error raised."""
        streams: list[WorkerStream] = []
        try:
            for payload in payloads:
                streams.append(self.workers.open_stream(address, payload))
        except BaseException:
            for stream in streams:
                stream.close()
            raise
        return streams


def most_tokens(prompt: str) -> int:
    """More tokens than any tokenizer makes of `prompt`: every token of byte-level BPE and SentencePiece (byte
    fallback) covers at least one UTF-8 byte, plus a few special tokens (BOS, a SentencePiece prefix)."""
    return len(prompt.encode("utf-8", "surrogatepass")) + 8


def worker_payload(params: dict, prompt: str, max_new_tokens: int | None, template: Template, *,
                   echo: bool = False, logprobs: int | None = None) -> dict:
    """The generation request for a worker, keys in the order FastChat's server sends them."""
    payload = {
        "model": params["model"], "prompt": prompt, "temperature": params["temperature"], "logprobs": logprobs,
        "top_p": params["top_p"], "top_k": params["top_k"], "presence_penalty": params["presence_penalty"],
        "frequency_penalty": params["frequency_penalty"], "max_new_tokens": max_new_tokens, "echo": echo,
        "stop_token_ids": None if template.stop_token_ids is None else list(template.stop_token_ids),
        "stop": merge_stop(params["stop"], template),
    }
    if max_new_tokens is None:  # the worker did not say its context length: its own default applies
        del payload["max_new_tokens"]
    for optional in ("repetition_penalty", "seed"):
        if params[optional] is not None:
            payload[optional] = params[optional]
    return payload


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
