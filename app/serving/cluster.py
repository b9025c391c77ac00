"""The FastChat cluster as the use cases see it: the steps every generation shares, built on the upstream clients.

Everything here runs before the first response byte, so each failure still gets its own HTTP status.
"""
from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

from app.errors import context_length_exceeded, model_not_found
from app.serving.prompt import Template, TemplateError
from app.upstream.controller import Controller
from app.upstream.static_workers import StaticWorkers
from app.upstream.errors import BAD_RESPONSE, UpstreamError
from app.upstream.worker import Workers, WorkerStream


@dataclass(frozen=True)
class Cluster:
    """controller: the FastChat controller, or StaticWorkers (same interface) when there is none;
    workers: calls to model workers; executor: runs the n > 1 choices concurrently;
    numbering: SEP_STYLE_NUMBERING; clip_overflow: CONTEXT_OVERFLOW == "clip"."""

    controller: Controller | StaticWorkers
    workers: Workers
    executor: Executor
    numbering: str = "auto"
    clip_overflow: bool = False

    def resolve_worker(self, model: str) -> str:
        """The address of a worker for `model`. Raises 404 for a model the controller does not list."""
        if not self.controller.has_model(model):
            raise model_not_found(model)
        return self.controller.get_worker_address(model)

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
        fills the context, or when an explicit max_tokens does not fit (unless clipping is configured). When
        the worker does not report a context length, nothing is counted and max_tokens goes as given.
        """
        context = self.workers.context_length(address, model)
        if context is None:
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

    def generate(self, address: str, payload: dict, n: int) -> list[dict]:
        """n whole generations of the same payload, run concurrently; the first failure is raised."""
        if n == 1:
            return [self.workers.generate(address, payload)]
        futures = [self.executor.submit(self.workers.generate, address, payload) for _ in range(n)]
        return [future.result() for future in futures]

    def open_streams(self, address: str, payload: dict, n: int) -> list[WorkerStream]:
        """n open generation streams; if one cannot be opened, the others are closed and the error raised."""
        streams: list[WorkerStream] = []
        try:
            for _ in range(n):
                streams.append(self.workers.open_stream(address, payload))
        except BaseException:
            for stream in streams:
                stream.close()
            raise
        return streams


def finish_reason(value) -> str:
    """OpenAI's finish_reason for a worker's: vLLM workers may send a list or "abort"; absent means stop."""
    if isinstance(value, list):
        value = value[0] if value else None
    return "length" if value == "length" else "stop"
