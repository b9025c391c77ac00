"""What a load sends: the target (addresses, path, body) and the request bodies of the benchmark."""
from __future__ import annotations

import json
from collections.abc import Sequence

from bench.loadgen.handlers import OpenAIJSONHandler, SSEHandler, WorkerJSONHandler, WorkerStreamHandler


class Target:
    """Where requests go and what they look like.

    kind: ``openai`` (POST an OpenAI request, read JSON or SSE) or ``worker`` (POST a FastChat worker payload to
    /worker_generate or /worker_generate_stream, read JSON or NUL-delimited frames).
    ``addresses``: one or more (host, port); connection i goes to addresses[i % len(addresses)].
    """

    def __init__(self, name: str, kind: str, addresses: Sequence[tuple[str, int]], path: str, body: dict,
                 stream: bool, headers: dict[str, str] | None = None):
        if kind not in ("openai", "worker"):
            raise ValueError(f"unknown target kind {kind!r}")
        self.name = name
        self.kind = kind
        self.addresses = list(addresses)
        self.path = path
        self.body = body
        self.stream = stream
        payload = json.dumps(body, separators=(",", ":")).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        host, port = self.addresses[0]
        self.raw = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: fastchat-gateway-bench\r\n"
                    f"Accept: */*\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                    f"{extra}\r\n").encode("latin-1") + payload

    def handler(self):
        if self.kind == "openai":
            return SSEHandler() if self.stream else OpenAIJSONHandler()
        return WorkerStreamHandler() if self.stream else WorkerJSONHandler()

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": self.path, "stream": self.stream,
                "addresses": [f"http://{h}:{p}" for h, p in self.addresses], "body": self.body}


def chat_request(model: str, content: str, max_tokens: int, stream: bool, temperature: float = 0.7) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": temperature}
    if stream:
        body["stream"] = True
    return body


def worker_request(model: str, prompt: str, max_new_tokens: int, temperature: float = 0.7) -> dict:
    """The payload FastChat's server and the gateway send a worker for a plain chat request."""
    return {"model": model, "prompt": prompt, "temperature": temperature, "logprobs": None, "top_p": 1.0,
            "top_k": -1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "max_new_tokens": max_new_tokens,
            "echo": False, "stop_token_ids": None, "stop": []}
