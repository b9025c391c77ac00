"""gunicorn settings for fastchat-gateway; every value can be overridden from the environment.

gthread is the default: each open stream holds one thread, and `timeout` is then a liveness check of the
worker process, not a limit on request length. Capacity is WEB_CONCURRENCY x GUNICORN_THREADS open requests.
"""
import glob
import os
import shutil
import sys
import tempfile

from gunicorn import glogging

from app.config import ConfigError, load_config, load_server_config
from app.settings import SETTINGS


def _fail(exc: ConfigError):
    sys.stderr.write(f"fastchat-gateway: {exc}\n")
    sys.exit(1)


# Every value comes from a setting declared (with its default and the reason for it) in app/settings.py.
try:
    _server = load_server_config()
except ConfigError as exc:
    _fail(exc)

wsgi_app = "wsgi:app"
bind = list(_server["BIND"])
workers = _server["WEB_CONCURRENCY"]
worker_class = _server["GUNICORN_WORKER_CLASS"]
if worker_class == "gthread":  # the same, closing its listeners when it stops (app/server_worker.py)
    worker_class = "app.server_worker.ThreadWorker"
threads = _server["GUNICORN_THREADS"]
worker_connections = _server["GUNICORN_WORKER_CONNECTIONS"]
timeout = _server["GUNICORN_TIMEOUT"]
graceful_timeout = _server["GUNICORN_GRACEFUL_TIMEOUT"]  # in-flight streams get this long on reload or stop
keepalive = _server["GUNICORN_KEEPALIVE"]
forwarded_allow_ips = _server["FORWARDED_ALLOW_IPS"]
limit_request_line = _server["GUNICORN_LIMIT_REQUEST_LINE"]
limit_request_fields = _server["GUNICORN_LIMIT_REQUEST_FIELDS"]
limit_request_field_size = _server["GUNICORN_LIMIT_REQUEST_FIELD_SIZE"]
keyfile = _server["SSL_KEYFILE"] or None
certfile = _server["SSL_CERTFILE"] or None
# The app writes one access-log line per request (app.access: request id, model, tokens, latency);
# gunicorn's own access log is off unless GUNICORN_ACCESS_LOG names a file or "-".
accesslog = _server["GUNICORN_ACCESS_LOG"] or None
errorlog = "-"
loglevel = _server["LOG_LEVEL"]
# Off unless a path is given: gunicorn's default path is shared by every instance of the user.
control_socket_disable = not _server["GUNICORN_CONTROL_SOCKET"]
if _server["GUNICORN_CONTROL_SOCKET"]:
    control_socket = _server["GUNICORN_CONTROL_SOCKET"]
pidfile = _server["GUNICORN_PIDFILE"] or None

# The app's own loggers go to stderr next to gunicorn's, in the same format.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": loglevel.upper(), "handlers": ["error_console"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["error_console"], "propagate": False,
                           "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False, "qualname": "gunicorn.access"},
        "app.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
    },
}


class _Logger(glogging.Logger):
    """gunicorn's logger, building its access line only when GUNICORN_ACCESS_LOG asks for one: with a
    logconfig_dict, gunicorn would build it for every request (from the environ and headers) only to drop it."""

    def access(self, resp, req, environ, request_time):
        if accesslog:
            super().access(resp, req, environ, request_time)


logger_class = _Logger

# Prometheus multiprocess mode: every process writes its numbers to this directory and /metrics sums them.
# It must be set before the workers import the app. Without one given, a temporary one is made and removed.
_own_metrics_dir = not _server["PROMETHEUS_MULTIPROC_DIR"]
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fastchat-gateway-metrics-")

# The per-key limits' embedded store (app.limits.embedded): one file all the processes share, so a key's limits
# hold across them. Without RATE_LIMIT_DIR given, a temporary directory is made and removed, like the metrics'.
_own_limits_dir = not SETTINGS["RATE_LIMIT_DIR"].read(os.environ)
if _own_limits_dir:
    os.environ["RATE_LIMIT_DIR"] = tempfile.mkdtemp(prefix="fastchat-gateway-limits-")


def _check_routes(config) -> None:
    """Once, in the master: a model name both the FastChat side and ROUTES_FILE serve stops the start (asked with
    short timeouts). Imported here, and skipped under gevent: the check's HTTP client imports ssl, which gevent must
    patch before anything imports it (under gevent a shared name is logged at request time instead)."""
    from app.routes.check import check_shared_names
    from app.routes.config import load_routes

    check_shared_names(config, load_routes(config["ROUTES_FILE"], os.environ))


def on_starting(server):
    """Check the app's settings in the master, so a bad one stops the server at once with its name;
    start with empty metrics."""
    try:
        config = load_config()
        if config["ROUTES_FILE"] and worker_class != "gevent":
            _check_routes(config)
    except ConfigError as exc:
        _fail(exc)
    # Numbers of an earlier run would otherwise be summed into this one's (the metrics; the status page's windows).
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(metrics_dir, exist_ok=True)
    for name in os.listdir(metrics_dir):
        if name.endswith(".db") or name.startswith("status-windows-"):  # app.status.windows._PREFIX
            os.remove(os.path.join(metrics_dir, name))


def on_reload(server):
    """SIGHUP: the new processes read API_KEYS_FILE again. Read it here first, so that when it is broken they start
    with the keys the master read last (app.keys.files) rather than fail to boot, which would stop the server."""
    from app.keys.files import load_ring

    config = load_config()  # the environment, checked at start, does not change on SIGHUP
    try:
        load_ring(config["API_KEYS"], config["API_KEYS_FILE"])
    except ConfigError as exc:
        server.log.error("fastchat-gateway: %s; the new processes keep the keys read last", exc)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    if _own_limits_dir:
        shutil.rmtree(os.environ["RATE_LIMIT_DIR"], ignore_errors=True)


def post_worker_init(worker):
    """SIGTERM (a stop, or a reload or upgrade retiring this worker) starts the drain of app.lifecycle."""
    from app import lifecycle

    lifecycle.install(graceful_timeout)


def child_exit(server, worker):
    """A finished worker's live gauges (streams in flight) stop counting: what prometheus_client's
    mark_process_dead does, without importing it (and ssl) into the master before gevent can patch."""
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], f"gauge_live*_{worker.pid}.db")):
        os.remove(path)
