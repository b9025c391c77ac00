"""GET /openapi.json: the OpenAPI 3 document of this server, built once per app; no API key."""
from flask import Blueprint, current_app, jsonify

from app.documented import documented

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
@documented("meta", content={"application/json": {"schema": {"type": "object"}}})
def openapi():
    """This document

    The OpenAPI 3 description of this server; no API key.
    """
    from app.openapi import EXTENSION_KEY, build_spec  # apispec is loaded only when the document is asked for

    spec = current_app.extensions.get(EXTENSION_KEY)
    if spec is None:
        # Built on first use (every blueprint is registered by then); a race only builds the same dict twice.
        spec = current_app.extensions[EXTENSION_KEY] = build_spec(current_app)
    return jsonify(spec)
