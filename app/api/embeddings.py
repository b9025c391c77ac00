"""POST /v1/embeddings and FastChat's POST /v1/engines/{model}/embeddings."""
from flask import Blueprint

from app.api import load_body, reply
from app.documented import GENERATION_ERRORS, OtherRule, documented
from app.routes.relay import EMBEDDINGS
from app.serving import embeddings

bp = Blueprint("embeddings", __name__, url_prefix="/v1")


@bp.post("/embeddings")
@bp.post("/engines/<path:model>/embeddings")
@documented("embeddings", request="embedding", response="EmbeddingList", errors=GENERATION_ERRORS, other_rules={
    "/v1/engines/<path:model>/embeddings": OtherRule(
        "createEngineEmbedding", "Create embeddings (FastChat's engines path)",
        "The same as POST /v1/embeddings; the model comes from the path unless the body names one.")})
def create_embedding(model: str | None = None):
    """Create embeddings

    One embedding per input, in input order.
    """
    params = load_body("embedding")
    return reply({**params, "model": params["model"] or model}, embeddings.create_embeddings, None,
                 relay=EMBEDDINGS)
