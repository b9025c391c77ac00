"""A whole response: the chat completion the request was translated into, shaped as a response object; and what
every response echoes of its request.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from app.errors import ApiError
from app.schemas.responses_chat import responses_param
from app.serving import chat, payloads
from app.serving.cluster import Cluster
from app.routes.errors import UPSTREAM
from app.upstream.errors import BAD_RESPONSE, UpstreamError


def create_response(params: dict, cluster: Cluster,
                    complete: Callable[[dict, Cluster], dict] = chat.create_chat_completion) -> dict:
    """params: a CreateResponseRequestSchema load (chat params plus `responses`); complete: the chat completion
    (FastChat workers', or a routed model's upstream's: app.serving.responses_api.routed)."""
    with responses_errors(params):
        completion = complete(params, cluster)
    choice = _first_choice(completion)
    status = status_of(choice.get("finish_reason"))
    usage = completion.get("usage")
    return payloads.response(payloads.new_item_id("resp"), completion.get("created") or payloads.now(), status,
                             params["model"], output_items(choice["message"], status),
                             usage_of(usage) if isinstance(usage, dict) else None, settings(params))


def _first_choice(completion: dict) -> dict:
    """The completion's one choice; an upstream's reply without a message is a 502."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise UpstreamError(BAD_RESPONSE, "The upstream sent a chat completion without a message.",
                            upstream=UPSTREAM)
    return choice


@contextmanager
def responses_errors(params: dict) -> Iterator[None]:
    """An ApiError raised on the chat path names the Responses field (`input[2].content[0]`, not
    `messages[3].content[0]`)."""
    try:
        yield
    except ApiError as error:
        error.param = responses_param(error.param, params["responses"]["origins"])
        raise


def status_of(finish_reason: str) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


def output_items(message: dict, status: str) -> list[dict]:
    """A chat message as output items: its text (if any, or if there is nothing else), then its calls."""
    items = []
    if message.get("content") or not message.get("tool_calls"):
        items.append(payloads.output_message(payloads.new_item_id("msg"), status,
                                             [payloads.output_text(message.get("content") or "")]))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        items.append(payloads.function_call_item(payloads.new_item_id("fc"), "completed", call.get("id"),
                                                 function.get("name"), function.get("arguments") or ""))
    return items


def usage_of(usage: dict) -> dict:
    """A chat usage object as the Responses API's."""
    return payloads.response_usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)


def chat_usage(response: dict) -> dict | None:
    """A response's usage as a chat usage object (what the access log and metrics count)."""
    usage = response.get("usage")
    return usage and payloads.usage(usage["input_tokens"], usage["output_tokens"])


def settings(params: dict) -> dict:
    """What a response echoes of its request, as the chat path honours it (defaults filled in)."""
    echoed = params["responses"]
    tools = [payloads.function_tool(tool["function"]["name"], tool["function"].get("description"),
                                    tool["function"].get("parameters"), tool["function"].get("strict"))
             for tool in params["tools"] or ()]
    choice = params["tool_choice"]
    return dict(instructions=echoed["instructions"], max_output_tokens=params["max_tokens"],
                max_tool_calls=echoed["max_tool_calls"], parallel_tool_calls=params["parallel_tool_calls"],
                temperature=params["temperature"], text=_text(params["response_format"]),
                tool_choice=payloads.tool_choice(None, choice["function"]["name"]) if isinstance(choice, dict)
                else payloads.tool_choice(choice), tools=tools, top_p=params["top_p"], user=echoed["user"],
                metadata=echoed["metadata"])


def _text(response_format: dict | None) -> dict:
    if response_format is None:
        return payloads.response_text("text")
    json_schema = response_format.get("json_schema") or {}
    return payloads.response_text(response_format["type"], json_schema.get("name"), json_schema.get("schema"),
                                  json_schema.get("strict"))
