"""The simulated worker's routes: FastChat's worker endpoints, then /sim/ control and introspection.

The handlers turn requests into calls of the HTTP-free parts (generation, faults, limiter) and their results into
FastChat's exact replies: compact ASCII JSON for whole replies, ``json.dumps(frame)`` + NUL per stream frame, a
stream response without a content-type, ``Internal Server Error`` as text/plain for what FastChat answers with a
500. Introspection: ``GET|POST /sim/stats`` -> ``{"open_streams", "requests": {path: count}, "generate_payloads":
[last --payload-log], ...}``; ``GET|POST /sim/images`` -> ``{"generate": [vision.report of each logged
generation payload]}`` (what images and placeholders arrived, without the image data); ``POST /sim/reset`` clears
counters and payload logs.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import struct

from aiohttp import web

from bench.simworker.faults import GARBAGE, MID_STREAM, Fault, FaultSwitch, error_frame
from bench.simworker.generation import Generation, count_tokens, embedding_row
from bench.simworker.limiter import Limiter
from bench.simworker.templates import conv_wire
from bench.simworker.vision import PLACEHOLDER, Refused, check, description, report


def json_response(obj: object, status: int = 200) -> web.Response:
    # ASCII escapes: a logged payload holding a lone surrogate must not break /sim/stats.
    return web.Response(body=json.dumps(obj, separators=(",", ":")).encode("ascii"), status=status,
                        content_type="application/json")


def internal_error() -> web.Response:
    """What FastChat's uvicorn answers for an exception in a handler."""
    return web.Response(status=500, body=b"Internal Server Error", content_type="text/plain", charset="utf-8")


def _frame(obj: dict) -> bytes:
    return json.dumps(obj).encode() + b"\0"


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


class SimulatedWorker:
    """One worker's state (template, limiter, fault switch, counters) and its request handlers; `args` are the
    parsed command line (bench/simworker/cli.py). Raises ValueError for an unusable template."""

    def __init__(self, args) -> None:
        self.args = args
        self.model_names = [m.strip() for m in args.model_names.split(",") if m.strip()]
        self.conv = conv_wire(args.conv_template, args.sep_style_numbering)
        self.conv_body = json.dumps({"conv": self.conv}, ensure_ascii=False, separators=(",", ":")).encode()
        self.limiter = Limiter(args.limit_worker_concurrency)
        self.faults = FaultSwitch(args.fault, args.fault_after, args.fault_delay)
        self.connections = None  # set by the HTTP layer: .total and .open
        self.open_streams = 0
        self.multimodal = args.multimodal
        self.payload_log = args.payload_log
        self.reset_stats()

    def reset_stats(self) -> None:
        self.requests = collections.Counter()
        self.gen_payloads = collections.deque(maxlen=self.payload_log)
        self.emb_payloads = collections.deque(maxlen=self.payload_log)
        self.streams_started = self.streams_completed = self.stream_disconnects = 0
        self.faults.injected.clear()
        if self.connections is not None:
            self.connections.total = 0

    def routes(self) -> list[tuple[str, str, object]]:
        """(method, path, handler) of every route; worker endpoints count into stats "requests"."""
        worker = {"/worker_get_status": self.get_status, "/count_token": self.count_token,
                  "/model_details": self.model_details, "/worker_get_conv_template": self.get_conv_template,
                  "/worker_generate_stream": self.generate_stream, "/worker_generate": self.generate,
                  "/worker_get_embeddings": self.get_embeddings}
        routes = [("POST", path, self._counted(path, handler)) for path, handler in worker.items()]
        for path, handler in (("/sim/fault", self.sim_fault), ("/sim/stats", self.sim_stats),
                              ("/sim/images", self.sim_images)):
            routes += [("GET", path, handler), ("POST", path, handler)]
        return routes + [("POST", "/sim/reset", self.sim_reset)]

    def _counted(self, path: str, handler):
        async def counted(request: web.Request) -> web.StreamResponse:
            self.requests[path] += 1
            return await handler(request)
        return counted

    def status(self) -> dict:
        return {"model_names": self.model_names, "speed": 1, "queue_length": self.limiter.queue_length}

    # -- plain endpoints ---------------------------------------------------------------------------------------
    async def get_status(self, request: web.Request) -> web.Response:
        return json_response(self.status())

    async def count_token(self, request: web.Request) -> web.Response:
        params = await _json(request)
        return json_response({"count": count_tokens(params["prompt"]), "error_code": 0})

    async def model_details(self, request: web.Request) -> web.Response:
        return json_response({"context_length": self.args.context_length})

    async def get_conv_template(self, request: web.Request) -> web.Response:
        return web.Response(body=self.conv_body, content_type="application/json")

    # -- generation --------------------------------------------------------------------------------------------
    async def _generation(self, request: web.Request) -> tuple[Generation, Fault | None]:
        """The decode of a request and its fault; raises Refused for images a vision worker would refuse."""
        params = await _json(request)
        if not isinstance(params, dict):
            raise ValueError("payload must be a JSON object")
        self.gen_payloads.append(params)
        described = self._images(params) if self.multimodal else None
        gen = Generation(params, self.args.tokens, self.args.stream_interval, self.args.usage_off_by_one,
                         fallback=described)
        fault = self.faults.pick((gen.prompt,))
        if fault is not None and fault.mode == "disobey":  # a normal reply, only without its scripted part
            gen = Generation(params, self.args.tokens, self.args.stream_interval, self.args.usage_off_by_one,
                             scripted=False, fallback=described)
            fault = None
        return gen, fault

    @staticmethod
    def _images(params: dict) -> str | None:
        """A vision worker's check of the images and placeholders; the reply describing them, None for text."""
        prompt = params.get("prompt")
        if "images" not in params and (not isinstance(prompt, str) or PLACEHOLDER not in prompt):
            return None  # a text request: filler, as before
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a string")
        images = params.get("images", [])
        datas = check(prompt, images)
        return description(prompt, datas) if datas else None

    async def generate(self, request: web.Request) -> web.StreamResponse:
        try:
            gen, fault = await self._generation(request)
        except Refused as refused:  # sglang_worker's generate_gate: the error frame as the reply
            return json_response(refused.frame)
        if fault is not None:
            return await self._faulty_reply(request, fault, gen)
        gen.run_to_end()
        async with self.limiter:
            await _sleep(self.args.prefill_delay + self.args.token_delay * max(0, gen.ntok - 1))
            return json_response(gen.frame(final=True))

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        try:
            gen, fault = await self._generation(request)
        except Refused as refused:  # sglang_worker's generate_stream_gate: a stream of the one error frame
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(_frame(refused.frame))
            return response
        mode = fault.mode if fault is not None else "none"
        async with self.limiter:
            self.open_streams += 1
            self.streams_started += 1
            outcome = None  # None: the client went away
            response = web.StreamResponse()  # FastChat's stream has no content-type (see server.py)
            try:
                if mode == "http-500":
                    outcome = "completed"
                    return internal_error()
                await response.prepare(request)
                outcome = await self._stream(request, response, gen, fault)
                return response
            except ConnectionError:  # writing to a client that went away
                return response
            finally:
                self.open_streams -= 1
                if outcome == "completed":
                    self.streams_completed += 1
                elif outcome is None:
                    self.stream_disconnects += 1

    async def _stream(self, request: web.Request, response: web.StreamResponse, gen: Generation,
                      fault: Fault | None) -> str:
        """Write the frames of `gen` (and the fault's effect); returns "completed" or "died"."""
        mode = fault.mode if fault is not None else "none"
        first_delay = self.args.prefill_delay + (fault.delay if mode == "slow-first-token" else 0.0)
        fault_at = fault.after if mode in MID_STREAM else None
        pending: list[bytes] = []  # frames are written together until a delay (as a busy worker's would be)

        async def flush() -> None:
            if pending:
                await response.write(b"".join(pending))
                pending.clear()

        if gen.n == 0:
            await _sleep(first_delay)
            gen.run_to_end()
        while True:
            if fault_at is not None and (gen.ntok >= fault_at or gen.done):
                fault_at = None
                if mode == "garbage":
                    pending.append(GARBAGE + b"\0")
                elif mode in ("error", "oom"):
                    pending.append(_frame(error_frame(fault)))
                    await flush()
                    return "completed"
                elif mode == "die":  # no terminating chunk: the body ends mid-stream
                    await flush()
                    request.transport.close()
                    return "died"
                else:  # hang until the client goes away
                    await flush()
                    await _forever()
            if gen.done:
                break
            delay = first_delay if gen.ntok == 0 else self.args.token_delay
            if delay > 0:
                await flush()
                await asyncio.sleep(delay)
            if gen.step():
                pending.append(_frame(gen.frame()))
        pending.append(_frame(gen.frame(final=True)))
        await flush()
        return "completed"

    async def _faulty_reply(self, request: web.Request, fault: Fault, gen: Generation | None,
                            normal: dict | None = None) -> web.StreamResponse:
        """A whole reply (generation, or embeddings `normal`) under a fault."""
        async with self.limiter:
            mode = fault.mode
            if mode == "http-500":
                return internal_error()
            if mode in ("error", "oom"):
                return json_response(error_frame(fault))
            if mode == "die":
                request.transport.close()  # the reply below goes nowhere: the client sees the connection close
                return web.Response()
            if mode == "hang":
                await _forever()
            if mode == "garbage":
                return web.Response(body=GARBAGE, content_type="application/json")
            delay = self.args.prefill_delay + fault.delay  # slow-first-token
            if gen is not None:
                gen.run_to_end()
                delay += self.args.token_delay * max(0, gen.ntok - 1)
                normal = gen.frame(final=True)
            await _sleep(delay)
            return json_response(normal)

    # -- embeddings --------------------------------------------------------------------------------------------
    async def get_embeddings(self, request: web.Request) -> web.StreamResponse:
        params = await _json(request)
        if not isinstance(params, dict):
            raise ValueError("payload must be a JSON object")
        self.emb_payloads.append(params)
        inputs = params.get("input", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(s, str) for s in inputs):
            raise ValueError("input must be a list of strings")
        fault = self.faults.pick(inputs)
        dim = self.args.embedding_dim
        rows = [embedding_row(s, dim) for s in inputs]
        if params.get("encoding_format") == "base64":
            rows = [base64.b64encode(struct.pack(f"<{dim}f", *row)).decode("ascii") for row in rows]
        reply = {"embedding": rows, "token_num": sum(count_tokens(s) for s in inputs)}
        if fault is not None and fault.mode != "disobey":  # embeddings have no instruction to disobey
            return await self._faulty_reply(request, fault, None, reply)
        async with self.limiter:
            await _sleep(self.args.prefill_delay)
            return json_response(reply)

    # -- control and introspection -----------------------------------------------------------------------------
    async def sim_fault(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                self.faults.configure(await _json(request))
            except ValueError as exc:  # includes JSONDecodeError
                return json_response({"error": str(exc)}, 400)
        return json_response({"fault": self.faults.state()})

    async def sim_stats(self, request: web.Request) -> web.Response:
        return json_response({
            "open_streams": self.open_streams,
            "requests": dict(self.requests),
            "generate_payloads": list(self.gen_payloads),
            "embedding_payloads": list(self.emb_payloads),
            "queue_length": self.limiter.queue_length,
            "active_requests": self.limiter.active,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "stream_disconnects": self.stream_disconnects,
            "faults_injected": dict(self.faults.injected),
            "connections_total": self.connections.total if self.connections else 0,
            "connections_open": self.connections.open if self.connections else 0,
            "fault": self.faults.state(),
            "worker": {"model_names": self.model_names, "conv_template": self.conv["name"], "pid": os.getpid(),
                       "multimodal": self.multimodal},
        })

    async def sim_images(self, request: web.Request) -> web.Response:
        return json_response({"generate": [report(payload) for payload in self.gen_payloads]})

    async def sim_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return json_response({"ok": True})


async def _json(request: web.Request) -> object:
    body = await request.read()
    return json.loads(body) if body.strip() else {}
