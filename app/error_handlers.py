"""Turning whatever a request raised into the one error body, as a JSON response (SSE events reuse
as_api_error): the Flask side of app.errors, with the logging and metrics of failures."""
from __future__ import annotations

import logging

from flask import Flask, Response, current_app, jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from app import metrics
from app.errors import ApiError, ErrorCode, from_upstream, from_validation
from app.upstream.errors import UpstreamError

logger = logging.getLogger(__name__)


def as_api_error(exc: BaseException) -> ApiError:
    """Whatever was raised, the ApiError a client gets for it (unexpected ones are logged, never echoed)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UpstreamError):
        logger.warning("upstream %s failure (%s): %s", exc.upstream, exc.kind, exc.message)
        metrics.UPSTREAM_ERRORS.labels(exc.upstream, exc.kind).inc()
        return from_upstream(exc)
    if isinstance(exc, ValidationError):
        return from_validation(exc)
    if isinstance(exc, HTTPException):
        return ApiError(exc.code or 500, exc.description or exc.name, keep_status=True,
                        type="invalid_request_error" if (exc.code or 500) < 500 else "server_error",
                        fastchat_code=ErrorCode.VALIDATION_TYPE_ERROR if (exc.code or 500) < 500
                        else ErrorCode.INTERNAL_ERROR,
                        headers=dict(exc.get_headers()) if exc.code == 405 else None)
    logger.exception("unhandled error", exc_info=exc)
    return ApiError(500, "The server had an error while processing your request.", type="server_error",
                    fastchat_code=ErrorCode.INTERNAL_ERROR)


def render(error: ApiError) -> Response:
    """The only function that turns an error into an HTTP response."""
    status = error.status
    if current_app.config["ERROR_STATUS_MODE"] == "fastchat" and not error.keep_status:
        status = 400
    response = jsonify(error.body())
    response.status_code = status
    for name, value in error.headers.items():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    """Every exception, including routing 404/405 and crashes, is rendered by `render`."""
    app.register_error_handler(Exception, lambda exc: render(as_api_error(exc)))
