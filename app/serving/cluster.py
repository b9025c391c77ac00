"""The FastChat cluster as the use cases see it: a façade over the upstream clients for the steps every
generation shares (template, context fit, concurrent generation, opening streams, failover).

Everything here runs before the first response byte, so each failure still gets its own HTTP status.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TypeVar

from app.errors import context_length_exceeded
from app.images.fetch import ImageFetcher
from app.images.parts import UNSUPPORTED, Image, ImageError, ImageUrl
from app.images.rules import ImageRules
from app.routes.relay import Relay
from app.serving import failover
from app.serving.admission import Admission
from app.serving.prompt import Template, TemplateError, parsed_template
from app.upstream.errors import BAD_RESPONSE, UpstreamError
from app.upstream.worker import Workers, WorkerStream
from app.upstream.worker_source import WorkerSource

T = TypeVar("T")


@dataclass(frozen=True)
class Cluster:
    """controller: the source of workers (the FastChat controller, or StaticWorkers when there is none);
    workers: calls to model workers; executor: runs the n > 1 choices concurrently;
    numbering: SEP_STYLE_NUMBERING; clip_overflow: CONTEXT_OVERFLOW == "clip"; embedding_batch_size: inputs per
    worker embeddings call; failover_attempts: other workers tried when one cannot be reached; tool_formats:
    TOOL_FORMATS (app.serving.tools.registry); structured_retries: STRUCTURED_OUTPUT_RETRIES; image_rules: the
    IMAGE_* settings; image_fetcher: fetches http(s) image URLs (None: fetching off); body_limit:
    MAX_REQUEST_BODY_BYTES, which fetched images count toward; admission: back-pressure (app.serving.admission;
    None: none), told of the workers requests are routed to; relay: the models of ROUTES_FILE, served by
    OpenAI-compatible base URLs instead (None: none)."""

    controller: WorkerSource
    workers: Workers
    executor: Executor
    numbering: str = "auto"
    clip_overflow: bool = False
    embedding_batch_size: int = 4
    failover_attempts: int = 2
    tool_formats: dict[str, str] = field(default_factory=dict)
    structured_retries: int = 1
    image_rules: ImageRules = ImageRules()
    image_fetcher: ImageFetcher | None = None
    body_limit: int = 16 * 1024 * 1024
    admission: Admission | None = None
    relay: Relay | None = None

    def routes(self, model: str) -> bool:
        """Whether `model` is one of ROUTES_FILE's, relayed to OpenAI-compatible base URLs."""
        return self.relay is not None and self.relay.serves(model)

    def run_on_worker(self, model: str, attempt: Callable[[str], T]) -> T:
        """attempt(worker address) on a worker serving `model`, another one when it cannot be reached (see
        app.serving.failover); raises 404 for a model nobody serves."""
        routed = self.admission.routed if self.admission is not None else None
        return failover.run_on_worker(self.controller, model, attempt, self.failover_attempts, routed)

    def accepts_images(self, model: str) -> bool:
        """Whether the workers of `model` registered as multimodal (or MULTIMODAL_MODELS lists it)."""
        return self.controller.is_multimodal(model)

    def fetch_image(self, part: ImageUrl, max_bytes: int) -> Image:
        """The image at an allowed URL, checked. Raises ImageError (also when fetching is off)."""
        if self.image_fetcher is None:
            raise ImageError("This gateway does not fetch image URLs.", UNSUPPORTED)
        return self.image_fetcher.fetch(part, max_bytes)

    def template(self, address: str, model: str) -> Template:
        """The worker's conversation template, in the sep_style numbering it uses."""
        try:
            return parsed_template(self.workers.conv_template(address, model), self.numbering)
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
