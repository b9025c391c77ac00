"""ROUTES_FILE: the models served by OpenAI-compatible base URLs (vLLM, llama.cpp, Ollama, another gateway) beside
the FastChat workers. Every problem is a ConfigError naming the file, the entry and its line, and what is wrong;
no message ever quotes an upstream key.

    [[routes]]
    model = "gpt-small"              # the name clients use
    base_url = "http://127.0.0.1:8000/v1"
    api_key_env = "VLLM_KEY"         # or api_key = "..."; neither: no Authorization header
    upstream_model = "Qwen/Qwen2.5-0.5B-Instruct"   # the name sent upstream (default: model)
    timeout = 120                    # seconds of silence allowed (default: WORKER_READ_TIMEOUT)
    weight = 2                       # share of requests among the model's base URLs (default 1)

Several entries with the same model are several base URLs for it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from app.settings import ConfigError
from app.toml_tables import array_of_tables

FIELDS = ("model", "base_url", "api_key", "api_key_env", "upstream_model", "timeout", "weight")
# Other gateways' names for the same fields (LiteLLM's among them): pointed to ours rather than ignored.
SAME_AS = {"model_name": "model", "api_base": "base_url", "base": "base_url", "url": "base_url",
           "key": "api_key", "request_timeout": "timeout"}


@dataclass(frozen=True)
class Route:
    """One base URL of a model. api_key: the upstream's (None: no Authorization header); timeout: read timeout
    in seconds (None: WORKER_READ_TIMEOUT)."""

    model: str
    base_url: str
    upstream_model: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class RouteTable:
    """The routes by model name, in file order."""

    routes: Mapping[str, tuple[Route, ...]] = field(default_factory=dict)

    def serves(self, model: str) -> bool:
        return model in self.routes

    def models(self) -> list[str]:
        return list(self.routes)


def load_routes(path: str, environ: Mapping[str, str]) -> RouteTable:
    """The table of the file at `path` (an empty table for no path); environ: where api_key_env is looked up.

    Raises ConfigError for a file that cannot be read or has a problem."""
    if not path:
        return RouteTable()
    where = f"invalid ROUTES_FILE={path!r}"
    try:
        with open(path, "rb") as file:
            text = file.read().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    return parse_routes(text, where, environ)


def parse_routes(text: str, where: str, environ: Mapping[str, str]) -> RouteTable:
    table: dict[str, list[Route]] = {}
    seen: dict[tuple[str, str], str] = {}
    for index, (entry, line) in enumerate(array_of_tables(text, where, "routes")):
        label = _label(index, entry, line)
        try:
            route = _route(entry, environ)
        except ValueError as exc:
            raise ConfigError(f"{where}: {label}: {exc}") from None
        if (route.model, route.base_url) in seen:
            raise ConfigError(f"{where}: {label}: the same model and base_url as {seen[route.model, route.base_url]}")
        seen[route.model, route.base_url] = label
        table.setdefault(route.model, []).append(route)
    return RouteTable({model: tuple(routes) for model, routes in table.items()})


def _label(index: int, entry: dict, line: int | None) -> str:
    """Where a [[routes]] table is, for a message: `route 'gpt-small' (line 7)`."""
    model = entry.get("model")
    shown = f"route {model!r}" if isinstance(model, str) and 0 < len(model) <= 256 else f"route #{index + 1}"
    return f"{shown} (line {line})" if line else shown


def _route(entry: dict, environ: Mapping[str, str]) -> Route:
    for name in entry:
        if name in SAME_AS:
            raise ValueError(f"unknown field {name!r}: this file calls it {SAME_AS[name]!r}")
        if name not in FIELDS:
            raise ValueError(f"unknown field {name!r} (a route has {', '.join(FIELDS)})")
    model = _name(entry, "model")
    upstream_model = _name(entry, "upstream_model") if "upstream_model" in entry else model
    return Route(model, _base_url(entry.get("base_url")), upstream_model, _api_key(entry, environ),
                 _number(entry, "timeout"), _number(entry, "weight") or 1.0)


def _name(entry: dict, name: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise ValueError(f"needs a `{name}`: a non-empty string without surrounding white space")
    return value


def _base_url(value) -> str:
    """The URL the OpenAI paths (/chat/completions...) are appended to, without its trailing slash."""
    if not isinstance(value, str):
        raise ValueError("needs a `base_url` such as \"http://127.0.0.1:8000/v1\"")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
            or parts.username or parts.password:
        raise ValueError("`base_url` must be an http:// or https:// URL with a host and no query, fragment or "
                         "credentials (give the key as api_key or api_key_env), such as \"http://127.0.0.1:8000/v1\"")
    return value.strip().rstrip("/")


def _api_key(entry: dict, environ: Mapping[str, str]) -> str | None:
    if "api_key" in entry and "api_key_env" in entry:
        raise ValueError("give the upstream key as `api_key` or as `api_key_env`, not both")
    if "api_key" in entry:
        key = entry["api_key"]
        if not isinstance(key, str) or not key.strip() or key != key.strip():
            raise ValueError("`api_key` must be a non-empty string without surrounding white space")
        return key
    if "api_key_env" in entry:
        name = entry["api_key_env"]
        if not isinstance(name, str) or not name.strip():
            raise ValueError("`api_key_env` must name an environment variable")
        key = environ.get(name, "").strip()
        if not key:
            raise ValueError(f"`api_key_env` names {name}, which is not set (or empty) in the environment")
        return key
    return None


def _number(entry: dict, name: str) -> float | None:
    value = entry.get(name)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or value == float("inf"):
        raise ValueError(f"`{name}` must be a positive number, without quotes")
    return float(value)
