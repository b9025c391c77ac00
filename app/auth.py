"""API-key check for every route that is not explicitly public (fail closed: unknown paths need a key too), and
the key's model allow-list and limits. The keys themselves (API_KEYS, API_KEYS_FILE, re-read when it changes):
app.keys; the limits' counting: app.limits."""
from __future__ import annotations

import hmac
from collections.abc import Iterable
from datetime import datetime, timezone

from flask import Flask, Response, current_app, g, request

from app.errors import api_key_expired, invalid_api_key, missing_api_key, model_not_found
from app.keys.model import ApiKey, key_digest
from app.keys.store import KeyStore
from app.limits import build_limiter
from app.observability import current_record

# Endpoints anyone may call: probes, metrics and the API description; none reaches a worker.
PUBLIC_ENDPOINTS = frozenset({"health.health", "health.ready", "metrics.metrics", "openapi.openapi"})
# The status page's: they take the admin key instead (app.status.views).
ADMIN_ENDPOINTS = frozenset({"status.page", "status.data"})
# What per-key limits count, as OpenAI's do: the requests that generate or embed. Listing models, token_check and
# the Responses API's stored-response routes need the key but use no share of the cluster.
LIMITED_ENDPOINTS = frozenset({"chat.create_chat_completion", "chat.create_fastchat_chat_completion",
                               "completions.create_completion", "embeddings.create_embedding",
                               "responses.create_response"})


def init_app(app: Flask) -> None:
    """Check `Authorization: Bearer <key>` before every request when API_KEYS or API_KEYS_FILE is set.

    Raises ConfigError when API_KEYS_FILE cannot be read or has a problem (and no earlier keys are at hand)."""
    store = KeyStore(app.config["API_KEYS"], app.config["API_KEYS_FILE"])
    app.extensions["api_keys"] = store
    app.extensions["limiter"] = build_limiter(app.config)
    app.before_request(require_api_key)
    app.after_request(_rate_limit_headers)


def _is_cors_preflight() -> bool:
    # Browsers never send credentials on a preflight; only with CORS on is it answered without a key.
    return (request.method == "OPTIONS" and bool(current_app.config["CORS_ALLOWED_ORIGINS"])
            and "Origin" in request.headers and "Access-Control-Request-Method" in request.headers)


def require_api_key() -> None:
    """Raise 401 unless the request carries one of the keys in effect and not expired (saying so when it carries
    none at all); a no-op when no keys are configured. The key found is the request's (request_key)."""
    ring = current_app.extensions["api_keys"].current()
    if (not ring.enabled or request.endpoint in PUBLIC_ENDPOINTS or request.endpoint in ADMIN_ENDPOINTS
            or _is_cors_preflight()):
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    offered = key_digest(token.strip())
    # Compare against every key without stopping early (even when none was sent), so timing does not reveal
    # which key matched.
    found: ApiKey | None = None
    for candidate, stored in zip(ring.keys, ring.digests):
        if hmac.compare_digest(offered, stored):
            found = candidate
    if not header.strip() or (scheme.lower() == "bearer" and not token.strip()):
        raise missing_api_key()
    if scheme.lower() != "bearer" or not token.strip() or found is None:
        raise invalid_api_key()
    current_record().key = found.name
    if found.expired(datetime.now(timezone.utc)):
        raise api_key_expired(found.expires.isoformat().replace("+00:00", "Z"))
    g.api_key = found
    if found.limits is not None and request.endpoint in LIMITED_ENDPOINTS:
        _admit(found)


def _admit(api_key: ApiKey) -> None:
    """Count the request against its key's limits (429 when over one); its tokens and parallel slot are settled
    when it ends, a stream's at its last byte or when its client leaves."""
    limiter, record = current_app.extensions["limiter"], current_record()
    admission = limiter.admit(api_key, record.rejected)
    g.rate_limit_headers = admission.headers
    record.on_finish.append(lambda finished, status: limiter.settle(
        api_key, admission, finished.usage, turned_away=finished.rejection == "backpressure"))


def _rate_limit_headers(response: Response) -> Response:
    """x-ratelimit-* on every response of a limited key: whole replies, errors and streams (before their first
    byte). A 429 carries them itself."""
    extra = g.get("rate_limit_headers")
    if extra:
        response.headers.update(extra)
    return response


def request_key() -> ApiKey | None:
    """The key the request was let in with; None when no key is needed (auth off, or a public endpoint)."""
    return g.get("api_key")


def require_model(model: str) -> None:
    """404 model_not_found, word for word what a model no worker serves gets, when the request's key may not use
    `model`: a client learns nothing about the models it may not use. Checked before any upstream call, for names
    that exist and names that do not alike."""
    allowed = request_key()
    if allowed is not None and not allowed.may_use(model):
        current_record().rejected("model")
        raise model_not_found(model)


def visible_models(models: Iterable[dict]) -> list[dict]:
    """The model cards (`id`) the request's key may use."""
    allowed = request_key()
    return [card for card in models if allowed is None or allowed.may_use(card["id"])]
