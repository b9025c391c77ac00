"""The start-up check of ROUTES_FILE against the FastChat side: a model name both serve is a configuration error.

Run once by gunicorn's master (on_starting), with short timeouts: a controller (or worker) that cannot be asked
then is logged and the start goes on; a name that becomes shared later is logged at request time and the route
wins (app.serving.models).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

from app.routes.config import RouteTable
from app.settings import ConfigError
from app.upstream.client import UpstreamClient
from app.upstream.errors import UpstreamError

logger = logging.getLogger(__name__)
_TIMEOUT = (1.0, 3.0)


def check_shared_names(config: Mapping, table: RouteTable, client: UpstreamClient | None = None) -> None:
    """Raise ConfigError naming the models both the FastChat side and ROUTES_FILE serve."""
    if not table.routes:
        return
    served = fastchat_models(config, client or UpstreamClient(connect_retries=0))
    if served is None:
        return
    shared = sorted(set(served) & set(table.models()))
    if shared:
        raise ConfigError(f"invalid ROUTES_FILE={config['ROUTES_FILE']!r}: {', '.join(map(repr, shared))} "
                          "also served by FastChat workers; a model name must have one source (rename the route, "
                          "or remove it)")


def fastchat_models(config: Mapping, client: UpstreamClient) -> list[str] | None:
    """The controller's models (or the listed workers'); None, logged, when they cannot be asked now."""
    try:
        if config["WORKER_ADDRESSES"]:
            names: list[str] = []
            for address in config["WORKER_ADDRESSES"]:
                status = client.post_json(f"{address}/worker_get_status", None, timeout=_TIMEOUT, upstream="worker")
                names += status.get("model_names") or [] if isinstance(status, dict) else []
            return names
        reply = client.post_json(f"{config['CONTROLLER_ADDRESS']}/list_models", None, timeout=_TIMEOUT,
                                 upstream="controller")
        return list(reply.get("models") or []) if isinstance(reply, dict) else []
    except UpstreamError as exc:
        logger.warning("ROUTES_FILE not checked against the FastChat models at start: %s", exc.message)
        return None
