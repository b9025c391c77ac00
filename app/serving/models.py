"""The model list and model lookup: the controller's models and ROUTES_FILE's.

A name both serve is a configuration error the gateway can only see once it asks the controller (no network at
start): it is logged as an error, once per process and name, and the route wins (requests for it are relayed),
since the routes file is the operator's explicit word on that name.
"""
from __future__ import annotations

import logging

from app.errors import model_not_found
from app.serving import payloads
from app.serving.cluster import Cluster
from app.upstream.errors import UpstreamError

logger = logging.getLogger(__name__)
_reported: set[str] = set()  # the names both serve already logged in this process


def list_models(cluster: Cluster) -> dict:
    """Every model, sorted by name. With routes, a controller that cannot be reached is logged and the routed
    models are still listed; without, its failure is the reply's."""
    routed = cluster.relay.table.models() if cluster.relay is not None else []
    try:
        served = cluster.controller.list_models()
    except UpstreamError as exc:
        if not routed:
            raise
        logger.warning("listing only the routed models: %s", exc.message)
        served = []
    for model in set(served) & set(routed) - _reported:
        _reported.add(model)
        logger.error("model %r is served by FastChat workers and by ROUTES_FILE: requests for it go to the route; "
                     "remove one of them", model)
    return payloads.model_list(sorted(set(served) | set(routed)))


def retrieve_model(model: str, cluster: Cluster) -> dict:
    """Raises 404 model_not_found for a model no worker or route serves."""
    if not cluster.routes(model) and not cluster.controller.has_model(model):
        raise model_not_found(model)
    return payloads.model_card(model, payloads.now())
