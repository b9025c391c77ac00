"""A benchmark worker built on FastChat's own worker code: fschat 0.2.36's FastAPI worker app, generation faked.

Run ONLY with FastChat's interpreter (``.venv-fastchat``, which has fastchat, FastAPI and uvicorn; the gateway's
environment has none of them, so nothing of the gateway or of its tests imports this module), from the
repository root::

    .venv-fastchat/bin/python -m bench.fastchat_worker --port 21002 --controller-address http://127.0.0.1:21001 \
        --model-names bench-stream --tokens 64 --token-delay 0.001

Everything but the model is FastChat's: ``fastchat.serve.base_model_worker``'s ``app`` with its routes
(/worker_generate_stream, /worker_generate, /worker_get_status, /count_token, /worker_get_conv_template,
/model_details), its semaphore (``limit_worker_concurrency``, released by a background task after a stream), its
controller registration and heartbeat thread (``BaseModelWorker.init_heart_beat``, every
``FASTCHAT_WORKER_HEART_BEAT_INTERVAL`` s), its logger, and ``uvicorn.run(app, ..., log_level="info")`` as
``fastchat.serve.model_worker`` runs it. ``model_worker.ModelWorker`` itself cannot be imported without torch, so
``BenchModelWorker`` subclasses ``BaseModelWorker`` as ModelWorker does and keeps ModelWorker's generation shape:
``generate_stream_gate`` is a plain generator (starlette runs each step in its thread pool, as it runs the HF
model's), ``generate_gate`` drains it in ``asyncio.to_thread``.

The model is the simulated worker's (``bench.simworker.generation``, stdlib only): the same tokens, frames,
usage and finish_reason, byte for byte, and the same timing (``--prefill-delay`` before the first token,
``--token-delay`` between tokens, slept in the generator as a model's compute would take). ``--generator async``
makes the stream an async generator instead (as FastChat's vllm_worker streams): the thread pool (40 threads)
cannot pace a thousand 100 ms-per-token streams per worker, so the benchmark's held-streams test uses it.

Two additions for the benchmark, outside FastChat's routes: ``/sim/stats`` (``open_streams`` and the last
``generate_payloads``, as the simulated worker reports them) and ``/sim/reset``.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import threading
import time
import uuid

import uvicorn
from fastchat.constants import SERVER_ERROR_MSG, ErrorCode
from fastchat.conversation import get_conv_template
from fastchat.serve.base_model_worker import BaseModelWorker, app

from bench.simworker.generation import Generation, count_tokens

PAYLOAD_LOG = 50


def _frame(obj: dict) -> bytes:
    return json.dumps(obj).encode() + b"\0"  # model_worker.ModelWorker.generate_stream_gate's framing


class _CountingTokenizer:
    """What BaseModelWorker.count_token calls: ``tokenizer(prompt).input_ids``, by the simulated tokenizer rule."""

    class _Encoded:
        __slots__ = ("input_ids",)

        def __init__(self, n: int):
            self.input_ids = range(n)

    def __call__(self, text: str) -> _Encoded:
        return self._Encoded(count_tokens(text))


class BenchModelWorker(BaseModelWorker):
    """BaseModelWorker with the simulated model in place of a loaded one."""

    def __init__(self, controller_addr: str, worker_addr: str, worker_id: str, model_names: list[str],
                 limit_worker_concurrency: int, *, tokens: int, token_delay: float, prefill_delay: float = 0.0,
                 stream_interval: int = 1, conv_template: str = "vicuna_v1.1", context_length: int = 2048,
                 async_stream: bool = False, no_register: bool = False):
        super().__init__(controller_addr, worker_addr, worker_id, f"bench/{model_names[0]}", model_names,
                         limit_worker_concurrency, conv_template=conv_template)
        self.tokenizer = _CountingTokenizer()
        self.context_len = context_length
        self.tokens = tokens
        self.token_delay = token_delay
        self.prefill_delay = prefill_delay
        self.stream_interval = stream_interval
        self.async_stream = async_stream
        self.open_streams = 0
        self._count_lock = threading.Lock()  # a sync stream's steps run on any of the pool's threads
        self.payloads: collections.deque = collections.deque(maxlen=PAYLOAD_LOG)
        if not no_register:
            self.init_heart_beat()

    def make_conv_template(self, conv_template: str | None = None, model_path: str | None = None):
        # The base class's fallback (model_adapter.get_conversation_template) needs torch; a name is always given.
        return get_conv_template(conv_template or "vicuna_v1.1")

    # -- generation: ModelWorker's shape, the simulated model's tokens and timing ------------------------------
    def _decode(self, params: dict):
        """(Generation, None) or (None, the error frame ModelWorker yields for a ValueError)."""
        self.call_ct += 1
        self.payloads.append(params)
        try:
            return Generation(params, self.tokens, self.stream_interval), None
        except (ValueError, RuntimeError, TypeError) as e:
            return None, {"text": f"{SERVER_ERROR_MSG}\n\n({e})", "error_code": ErrorCode.INTERNAL_ERROR}

    def _steps(self, gen: Generation):
        """Seconds to wait, then the frame due (or None), per decode step; the final frame last (delay 0)."""
        if gen.n == 0:
            gen.run_to_end()
            yield self.prefill_delay, None
        while not gen.done:
            delay = self.prefill_delay if gen.ntok == 0 else self.token_delay
            due = gen.step()
            yield delay, gen.frame() if due else None
        yield 0.0, gen.frame(final=True)

    def generate_stream_gate(self, params: dict):
        gen, error = self._decode(params)
        if self.async_stream:
            return self._async_stream(gen, error)
        return self._sync_stream(gen, error)

    def _opened(self, delta: int) -> None:
        with self._count_lock:
            self.open_streams += delta

    def _sync_stream(self, gen: Generation | None, error: dict | None, counted: bool = True):
        if counted:
            self._opened(1)
        try:
            if error is not None:
                yield _frame(error)
                return
            for delay, frame in self._steps(gen):
                if delay > 0:
                    time.sleep(delay)  # the model's compute, in starlette's thread pool
                if frame is not None:
                    yield _frame(frame)
        finally:
            if counted:
                self._opened(-1)

    async def _async_stream(self, gen: Generation | None, error: dict | None):
        self._opened(1)
        try:
            if error is not None:
                yield _frame(error)
                return
            for delay, frame in self._steps(gen):
                if delay > 0:
                    await asyncio.sleep(delay)
                if frame is not None:
                    yield _frame(frame)
        finally:
            self._opened(-1)

    def generate_gate(self, params: dict) -> dict:
        # ModelWorker.generate_gate: drain the stream, answer its last frame (run in asyncio.to_thread).
        gen, error = self._decode(params)
        last = b""
        for last in self._sync_stream(gen, error, counted=False):
            pass
        return json.loads(last[:-1].decode())


@app.api_route("/sim/stats", methods=["GET", "POST"])
async def sim_stats():
    from fastchat.serve import base_model_worker
    worker = base_model_worker.worker
    return {"open_streams": worker.open_streams, "generate_payloads": list(worker.payloads),
            "requests": {"generate": worker.call_ct}, "worker": {"model_names": worker.model_names,
                                                                 "kind": "fastchat-code"}}


@app.post("/sim/reset")
async def sim_reset():
    from fastchat.serve import base_model_worker
    base_model_worker.worker.payloads.clear()
    return {"ok": True}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.fastchat_worker", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--worker-address", default=None, help="default http://HOST:PORT")
    p.add_argument("--controller-address", default="http://127.0.0.1:21001")
    p.add_argument("--no-register", action="store_true")
    p.add_argument("--model-names", default="bench-model", help="comma-separated")
    p.add_argument("--conv-template", default="vicuna_v1.1", help="a name fastchat.conversation knows")
    p.add_argument("--context-length", type=int, default=2048)
    p.add_argument("--tokens", type=int, default=16, help="completion tokens when max_new_tokens is larger")
    p.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    p.add_argument("--prefill-delay", type=float, default=0.0, help="seconds before the first token")
    p.add_argument("--stream-interval", type=int, default=1)
    p.add_argument("--limit-worker-concurrency", type=int, default=5)
    p.add_argument("--generator", choices=("thread", "async"), default="thread",
                   help="thread: a plain generator stepped in starlette's thread pool (model_worker); async: an "
                        "async generator (vllm_worker)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    BenchModelWorker(
        args.controller_address, args.worker_address or f"http://{args.host}:{args.port}", str(uuid.uuid4())[:8],
        [m for m in args.model_names.split(",") if m], args.limit_worker_concurrency, tokens=args.tokens,
        token_delay=args.token_delay, prefill_delay=args.prefill_delay, stream_interval=args.stream_interval,
        conv_template=args.conv_template, context_length=args.context_length,
        async_stream=args.generator == "async", no_register=args.no_register)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")  # as fastchat.serve.model_worker runs it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
