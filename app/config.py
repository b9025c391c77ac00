"""The settings of the app and of its server, read once from the environment, checked together, and failing fast
with the setting's name. What each setting is (name, parser, default, meaning) is declared in app/settings.py.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from app.keys.files import last_good, load_ring
from app.routes.config import load_routes
from app.settings import APP, SERVER, ConfigError, read

__all__ = ["ConfigError", "load_config", "load_server_config"]


def load_config(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> dict:
    """The app's settings: defaults, then the environment (parsed and checked), then already-typed overrides.

    Raises ConfigError naming the first invalid setting.
    """
    environ = os.environ if environ is None else environ
    config = read(environ, APP)
    if environ.get("WORKER_ADDRESSES", "").strip() and environ.get("CONTROLLER_ADDRESS", "").strip():
        raise ConfigError("set WORKER_ADDRESSES (no controller) or CONTROLLER_ADDRESS, not both")
    config.update(overrides or {})
    # Read now so that a broken key file stops the start with its problem (app.keys keeps it current later); a
    # process forked from gunicorn's master after the file broke keeps the master's keys instead (app.keys.store).
    try:
        load_ring(config["API_KEYS"], config["API_KEYS_FILE"])
    except ConfigError:
        if last_good(config["API_KEYS"], config["API_KEYS_FILE"]) is None:
            raise
    load_routes(config["ROUTES_FILE"], environ)  # a broken routes file stops the start with its problem
    return config


def load_server_config(environ: Mapping[str, str] | None = None) -> dict:
    """gunicorn.conf.py's settings, checked like the app's; raises ConfigError naming the first invalid one."""
    config = read(os.environ if environ is None else environ, SERVER)
    if bool(config["SSL_KEYFILE"]) != bool(config["SSL_CERTFILE"]):
        raise ConfigError("set both SSL_KEYFILE and SSL_CERTFILE, or neither")
    return config

