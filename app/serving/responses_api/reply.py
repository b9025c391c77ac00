"""A whole response: the chat completion the request was translated into, shaped as a response object; and what
every response echoes of its request.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.errors import ApiError
from app.schemas.responses_chat import responses_param
from app.serving import chat, payloads
from app.serving.cluster import Cluster


def create_response(params: dict, cluster: Cluster) -> dict:
    """params: a CreateResponseRequestSchema load (chat params plus `responses`)."""
    with responses_errors(params):
        completion = chat.create_chat_completion(params, cluster)
    choice = completion["choices"][0]
    status = status_of(choice["finish_reason"])
    return payloads.response(payloads.new_item_id("resp"), completion["created"], status, params["model"],
                             output_items(choice["message"], status), usage_of(completion["usage"]),
                             settings(params))


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
    if message["content"] or not message.get("tool_calls"):
        items.append(payloads.output_message(payloads.new_item_id("msg"), status,
                                             [payloads.output_text(message["content"] or "")]))
    for call in message.get("tool_calls") or ():
        items.append(payloads.function_call_item(payloads.new_item_id("fc"), "completed", call["id"],
                                                 call["function"]["name"], call["function"]["arguments"]))
    return items


def usage_of(usage: dict) -> dict:
    """A chat usage object as the Responses API's."""
    return payloads.response_usage(usage["prompt_tokens"], usage["completion_tokens"])


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
