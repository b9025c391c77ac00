"""Relaying a routed model's request to its OpenAI-compatible base URLs: the client's own JSON body (so fields
the gateway does not model, such as tools, response_format or seed, reach an upstream that supports them) with
`model` replaced by the upstream's name, the route's key in place of the client's, and failover between the
model's base URLs while nothing has been sent to the client.

Failover: a base URL that cannot be reached, or answers 5xx (or anything but 200 and a 4xx), is replaced by
another of the model's, chosen by weight among those not tried yet; the last failure is raised. As for FastChat
workers, a timeout or a connection dropped after the request was sent is not retried (the upstream may have done
the work), nor a 4xx (another base URL would refuse the same body), nor anything once the stream has begun.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass

import orjson
import requests

from app.errors import ApiError, model_not_found
from app.routes.config import Route, RouteTable
from app.routes.errors import UPSTREAM, upstream_failure
from app.routes.stream import RelayStream
from app.upstream.client import UpstreamClient, decode_json
from app.upstream.errors import BAD_RESPONSE, UNAVAILABLE, UpstreamError

logger = logging.getLogger(__name__)

CHAT, COMPLETIONS, EMBEDDINGS = "chat/completions", "completions", "embeddings"


@dataclass(frozen=True)
class Relay:
    """table: ROUTES_FILE's; connect_timeout: WORKER_CONNECT_TIMEOUT; read_timeout: WORKER_READ_TIMEOUT, for
    routes without their own `timeout`."""

    client: UpstreamClient
    table: RouteTable
    connect_timeout: float = 3.0
    read_timeout: float = 600.0

    def serves(self, model: str) -> bool:
        return self.table.serves(model)

    def create(self, path: str, model: str, body: dict, request_id: str | None = None) -> dict:
        """The upstream's whole JSON reply to POST {base_url}/{path}. request_id: sent as X-Request-Id, so the
        upstream's logs can be matched with ours."""
        response = self._open(path, model, body, request_id, stream=False)
        try:
            result = decode_json(response.content)
        except (ValueError, UnicodeDecodeError, requests.RequestException):
            result = None
        if not isinstance(result, dict):
            raise UpstreamError(BAD_RESPONSE, "The upstream sent a reply that is not a JSON object.",
                                upstream=UPSTREAM)
        return result

    def stream(self, path: str, model: str, body: dict, request_id: str | None = None) -> RelayStream:
        """The upstream's open stream, once it answered 200. The upstream is always asked for the usage chunk
        (stream_options.include_usage), for the access log and the token limits; the gateway's framing passes it
        on only to a client that asked for it."""
        options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        body = {**body, "stream": True, "stream_options": {**options, "include_usage": True}}
        return RelayStream(self._open(path, model, body, request_id, stream=True))

    def _open(self, path: str, model: str, body: dict, request_id: str | None, *, stream: bool) -> requests.Response:
        left = list(self.table.routes.get(model, ()))
        if not left:
            raise model_not_found(model)
        while True:
            route = random.choices(left, [candidate.weight for candidate in left])[0]
            left.remove(route)
            try:
                response = self._send(route, path, body, request_id, stream)
            except UpstreamError as exc:
                if exc.kind != UNAVAILABLE or not left:
                    raise
                failure = exc
            else:
                if response.status_code == 200:
                    return response
                failure = upstream_failure(response)
                if isinstance(failure, ApiError) or not left:
                    raise failure
            logger.warning("upstream %s for %s failed; trying another (%s)", route.base_url, model, failure)

    def _send(self, route: Route, path: str, body: dict, request_id: str | None, stream: bool) -> requests.Response:
        headers = {"Authorization": f"Bearer {route.api_key}"} if route.api_key else {}
        if request_id:
            headers["X-Request-Id"] = request_id
        if stream:
            headers["Accept"] = "text/event-stream"
        return self.client.send(f"{route.base_url}/{path}", _encode({**body, "model": route.upstream_model}),
                                timeout=(self.connect_timeout, route.timeout or self.read_timeout),
                                upstream=UPSTREAM, stream=stream, headers=headers)


def _encode(body: dict) -> bytes:
    """The body as the client sent it, as compact JSON (what orjson refuses, such as integers beyond 64 bits,
    by the standard library)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
