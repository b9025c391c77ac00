"""GET /v1/models and GET /v1/models/{model}."""
from flask import Blueprint, jsonify

from app.api import get_cluster
from app.auth import require_model, visible_models
from app.documented import UPSTREAM_ERRORS, documented
from app.serving import models

bp = Blueprint("models", __name__, url_prefix="/v1")


@bp.get("/models")
@documented("models", response="ModelList", errors=(401, *UPSTREAM_ERRORS))
def list_models():
    """List models

    Every model some worker serves (and the API key may use), sorted by name.
    """
    listing = models.list_models(get_cluster())
    return jsonify({**listing, "data": visible_models(listing["data"])})


@bp.get("/models/<path:model>")
@documented("models", response="ModelCard", errors=(401, 404, *UPSTREAM_ERRORS))
def retrieve_model(model: str):
    """Retrieve a model

    One model; 404 `model_not_found` when no worker serves it.
    """
    require_model(model)
    return jsonify(models.retrieve_model(model, get_cluster()))
