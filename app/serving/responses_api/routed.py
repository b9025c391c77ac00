"""/v1/responses for a routed model (ROUTES_FILE): the chat request it was translated into is relayed to the
model's upstream's /chat/completions, and the completion or its chunks are shaped as for FastChat workers, so the
upstream needs no Responses API of its own."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

from app.routes.relay import CHAT
from app.serving.cluster import Cluster
from app.serving.responses_api.events import stream_response
from app.serving.responses_api.reply import create_response


def relayed(chat_body: dict, request_id: str | None) -> tuple[Callable[[dict, Cluster], object],
                                                               Callable[[dict, Cluster], object]]:
    """The use cases (whole, streamed) of a routed model's response. chat_body: the chat request in OpenAI's
    JSON (the Responses schema's translation); request_id: sent upstream as X-Request-Id."""
    def complete(params: dict, cluster: Cluster) -> dict:
        return cluster.relay.create(CHAT, params["model"], chat_body, request_id)

    def open_chunks(params: dict, cluster: Cluster):
        return cluster.relay.stream(CHAT, params["model"], chat_body, request_id)

    return partial(create_response, complete=complete), partial(stream_response, open_chunks=open_chunks)
