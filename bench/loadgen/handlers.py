"""Reading one response while it arrives: JSON, SSE or a worker's NUL-delimited frames, recording the first
token's time and an error label."""
from __future__ import annotations

import json
import re

from harness import sse

_ERROR_RE = re.compile(rb'(?<!\\)"error(?:_code)?"\s*:\s*(?!0[,}\s])')
# A chunk that carries content: a non-empty "content" (chat delta) or "text" (completion) string. A quote inside
# content is escaped, so the pattern cannot match inside a string.
_CONTENT_RE = re.compile(rb'"(?:content|text)"\s*:\s*"(?!")')


class OpenAIJSONHandler:
    __slots__ = ("parts", "ttft")

    def __init__(self):
        self.parts: list[bytes] = []
        self.ttft = None

    def feed(self, data: bytes, now: float) -> None:
        self.parts.append(data)

    def finish(self) -> str | None:
        try:
            obj = json.loads(b"".join(self.parts))
            content = obj["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return "bad_body"
        return None if content else "empty"


class WorkerJSONHandler(OpenAIJSONHandler):
    __slots__ = ()

    def finish(self) -> str | None:
        try:
            obj = json.loads(b"".join(self.parts))
        except ValueError:
            return "bad_body"
        if not isinstance(obj, dict):
            return "bad_body"
        if obj.get("error_code", 0) != 0:
            return "worker_error"
        return None if obj.get("text") else "empty"


class SSEHandler:
    """OpenAI server-sent events, split by harness.sse.Reader (lenient: any SSE framing): JSON is decoded until
    the first content, later events are only scanned for error objects."""
    __slots__ = ("reader", "ttft", "error", "bad", "events", "chunks")

    def __init__(self):
        self.reader = sse.Reader(lenient=True)
        self.ttft = None
        self.error = False
        self.bad = False
        self.events = 0
        self.chunks = 0  # events that carry content: the chunks the server relayed

    def feed(self, data: bytes, now: float) -> None:
        if self.bad:
            return
        try:
            payloads = self.reader.feed(data)
        except sse.SSEError:
            self.bad = True
            return
        self.events += len(payloads)
        if self.ttft is None:
            for i, payload in enumerate(payloads):
                if payload != sse.DONE and self._event(payload, now):
                    self.chunks += 1
                    payloads = payloads[i + 1:]
                    break
            else:
                return
        for payload in payloads:
            if _CONTENT_RE.search(payload):
                self.chunks += 1
            if b'"error' in payload and _ERROR_RE.search(payload):
                self.error = True

    def _event(self, payload: bytes, now: float) -> bool:
        """Decode one event before the first content; True once that content has arrived."""
        try:
            obj = json.loads(payload)
        except ValueError:
            self.error = True
            return False
        if not isinstance(obj, dict) or "error" in obj or obj.get("object") == "error" or (
                obj.get("error_code") not in (None, 0)):
            self.error = True
            return False
        choices = obj.get("choices")
        if choices:
            first = choices[0]
            if (first.get("delta") or {}).get("content") or first.get("text"):
                self.ttft = now
                return True
        return False

    def finish(self) -> str | None:
        if self.bad:
            return "bad_body"
        if self.error:
            return "error_event"
        if not self.reader.done:
            return "no_done"
        try:
            self.reader.close()
        except sse.SSEError:
            return "bad_body"
        if self.ttft is None:
            return "empty"
        return None


class WorkerStreamHandler:
    """FastChat worker stream: cumulative JSON frames separated by NUL bytes."""
    __slots__ = ("buf", "ttft", "last", "events", "error")

    def __init__(self):
        self.buf = b""
        self.ttft = None
        self.last = b""
        self.events = 0
        self.error = False

    def feed(self, data: bytes, now: float) -> None:
        frames = (self.buf + data).split(b"\0")
        self.buf = frames.pop()
        if not frames:
            return
        self.events += len(frames)
        if self.ttft is None:
            for frame in frames:
                try:
                    obj = json.loads(frame)
                except ValueError:
                    self.error = True
                    return
                if obj.get("error_code", 0) != 0:
                    self.error = True
                    return
                if obj.get("text"):
                    self.ttft = now
                    break
        self.last = frames[-1]

    def finish(self) -> str | None:
        if self.error:
            return "worker_error"
        try:
            obj = json.loads(self.last)
        except ValueError:
            return "bad_body"
        if obj.get("error_code", 0) != 0:
            return "worker_error"
        if self.ttft is None:
            return "empty"
        if obj.get("finish_reason") is None:
            return "no_finish"
        return None
