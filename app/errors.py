"""The gateway's one error type, its constructors, and its translations from upstream and validation failures.

No Flask here (the serving layer raises these): app.error_handlers renders them. The body is a superset both
kinds of clients read: the openai SDK reads `error`, FastChat clients read the top-level `object`/`message`/`code`.
"""
from __future__ import annotations

from enum import IntEnum

from marshmallow import ValidationError

from app.upstream import errors as upstream_errors
from app.upstream.errors import UpstreamError


class ErrorCode(IntEnum):
    """FastChat's ErrorCode numbers (fastchat/constants.py), kept so FastChat clients understand us."""

    VALIDATION_TYPE_ERROR = 40001
    INVALID_AUTH_KEY = 40101
    INVALID_MODEL = 40301
    PARAM_OUT_OF_RANGE = 40302
    CONTEXT_OVERFLOW = 40303
    RATE_LIMIT = 42901
    ENGINE_OVERLOADED = 42903
    INTERNAL_ERROR = 50001
    CUDA_OUT_OF_MEMORY = 50002
    CONTROLLER_NO_WORKER = 50005
    CONTROLLER_WORKER_TIMEOUT = 50006


class ApiError(Exception):
    """Any failure a client is told about: status, OpenAI error fields and FastChat's code travel together.

    keep_status: the status is part of HTTP itself (auth, routing, body size), so ERROR_STATUS_MODE=fastchat
    leaves it alone.
    """

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, fastchat_code: int = ErrorCode.VALIDATION_TYPE_ERROR,
                 keep_status: bool = False, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.fastchat_code = int(fastchat_code)
        self.keep_status = keep_status
        self.headers = headers or {}

    def body(self) -> dict:
        """The error body, as sent both as a JSON response and as an SSE event."""
        return {
            "object": "error",
            "message": self.message,
            "code": self.fastchat_code,
            "error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code},
        }


def invalid_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def unsupported_parameter(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="unsupported_parameter")


def missing_api_key() -> ApiError:
    """OpenAI's wording for a request with no key (clients match its first sentence); same code as a wrong key."""
    return ApiError(401, "You didn't provide an API key. You need to provide your API key in an Authorization "
                    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    code="invalid_api_key", fastchat_code=ErrorCode.INVALID_AUTH_KEY, keep_status=True)


def invalid_api_key() -> ApiError:
    return ApiError(401, "Incorrect API key provided. Send it as 'Authorization: Bearer <key>'.",
                    code="invalid_api_key", fastchat_code=ErrorCode.INVALID_AUTH_KEY, keep_status=True)


def api_key_expired(expires: str) -> ApiError:
    return ApiError(401, f"The API key provided expired at {expires}. Ask the gateway's operator for a new one.",
                    code="invalid_api_key", fastchat_code=ErrorCode.INVALID_AUTH_KEY, keep_status=True)


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist.", param="model", code="model_not_found",
                    fastchat_code=ErrorCode.INVALID_MODEL)


def rate_limit_exceeded(limit_type: str, message: str, headers: dict) -> ApiError:
    """429 as OpenAI sends it: `type` "requests" or "tokens", code rate_limit_exceeded, with Retry-After (which the
    openai SDK waits for before it retries by itself) among `headers`. Its status is kept in ERROR_STATUS_MODE
    =fastchat too: clients retry on the 429 itself."""
    return ApiError(429, message, type=limit_type, code="rate_limit_exceeded", fastchat_code=ErrorCode.RATE_LIMIT,
                    keep_status=True, headers=headers)


def rate_limit_store_unavailable(retry_after: int) -> ApiError:
    """RATE_LIMIT_STORE_FAILURE=closed and the limits' store cannot be reached: not the client's doing, so not a
    429; the SDK retries a 503 after Retry-After."""
    return ApiError(503, "The gateway cannot check this key's rate limits right now. Please try again shortly.",
                    type="service_unavailable_error", code="rate_limit_store_unavailable",
                    fastchat_code=ErrorCode.INTERNAL_ERROR, headers={"Retry-After": str(retry_after)})


def context_length_exceeded(context_length: int, prompt_tokens: int, max_tokens: int | None,
                            param: str = "messages") -> ApiError:
    """OpenAI's wording, so clients that parse it (LangChain, chat UIs) recognise it."""
    if max_tokens is None:
        detail = (f"However, your messages resulted in {prompt_tokens} tokens, which leaves no room for a "
                  "completion. Please reduce the length of the messages.")
    else:
        detail = (f"However, you requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
                  f"{max_tokens} in the completion). Please reduce the length of the messages or completion.")
    return ApiError(400, f"This model's maximum context length is {context_length} tokens. {detail}", param=param,
                    code="context_length_exceeded", fastchat_code=ErrorCode.CONTEXT_OVERFLOW)


def model_overloaded(model: str, retry_after: int) -> ApiError:
    """Back-pressure (app.serving.admission): the model's workers hold as many requests as they should. The status
    stays 503 in ERROR_STATUS_MODE=fastchat: a 400 would tell clients not to retry."""
    return ApiError(503, f"The model `{model}` is overloaded: its workers' queue is full. Please retry after "
                    f"{retry_after} seconds.", type="service_unavailable_error", code="model_overloaded",
                    fastchat_code=ErrorCode.ENGINE_OVERLOADED, keep_status=True,
                    headers={"Retry-After": str(retry_after)})


def server_overloaded(streams: int, retry_after: int) -> ApiError:
    """Back-pressure: this gateway process streams as many responses as it can (MAX_STREAMS_PER_PROCESS)."""
    return ApiError(503, f"The server is overloaded: this process already streams {streams} responses. Please "
                    f"retry after {retry_after} seconds.", type="service_unavailable_error", code="server_overloaded",
                    fastchat_code=ErrorCode.ENGINE_OVERLOADED, keep_status=True,
                    headers={"Retry-After": str(retry_after)})


def shutting_down(retry_after: int = 1) -> ApiError:
    """This process is stopping (a stop, a reload or an upgrade): /ready answers it so a load balancer sends no
    more, and a stream still open near the graceful timeout ends with it. Another instance or process can serve
    the retry at once."""
    return ApiError(503, "The server is shutting down. Please retry the request.",
                    type="service_unavailable_error", code="server_shutting_down",
                    fastchat_code=ErrorCode.INTERNAL_ERROR, keep_status=True,
                    headers={"Retry-After": str(retry_after)})


def from_validation(exc: ValidationError) -> ApiError:
    """Turn marshmallow's nested messages into one error naming the first failing field."""
    problems = list(_flatten(exc.messages))
    path, first = problems[0]
    message = "; ".join(f"{p}: {m}" if p else m for p, m in problems)
    # Tagged messages (app.schemas.fields) carry their own codes; plain ones are schema violations.
    return ApiError(400, message, param=path or None, code=getattr(first, "error_code", None),
                    fastchat_code=getattr(first, "fastchat_code", ErrorCode.VALIDATION_TYPE_ERROR))


def _flatten(messages, path: str = ""):
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key == "_schema":
                child = path
            elif isinstance(key, int):
                child = f"{path}[{key}]"
            else:
                child = f"{path}.{key}" if path else str(key)
            yield from _flatten(value, child)
    elif isinstance(messages, list):
        for item in messages:
            yield from _flatten(item, path)
    else:
        yield path, messages


_UPSTREAM = {
    upstream_errors.UNAVAILABLE: (503, "service_unavailable_error", "upstream_unavailable",
                                  ErrorCode.CONTROLLER_NO_WORKER),
    upstream_errors.TIMEOUT: (504, "server_error", "upstream_timeout", ErrorCode.CONTROLLER_WORKER_TIMEOUT),
    upstream_errors.BAD_RESPONSE: (502, "server_error", "upstream_error", ErrorCode.INTERNAL_ERROR),
}


def from_upstream(exc: UpstreamError) -> ApiError:
    """Map an upstream failure to the status and fields clients are promised."""
    if exc.kind == upstream_errors.WORKER_ERROR:
        code = exc.error_code or ErrorCode.INTERNAL_ERROR
        status = 400 if 40000 <= code < 50000 else 503 if code == ErrorCode.CUDA_OUT_OF_MEMORY else 500
        return ApiError(status, exc.message, type="server_error", code="worker_error", fastchat_code=code)
    status, type_, code, fastchat_code = _UPSTREAM[exc.kind]
    # A timed-out generation already cost the worker its time: ask the SDK not to repeat it. Nothing reachable is
    # mostly a restart (of the controller, of a worker) under way: a retry soon may well succeed.
    headers = {"x-should-retry": "false"} if status == 504 else {"Retry-After": "1"} if status == 503 else None
    return ApiError(status, exc.message, type=type_, code=code, fastchat_code=fastchat_code, headers=headers)
