"""A streamed response: the chat chunks of its generation turned into the Responses API's event sequence.

    response.created, response.in_progress,
    per text:  response.output_item.added (message), response.content_part.added, response.output_text.delta...,
               response.output_text.done, response.content_part.done, response.output_item.done
    per call:  response.output_item.added (function_call), response.function_call_arguments.delta (the whole
               arguments), response.function_call_arguments.done, response.output_item.done
    response.completed (or response.incomplete at max_output_tokens), with the whole response and its usage.

A failure after the first event ends the stream with response.failed and an `error` event (app.streaming asks
`failure` for them). The chat stream opens the worker streams eagerly, so a failure before them still gets its
own HTTP status.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from app.errors import ApiError
from app.schemas.responses_chat import responses_param
from app.serving import chat, payloads
from app.serving.cluster import Cluster
from app.serving.responses_api.reply import responses_errors, settings, status_of, usage_of
from app.serving.usage import usage_so_far


def stream_response(params: dict, cluster: Cluster,
                    open_chunks: Callable[[dict, Cluster], Iterator[dict]] = chat.stream_chat_completion
                    ) -> ResponseEvents:
    """Open the chat stream now (so failures get a status) and return the response's events. open_chunks: the
    chat chunks (FastChat workers', or a routed model's upstream's: app.serving.responses_api.routed)."""
    with responses_errors(params):
        chunks = open_chunks(params, cluster)
    return ResponseEvents(params, chunks)


class ResponseEvents:
    """The events of one streamed response, as dicts. `usage` is the chat usage once the generation ended (for
    the access log); close() closes the chat chunks, so the worker stream."""

    def __init__(self, params: dict, chunks: Iterator[dict]):
        self._params = params
        self._chunks = chunks
        self._id = payloads.new_item_id("resp")
        self._created = payloads.now()
        self._settings = settings(params)
        self._sequence = -1
        self._output: list[dict] = []  # the items done
        self._message: tuple[str, str] | None = None  # (id, text so far) of the message being streamed
        self._pending: dict | None = None  # the tool call being received (calls arrive one after another)
        self.usage: dict | None = None
        self._events = self._generate()

    def __iter__(self) -> Iterator[dict]:
        return self._events

    def close(self) -> None:
        self._events.close()
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def usage_so_far(self) -> dict | None:
        """The chat usage of what was generated, also when the client left before the end (app.streaming)."""
        relayed = getattr(self._chunks, "usage_so_far", None)  # an upstream's stream keeps its own
        return self.usage or (relayed() if relayed else usage_so_far(self._chunks))

    def failure(self, error: ApiError) -> list[dict]:
        """The events ending a stream that failed with `error`: the response so far, then the error."""
        error.param = responses_param(error.param, self._params["responses"]["origins"])
        detail = error.body()["error"]
        return [self._event("response.failed", response=self._response("failed", None, error.message)),
                self._event("error", code=detail["code"], message=detail["message"], param=detail["param"],
                            error=detail)]

    def _generate(self) -> Iterator[dict]:
        yield self._event("response.created", response=self._response("in_progress", None))
        yield self._event("response.in_progress", response=self._response("in_progress", None))
        finish = "stop"
        for chunk in self._chunks:
            if isinstance(chunk.get("usage"), dict):  # the last chunk: the usage of the whole generation
                self.usage = chunk["usage"]
            choice = (chunk.get("choices") or [None])[0]
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            if delta.get("content") and isinstance(delta["content"], str):
                yield from self._calls_done()
                yield from self._text(delta["content"])
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    yield from self._call_part(call)
            finish = choice.get("finish_reason") or finish
        yield from self._calls_done()
        status = status_of(finish)
        if self._message is None and not self._output:  # an empty reply is still a message, as a whole one is
            yield from self._open_message()
        yield from self._close_message(status)
        usage = usage_of(self.usage) if self.usage else None
        yield self._event("response.completed" if status == "completed" else "response.incomplete",
                          response=self._response(status, usage))

    def _event(self, type: str, **fields) -> dict:
        self._sequence += 1
        return payloads.response_event(type, self._sequence, **fields)

    def _response(self, status: str, usage: dict | None, error_message: str | None = None) -> dict:
        output = list(self._output)
        if self._message is not None:  # a failure while a message is streamed: what it had so far
            id, text = self._message
            output.append(payloads.output_message(id, "in_progress", [payloads.output_text(text)]))
        return payloads.response(self._id, self._created, status, self._params["model"], output, usage,
                                 self._settings, error_message)

    def _open_message(self) -> Iterator[dict]:
        id, index = payloads.new_item_id("msg"), len(self._output)
        self._message = (id, "")
        yield self._event("response.output_item.added", output_index=index,
                          item=payloads.output_message(id, "in_progress", []))
        yield self._event("response.content_part.added", item_id=id, output_index=index, content_index=0,
                          part=payloads.output_text(""))

    def _text(self, text: str) -> Iterator[dict]:
        if self._message is None:
            yield from self._open_message()
        id, so_far = self._message
        self._message = (id, so_far + text)
        yield self._event("response.output_text.delta", item_id=id, output_index=len(self._output),
                          content_index=0, delta=text)

    def _close_message(self, status: str) -> Iterator[dict]:
        if self._message is None:
            return
        (id, text), index = self._message, len(self._output)
        yield self._event("response.output_text.done", item_id=id, output_index=index, content_index=0, text=text)
        yield self._event("response.content_part.done", item_id=id, output_index=index, content_index=0,
                          part=payloads.output_text(text))
        item = payloads.output_message(id, status, [payloads.output_text(text)])
        self._message = None
        self._output.append(item)
        yield self._event("response.output_item.done", output_index=index, item=item)

    def _call_part(self, part: dict) -> Iterator[dict]:
        """A tool call delta. The gateway's chat streams each call whole, in one delta; an upstream's may send
        its id and name first, then its arguments in pieces (OpenAI's and vLLM's), all with the call's `index`:
        a call is complete when another index begins, text follows, or the stream ends."""
        function = part.get("function") or {}
        index = part.get("index")
        if self._pending is not None and index != self._pending["index"]:
            yield from self._calls_done()
        if self._pending is None:
            self._pending = {"index": index, "id": None, "name": None, "arguments": ""}
        call = self._pending
        call["id"] = call["id"] or part.get("id")
        call["name"] = call["name"] or function.get("name")
        call["arguments"] += function.get("arguments") or ""

    def _calls_done(self) -> Iterator[dict]:
        if self._pending is not None:
            call, self._pending = self._pending, None
            yield from self._call(call["id"], call["name"], call["arguments"])

    def _call(self, call_id: str | None, name: str | None, arguments: str) -> Iterator[dict]:
        """A complete call."""
        yield from self._close_message("completed")
        id, index = payloads.new_item_id("fc"), len(self._output)
        yield self._event("response.output_item.added", output_index=index,
                          item=payloads.function_call_item(id, "in_progress", call_id, name, ""))
        yield self._event("response.function_call_arguments.delta", item_id=id, output_index=index,
                          delta=arguments)
        yield self._event("response.function_call_arguments.done", item_id=id, output_index=index, name=name,
                          arguments=arguments)
        item = payloads.function_call_item(id, "completed", call_id, name, arguments)
        self._output.append(item)
        yield self._event("response.output_item.done", output_index=index, item=item)

