"""gunicorn settings for fastchat-gateway; every value can be overridden from the environment.

gthread is the default: each open stream holds one thread, and `timeout` is then a liveness check of the
worker process, not a limit on request length. Capacity is WEB_CONCURRENCY x GUNICORN_THREADS open requests.
"""
import os
import sys


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        sys.stderr.write(f"fastchat-gateway: invalid {name}={raw!r}: must be an integer >= {minimum}\n")
        sys.exit(1)
    return value


wsgi_app = "wsgi:app"
bind = [address.strip() for address in os.environ.get("BIND", "127.0.0.1:8000").split(",") if address.strip()]
workers = _env_int("WEB_CONCURRENCY", 2)
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = _env_int("GUNICORN_THREADS", 32)
worker_connections = _env_int("GUNICORN_WORKER_CONNECTIONS", 1000)
timeout = _env_int("GUNICORN_TIMEOUT", 60)
# In-flight streams get this long to finish on reload or stop.
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 300)
# Above nginx's upstream keepalive_timeout (60 s), so the proxy never reuses a connection we just closed.
keepalive = _env_int("GUNICORN_KEEPALIVE", 75)
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# The app's own loggers go to stderr next to gunicorn's, in the same format.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": loglevel.upper(), "handlers": ["error_console"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["error_console"], "propagate": False,
                           "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False,
                            "qualname": "gunicorn.access"},
    },
}


def on_starting(server):
    """Check the app's settings in the master, so a bad one stops the server at once with its name."""
    from app.config import ConfigError, load_config

    try:
        load_config()
    except ConfigError as exc:
        sys.stderr.write(f"fastchat-gateway: {exc}\n")
        sys.exit(1)
