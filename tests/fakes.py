"""A FastChat cluster faked with `responses`: one line per upstream behaviour a test needs."""
from __future__ import annotations

import io
import json

import requests
from responses import RequestsMock, matchers

CONTROLLER = "http://controller.test"
WORKER = "http://worker.test"
MODEL = "vicuna-test"

VICUNA = {
    "name": "vicuna_v1.1", "system_template": "{system_message}",
    "system_message": "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                      "helpful, detailed, and polite answers to the user's questions.",
    "system_message_vision": "", "roles": ["USER", "ASSISTANT"], "messages": [], "offset": 0, "sep_style": 2,
    "sep": " ", "sep2": "</s>", "stop_str": None, "stop_token_ids": None, "max_image_size_mb": None,
}


def frames(*frames: dict) -> bytes:
    """A worker stream body exactly as FastChat frames it: json.dumps(frame) + NUL per frame."""
    return b"".join(json.dumps(frame).encode() + b"\0" for frame in frames)


class OneReadPerFrame(io.BufferedReader):
    """A response body that hands over one worker frame per read, as a worker generating token by token does
    (a plain bytes body arrives in one read, which the gateway would relay as one coalesced chunk)."""

    def __init__(self, body: bytes):
        super().__init__(io.BytesIO(b""))
        *frames, self._rest = body.split(b"\0")  # the rest: bytes of an unfinished frame, if any
        self._frames = [frame + b"\0" for frame in frames if frame]

    def read(self, size=-1):
        if self._frames:
            return self._frames.pop(0)
        rest, self._rest = self._rest, b""
        if not rest:
            self.close()
        return rest


def text_frames(texts: list[str], finish_reason: str = "stop", prompt_tokens: int = 5) -> bytes:
    """Cumulative-text frames, the last one carrying finish_reason."""
    return frames(*(
        {"text": text, "error_code": 0,
         "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": i + 1, "total_tokens": prompt_tokens + i + 1},
         "finish_reason": finish_reason if i == len(texts) - 1 else None}
        for i, text in enumerate(texts)))


class FakeCluster:
    """Registers controller and worker replies on a RequestsMock."""

    def __init__(self, rsps: RequestsMock):
        self.rsps = rsps

    def serves(self, *models: str):
        return self.rsps.post(f"{CONTROLLER}/list_models", json={"models": list(models)})

    def multimodal(self, *models: str):
        """The controller's /list_multimodal_models (asked only for requests that carry images)."""
        return self.rsps.post(f"{CONTROLLER}/list_multimodal_models", json={"models": list(models)})

    def routes(self, model: str = MODEL, to: str = WORKER):
        return self.rsps.post(f"{CONTROLLER}/get_worker_address", json={"address": to},
                              match=[matchers.json_params_matcher({"model": model})])

    def routes_in_turn(self, *addresses: str) -> list[str]:
        """The controller names these workers in turn, the last one repeating; returns the models asked for."""
        asked: list[str] = []

        def pick(request):
            asked.append(json.loads(request.body)["model"])
            return 200, {}, json.dumps({"address": addresses[min(len(asked), len(addresses)) - 1]})

        self.rsps.add_callback("POST", f"{CONTROLLER}/get_worker_address", callback=pick)
        return asked

    def template(self, conv: dict = VICUNA, at: str = WORKER):
        return self.rsps.post(f"{at}/worker_get_conv_template", json={"conv": conv})

    def context(self, length: int | None = 2048, at: str = WORKER):
        return self.rsps.post(f"{at}/model_details", json={"context_length": length})

    def counts(self, count: int = 5, at: str = WORKER):
        return self.rsps.post(f"{at}/count_token", json={"count": count, "error_code": 0})

    def chat_ready(self, model: str = MODEL, prompt_tokens: int = 5, context: int = 2048, counted: bool = True):
        """Everything a chat request needs before generation. counted=False when the request's max_tokens fits
        the context whatever the prompt's token count (the gateway then skips /count_token)."""
        self.serves(model)
        self.routes(model)
        self.template()
        self.context(context)
        if counted:
            self.counts(prompt_tokens)

    def generates(self, text: str = "Hello there", finish_reason: str = "stop", at: str = WORKER,
                  payload: dict | None = None, **reply):
        body = {"text": text, "error_code": 0,
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
                "finish_reason": finish_reason, **reply}
        match = [matchers.json_params_matcher(payload)] if payload is not None else []
        return self.rsps.post(f"{at}/worker_generate", json=body, match=match)

    def streams(self, body: bytes, at: str = WORKER, payload: dict | None = None, one_read: bool = False):
        """A worker stream delivering one frame per read, or (one_read=True) the whole body at once."""
        match = [matchers.json_params_matcher(payload)] if payload is not None else []
        return self.rsps.post(f"{at}/worker_generate_stream", body=body if one_read else OneReadPerFrame(body),
                              match=match)

    def unreachable(self, url: str):
        return self.rsps.post(url, body=requests.ConnectionError("refused"))

    def sent(self, path: str) -> list[dict]:
        """The JSON payloads the gateway posted to URLs ending with `path`."""
        return [json.loads(call.request.body) for call in self.rsps.calls if call.request.url.endswith(path)]
