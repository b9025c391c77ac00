"""GET /v1/models and GET /v1/models/{model}."""
from flask import Blueprint, jsonify

from app.api import get_cluster
from app.serving import models

bp = Blueprint("models", __name__, url_prefix="/v1")


@bp.get("/models")
def list_models():
    """Every model some worker serves."""
    return jsonify(models.list_models(get_cluster()))


@bp.get("/models/<path:model>")
def retrieve_model(model: str):
    """One model (ids may contain slashes, e.g. meta-llama/Llama-2-7b-chat-hf)."""
    return jsonify(models.retrieve_model(model, get_cluster()))
