"""Calls to FastChat model workers, with what never changes for a (worker, model) pair cached.

A worker that fails at the transport level loses its cached template and context length, so a worker restarted
with another model or template at the same address is picked up again.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from app.upstream.client import FrameStream, Timeout, UpstreamClient
from app.upstream.errors import BAD_RESPONSE, WORKER_ERROR, UpstreamError

_MISSING = object()


class _LruCache:
    """A small thread-safe LRU mapping."""

    def __init__(self, size: int):
        self._size = size
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._data.get(key, _MISSING)
            if value is not _MISSING:
                self._data.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def drop(self, predicate) -> None:
        with self._lock:
            for key in [key for key in self._data if predicate(key)]:
                del self._data[key]


def check_error_code(reply: dict) -> dict:
    """Raise the worker's in-band error (error_code != 0) as UpstreamError(worker_error)."""
    code = reply.get("error_code", 0)
    if code:
        text = reply.get("text")
        raise UpstreamError(WORKER_ERROR, text if isinstance(text, str) and text else "The worker reported an error.",
                            error_code=code if isinstance(code, int) else None)
    return reply


class WorkerStream:
    """A generation stream whose error frames raise UpstreamError(worker_error); close() ends it at once."""

    def __init__(self, frames: FrameStream):
        self._frames = frames

    def __iter__(self) -> Iterator[dict]:
        for frame in self._frames:
            yield check_error_code(frame)

    def close(self) -> None:
        self._frames.close()


class Workers:
    """Client of every model worker, safe to share between threads."""

    def __init__(self, client: UpstreamClient, *, timeout: Timeout, cache_size: int):
        self._client = client
        self._timeout = timeout
        self._templates = _LruCache(cache_size)
        self._context_lengths = _LruCache(cache_size)

    def conv_template(self, address: str, model: str) -> dict:
        """The worker's conversation template for `model` in its wire form, fetched once."""
        conv = self._templates.get((address, model))
        if conv is _MISSING:
            conv = self._post(address, "/worker_get_conv_template", {"model": model}).get("conv")
            if not isinstance(conv, dict):
                raise UpstreamError(BAD_RESPONSE, "The worker sent no conversation template.")
            self._templates.put((address, model), conv)
        return conv

    def context_length(self, address: str, model: str) -> int | None:
        """The model's context length, or None when the worker does not say (some workers send null)."""
        length = self._context_lengths.get((address, model))
        if length is _MISSING:
            length = self._post(address, "/model_details", {"model": model}).get("context_length")
            if length is not None and (not isinstance(length, int) or isinstance(length, bool) or length <= 0):
                raise UpstreamError(BAD_RESPONSE, "The worker sent an invalid context length.")
            self._context_lengths.put((address, model), length)
        return length

    def count_tokens(self, address: str, model: str, prompt: str) -> int:
        """How many tokens the worker's tokenizer makes of `prompt`."""
        count = check_error_code(self._post(address, "/count_token", {"model": model, "prompt": prompt})).get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise UpstreamError(BAD_RESPONSE, "The worker sent an invalid token count.")
        return count

    def generate(self, address: str, payload: dict) -> dict:
        """One whole generation (the worker's last frame)."""
        return check_error_code(self._post(address, "/worker_generate", payload))

    def embed(self, address: str, payload: dict) -> dict:
        """One batch of embeddings: {"embedding": [...], "token_num": int}."""
        return check_error_code(self._post(address, "/worker_get_embeddings", payload))

    def open_stream(self, address: str, payload: dict) -> WorkerStream:
        """Start a streamed generation; the caller must close() it."""
        with self._forget_on_failure(address):
            stream = self._client.open_stream(address + "/worker_generate_stream", payload, timeout=self._timeout,
                                              upstream="worker")
        return WorkerStream(stream)

    def forget(self, address: str) -> None:
        """Drop everything cached about the worker at `address`."""
        self._templates.drop(lambda key: key[0] == address)
        self._context_lengths.drop(lambda key: key[0] == address)

    def _post(self, address: str, path: str, payload: dict) -> dict:
        with self._forget_on_failure(address):
            reply = self._client.post_json(address + path, payload, timeout=self._timeout, upstream="worker")
        if not isinstance(reply, dict):
            raise UpstreamError(BAD_RESPONSE, "The worker sent a reply that is not a JSON object.")
        return reply

    @contextmanager
    def _forget_on_failure(self, address: str) -> Iterator[None]:
        try:
            yield
        except UpstreamError:
            self.forget(address)
            raise

