"""Application settings: read once from the environment, validated, and failing fast with the setting's name.

Server settings (bind address, processes, threads) belong to gunicorn.conf.py; these are the app's own.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting has a value the gateway cannot run with; the message names the setting."""


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL such as http://localhost:21001")
    return value.rstrip("/")


def _url_list(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_url(item.strip()) for item in value.split(",") if item.strip()))


def _key_list(value: str) -> tuple[str, ...]:
    return tuple(key.strip() for key in value.split(",") if key.strip())


def _number(minimum: float, *, integer: bool = False, strict: bool = False) -> Callable[[str], float | int]:
    def parse(value: str) -> float | int:
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            raise ValueError(f"must be {'an integer' if integer else 'a number'}") from None
        if number < minimum or (strict and number == minimum) or number != number:
            raise ValueError(f"must be {'greater than' if strict else 'at least'} {minimum}")
        return number

    return parse


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _name_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value.lower()

    return parse


# name: (parser of the environment string, default value, one-line meaning for the README)
SETTINGS: dict[str, tuple[Callable[[str], Any], Any, str]] = {
    "CONTROLLER_ADDRESS": (_url, "http://localhost:21001", "FastChat controller base URL"),
    "WORKER_ADDRESSES": (_url_list, (), "comma-separated worker URLs: dispatch without a controller"),
    "WORKER_STATUS_INTERVAL": (_number(0, strict=True), 5.0, "seconds between worker status polls (no controller)"),
    "API_KEYS": (_key_list, (), "comma-separated accepted API keys; empty disables auth"),
    "API_KEYS_FILE": (str, "", "file with more accepted keys, one per line (# comments)"),
    "CONTROLLER_CONNECT_TIMEOUT": (_number(0, strict=True), 3.0, "seconds to connect to the controller"),
    "CONTROLLER_READ_TIMEOUT": (_number(0, strict=True), 30.0, "seconds to wait for a controller reply"),
    "WORKER_CONNECT_TIMEOUT": (_number(0, strict=True), 3.0, "seconds to connect to a worker"),
    "WORKER_READ_TIMEOUT": (
        _number(0, strict=True), 600.0,
        "seconds a worker may stay silent (whole non-streamed generation; gap between streamed frames)"),
    "UPSTREAM_CONNECT_RETRIES": (_number(0, integer=True), 1, "extra tries when a connection is refused"),
    "MODEL_LIST_TTL": (_number(0), 5.0, "seconds the controller's model list is cached"),
    "WORKER_PICK_INTERVAL": (
        _number(0), 0.1,
        "least seconds between controller worker picks per model; requests in between reuse its recent picks "
        "round-robin (0: ask on every request, like FastChat)"),
    "WORKER_PICK_TTL": (_number(0, strict=True), 5.0, "seconds a worker the controller named stays in rotation"),
    "WORKER_REFRESH_INTERVAL": (
        _number(0), 60.0, "minimum seconds between /refresh_all_workers calls made by GET /v1/models"),
    "TEMPLATE_CACHE_SIZE": (_number(1, integer=True), 1024, "conversation templates kept per process"),
    "SEP_STYLE_NUMBERING": (
        _choice("auto", "head", "0.2.36"), "auto", "sep_style integers of workers: auto-detect, or force one"),
    "ERROR_STATUS_MODE": (_choice("openai", "fastchat"), "openai", "fastchat answers handled errors with 400"),
    "CONTEXT_OVERFLOW": (
        _choice("error", "clip"), "error", "max_tokens over the context: 400, or clip silently like FastChat"),
    "EMBEDDING_BATCH_SIZE": (_number(1, integer=True), 4, "inputs per worker embeddings call (FastChat's default)"),
    "FAILOVER_ATTEMPTS": (
        _number(0, integer=True), 2, "other workers tried when a worker cannot be reached before generation"),
    "MAX_REQUEST_BODY_BYTES": (_number(1, integer=True), 16 * 1024 * 1024, "larger request bodies get a 413"),
    "MAX_N": (_number(1, integer=True), 128, "largest accepted n"),
    "MAX_TOKENS_CAP": (_number(1, integer=True), 131072, "largest accepted max_tokens"),
    "MAX_STOP_SEQUENCES": (_number(0, integer=True), 16, "most stop strings accepted in one request"),
    "MAX_MESSAGES": (_number(1, integer=True), 2048, "most messages accepted in one chat request"),
    "CORS_ALLOWED_ORIGINS": (_name_list, (), "comma-separated origins allowed by CORS (* for any); empty: CORS off"),
    "CORS_ALLOWED_METHODS": (_name_list, ("GET", "POST", "OPTIONS"), "methods CORS allows"),
    "CORS_ALLOWED_HEADERS": (_name_list, ("Authorization", "Content-Type", "X-Request-Id"), "headers CORS allows"),
    "CORS_ALLOW_CREDENTIALS": (_flag, False, "whether CORS allows credentials"),
    "LOG_REQUEST_BODIES": (_flag, False, "debug only: log prompts and outputs (never on by default)"),
}


def load_config(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> dict:
    """Return every setting: defaults, then the environment (parsed and checked), then already-typed overrides.

    Raises ConfigError naming the first invalid setting.
    """
    environ = os.environ if environ is None else environ
    config = {}
    for name, (parse, default, _) in SETTINGS.items():
        raw = environ.get(name)
        if raw is None or not raw.strip():
            config[name] = default
            continue
        try:
            config[name] = parse(raw.strip())
        except ValueError as exc:
            raise ConfigError(f"invalid {name}={raw!r}: {exc}") from None
    if environ.get("WORKER_ADDRESSES", "").strip() and environ.get("CONTROLLER_ADDRESS", "").strip():
        raise ConfigError("set WORKER_ADDRESSES (no controller) or CONTROLLER_ADDRESS, not both")
    for name, value in (overrides or {}).items():
        config[name] = value
    if config["API_KEYS_FILE"]:
        config["API_KEYS"] = tuple(dict.fromkeys(config["API_KEYS"] + _read_keys(config["API_KEYS_FILE"])))
    return config


def _read_keys(path: str) -> tuple[str, ...]:
    try:
        with open(path, encoding="utf-8") as keys:
            lines = [line.strip() for line in keys]
    except OSError as exc:
        raise ConfigError(f"invalid API_KEYS_FILE={path!r}: {exc.strerror}") from None
    return tuple(line for line in lines if line and not line.startswith("#"))
