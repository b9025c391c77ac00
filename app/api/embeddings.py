"""POST /v1/embeddings and FastChat's POST /v1/engines/{model}/embeddings."""
from flask import Blueprint

from app.api import load_body, reply
from app.serving import embeddings

bp = Blueprint("embeddings", __name__, url_prefix="/v1")


@bp.post("/embeddings")
@bp.post("/engines/<path:model>/embeddings")
def create_embedding(model: str | None = None):
    """Embeddings of one or more inputs; a model in the body wins over the path, as in FastChat."""
    params = load_body("embedding")
    return reply({**params, "model": params["model"] or model}, embeddings.create_embeddings, None)
