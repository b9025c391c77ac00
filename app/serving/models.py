"""The model list and model lookup, as the controller knows them."""
from __future__ import annotations

from app.errors import model_not_found
from app.serving import payloads
from app.serving.cluster import Cluster


def list_models(cluster: Cluster) -> dict:
    return payloads.model_list(cluster.controller.list_models())


def retrieve_model(model: str, cluster: Cluster) -> dict:
    """Raises 404 model_not_found for a model no worker serves."""
    if not cluster.controller.has_model(model):
        raise model_not_found(model)
    return payloads.model_card(model, payloads.now())
