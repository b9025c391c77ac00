"""Every setting of the gateway, declared once: environment variable, parser, default, meaning, and who reads it.

The app (app/config.py), gunicorn.conf.py, the CLI's options and --help (app/cli.py) and README's configuration
tables (`python -m app.settings --update-readme README.md`) are derived from SETTINGS, so they cannot drift apart.
Importing this module stays cheap (standard library only): gunicorn's master reads it before it forks.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

APP, SERVER = "app", "server"  # who reads a setting: the app's create_app, or gunicorn.conf.py
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")  # gunicorn's


class ConfigError(ValueError):
    """A setting has a value the gateway cannot run with; the message names the setting."""


# ---------------------------------------------------------------------------------------------- parsers
# Each takes the stripped, non-empty environment string and returns the value or raises ValueError saying what the
# value must be; Setting.read puts the setting's name and value in front.
def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL such as http://localhost:21001")
    return value.rstrip("/")


def _redis_url(value: str) -> str:
    if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL such as redis://localhost:6379/0")
    return value


def _url_list(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_url(item) for item in _list(value)))


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _hosts(value: str) -> tuple[str, ...]:
    hosts = tuple(host.lower() for host in _list(value))
    for host in hosts:
        if "/" in host or "@" in host or "*" in host.removeprefix("*.") and host != "*":
            raise ValueError(f"{host!r} is not a host name: give names such as images.example.com, "
                             f"*.example.com or *, without a scheme, path or port")
    return hosts


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


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value.lower()

    return parse


def _text(value: str) -> str:
    return value


def _tool_formats(value: str) -> dict[str, str]:
    # Imported here, not at the top: gunicorn's master reads this module but never the app's settings.
    from app.serving.tools.registry import parse_overrides

    return parse_overrides(value)


def _limit(*words: str, minimum: int = 0) -> Callable[[str], str | int]:
    """One of `words` (auto, off) or a whole number of at least `minimum`."""
    number = _number(minimum, integer=True)

    def parse(value: str) -> str | int:
        if value.lower() in words:
            return value.lower()
        try:
            return number(value)
        except ValueError as exc:
            raise ValueError(f"must be {', '.join(words)} or a whole number: {exc}") from None

    return parse


_seconds = _number(0, strict=True)
_positive = _number(1, integer=True)
_count = _number(0, integer=True)


# ---------------------------------------------------------------------------------------------- the declaration
@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str  # README's meaning, in Markdown; the CLI's --help shows it without backticks
    reader: str = APP
    unit: str = ""  # shown after the default: "s"
    shown_default: str = ""  # when the default is not a literal value: "2 per CPU"
    flag: str = ""  # the CLI option that sets this variable to its value as given

    def read(self, environ: Mapping[str, str]) -> Any:
        """The value in `environ`, parsed; the default when unset or blank."""
        raw = environ.get(self.name)
        if raw is None or not raw.strip():
            return self.default
        try:
            return self.parse(raw.strip())
        except ValueError as exc:
            raise ConfigError(f"invalid {self.name}={raw!r}: {exc}") from None

    @property
    def off_by_default(self) -> bool:
        """Whether the default is nothing: an empty list or text."""
        return self.default in ((), "")

    def default_text(self) -> str:
        if self.shown_default:
            return self.shown_default
        if self.off_by_default:
            return "empty" if isinstance(self.default, tuple) else "none"
        if isinstance(self.default, tuple):
            return ",".join(self.default)
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default)


# Two processes per CPU: the work is GIL-bound, and with more, smaller processes no single one runs out of threads
# for new streams while another has spare ones (processes take connections as they come, not evenly).
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

_DECLARED = [
    # --- the app's: FastChat cluster ---
    Setting("CONTROLLER_ADDRESS", _url, "http://localhost:21001",
            "FastChat controller base URL (same name FastChat uses)", flag="--controller-address"),
    Setting("WORKER_ADDRESSES", _url_list, (),
            "comma-separated worker URLs: dispatch to them directly, without a controller (not with "
            "`CONTROLLER_ADDRESS`)", flag="--worker-addresses"),
    Setting("WORKER_STATUS_INTERVAL", _seconds, 5.0,
            "without a controller: how often each listed worker's `/worker_get_status` is polled", unit="s"),
    Setting("API_KEYS", _list, (), "comma-separated accepted keys (named `key-1`, `key-2`, ... in logs and "
            "metrics); empty, and no `API_KEYS_FILE`, disables auth", flag="--api-keys"),
    Setting("API_KEYS_FILE", _text, "",
            "a file of more accepted keys, re-read when it changes: a `.toml` file of named keys with their models "
            "expiry and limits (see API keys, per-key limits), or any other name: one key per line (named "
            "`line-N`), `#` comments"),
    Setting("ROUTES_FILE", _text, "",
            "a TOML file of `[[routes]]`: models served by OpenAI-compatible base URLs beside the FastChat "
            "workers (see OpenAI-compatible upstreams); read at start"),
    Setting("ADMIN_API_KEY", _text, "",
            "the key of the status page (`/status`, `/status.json`; see Status page), sent as `Authorization: "
            "Bearer <key>` (or as a browser's Basic password); empty: no status page (404)"),
    # Per-key limits (app.limits): one host needs no service; several gateway instances share a Redis.
    Setting("REDIS_URL", _redis_url, "",
            "Redis that keeps the per-key limits of every gateway instance using it (`redis://host:6379/0`); "
            "without it, the limits hold across the processes of one host (a file in `RATE_LIMIT_DIR`)",
            shown_default="none: embedded"),
    Setting("RATE_LIMIT_DIR", _text, "",
            "without `REDIS_URL`: the directory of the file where every process of the host keeps the limits' "
            "counts (instances given the same one share their limits)",
            shown_default="a temporary directory per gunicorn master"),
    Setting("RATE_LIMIT_STORE_FAILURE", _choice("open", "closed"), "open",
            "when the limits' store (Redis) cannot be reached: `open` lets requests of limited keys in without "
            "limits, `closed` refuses them with a 503 (both logged and counted)"),
    Setting("REDIS_TIMEOUT", _seconds, 0.25,
            "connecting to Redis and each command; after a failure Redis is not asked again for 1 s", unit="s"),
    Setting("CONTROLLER_CONNECT_TIMEOUT", _seconds, 3.0, "connecting to the controller", unit="s"),
    Setting("CONTROLLER_READ_TIMEOUT", _seconds, 30.0, "waiting for a controller reply", unit="s"),
    Setting("WORKER_CONNECT_TIMEOUT", _seconds, 3.0, "connecting to a worker", unit="s"),
    Setting("WORKER_READ_TIMEOUT", _seconds, 600.0,
            "the longest silence of a worker: the whole generation for non-streamed requests, the gap between "
            "frames for streams (504 `upstream_timeout` when exceeded)", unit="s"),
    Setting("UPSTREAM_CONNECT_RETRIES", _count, 1,
            "extra tries when a connection is refused (never once anything was sent)"),
    Setting("MODEL_LIST_TTL", _number(0), 5.0,
            "how long the controller's model list is cached; an unknown model re-reads it once, so a newly "
            "registered model works at once", unit="s"),
    Setting("WORKER_PICK_INTERVAL", _number(0), 0.1,
            "least time between two `/get_worker_address` calls per model and gunicorn process; requests in between "
            "go round-robin to the workers the controller named within `WORKER_PICK_TTL`. `0` asks on every "
            "request, like FastChat", unit="s"),
    Setting("WORKER_PICK_TTL", _seconds, 5.0,
            "how long a worker the controller named stays in that rotation without being named again (a worker "
            "that cannot be reached leaves it at once)", unit="s"),
    Setting("WORKER_REFRESH_INTERVAL", _number(0), 60.0,
            "`GET /v1/models` asks the controller to `/refresh_all_workers` (purging dead workers) at most this "
            "often per gunicorn process; FastChat did it on every listing, blocking the controller", unit="s"),
    # --- the app's: FastChat compatibility ---
    Setting("TEMPLATE_CACHE_SIZE", _positive, 1024,
            "conversation templates and context lengths cached per process, per (worker, model); dropped when that "
            "worker fails"),
    Setting("SEP_STYLE_NUMBERING", _choice("auto", "head", "0.2.36"), "auto",
            "how to read a template's integer `sep_style`: `auto` detects fschat 0.2.36 vs FastChat HEAD workers; "
            "`head` or `0.2.36` forces one"),
    Setting("ERROR_STATUS_MODE", _choice("openai", "fastchat"), "openai",
            "`fastchat` answers every handled error with HTTP 400 like FastChat's server (401 and routing 404/405 "
            "keep their status)"),
    Setting("CONTEXT_OVERFLOW", _choice("error", "clip"), "error",
            "`max_tokens` larger than the room left in the context: `error` is a 400 `context_length_exceeded`; "
            "`clip` silently lowers it like FastChat"),
    Setting("EMBEDDING_BATCH_SIZE", _positive, 4,
            "inputs per worker embeddings call (FastChat's default; its HF worker pads batches without an attention "
            "mask, so small batches are more exact)"),
    Setting("TOOL_FORMATS", _tool_formats, {},
            "tool-call format per model, forcing or adding one: `model=format` pairs, comma-separated; a model may "
            "be an fnmatch pattern (`qwen2.5-*=hermes`); formats `hermes`, `llama3_json`, `mistral`, or `none` to "
            "turn tools off (see Tool calling and structured output)", shown_default="from the template"),
    Setting("STRUCTURED_OUTPUT_RETRIES", _count, 1,
            "more generations of a whole reply that does not follow its JSON `response_format` before the request "
            "fails (streams are never retried)"),
    Setting("FAILOVER_ATTEMPTS", _count, 2, "other workers tried when the chosen one cannot be reached (see Failover)"),
    # --- the app's: back-pressure (see Back-pressure) ---
    Setting("WORKER_CONCURRENCY", _count, 0,
            "requests each worker generates at once: its `--limit-worker-concurrency` (model_worker: 5, vllm_worker: "
            "1024), which its `/worker_get_status` does not report; gives each model a cap of twice what its "
            "workers generate at once", shown_default="not known: no per-model cap"),
    Setting("MODEL_QUEUE_LIMIT", _limit("auto", "off"), "auto",
            "requests per model that may wait for a worker beyond the `WORKER_CONCURRENCY` x workers generating "
            "(all gateway processes together; without `WORKER_CONCURRENCY`, every request counts as waiting); more "
            "get 503 `model_overloaded` with `Retry-After`. `auto`: as many as generate; `off`: no per-model cap"),
    Setting("QUEUE_STATUS_TTL", _seconds, 1.0,
            "how old the workers' `queue_length` may be when a process past half its share of a model's cap reads "
            "it again, in the background", unit="s"),
    Setting("MAX_STREAMS_PER_PROCESS", _limit("auto", "off", minimum=1), "auto",
            "streams in flight per gunicorn process; more get 503 `server_overloaded` with `Retry-After`, so "
            "threads stay free for `/health`, `/ready` and whole replies; `off`: no cap",
            shown_default="`GUNICORN_THREADS` (gevent: `GUNICORN_WORKER_CONNECTIONS`) less an eighth, 2 to 16 (512 of 528)"),
    Setting("RETRY_AFTER_MAX", _number(1, integer=True), 30,
            "the longest `Retry-After` of a back-pressure 503 (the openai SDK does not wait out more than 60 s in "
            "older versions, 120 s in newer ones: it gives up instead)", unit="s"),
    # --- the app's: limits ---
    Setting("MAX_REQUEST_BODY_BYTES", _positive, 16 * 1024 * 1024, "larger bodies get a 413 with the error body"),
    Setting("MAX_N", _positive, 128, "largest accepted `n`"),
    Setting("MAX_TOKENS_CAP", _positive, 131072, "largest accepted `max_tokens` / `max_completion_tokens`"),
    Setting("MAX_STOP_SEQUENCES", _count, 16, "most `stop` strings in one request"),
    Setting("MAX_MESSAGES", _positive, 2048, "most messages in one chat request"),
    # --- the app's: images (see Images (vision workers)) ---
    Setting("MULTIMODAL_MODELS", _list, (),
            "without a controller: comma-separated models whose workers take images (with a controller, the "
            "workers that registered as multimodal say it)"),
    Setting("IMAGE_MAX_BYTES", _positive, 10 * 1024 * 1024, "largest image, in decoded bytes"),
    Setting("IMAGE_MAX_PIXELS", _positive, 4096 * 4096, "most pixels (width x height) of one image"),
    Setting("IMAGE_MAX_COUNT", _count, 8, "most images in one request (`0`: no images)"),
    Setting("IMAGE_FETCH_HOSTS", _hosts, (),
            "comma-separated hosts whose `http(s)` image URLs the gateway fetches: `images.example.com`, "
            "`*.example.com` (its subdomains), or `*` (any host with a public address)",
            shown_default="empty: URLs are not fetched"),
    Setting("IMAGE_FETCH_ALLOW_PRIVATE", _flag, False,
            "also fetch from loopback, private, link-local and other non-public addresses (a trusted network's "
            "own image server)"),
    Setting("IMAGE_FETCH_TIMEOUT", _seconds, 5.0,
            "connecting to an image host, each read, and the whole download of one image", unit="s"),
    # --- the app's: CORS and logging ---
    Setting("CORS_ALLOWED_ORIGINS", _list, (), "comma-separated origins browsers may call from (`*` for any)",
            shown_default="empty: CORS off"),
    Setting("CORS_ALLOWED_METHODS", _list, ("GET", "POST", "OPTIONS"), "methods CORS allows"),
    Setting("CORS_ALLOWED_HEADERS", _list, ("Authorization", "Content-Type", "X-Request-Id"), "headers CORS allows"),
    Setting("CORS_ALLOW_CREDENTIALS", _flag, False, "CORS credentials"),
    Setting("LOG_REQUEST_BODIES", _flag, False, "debugging only: log request parameters (prompts) and whole results"),
    # --- the server's (gunicorn.conf.py) ---
    Setting("BIND", _list, ("127.0.0.1:8000",), "address(es), comma-separated", SERVER),
    Setting("WEB_CONCURRENCY", _positive, 2 * _CPUS, "gunicorn processes", SERVER, shown_default="2 per CPU",
            flag="--workers"),
    # Each open stream holds a thread for its whole length, so threads are sized for long generations: on 2 CPUs,
    # 4 x 528 threads keep 4 x 512 for streams (MAX_STREAMS_PER_PROCESS): 2,048, above the 2,000 concurrent streams
    # `make bench` holds; threads are started as needed, and idle ones cost no CPU.
    Setting("GUNICORN_THREADS", _positive, 528,
            "threads per process; each open stream holds one, so capacity is processes x threads (2,112 on 2 CPUs)",
            SERVER, flag="--threads"),
    Setting("GUNICORN_WORKER_CLASS", _text, "gthread",
            "`gthread`; or `gevent` (`pip install -e '.[gevent]'`) when thousands of concurrent streams must share "
            "a few processes: the code is gevent-safe (no blocking C calls; its few threads become greenlets)",
            SERVER, flag="--worker-class"),
    Setting("GUNICORN_WORKER_CONNECTIONS", _positive, 1000, "most open connections per process with `gevent`",
            SERVER),
    Setting("GUNICORN_TIMEOUT", _positive, 60, "worker liveness check (with gthread it does not limit request length)",
            SERVER, unit="s"),
    Setting("GUNICORN_GRACEFUL_TIMEOUT", _positive, 300, "how long in-flight streams may finish on reload/stop",
            SERVER, unit="s"),
    # Above nginx's upstream keepalive_timeout (60 s), so the proxy never reuses a connection we just closed.
    Setting("GUNICORN_KEEPALIVE", _positive, 75, "above nginx's upstream keep-alive", SERVER, unit="s"),
    Setting("FORWARDED_ALLOW_IPS", _text, "127.0.0.1",
            "proxies whose `X-Forwarded-*` headers are trusted (comma-separated, `*` for any)", SERVER),
    Setting("LOG_LEVEL", _choice(*LOG_LEVELS), "info",
            "gunicorn and app log level (`debug`, `info`, `warning`, `error` or `critical`); request bodies and API "
            "keys are never logged", SERVER, flag="--log-level"),
    Setting("GUNICORN_ACCESS_LOG", _text, "",
            "gunicorn's own access log (`-` for stderr); the app writes its own, richer line anyway", SERVER,
            shown_default="off"),
    # gunicorn's defaults.
    Setting("GUNICORN_LIMIT_REQUEST_LINE", _count, 4094,
            "longest request line, in bytes; longer ones get a 4xx before the app runs (`0`: no limit)", SERVER),
    Setting("GUNICORN_LIMIT_REQUEST_FIELDS", _positive, 100,
            "most header fields in a request; more get a 4xx before the app runs", SERVER),
    Setting("GUNICORN_LIMIT_REQUEST_FIELD_SIZE", _count, 8190,
            "longest header field, in bytes; longer ones get a 4xx before the app runs (`0`: no limit)", SERVER),
    # TLS straight from gunicorn, as FastChat's --ssl did with these two variables.
    Setting("SSL_KEYFILE", _text, "", "TLS key: serve HTTPS directly (with `SSL_CERTFILE`)", SERVER),
    Setting("SSL_CERTFILE", _text, "", "TLS certificate: serve HTTPS directly (with `SSL_KEYFILE`)", SERVER),
    Setting("PROMETHEUS_MULTIPROC_DIR", _text, "",
            "where the processes' metrics are kept; its `*.db` files are removed at start", SERVER,
            shown_default="a temporary directory"),
    # gunicorn's own default is one path per user ($XDG_RUNTIME_DIR or ~/.gunicorn), which a second instance on the
    # machine would take over; so it is off unless given a path.
    Setting("GUNICORN_CONTROL_SOCKET", _text, "",
            "path of gunicorn's control socket (for `gunicornc`), this instance's own; off when empty (gunicorn's "
            "default path is shared by all instances of a user, so a second gateway took over the first's)", SERVER,
            shown_default="off"),
    Setting("GUNICORN_PIDFILE", _text, "",
            "file gunicorn writes its master's pid to; during a binary upgrade (`USR2`) the new master writes "
            "`<file>.2` and takes `<file>` once the old master has gone", SERVER, shown_default="none"),
]
SETTINGS: dict[str, Setting] = {setting.name: setting for setting in _DECLARED}


def read(environ: Mapping[str, str], reader: str) -> dict[str, Any]:
    """Every setting `reader` reads, from `environ` or its default; raises ConfigError naming the first invalid one."""
    return {name: setting.read(environ) for name, setting in SETTINGS.items() if setting.reader == reader}


# ---------------------------------------------------------------------------------------------- README's tables
def markdown_table(reader: str) -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for setting in SETTINGS.values():
        if setting.reader == reader:
            default = setting.default_text()
            if setting.off_by_default:
                default = f"*({default})*"
            elif not setting.shown_default:
                default = f"`{default}`"
            rows.append(f"| `{setting.name}` | {default}{' ' + setting.unit if setting.unit else ''} "
                        f"| {setting.help} |")
    return "\n".join(rows) + "\n"


def _marked(reader: str) -> re.Pattern:
    """README's table of `reader`'s settings, between <!-- settings:READER --> and <!-- /settings:READER -->."""
    return re.compile(rf"(<!-- settings:{reader} -->\n)(.*?)(<!-- /settings:{reader} -->)", re.S)


def readme_tables(readme: str) -> dict[str, str]:
    """The tables found in README's text, by reader."""
    return {reader: match.group(2) for reader in (APP, SERVER) if (match := _marked(reader).search(readme))}


def update_readme(readme: str) -> str:
    for reader in (APP, SERVER):
        readme = _marked(reader).sub(lambda match: match.group(1) + markdown_table(reader) + match.group(3), readme)
    return readme


if __name__ == "__main__":
    # python -m app.settings --markdown             print both tables
    # python -m app.settings --update-readme FILE   rewrite them in FILE (README.md)
    if sys.argv[1:2] == ["--update-readme"] and len(sys.argv) == 3:
        with open(sys.argv[2], encoding="utf-8") as file:
            text = file.read()
        with open(sys.argv[2], "w", encoding="utf-8") as file:
            file.write(update_readme(text))
    elif sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(markdown_table(APP) + "\n" + markdown_table(SERVER))
    else:
        sys.exit("usage: python -m app.settings --markdown | --update-readme README.md")
