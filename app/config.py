"""The settings of the app and of its server, read once from the environment, checked together, and failing fast
with the setting's name. What each setting is (name, parser, default, meaning) is declared in app/settings.py.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

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
    if config["API_KEYS_FILE"]:
        config["API_KEYS"] = tuple(dict.fromkeys(config["API_KEYS"] + _read_keys(config["API_KEYS_FILE"])))
    return config


def load_server_config(environ: Mapping[str, str] | None = None) -> dict:
    """gunicorn.conf.py's settings, checked like the app's; raises ConfigError naming the first invalid one."""
    config = read(os.environ if environ is None else environ, SERVER)
    if bool(config["SSL_KEYFILE"]) != bool(config["SSL_CERTFILE"]):
        raise ConfigError("set both SSL_KEYFILE and SSL_CERTFILE, or neither")
    return config


def _read_keys(path: str) -> tuple[str, ...]:
    try:
        with open(path, encoding="utf-8") as keys:
            lines = [line.strip() for line in keys]
    except OSError as exc:
        raise ConfigError(f"invalid API_KEYS_FILE={path!r}: {exc.strerror}") from None
    return tuple(line for line in lines if line and not line.startswith("#"))
