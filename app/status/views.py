"""GET /status (HTML, refreshing itself) and /status.json: the same data, for the admin key only."""
from __future__ import annotations

import base64
import binascii
import hmac

from flask import Blueprint, current_app, jsonify, render_template, request

from app.api import get_cluster
from app.documented import documented
from app.errors import invalid_api_key
from app.keys.model import key_digest
from app.status.snapshot import snapshot

bp = Blueprint("status", __name__)


@bp.get("/status")
@documented("operator", content={"text/html": {"schema": {"type": "string"}}}, errors=(401,))
def page():
    """Status page

    The models, their workers, the controller and the last minutes' figures, as HTML that reloads itself.
    Only with ADMIN_API_KEY set, and that key (Bearer, or a browser's Basic password).
    """
    _require_admin(basic=True)
    return render_template("status.html", status=_snapshot())


@bp.get("/status.json")
@documented("operator", content={"application/json": {"schema": {"type": "object"}}}, errors=(401,))
def data():
    """Status data

    What /status shows, as JSON. Only with ADMIN_API_KEY set, and that key.
    """
    _require_admin()
    return jsonify(_snapshot())


def _snapshot() -> dict:
    extension = current_app.extensions["status"]
    return snapshot(get_cluster(), extension["windows"], current_app.extensions["api_keys"].current(),
                    extension["read"])


def _require_admin(basic: bool = False) -> None:
    """401 unless the request carries ADMIN_API_KEY. basic: ask a browser for it (its password; any user name)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            token = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            token = ""
    elif scheme.lower() != "bearer":
        token = ""
    admin = key_digest(current_app.config["ADMIN_API_KEY"])
    if not hmac.compare_digest(key_digest(token.strip()), admin) or not token.strip():
        error = invalid_api_key()
        if basic:
            error.headers["WWW-Authenticate"] = 'Basic realm="fastchat-gateway status", charset="UTF-8"'
        raise error
