"""The one exception the upstream layer raises: every transport, protocol and in-band failure becomes it."""
from __future__ import annotations

UNAVAILABLE = "unavailable"      # refused, unreachable, or no worker serves the model
TIMEOUT = "timeout"              # connect or read timeout
BAD_RESPONSE = "bad_response"    # non-2xx, body that is not the JSON/framing the protocol promises
WORKER_ERROR = "worker_error"    # the worker answered with an in-band error_code != 0


class UpstreamError(Exception):
    """A controller or worker call failed.

    kind: one of the constants above; error_code: FastChat's in-band ErrorCode for WORKER_ERROR;
    upstream: "controller" or "worker", for the message and the logs.
    """

    def __init__(self, kind: str, message: str, *, upstream: str = "worker", error_code: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.upstream = upstream
        self.error_code = error_code
