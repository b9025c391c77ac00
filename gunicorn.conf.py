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
# Two processes per CPU: the work is GIL-bound, and with more, smaller processes no single one runs out of threads
# for new streams while another has spare ones (processes take connections as they come, not evenly).
_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
workers = _env_int("WEB_CONCURRENCY", 2 * _cpus)
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
# Each open stream holds a thread for its whole length, so threads are sized for long generations: on 2 CPUs,
# 4 x 512 threads hold 1,000 concurrent streams without errors in under 100 MB per process (`make bench`); threads
# are started as needed, and idle ones cost no CPU.
threads = _env_int("GUNICORN_THREADS", 512)
worker_connections = _env_int("GUNICORN_WORKER_CONNECTIONS", 1000)
timeout = _env_int("GUNICORN_TIMEOUT", 60)
# In-flight streams get this long to finish on reload or stop.
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 300)
# Above nginx's upstream keepalive_timeout (60 s), so the proxy never reuses a connection we just closed.
keepalive = _env_int("GUNICORN_KEEPALIVE", 75)
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# Request line and header limits (gunicorn's defaults) answer oversized headers with 4xx before the app runs.
limit_request_line = _env_int("GUNICORN_LIMIT_REQUEST_LINE", 4094, minimum=0)
limit_request_fields = _env_int("GUNICORN_LIMIT_REQUEST_FIELDS", 100)
limit_request_field_size = _env_int("GUNICORN_LIMIT_REQUEST_FIELD_SIZE", 8190, minimum=0)
# TLS straight from gunicorn, as FastChat's --ssl did with these two variables.
keyfile = os.environ.get("SSL_KEYFILE") or None
certfile = os.environ.get("SSL_CERTFILE") or None
if bool(keyfile) != bool(certfile):
    sys.stderr.write("fastchat-gateway: set both SSL_KEYFILE and SSL_CERTFILE, or neither\n")
    sys.exit(1)
# The app writes one access-log line per request (app.access: request id, model, tokens, latency);
# gunicorn's own access log is off unless GUNICORN_ACCESS_LOG names a file or "-".
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
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
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fastchat-gateway-metrics-")


def on_starting(server):
    """Check the app's settings in the master, so a bad one stops the server at once with its name;
    start with empty metrics."""
    from app.config import ConfigError, load_config

    try:
        load_config()
    except ConfigError as exc:
        sys.stderr.write(f"fastchat-gateway: {exc}\n")
        sys.exit(1)
    # Numbers of an earlier run would otherwise be summed into this one's.
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(metrics_dir, exist_ok=True)
    for name in os.listdir(metrics_dir):
        if name.endswith(".db"):
            os.remove(os.path.join(metrics_dir, name))


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server, worker):
    """A finished worker's live gauges (streams in flight) stop counting: what prometheus_client's
    mark_process_dead does, without importing it (and ssl) into the master before gevent can patch."""
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], f"gauge_live*_{worker.pid}.db")):
        os.remove(path)
