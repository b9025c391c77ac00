"""API-key check for every route that is not explicitly public (fail closed: unknown paths need a key too)."""
from __future__ import annotations

import hashlib
import hmac

from flask import Flask, current_app, request

from app.errors import invalid_api_key, missing_api_key

# Endpoints anyone may call: probes, metrics and the API description; none reaches a worker.
PUBLIC_ENDPOINTS = frozenset({"health.health", "health.ready", "metrics.metrics", "openapi.openapi"})


def _digest(key: str) -> bytes:
    # Comparing fixed-size digests keeps the comparison time independent of key length and content.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def init_app(app: Flask) -> None:
    """Check `Authorization: Bearer <key>` before every request when API_KEYS is set."""
    app.extensions["api_key_digests"] = tuple(_digest(key) for key in app.config["API_KEYS"])
    app.before_request(require_api_key)


def _is_cors_preflight() -> bool:
    # Browsers never send credentials on a preflight; only with CORS on is it answered without a key.
    return (request.method == "OPTIONS" and bool(current_app.config["CORS_ALLOWED_ORIGINS"])
            and "Origin" in request.headers and "Access-Control-Request-Method" in request.headers)


def require_api_key() -> None:
    """Raise 401 unless the request carries one of the configured keys (saying so when it carries none at all);
    a no-op when no keys are configured."""
    digests = current_app.extensions["api_key_digests"]
    if not digests or request.endpoint in PUBLIC_ENDPOINTS or _is_cors_preflight():
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    offered = _digest(token.strip())
    # Compare against every key without stopping early (even when none was sent), so timing does not reveal
    # which key matched.
    matched = False
    for digest in digests:
        matched |= hmac.compare_digest(offered, digest)
    if not header.strip() or (scheme.lower() == "bearer" and not token.strip()):
        raise missing_api_key()
    if scheme.lower() != "bearer" or not token.strip() or not matched:
        raise invalid_api_key()
