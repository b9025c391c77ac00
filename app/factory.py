"""The application factory: settings, hooks, upstream clients and blueprints, wired once per app."""
from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask
from flask_cors import CORS

from app import api, auth, error_handlers, metrics, observability, status
from app.config import load_config
from app.images.fetch import ImageFetcher
from app.images.rules import ImageRules
from app.json_provider import GatewayJSONProvider
from app.routes.config import load_routes
from app.routes.relay import Relay
from app.serving.admission import Admission, AdmissionRules
from app.serving.cluster import Cluster
from app.settings import SERVER, read as read_settings
from app.upstream.client import UpstreamClient
from app.upstream.controller import Controller
from app.upstream.static_workers import StaticWorkers
from app.upstream.worker import Workers
from app.upstream.worker_status import read_queue_length


def create_app(test_config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Flask:
    """Build the app from the environment (or `environ`), with `test_config` overriding any setting.

    Raises app.config.ConfigError naming the first invalid setting.
    """
    app = Flask(__name__)
    # "//" in a path is a 404 like any unknown path, not an HTML redirect built from the client's Host header.
    app.url_map.merge_slashes = False
    app.config.from_mapping(load_config(environ, test_config))
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_REQUEST_BODY_BYTES"]  # larger bodies: 413
    app.json = GatewayJSONProvider(app)  # compact, UTF-8 as is, keys in order
    error_handlers.register_error_handlers(app)
    observability.init_app(app)  # first, so that even a request refused by auth gets an id and a log line
    status.init_app(app)  # the status page, when ADMIN_API_KEY is set; before auth, so it counts refusals too
    if app.config["CORS_ALLOWED_ORIGINS"]:
        CORS(app, origins=list(app.config["CORS_ALLOWED_ORIGINS"]), methods=list(app.config["CORS_ALLOWED_METHODS"]),
             allow_headers=list(app.config["CORS_ALLOWED_HEADERS"]), expose_headers=["X-Request-Id"],
             supports_credentials=app.config["CORS_ALLOW_CREDENTIALS"])
    auth.init_app(app)
    app.extensions["cluster"] = build_cluster(app.config, environ)
    app.register_blueprint(metrics.bp)
    api.init_app(app)
    return app


def build_cluster(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Cluster:
    """The upstream clients, configured; no network traffic happens here. environ: where gunicorn's settings are
    read (back-pressure sizes itself by its processes and threads)."""
    client = UpstreamClient(connect_retries=config["UPSTREAM_CONNECT_RETRIES"])
    if config["WORKER_ADDRESSES"]:
        controller = StaticWorkers(
            client, config["WORKER_ADDRESSES"], interval=config["WORKER_STATUS_INTERVAL"],
            # A status reply is instant; a worker silent for 5 s is treated as down, as FastChat's controller does.
            timeout=(config["WORKER_CONNECT_TIMEOUT"], 5.0),
            multimodal_models=frozenset(config["MULTIMODAL_MODELS"]))
    else:
        controller = Controller(
            client, config["CONTROLLER_ADDRESS"],
            timeout=(config["CONTROLLER_CONNECT_TIMEOUT"], config["CONTROLLER_READ_TIMEOUT"]),
            model_list_ttl=config["MODEL_LIST_TTL"], refresh_interval=config["WORKER_REFRESH_INTERVAL"],
            pick_interval=config["WORKER_PICK_INTERVAL"], pick_ttl=config["WORKER_PICK_TTL"])
    workers = Workers(client, timeout=(config["WORKER_CONNECT_TIMEOUT"], config["WORKER_READ_TIMEOUT"]),
                      cache_size=config["TEMPLATE_CACHE_SIZE"])
    image_rules = ImageRules.from_config(config)
    server = read_settings(os.environ if environ is None else environ, SERVER)
    # A status reply is instant: a worker silent for 2 s no longer counts toward its model's cap.
    admission = Admission(AdmissionRules.from_config(config, server),
                          lambda address: read_queue_length(client, address, (config["WORKER_CONNECT_TIMEOUT"], 2.0)))
    table = load_routes(config["ROUTES_FILE"], os.environ if environ is None else environ)
    relay = Relay(client, table, connect_timeout=config["WORKER_CONNECT_TIMEOUT"],
                  read_timeout=config["WORKER_READ_TIMEOUT"]) if table.routes else None
    return Cluster(controller, workers, ThreadPoolExecutor(max_workers=32, thread_name_prefix="choice"),
                   numbering=config["SEP_STYLE_NUMBERING"], clip_overflow=config["CONTEXT_OVERFLOW"] == "clip",
                   embedding_batch_size=config["EMBEDDING_BATCH_SIZE"], failover_attempts=config["FAILOVER_ATTEMPTS"],
                   tool_formats=config["TOOL_FORMATS"], structured_retries=config["STRUCTURED_OUTPUT_RETRIES"],
                   image_rules=image_rules, image_fetcher=ImageFetcher(image_rules) if image_rules.fetching else None,
                   body_limit=config["MAX_REQUEST_BODY_BYTES"], admission=admission, relay=relay)
