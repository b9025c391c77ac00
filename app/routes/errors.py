"""An OpenAI-compatible upstream's error reply, as our one error body: its message and status class kept."""
from __future__ import annotations

import requests

from app.errors import ApiError, ErrorCode
from app.upstream.client import decode_json
from app.upstream.errors import BAD_RESPONSE, UpstreamError

UPSTREAM = "upstream"  # UpstreamError.upstream of these calls: "The upstream could not be reached."
_ERROR_BODY_LIMIT = 64 * 1024  # an error body longer than this is not read further
_RETRY_HEADERS = ("Retry-After", "retry-after-ms")  # the openai SDK waits as long as they say (ms first)


def upstream_failure(response: requests.Response) -> ApiError | UpstreamError:
    """The error for a non-200 reply (its body read, its connection released). A 4xx is the client's doing and
    keeps its status, message, Retry-After and retry-after-ms; but a 401 or 403 refused the gateway's upstream
    key, not the client's, so it is a 502 the operator must fix. Anything else is an UpstreamError (502 once no
    other base URL is left), which failover may try elsewhere."""
    data = b""
    try:
        for piece in response.iter_content(8192):  # what was read already, or reads at most the limit
            data += piece
            if len(data) >= _ERROR_BODY_LIMIT:
                break
    except (requests.RequestException, OSError):  # a broken error body still has its status
        pass
    finally:
        response.close()
    error = _error_fields(data)
    status = response.status_code
    message = error.get("message") or f"HTTP {status}"
    if 400 <= status < 500 and status not in (401, 403):
        headers = {name: response.headers[name] for name in _RETRY_HEADERS if name in response.headers} or None
        code = error.get("code")
        fastchat_code = error.get("fastchat_code") or (ErrorCode.RATE_LIMIT if status == 429
                                                       else ErrorCode.VALIDATION_TYPE_ERROR)
        return ApiError(status, message, type=error.get("type") or "invalid_request_error",
                        param=error.get("param"), code=code, fastchat_code=fastchat_code, keep_status=True,
                        headers=headers)
    return UpstreamError(BAD_RESPONSE, f"The upstream answered with HTTP {status}: {message}", upstream=UPSTREAM)


def stream_error(event: dict) -> ApiError:
    """An `error` event an upstream sent in its stream, for our stream's error event."""
    error = _error_fields(event)
    text = event.get("text") if event.get("error_code") else None  # FastChat's in-band error: its text says it
    return ApiError(502, error.get("message") or (text if isinstance(text, str) and text else
                                                  "The upstream's stream failed."), type="server_error",
                    code="upstream_error", fastchat_code=ErrorCode.INTERNAL_ERROR)


def _error_fields(data: bytes | dict) -> dict:
    """message, type, param, code (strings) of an OpenAI error body {"error": {...}}, or of FastChat's
    {"object": "error", "message": ...}, or a FastAPI {"detail": "..."}: whatever of them is there."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = decode_json(data)
        except (ValueError, UnicodeDecodeError):
            return {}
    if not isinstance(data, dict):
        return {}
    inner = data.get("error")
    if isinstance(inner, str):
        inner = {"message": inner}
    if not isinstance(inner, dict):
        detail = data.get("detail")
        inner = data if isinstance(data.get("message"), str) else {"message": detail} if isinstance(detail, str) \
            else {}
    fields = {name: inner[name][:2000] if isinstance(inner.get(name), str) else None
              for name in ("message", "type", "param", "code")}
    # FastChat's numeric codes (its openai_api_server's "code": 40303), kept for FastChat clients.
    number = inner.get("code")
    if isinstance(number, int) and not isinstance(number, bool) and 40000 <= number < 60000:
        fields["fastchat_code"] = number
    return fields
