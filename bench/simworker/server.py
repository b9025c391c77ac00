"""The HTTP layer: the worker's routes served by aiohttp's web server until SIGTERM or SIGINT.

aiohttp rather than the hand-written asyncio server this package replaced: bench/README.md has the measurement.
What FastChat's uvicorn answers differently from aiohttp's defaults is adjusted here, once: 404 and 405 as
FastAPI's JSON ``{"detail": ...}``, an exception in a handler as a text/plain 500, no content-type on a stream.
A client that goes away cancels its handler (releasing its concurrency permit), as in FastChat's worker.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import weakref

from aiohttp import web

from bench.simworker.app import SimulatedWorker, internal_error, json_response

MAX_BODY_BYTES = 64 * 1024 * 1024
logger = logging.getLogger("simworker")


class Connections:
    """connections_total (since the last /sim/reset) and connections_open, for /sim/stats."""

    def __init__(self) -> None:
        self.total = 0
        self._seen: weakref.WeakSet = weakref.WeakSet()
        self.server: web.Server | None = None

    def note(self, request: web.Request) -> None:
        transport = request.transport  # one per connection (aiohttp's protocol objects take no weak references)
        if transport is not None and transport not in self._seen:
            self._seen.add(transport)
            self.total += 1

    @property
    def open(self) -> int:
        return len(self.server.connections) if self.server is not None else 0


def build_app(worker: SimulatedWorker) -> web.Application:
    connections = worker.connections = Connections()

    @web.middleware
    async def fastchat_errors(request: web.Request, handler) -> web.StreamResponse:
        connections.note(request)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return json_response({"detail": "Not Found"}, 404)
        except web.HTTPMethodNotAllowed:
            return json_response({"detail": "Method Not Allowed"}, 405)
        except Exception:
            logger.exception("exception in %s %s", request.method, request.path)
            return internal_error()

    async def no_stream_content_type(request: web.Request, response: web.StreamResponse) -> None:
        if type(response) is web.StreamResponse:
            response.headers.popall("Content-Type", None)

    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[fastchat_errors])
    app.on_response_prepare.append(no_stream_content_type)
    for method, path, handler in worker.routes():
        app.router.add_route(method, path, handler)
    return app


async def serve(worker: SimulatedWorker, host: str, port: int, backlog: int, on_listening) -> None:
    """Serve until SIGTERM/SIGINT; on_listening(port) is called once the socket listens (port 0: a free one)."""
    app = build_app(worker)
    # An idle keep-alive connection stays open (as the hand-written server kept it), whatever the gateway's pool does.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, keepalive_timeout=3600,
                           shutdown_timeout=0.5, handle_signals=False)
    await runner.setup()
    worker.connections.server = runner.server
    try:
        site = web.TCPSite(runner, host, port, backlog=backlog, reuse_address=True)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        on_listening(runner.addresses[0][1])
        await stop.wait()
    finally:
        await runner.cleanup()
