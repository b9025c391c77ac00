#!/usr/bin/env python3
"""Simulated FastChat model worker -- a TEST AND BENCHMARK TOOL, not a model server.

It speaks the FastChat controller/worker wire protocol (see the project's
``fastchat-protocol.md`` §5 and §6) closely enough that the gateway cannot tell
it from a real ``fastchat.serve.model_worker``, but it generates deterministic
filler text instead of running a model.  It exists so that tests can assert what
the gateway sent and how it reacts to worker faults, and so that benchmarks
measure the gateway rather than the worker.

Run::

    python bench/simulated_worker.py --port 21002 \
        --controller-address http://127.0.0.1:21001 --model-names sim-model

Design notes
------------
* Python standard library only.  The HTTP/1.1 server is a hand-written
  ``asyncio.Protocol`` (keep-alive, pipelining, ``Content-Length`` request
  bodies, chunked transfer-encoding for streams, ``Expect: 100-continue``).
  Requests without delays or faults are answered synchronously from
  ``data_received``; streams and delayed requests run as one task per request.
  A closed client connection (EOF or reset) cancels that task, which releases
  the concurrency permit and decrements ``open_streams``.
* Tokenizer rule (used by ``/count_token``, ``usage`` and ``token_num``):
  ``count(text) = 1 (BOS) + len(text.split())`` -- i.e. one token per
  whitespace-separated word plus a BOS token.
* Generated text: ``min(max_new_tokens, --tokens)`` "tokens", each one word
  from a fixed word list chosen by a hash of the prompt (plus the request's
  ``seed`` key if present) and the token index.  The first token is the bare
  word, later tokens carry one leading space.  The same prompt therefore always
  yields the same text, whatever the choice index.  ``finish_reason`` is
  ``"length"`` when ``max_new_tokens`` tokens were produced, and ``"stop"`` when
  the simulated model ended by itself (``--tokens`` < ``max_new_tokens``,
  like an EOS token) or a stop string matched.
* Stream frames are ``json.dumps(frame)`` (default separators, ASCII escaped)
  followed by one NUL byte, with cumulative text, like FastChat.  A frame is
  emitted at decode step ``i`` when ``i % --stream-interval == 0`` or at the
  last step, and a final frame with ``finish_reason`` is always emitted.
  Frames whose text ends with a proper prefix of a stop string are withheld.
  ``usage.completion_tokens`` is the number of tokens generated so far
  (``--usage-off-by-one`` reproduces the HF worker's 0-based step index).
  The prompt is never truncated to the context length (the gateway is
  expected to check the length, as FastChat's API server does).
* ``logprobs`` (when the request's ``logprobs`` is not null) has the shape
  ``{"text_offset", "tokens", "token_logprobs", "top_logprobs"}``; with echo the
  lists start with the BOS token (decoded as ``""``, logprob ``null``) and the
  prompt's words (each with its leading whitespace), followed by the generated
  tokens.  Values are deterministic negative numbers.
* Templates are served in HEAD form, or in fschat 0.2.36 form with
  ``--sep-style-numbering 0.2.36`` (11 keys, CHATGLM=8 ... YUAN2=19).

Fault injection (applies to /worker_generate, /worker_generate_stream and
/worker_get_embeddings)
-------------------------------------------------------------------------
Modes: ``none``, ``error`` (in-band error frame, code 50001), ``oom`` (same, code
50002), ``die`` (close the connection: mid-stream after ``after`` tokens without
the terminating chunk, or before any reply), ``hang`` (stop answering until the
client goes away), ``slow-first-token`` (extra ``delay`` seconds before the first
frame / the reply), ``http-500`` (500 ``text/plain`` ``Internal Server Error``),
``garbage`` (a non-JSON segment followed by NUL after ``after`` tokens, after
which the stream continues normally; for non-stream requests a non-JSON 200
body).

* Default: ``--fault MODE`` (``--fault-after``, ``--fault-delay``).
* At run time: ``POST /sim/fault {"mode": M, "count": N, "after": K, "delay": S}``
  (``count`` omitted/null = until changed; after ``count`` generation requests
  the mode returns to ``none``).  ``GET /sim/fault`` shows the current state.
* Per request: a directive ``[[fault:MODE]]`` or ``[[fault:MODE after=K
  delay=S]]`` anywhere in the prompt (or in any embeddings input).  A directive
  takes precedence over the global mode and does not consume its count;
  ``[[fault:none]]`` exempts a request.

Introspection: ``GET|POST /sim/stats`` -> ``{"open_streams", "requests":
{path: count}, "generate_payloads": [last 50], ...}``; ``POST /sim/reset`` clears
counters and payload logs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import math
import os
import re
import signal
import socket
import struct
import sys
import threading
import traceback
import urllib.request

SERVER_ERROR_MSG = (
    "**NETWORK ERROR DUE TO HIGH TRAFFIC. PLEASE REGENERATE OR REFRESH THIS PAGE.**"
)
FAULT_TEXT = SERVER_ERROR_MSG + "\n\n(simulated fault)"
GARBAGE = b"<<simulated garbage: this segment is not JSON>>"
FAULT_MODES = (
    "none",
    "error",
    "oom",
    "die",
    "hang",
    "slow-first-token",
    "http-500",
    "garbage",
)
PAYLOAD_LOG_SIZE = 50
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024

# --------------------------------------------------------------------------
# Conversation templates: HEAD wire form (protocol doc §6.5), verbatim.
# --------------------------------------------------------------------------
_TEMPLATE_JSON = r"""
{"name": "vicuna_v1.1", "system_template": "{system_message}", "system_message": "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.", "system_message_vision": "", "roles": ["USER", "ASSISTANT"], "messages": [], "offset": 0, "sep_style": 2, "sep": " ", "sep2": "</s>", "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}
{"name": "llama-2", "system_template": "[INST] <<SYS>>\n{system_message}\n<</SYS>>\n\n", "system_message": "", "system_message_vision": "", "roles": ["[INST]", "[/INST]"], "messages": [], "offset": 0, "sep_style": 7, "sep": " ", "sep2": " </s><s>", "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}
{"name": "llama-3", "system_template": "<|start_header_id|>system<|end_header_id|>\n\n{system_message}<|eot_id|>", "system_message": "", "system_message_vision": "", "roles": ["user", "assistant"], "messages": [], "offset": 0, "sep_style": 8, "sep": "", "sep2": null, "stop_str": "<|eot_id|>", "stop_token_ids": [128001, 128009], "max_image_size_mb": null}
{"name": "mistral", "system_template": "[INST] {system_message}\n", "system_message": "", "system_message_vision": "", "roles": ["[INST]", "[/INST]"], "messages": [], "offset": 0, "sep_style": 7, "sep": " ", "sep2": "</s>", "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}
{"name": "qwen-7b-chat", "system_template": "<|im_start|>system\n{system_message}", "system_message": "You are a helpful assistant.", "system_message_vision": "", "roles": ["<|im_start|>user", "<|im_start|>assistant"], "messages": [], "offset": 0, "sep_style": 10, "sep": "<|im_end|>", "sep2": null, "stop_str": "<|endoftext|>", "stop_token_ids": [151643, 151644, 151645], "max_image_size_mb": null}
{"name": "zephyr", "system_template": "<|system|>\n{system_message}", "system_message": "", "system_message_vision": "", "roles": ["<|user|>", "<|assistant|>"], "messages": [], "offset": 0, "sep_style": 10, "sep": "</s>", "sep2": null, "stop_str": "</s>", "stop_token_ids": [2], "max_image_size_mb": null}
{"name": "gemma", "system_template": "{system_message}", "system_message": "", "system_message_vision": "", "roles": ["user", "model"], "messages": [], "offset": 0, "sep_style": 21, "sep": "<end_of_turn>\n", "sep2": null, "stop_str": "<end_of_turn>", "stop_token_ids": null, "max_image_size_mb": null}
{"name": "chatglm3", "system_template": "<|system|>\n{system_message}", "system_message": "", "system_message_vision": "", "roles": ["<|user|>", "<|assistant|>"], "messages": [], "offset": 0, "sep_style": 17, "sep": "\n", "sep2": null, "stop_str": null, "stop_token_ids": [64795, 64797, 2], "max_image_size_mb": null}
{"name": "alpaca", "system_template": "{system_message}", "system_message": "Below is an instruction that describes a task. Write a response that appropriately completes the request.", "system_message_vision": "", "roles": ["### Instruction", "### Response"], "messages": [], "offset": 0, "sep_style": 2, "sep": "\n\n", "sep2": "</s>", "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}
{"name": "zero_shot", "system_template": "{system_message}", "system_message": "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.", "system_message_vision": "", "roles": ["Human", "Assistant"], "messages": [], "offset": 0, "sep_style": 1, "sep": "\n### ", "sep2": null, "stop_str": "###", "stop_token_ids": null, "max_image_size_mb": null}
{"name": "raw", "system_template": "{system_message}", "system_message": "", "system_message_vision": "", "roles": ["", ""], "messages": [], "offset": 0, "sep_style": 4, "sep": "", "sep2": null, "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}
{"name": "api_based_default", "system_template": "{system_message}", "system_message": "", "system_message_vision": "", "roles": ["user", "assistant"], "messages": [], "offset": 0, "sep_style": 23, "sep": null, "sep2": null, "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}
"""
TEMPLATES = {}
for _line in _TEMPLATE_JSON.strip().splitlines():
    _t = json.loads(_line)
    TEMPLATES[_t["name"]] = _t
del _line, _t

# HEAD SeparatorStyle value -> fschat 0.2.36 value (None: absent in 0.2.36).
HEAD_TO_0236_SEP_STYLE = {i: i for i in range(1, 8)}
HEAD_TO_0236_SEP_STYLE.update({8: None, 21: None, 22: None, 23: None})
HEAD_TO_0236_SEP_STYLE.update({i: i - 1 for i in range(9, 21)})
SEP_STYLE_NAMES = {
    1: "ADD_COLON_SINGLE", 2: "ADD_COLON_TWO", 3: "ADD_COLON_SPACE_SINGLE",
    4: "NO_COLON_SINGLE", 5: "NO_COLON_TWO", 6: "ADD_NEW_LINE_SINGLE",
    7: "LLAMA2", 8: "LLAMA3", 9: "CHATGLM", 10: "CHATML", 11: "CHATINTERN",
    12: "DOLLY", 13: "RWKV", 14: "PHOENIX", 15: "ROBIN", 16: "FALCON_CHAT",
    17: "CHATGLM3", 18: "DEEPSEEK_CHAT", 19: "METAMATH", 20: "YUAN2",
    21: "GEMMA", 22: "CLLM", 23: "DEFAULT",
}


def conv_wire(name: str, numbering: str) -> dict:
    """The ``conv`` value of /worker_get_conv_template for a template name."""
    if name not in TEMPLATES:
        raise ValueError(
            f"unknown conversation template {name!r}; built-in templates: "
            + ", ".join(sorted(TEMPLATES))
        )
    conv = dict(TEMPLATES[name])
    if numbering == "0.2.36":
        style = conv["sep_style"]
        old = HEAD_TO_0236_SEP_STYLE.get(style)
        if old is None:
            raise ValueError(
                f"template {name!r} uses sep_style {SEP_STYLE_NAMES.get(style, style)}, "
                "which does not exist in fschat 0.2.36"
            )
        conv.pop("system_message_vision", None)
        conv.pop("max_image_size_mb", None)
        conv["sep_style"] = old
    return conv


# --------------------------------------------------------------------------
# Deterministic "model"
# --------------------------------------------------------------------------
WORDS = (
    "the quick brown fox jumps over lazy dog alpha beta gamma delta river "
    "mountain cloud silver garden lantern harbor meadow crystal shadow ember "
    "violet orbit signal canvas anchor breeze copper echo falcon glacier "
    "horizon island jungle kernel lemon marble nectar ocean pepper quartz "
    "ribbon saddle timber umbrella valley willow yonder zephyr amber bramble "
    "cedar dune fern grove hazel ivory jasper kelp lotus maple nova opal "
    "prism"
).split()
_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash of an int."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _text_seed(text: str) -> int:
    digest = hashlib.blake2b(
        text.encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little")


def count_tokens(text: str) -> int:
    """Simulated tokenizer: 1 (BOS) + number of whitespace-separated words."""
    return 1 + len(text.split())


def _logprob(seed: int, index: int) -> float:
    return -((_mix(seed ^ (0x5A5A5A5A + index)) % 3000) + 1) / 1000.0


_PROMPT_PIECES = re.compile(r"\s*\S+")


class Generation:
    """One simulated decode of a gen-params payload."""

    __slots__ = (
        "prompt", "echo", "base", "stops", "max_stop", "n", "max_new", "seed",
        "parts", "text", "ntok", "finish_reason", "interval", "prompt_tokens",
        "off_by_one", "lp", "lp_offset",
    )

    def __init__(self, params: dict, cfg) -> None:
        prompt = params.get("prompt", "")
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a string")
        max_new = params.get("max_new_tokens", 256)
        max_new = int(max_new)  # null/garbage -> TypeError/ValueError -> 500
        echo = params.get("echo", True)
        echo = True if echo is None else bool(echo)
        stop = params.get("stop")
        if isinstance(stop, str):
            stops = [stop] if stop else []
        elif isinstance(stop, (list, tuple)):
            stops = [s for s in stop if isinstance(s, str) and s]
        else:
            stops = []
        seed = _text_seed(prompt)
        if isinstance(params.get("seed"), int):
            seed = _mix(seed ^ (params["seed"] & _M64))
        self.prompt = prompt
        self.echo = echo
        self.base = prompt if echo else ""
        self.stops = stops
        self.max_stop = max((len(s) for s in stops), default=0)
        self.max_new = max_new
        self.n = max(0, min(max_new, cfg.tokens))
        self.seed = seed
        self.parts: list[str] = []
        self.text = ""  # generated text (after stop truncation)
        self.ntok = 0
        self.finish_reason = None
        self.interval = max(1, cfg.stream_interval)
        self.prompt_tokens = count_tokens(prompt)
        self.off_by_one = cfg.usage_off_by_one
        self.lp = None
        if params.get("logprobs") is not None:
            # Lists are shared by every frame (cumulative, as in FastChat).
            self.lp = {"text_offset": [], "tokens": [], "token_logprobs": [],
                       "top_logprobs": []}
            if echo:
                self._add_lp("", None)
                for j, piece in enumerate(_PROMPT_PIECES.findall(prompt)):
                    self._add_lp(piece, _logprob(seed, 100000 + j))

    def _add_lp(self, token: str, value) -> None:
        lp = self.lp
        offs = lp["text_offset"]
        offs.append(offs[-1] + len(lp["tokens"][-1]) if offs else 0)
        lp["tokens"].append(token)
        lp["token_logprobs"].append(value)
        lp["top_logprobs"].append({})

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def step(self) -> bool:
        """Produce the next token.  Returns True if a frame should be emitted."""
        i = self.ntok
        word = WORDS[_mix(self.seed + i) % len(WORDS)]
        piece = word if i == 0 else " " + word
        self.ntok = i + 1
        if self.lp is not None:
            self._add_lp(piece, _logprob(self.seed, i))
        old_len = len(self.text)
        self.text += piece
        if self.stops:
            start = max(0, old_len - self.max_stop + 1)
            for s in self.stops:
                pos = self.text.find(s, start)
                if pos != -1:
                    self.text = self.text[:pos]
                    self.finish_reason = "stop"
                    return True
            if self._partial_stop():
                emit = False
            else:
                emit = i % self.interval == 0 or i == self.n - 1
        else:
            emit = i % self.interval == 0 or i == self.n - 1
        if self.ntok >= self.n:
            self.finish_reason = "length" if self.ntok >= self.max_new else "stop"
        return emit

    def _partial_stop(self) -> bool:
        text = self.text
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    return True
        return False

    def run_to_end(self) -> None:
        while not self.done and self.ntok < self.n:
            self.step()
        if self.finish_reason is None:  # n == 0
            self.finish_reason = "length" if self.max_new <= 0 else "stop"

    def frame(self, final: bool = False) -> dict:
        done_tokens = self.ntok
        completion = done_tokens - 1 if self.off_by_one and done_tokens else done_tokens
        return {
            "text": self.base + self.text,
            "error_code": 0,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion,
            },
            "finish_reason": self.finish_reason if final else None,
            "logprobs": self.lp,
        }


def embedding_row(text: str, dim: int) -> list:
    """Deterministic unit vector (float32 values) derived from the text."""
    raw = hashlib.shake_256(text.encode("utf-8", "surrogatepass")).digest(4 * dim)
    ints = struct.unpack(f"<{dim}I", raw)
    vec = [(v / 2147483648.0) - 1.0 for v in ints]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    vec = [v / norm for v in vec]
    return list(struct.unpack(f"<{dim}f", struct.pack(f"<{dim}f", *vec)))


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------
class Fault:
    __slots__ = ("mode", "after", "delay")

    def __init__(self, mode: str, after: int, delay: float) -> None:
        self.mode = mode
        self.after = after
        self.delay = delay


_DIRECTIVE = re.compile(r"\[\[fault:([A-Za-z0-9_-]+)([^\]]*)\]\]")
_DIRECTIVE_OPT = re.compile(r"(after|delay)\s*=\s*([0-9]+(?:\.[0-9]*)?)")


# --------------------------------------------------------------------------
# Concurrency limiter with FastChat's queue_length semantics
# --------------------------------------------------------------------------
class Limiter:
    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.active = 0
        self.waiters: collections.deque = collections.deque()
        self.created = False  # FastChat reports 0 before the first request

    def try_acquire(self) -> bool:
        self.created = True
        if self.active < self.limit and not self.waiters:
            self.active += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the permit was handed over; give it back
            else:
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand the permit over
                return
        self.active -= 1

    @property
    def queue_length(self) -> int:
        if not self.created:
            return 0
        return self.active + len(self.waiters)


# --------------------------------------------------------------------------
# HTTP/1.1 connection
# --------------------------------------------------------------------------
REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found",
    405: "Method Not Allowed", 411: "Length Required",
    413: "Payload Too Large", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 505: "HTTP Version Not Supported",
}


class Request:
    __slots__ = ("method", "path", "version", "headers", "body", "keep_alive")

    def __init__(self, method, path, version, headers, body, keep_alive):
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive

    def json(self):
        if not self.body.strip():
            return {}
        return json.loads(self.body)


class HTTPConnection(asyncio.Protocol):
    __slots__ = (
        "app", "transport", "buf", "task", "closed", "paused", "drain_waiter",
        "keep_alive", "chunked", "pending", "headers_sent", "continue_sent",
        "reading_paused",
    )

    def __init__(self, app: "SimulatedWorker") -> None:
        self.app = app
        self.transport = None
        self.buf = bytearray()
        self.task = None
        self.closed = False
        self.paused = False
        self.drain_waiter = None
        self.keep_alive = True
        self.chunked = True
        self.pending: list = []
        self.headers_sent = False
        self.continue_sent = False
        self.reading_paused = False

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.app.connections.add(self)
        self.app.stats_connections += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.app.connections.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def eof_received(self):
        # A client that half-closes is treated as gone (cancels its request).
        return False

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.task is None:
            self.process()
        elif len(self.buf) > MAX_BODY_BYTES and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    # -- request parsing ---------------------------------------------------
    def process(self) -> None:
        while not self.closed and self.task is None:
            req = self.parse()
            if req is None:
                return
            self.keep_alive = req.keep_alive
            self.headers_sent = False
            self.pending = []
            try:
                result = self.app.dispatch(self, req)
            except Exception:
                self.app.log_exception("handler")
                self.fail(500)
                continue
            if result is not None:
                self.task = asyncio.get_running_loop().create_task(
                    self.run_task(result)
                )
                return

    def parse(self):
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end == -1:
            if len(buf) > MAX_HEADER_BYTES:
                self.simple_error(431)
            return None
        try:
            head = bytes(buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            while lines and not lines[0]:  # tolerate stray CRLFs
                lines.pop(0)
            method, target, version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        except (ValueError, IndexError):
            self.simple_error(400)
            return None
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self.simple_error(505)
            return None
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.simple_error(411)
            return None
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self.simple_error(400)
            return None
        if length < 0 or length > MAX_BODY_BYTES:
            self.simple_error(413)
            return None
        start = end + 4
        if len(buf) < start + length:
            if (not self.continue_sent
                    and headers.get("expect", "").lower() == "100-continue"):
                self.continue_sent = True
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        body = bytes(buf[start:start + length])
        del buf[:start + length]
        self.continue_sent = False
        conn_hdr = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            keep_alive = "close" not in conn_hdr
        else:
            keep_alive = "keep-alive" in conn_hdr
        path = target.split("?", 1)[0]
        return Request(method, path, version, headers, body, keep_alive)

    def simple_error(self, status: int) -> None:
        self.keep_alive = False
        body = REASONS[status].encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, REASONS[status].encode(), len(body), body)
        )
        self.close()

    # -- task management ---------------------------------------------------
    async def run_task(self, coro) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            if not self.closed:  # cancelled by shutdown, not by the client
                self.close()
        except Exception:
            self.app.log_exception("request task")
            if self.headers_sent:
                self.close()  # abort the body, as FastChat does
            else:
                self.fail(500)
        finally:
            self.task = None
            if not self.closed:
                if self.reading_paused:
                    self.reading_paused = False
                    self.transport.resume_reading()
                if self.buf:
                    self.process()

    # -- responses ---------------------------------------------------------
    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def _finish_response(self) -> None:
        if not self.keep_alive:
            self.close()

    def send(self, status: int, body: bytes,
             ctype: bytes = b"application/json") -> None:
        if self.closed:
            return
        self.headers_sent = True
        head = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n" % (
            status, REASONS.get(status, "Unknown").encode(), ctype, len(body),
            b"" if self.keep_alive else b"connection: close\r\n",
        )
        self.transport.write(head + body)
        self._finish_response()

    def send_json(self, obj, status: int = 200) -> None:
        # ASCII escapes: a payload logged with a lone surrogate must not break /sim/stats
        self.send(status, json.dumps(obj, separators=(",", ":")).encode("ascii"))

    def fail(self, status: int = 500) -> None:
        self.send(status, REASONS[status].encode(), b"text/plain; charset=utf-8")

    def start_stream(self, version: str) -> None:
        """Send the stream's response head (FastChat sends no content-type)."""
        self.headers_sent = True
        if version == "HTTP/1.0":
            self.chunked = False
            self.keep_alive = False
            self.pending.append(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
        else:
            self.chunked = True
            self.pending.append(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n%s\r\n"
                % (b"" if self.keep_alive else b"connection: close\r\n")
            )

    def chunk(self, data: bytes) -> None:
        if self.chunked:
            self.pending.append(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.pending.append(data)

    def flush(self) -> None:
        if self.pending and not self.closed:
            self.transport.write(b"".join(self.pending))
        self.pending = []

    async def drain(self) -> None:
        self.flush()
        if self.paused and not self.closed:
            self.drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self.drain_waiter
            finally:
                self.drain_waiter = None

    def end_stream(self) -> None:
        if self.chunked:
            self.pending.append(b"0\r\n\r\n")
        self.flush()
        self._finish_response()


# --------------------------------------------------------------------------
# The worker application
# --------------------------------------------------------------------------
async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


class SimulatedWorker:
    def __init__(self, args) -> None:
        self.args = args
        self.model_names = [m.strip() for m in args.model_names.split(",") if m.strip()]
        self.conv = conv_wire(args.conv_template, args.sep_style_numbering)
        self.conv_body = json.dumps({"conv": self.conv}, ensure_ascii=False,
                                    separators=(",", ":")).encode("utf-8")
        self.limiter = Limiter(args.limit_worker_concurrency)
        self.connections: set = set()
        self.fault_mode = args.fault
        self.fault_count = None
        self.fault_after = args.fault_after
        self.fault_delay = args.fault_delay
        self.routes = {
            "/worker_get_status": self.h_status,
            "/count_token": self.h_count_token,
            "/model_details": self.h_model_details,
            "/worker_get_conv_template": self.h_conv,
            "/worker_generate_stream": self.h_generate_stream,
            "/worker_generate": self.h_generate,
            "/worker_get_embeddings": self.h_embeddings,
            "/sim/fault": self.h_sim_fault,
            "/sim/stats": self.h_sim_stats,
            "/sim/reset": self.h_sim_reset,
        }
        self.get_ok = {"/sim/stats", "/sim/fault"}
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats_requests = collections.Counter()
        self.gen_payloads = collections.deque(maxlen=PAYLOAD_LOG_SIZE)
        self.emb_payloads = collections.deque(maxlen=PAYLOAD_LOG_SIZE)
        self.stats_connections = 0
        self.stats_streams_started = 0
        self.stats_streams_completed = 0
        self.stats_stream_disconnects = 0
        self.stats_faults = collections.Counter()
        self.open_streams = getattr(self, "open_streams", 0)  # live value kept

    @staticmethod
    def log(msg: str) -> None:
        sys.stderr.write(f"[simulated-worker] {msg}\n")
        sys.stderr.flush()

    def log_exception(self, where: str) -> None:
        self.log(f"exception in {where}:\n{traceback.format_exc()}")

    # -- dispatch ----------------------------------------------------------
    def dispatch(self, conn: HTTPConnection, req: Request):
        handler = self.routes.get(req.path)
        if handler is None:
            conn.send_json({"detail": "Not Found"}, 404)
            return None
        if req.method != "POST" and not (req.method == "GET" and req.path in self.get_ok):
            conn.send_json({"detail": "Method Not Allowed"}, 405)
            return None
        if not req.path.startswith("/sim/"):
            self.stats_requests[req.path] += 1
        return handler(conn, req)

    def status(self) -> dict:
        return {"model_names": self.model_names, "speed": 1,
                "queue_length": self.limiter.queue_length}

    # -- plain endpoints ---------------------------------------------------
    def h_status(self, conn, req):
        conn.send_json(self.status())

    def h_count_token(self, conn, req):
        params = req.json()
        conn.send_json({"count": count_tokens(params["prompt"]), "error_code": 0})

    def h_model_details(self, conn, req):
        conn.send_json({"context_length": self.args.context_length})

    def h_conv(self, conn, req):
        conn.send(200, self.conv_body)

    # -- faults ------------------------------------------------------------
    def fault_state(self) -> dict:
        return {"mode": self.fault_mode, "count": self.fault_count,
                "after": self.fault_after, "delay": self.fault_delay}

    def pick_fault(self, texts) -> Fault | None:
        for text in texts:
            if not isinstance(text, str) or "[[fault:" not in text:
                continue
            m = _DIRECTIVE.search(text)
            if m is None:
                continue
            mode = m.group(1).lower()
            if mode not in FAULT_MODES:
                self.log(f"ignoring unknown fault directive {m.group(0)!r}")
                continue
            opts = dict(_DIRECTIVE_OPT.findall(m.group(2)))
            if mode == "none":
                return None
            self.stats_faults[mode] += 1
            return Fault(mode, int(float(opts.get("after", self.fault_after))),
                         float(opts.get("delay", self.fault_delay)))
        if self.fault_mode == "none":
            return None
        fault = Fault(self.fault_mode, self.fault_after, self.fault_delay)
        self.stats_faults[fault.mode] += 1
        if self.fault_count is not None:
            self.fault_count -= 1
            if self.fault_count <= 0:
                self.fault_mode = "none"
                self.fault_count = None
        return fault

    @staticmethod
    def error_frame(fault: Fault) -> dict:
        return {"text": FAULT_TEXT, "error_code": 50002 if fault.mode == "oom" else 50001}

    # -- generation --------------------------------------------------------
    def _gen_request(self, req, log):
        params = req.json()
        if not isinstance(params, dict):
            raise ValueError("payload must be a JSON object")
        log.append(params)
        return params

    def h_generate_stream(self, conn, req):
        params = self._gen_request(req, self.gen_payloads)
        gen = Generation(params, self.args)
        fault = self.pick_fault((gen.prompt,))
        return self.stream(conn, req, gen, fault)

    async def stream(self, conn: HTTPConnection, req: Request, gen: Generation,
                     fault: Fault | None) -> None:
        args = self.args
        limiter = self.limiter
        if not limiter.try_acquire():
            await limiter.acquire()
        self.open_streams += 1
        self.stats_streams_started += 1
        completed = False
        try:
            mode = fault.mode if fault is not None else "none"
            if mode == "http-500":
                conn.fail(500)
                completed = True
                return
            conn.start_stream(req.version)
            conn.flush()
            first_delay = args.prefill_delay
            if mode == "slow-first-token":
                first_delay += fault.delay
            fault_at = (fault.after if mode in ("error", "oom", "die", "hang", "garbage")
                        else None)
            token_delay = args.token_delay
            if gen.n == 0:
                await conn.drain()
                await _sleep(first_delay)
                gen.run_to_end()
            while True:
                if fault_at is not None and (gen.ntok >= fault_at or gen.done):
                    fault_at = None
                    if mode == "garbage":
                        conn.chunk(GARBAGE + b"\0")
                    elif mode in ("error", "oom"):
                        conn.chunk(json.dumps(self.error_frame(fault)).encode() + b"\0")
                        conn.end_stream()
                        completed = True
                        return
                    elif mode == "die":
                        conn.flush()
                        conn.close()
                        return
                    else:  # hang until the client goes away
                        conn.flush()
                        await _forever()
                if gen.done:
                    break
                delay = first_delay if gen.ntok == 0 else token_delay
                if delay > 0:
                    await conn.drain()
                    await asyncio.sleep(delay)
                elif conn.paused:
                    await conn.drain()
                if gen.step():
                    conn.chunk(json.dumps(gen.frame()).encode() + b"\0")
            conn.chunk(json.dumps(gen.frame(final=True)).encode() + b"\0")
            conn.end_stream()
            completed = True
        finally:
            self.open_streams -= 1
            limiter.release()
            if completed:
                self.stats_streams_completed += 1
            elif conn.closed and mode != "die":
                self.stats_stream_disconnects += 1

    def h_generate(self, conn, req):
        params = self._gen_request(req, self.gen_payloads)
        gen = Generation(params, self.args)
        fault = self.pick_fault((gen.prompt,))
        if fault is None:
            gen.run_to_end()
            total = self.args.prefill_delay + self.args.token_delay * max(0, gen.ntok - 1)
            if total <= 0 and self.limiter.try_acquire():
                try:
                    conn.send_json(gen.frame(final=True))
                finally:
                    self.limiter.release()
                return None
            return self.delayed_reply(conn, total, gen.frame(final=True))
        return self.faulty_reply(conn, fault, gen)

    async def delayed_reply(self, conn, delay: float, obj) -> None:
        if not self.limiter.try_acquire():
            await self.limiter.acquire()
        try:
            await _sleep(delay)
            conn.send_json(obj)
        finally:
            self.limiter.release()

    async def faulty_reply(self, conn, fault: Fault, gen: Generation | None,
                           normal=None) -> None:
        """Non-stream reply under a fault (generation or embeddings)."""
        if not self.limiter.try_acquire():
            await self.limiter.acquire()
        try:
            mode = fault.mode
            if mode == "http-500":
                conn.fail(500)
            elif mode in ("error", "oom"):
                conn.send_json(self.error_frame(fault))
            elif mode == "die":
                conn.close()
            elif mode == "hang":
                await _forever()
            elif mode == "garbage":
                conn.send(200, GARBAGE)
            else:  # slow-first-token
                if gen is not None:
                    gen.run_to_end()
                    delay = (self.args.prefill_delay + fault.delay
                             + self.args.token_delay * max(0, gen.ntok - 1))
                    normal = gen.frame(final=True)
                else:
                    delay = self.args.prefill_delay + fault.delay
                await _sleep(delay)
                conn.send_json(normal)
        finally:
            self.limiter.release()

    # -- embeddings --------------------------------------------------------
    def h_embeddings(self, conn, req):
        params = self._gen_request(req, self.emb_payloads)
        inputs = params.get("input", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(s, str) for s in inputs):
            raise ValueError("input must be a list of strings")
        fault = self.pick_fault(inputs)
        dim = self.args.embedding_dim
        rows = [embedding_row(s, dim) for s in inputs]
        if params.get("encoding_format") == "base64":
            rows = [base64.b64encode(struct.pack(f"<{dim}f", *r)).decode("ascii")
                    for r in rows]
        reply = {"embedding": rows, "token_num": sum(count_tokens(s) for s in inputs)}
        if fault is not None:
            return self.faulty_reply(conn, fault, None, reply)
        if self.args.prefill_delay <= 0 and self.limiter.try_acquire():
            try:
                conn.send_json(reply)
            finally:
                self.limiter.release()
            return None
        return self.delayed_reply(conn, self.args.prefill_delay, reply)

    # -- control endpoints -------------------------------------------------
    def h_sim_fault(self, conn, req):
        if req.method == "GET":
            conn.send_json({"fault": self.fault_state()})
            return
        try:
            body = req.json()
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            mode = body.get("mode", "none")
            if mode not in FAULT_MODES:
                raise ValueError(f"unknown mode {mode!r}; one of {', '.join(FAULT_MODES)}")
            count = body.get("count")
            if count is not None and (not isinstance(count, int) or count < 1):
                raise ValueError("count must be a positive integer or null")
            after = body.get("after", self.args.fault_after)
            if not isinstance(after, int) or after < 0:
                raise ValueError("after must be a non-negative integer")
            delay = body.get("delay", self.args.fault_delay)
            if not isinstance(delay, (int, float)) or delay < 0:
                raise ValueError("delay must be a non-negative number")
        except ValueError as exc:  # includes JSONDecodeError
            conn.send_json({"error": str(exc)}, 400)
            return
        self.fault_mode = mode
        self.fault_count = None if mode == "none" else count
        self.fault_after = after
        self.fault_delay = float(delay)
        conn.send_json({"fault": self.fault_state()})

    def h_sim_stats(self, conn, req):
        conn.send_json({
            "open_streams": self.open_streams,
            "requests": dict(self.stats_requests),
            "generate_payloads": list(self.gen_payloads),
            "embedding_payloads": list(self.emb_payloads),
            "queue_length": self.limiter.queue_length,
            "active_requests": self.limiter.active,
            "streams_started": self.stats_streams_started,
            "streams_completed": self.stats_streams_completed,
            "stream_disconnects": self.stats_stream_disconnects,
            "faults_injected": dict(self.stats_faults),
            "connections_total": self.stats_connections,
            "connections_open": len(self.connections),
            "fault": self.fault_state(),
            "worker": {"model_names": self.model_names,
                       "conv_template": self.conv["name"],
                       "pid": os.getpid()},
        })

    def h_sim_reset(self, conn, req):
        self.reset_stats()
        conn.send_json({"ok": True})


# --------------------------------------------------------------------------
# Controller registration / heartbeat (background thread, stdlib urllib)
# --------------------------------------------------------------------------
class Registrar(threading.Thread):
    def __init__(self, worker: SimulatedWorker, controller: str, address: str,
                 interval: float) -> None:
        super().__init__(name="sim-heartbeat", daemon=True)
        self.worker = worker
        self.controller = controller.rstrip("/")
        self.address = address
        self.interval = interval
        self.stop_event = threading.Event()
        self.retry = min(5.0, interval)

    def post(self, path: str, payload: dict):
        data = json.dumps(payload).encode()
        request = urllib.request.Request(
            self.controller + path, data=data, method="POST",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            body = resp.read()
        return json.loads(body) if body.strip() else None

    def register(self) -> bool:
        try:
            self.post("/register_worker", {
                "worker_name": self.address,
                "check_heart_beat": True,
                "worker_status": self.worker.status(),
                "multimodal": False,
            })
            return True
        except Exception as exc:  # never crash: log and retry
            self.worker.log(f"register_worker at {self.controller} failed: {exc!r}")
            return False

    def run(self) -> None:
        registered = False
        wait = 0.0
        while not self.stop_event.wait(wait):
            if not registered:
                registered = self.register()
                wait = self.interval if registered else self.retry
                continue
            try:
                reply = self.post("/receive_heart_beat", {
                    "worker_name": self.address,
                    "queue_length": self.worker.limiter.queue_length,
                })
                exist = reply.get("exist") if isinstance(reply, dict) else None
            except Exception as exc:
                self.worker.log(f"heartbeat to {self.controller} failed: {exc!r}")
                wait = self.retry
                continue
            if exist is None:
                self.worker.log(f"heartbeat reply without 'exist': {reply!r}")
                wait = self.retry
            elif not exist:
                self.worker.log("controller does not know this worker; re-registering")
                registered = False
                wait = 0.0
            else:
                wait = self.interval


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="simulated_worker.py",
        description=(
            "Simulated FastChat model worker: a TEST AND BENCHMARK TOOL. Speaks "
            "the FastChat controller/worker protocol (registration, heartbeat, "
            "/worker_generate_stream NUL-delimited cumulative JSON frames, "
            "/worker_generate, /worker_get_embeddings, /count_token, "
            "/model_details, /worker_get_conv_template, /worker_get_status) "
            "with deterministic fake text, plus fault injection (POST /sim/fault, "
            "[[fault:MODE]] prompt directives) and introspection (/sim/stats, "
            "/sim/reset). It runs no model."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="0 picks a free port")
    p.add_argument("--worker-address", default=None,
                   help="address registered with the controller (default http://HOST:PORT)")
    p.add_argument("--controller-address", default=None,
                   help="register with this controller and send heartbeats")
    p.add_argument("--no-register", action="store_true")
    p.add_argument("--heartbeat-interval", type=float, default=45.0)
    p.add_argument("--model-names", default="sim-model", help="comma-separated")
    p.add_argument("--conv-template", default="vicuna_v1.1",
                   help="one of: " + ", ".join(sorted(TEMPLATES)))
    p.add_argument("--sep-style-numbering", choices=("head", "0.2.36"), default="head",
                   help="SeparatorStyle numbering / key set of the template wire JSON")
    p.add_argument("--context-length", type=int, default=2048)
    p.add_argument("--tokens", type=int, default=16,
                   help="completion tokens per request when max_new_tokens is larger")
    p.add_argument("--token-delay", type=float, default=0.0,
                   help="seconds between tokens")
    p.add_argument("--prefill-delay", type=float, default=0.0,
                   help="seconds before the first token (and before embeddings replies)")
    p.add_argument("--stream-interval", type=int, default=1, help="emit every k tokens")
    p.add_argument("--limit-worker-concurrency", type=int, default=1024)
    p.add_argument("--fault", choices=FAULT_MODES, default="none",
                   help="default fault mode for generation requests")
    p.add_argument("--fault-after", type=int, default=2,
                   help="tokens streamed before error/oom/die/hang/garbage faults")
    p.add_argument("--fault-delay", type=float, default=5.0,
                   help="extra first-token delay of slow-first-token")
    p.add_argument("--embedding-dim", type=int, default=8)
    p.add_argument("--usage-off-by-one", action="store_true",
                   help="report completion_tokens as the HF worker's 0-based step index")
    p.add_argument("--backlog", type=int, default=4096)
    return p


async def amain(args) -> int:
    try:
        worker = SimulatedWorker(args)
    except ValueError as exc:
        sys.stderr.write(f"simulated_worker: error: {exc}\n")
        return 2
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HTTPConnection(worker), args.host, args.port,
        backlog=args.backlog, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    address = args.worker_address or f"http://{args.host}:{port}"
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    registrar = None
    if args.controller_address and not args.no_register:
        registrar = Registrar(worker, args.controller_address, address,
                              args.heartbeat_interval)
        registrar.start()
    worker.log(
        f"simulated worker listening on http://{args.host}:{port} "
        f"(worker_address={address}, models={','.join(worker.model_names)}, "
        f"template={args.conv_template}/{args.sep_style_numbering}, "
        f"controller={args.controller_address if registrar else 'none'}, "
        f"pid={os.getpid()})")
    await stop.wait()
    server.close()
    for conn in list(worker.connections):
        if conn.transport is not None:
            conn.transport.abort()
    if registrar is not None:
        registrar.stop_event.set()
    await asyncio.sleep(0)
    worker.log("simulated worker stopped")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.tokens < 0 or args.stream_interval < 1 or args.embedding_dim < 1:
        sys.stderr.write("simulated_worker: error: --tokens must be >= 0, "
                         "--stream-interval and --embedding-dim >= 1\n")
        return 2
    try:
        return asyncio.run(amain(args))
    except OSError as exc:
        sys.stderr.write(f"simulated_worker: error: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
