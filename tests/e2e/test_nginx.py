"""deploy/nginx.conf, as shipped, in front of the gateway under gunicorn: streamed chunks arrive one by one, whole
chats work, forwarded headers reach gunicorn, a 5 MB body gets through, and nginx's own errors are OpenAI JSON.

A real nginx runs as our own non-daemon process (`nginx -p <dir> -c <conf> -g 'daemon off;'`) on a free port with
every file it writes under the run dir, and is stopped by PID. Its config is the shipped file with only the
upstream address, listen lines and log paths replaced. When nginx is missing this tier installs it with apt-get
(as root, with services kept from starting); when that is impossible the tier fails, saying so.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

import procs
from harness import sse
from stack import Gateway, SimulatedWorker

SHIPPED_CONF = procs.REPO_ROOT / "deploy" / "nginx.conf"
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
KEY = "sk-nginx"
AUTH = {"Authorization": f"Bearer {KEY}"}
TOKENS, TOKEN_DELAY = 20, 0.1  # a stream of ~2 s: 20 content chunks 0.1 s apart
RUNS = 3
# What gunicorn received, in gunicorn's own access log (off by default; GUNICORN_CMD_ARGS overrides the config file).
ACCESS_FORMAT = ('probe rid=%({x-request-id}i)s xff=%({x-forwarded-for}i)s proto=%({x-forwarded-proto}i)s '
                 'xfh=%({x-forwarded-host}i)s status=%(s)s')


# ----------------------------------------------------------------------------------------------- nginx itself
def _find_nginx() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/sbin")


def _install_nginx() -> str | None:
    """`apt-get install nginx` with a policy-rc.d that stops the package from starting a daemon on port 80.
    Returns what went wrong, or None."""
    if os.geteuid() != 0:
        return "prerequisite missing: nginx is not installed, and installing it needs root (apt-get install nginx)"
    if not shutil.which("apt-get"):
        return "prerequisite missing: nginx is not installed and there is no apt-get to install it"
    created_policy = False
    if not POLICY_RC_D.exists():
        POLICY_RC_D.write_text("#!/bin/sh\n# fastchat-gateway tests/e2e/test_nginx.py: no service starts while "
                               "it installs nginx\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
        created_policy = True
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = ((["apt-get", "update"], 300),
             (["apt-get", "install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=120", "nginx"], 600))
    try:
        for cmd, timeout in steps:
            try:
                res = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                     timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                return f"prerequisite missing: nginx (`{' '.join(cmd)}` did not finish in {timeout} s)"
            if res.returncode != 0:
                tail = "\n".join((res.stdout + res.stderr).splitlines()[-20:])
                return f"prerequisite missing: nginx (`{' '.join(cmd)}` exited with {res.returncode})\n{tail}"
    finally:
        if created_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    return None


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    """Path of the nginx binary, installed with apt-get if missing."""
    found = _find_nginx()
    problem = None
    if found is None:
        problem = _install_nginx()
        found = _find_nginx()
        if problem is None and found is None:
            problem = "prerequisite missing: nginx was installed but no nginx binary is on PATH or in /usr/sbin"
    if problem:
        pytest.fail(problem, pytrace=False)
    return found


def render_site(prefix: Path, listen_port: int, upstream: str) -> str:
    """deploy/nginx.conf with only the upstream server, the listen lines and /var/log/nginx paths replaced."""
    shipped = SHIPPED_CONF.read_text()
    site, n = re.subn(r"(?m)^(\s*server\s+)127\.0\.0\.1:8000(\s*;)", rf"\g<1>{upstream}\g<2>", shipped)
    assert n == 1, "deploy/nginx.conf: expected one `server 127.0.0.1:8000;` in the upstream block"
    listens = iter([f"listen 127.0.0.1:{listen_port};"])
    site, n = re.subn(r"(?m)^(\s*)listen\s+[^;]*;",
                      lambda m: m.group(1) + next(listens, "# (listen line dropped by the test)"), site)
    assert n >= 1, "deploy/nginx.conf: no listen directive"
    site = site.replace("/var/log/nginx/", f"{prefix}/logs/")
    # Every other line is the shipped one: the test runs the shipped proxy directives, not a copy of them.
    kept = set(site.splitlines())
    changed = [line for line in shipped.splitlines() if line not in kept]
    assert all(re.match(r"\s*(server|listen|access_log|error_log)\s", line) for line in changed), changed
    return site


def render_conf(prefix: Path, listen_port: int, upstream: str) -> str:
    # As root, nginx's workers would run as `nobody`, which cannot write the 0700 pytest tmp dir (request bodies
    # over client_body_buffer_size are written to a temp file there).
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""# Generated by tests/e2e/test_nginx.py from deploy/nginx.conf.
{user}worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log notice;
events {{ worker_connections 512; }}
http {{
    default_type application/octet-stream;
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/temp/client_body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    # Hostile globals, as a site's nginx.conf may have them: the shipped server block must override them.
    gzip on;
    gzip_types application/json text/event-stream;

# ---------------------------------------------------------------- deploy/nginx.conf
{render_site(prefix, listen_port, upstream)}
}}
"""


class Nginx:
    """nginx in the foreground (master + workers in one process group we lead), everything under `prefix`."""

    def __init__(self, binary: str, run_dir: Path, upstream: str, name: str = "nginx", ready_status: int = 200):
        self.prefix = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=run_dir))
        for sub in ("logs", "temp"):
            (self.prefix / sub).mkdir()
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(render_conf(self.prefix, self.port, upstream))
        self.error_log = self.prefix / "logs" / "error.log"
        self.access_log = self.prefix / "logs" / "fastchat-gateway.access.log"
        self.proc = procs.Proc([binary, "-p", f"{self.prefix}/", "-e", str(self.error_log), "-c", str(self.conf),
                                "-g", "daemon off;"], log_dir=run_dir, name=name)
        try:
            self.proc.wait_http(f"{self.url}/health", timeout=15, ok=lambda r: r.status_code == ready_status)
        except procs.ProcError as exc:
            self.proc.stop()
            raise procs.ProcError(f"{exc}\n--- {self.error_log} ---\n{self.error_log_text()[-3000:]}") from None

    def error_log_text(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def stop(self) -> None:
        self.proc.stop()


# ------------------------------------------------------------------------------------------------ the stack
@pytest.fixture(scope="module")
def stack(nginx_bin, run_dir):
    started = []
    try:
        worker = SimulatedWorker(run_dir, "--tokens", str(TOKENS), "--token-delay", str(TOKEN_DELAY),
                                 name="sim-nginx")
        started.append(worker)
        gateway = Gateway(run_dir, name="gateway-nginx", WORKER_ADDRESSES=worker.address, API_KEYS=KEY,
                          GUNICORN_ACCESS_LOG="-", GUNICORN_CMD_ARGS=f"--access-logformat '{ACCESS_FORMAT}'")
        started.append(gateway)
        nginx = Nginx(nginx_bin, run_dir, upstream=f"127.0.0.1:{gateway.port}")
        started.append(nginx)
        # Warm both gunicorn processes (first status poll, template cache) and nginx's upstream connections.
        for base in [gateway.url, nginx.url] * 4:
            chat(base, max_tokens=1).raise_for_status()
        yield {"worker": worker, "gateway": gateway, "nginx": nginx}
    finally:
        for proc in reversed(started):
            proc.stop()


def body(**extra) -> dict:
    return {"model": "sim-model", "messages": [{"role": "user", "content": "Tell me a story"}], **extra}


def chat(base: str, headers: dict | None = None, **extra) -> requests.Response:
    return requests.post(f"{base}/v1/chat/completions", json=body(**extra), headers={**AUTH, **(headers or {})},
                         timeout=30)


def timed_stream(base: str) -> dict:
    """One streamed chat: when (s after sending) each content event arrived, read as it arrives, and the text."""
    times, text = [], []
    reader = sse.Reader(lenient=True)
    start = time.perf_counter()
    with requests.post(f"{base}/v1/chat/completions", json=body(stream=True), headers=AUTH, stream=True,
                       timeout=30) as resp:
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert "Content-Encoding" not in resp.headers  # the shipped `gzip off` beats the global gzip_types
        # chunk_size=None: each HTTP chunk as soon as it arrives, instead of waiting to fill a read size.
        for piece in resp.iter_content(chunk_size=None):
            now = time.perf_counter() - start
            for payload in reader.feed(piece):
                if payload == sse.DONE:
                    continue
                delta = json.loads(payload)["choices"][0]["delta"]
                if delta.get("content"):
                    times.append(now)
                    text.append(delta["content"])
    assert reader.done, "stream ended without [DONE]"
    assert len(times) >= TOKENS * 3 // 4, f"only {len(times)} content events"
    return {"ttft": times[0], "spread": times[-1] - times[0], "times": times, "text": "".join(text),
            "apart": sum(1 for a, b in zip(times, times[1:]) if b - a > TOKEN_DELAY / 2)}


def gunicorn_saw(stack, pattern: str, timeout: float = 5) -> re.Match:
    """The gateway's access-log line matching `pattern` (gthread logs a request once its response ends)."""
    deadline = time.monotonic() + timeout
    while True:
        match = re.search(pattern, stack["gateway"].proc.log_text())
        if match or time.monotonic() > deadline:
            assert match, f"no gunicorn access-log line matches {pattern!r}"
            return match
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------------ the tests
def test_stream_chunks_arrive_one_by_one_through_nginx(stack):
    direct, proxied = [], []
    for _ in range(RUNS):  # interleaved, so both see the same machine load
        direct.append(timed_stream(stack["gateway"].url))
        proxied.append(timed_stream(stack["nginx"].url))
    median = lambda runs, key: statistics.median(run[key] for run in runs)  # noqa: E731
    report = {name: {key: [round(run[key], 3) for run in runs] for key in ("ttft", "spread", "apart")}
              for name, runs in (("direct", direct), ("nginx", proxied))}
    print(f"\nstream timings over {RUNS} runs (s): {json.dumps(report)}")
    assert proxied[0]["text"] == direct[0]["text"]
    # The measurement itself sees a spread-out stream when nothing is in between...
    assert median(direct, "spread") > 1.5, report
    # ...and nginx neither holds the chunks back until the end nor delays the first one.
    assert median(proxied, "spread") > 1.5, report
    assert median(proxied, "apart") >= TOKENS * 3 // 4, report  # arrived ~TOKEN_DELAY apart, not in bursts
    assert median(proxied, "ttft") - median(direct, "ttft") < 0.15, report


def test_whole_chat_through_nginx(stack):
    resp = chat(stack["nginx"].url)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    assert "Content-Encoding" not in resp.headers  # gzip off for the API, despite the hostile global gzip_types
    reply = resp.json()
    assert reply["object"] == "chat.completion"
    assert reply["usage"]["completion_tokens"] == TOKENS
    assert reply["choices"][0]["finish_reason"] == "stop"


def test_request_id_and_forwarded_headers_reach_gunicorn(stack):
    nginx = stack["nginx"]
    rid = f"e2e-{time.time_ns()}"
    resp = chat(nginx.url, {"X-Request-Id": rid, "X-Forwarded-For": "203.0.113.7",
                            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}, max_tokens=2)
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Request-Id"] == rid  # the gateway used the client's id
    seen = gunicorn_saw(stack, rf"probe rid={rid} xff=(.*?) proto=(\S*) xfh=(\S*) status=200").groups()
    # nginx appends the peer to the client's chain and sets the scheme and host itself.
    assert seen == ("203.0.113.7, 127.0.0.1", "http", "127.0.0.1"), seen

    # No X-Request-Id from the client: nginx makes one, the gateway uses it, and both access logs carry it.
    resp = chat(nginx.url, {"X-Forwarded-For": "198.51.100.9"}, max_tokens=2)
    assert resp.status_code == 200, resp.text
    generated = resp.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated), generated
    gunicorn_saw(stack, rf"probe rid={generated} xff=198\.51\.100\.9, 127\.0\.0\.1 ")
    deadline = time.monotonic() + 5
    while f"rid={generated}" not in nginx.access_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"rid={generated}" in nginx.access_log.read_text()


def test_five_megabyte_body_reaches_the_gateway(stack):
    # An ignored field carries the bulk, so the gateway answers 200: proof it read the whole body.
    resp = chat(stack["nginx"].url, max_tokens=2, e2e_padding="x" * (5 * 1024 * 1024))
    assert resp.status_code == 200, resp.text[:500]
    assert resp.json()["object"] == "chat.completion"


def test_too_large_bodies_get_json_413s(stack):
    limit_mb = int(re.search(r"(?m)^\s*client_max_body_size\s+(\d+)m;", SHIPPED_CONF.read_text()).group(1))
    app_limit_mb = 16  # the gateway's MAX_REQUEST_BODY_BYTES default; nginx's limit must stay above it
    assert limit_mb > app_limit_mb
    answers = {}
    for size_mb in (app_limit_mb + 1, limit_mb + 1):
        resp = requests.post(f"{stack['nginx'].url}/v1/chat/completions", data=b"x" * (size_mb * 1024 * 1024),
                             headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
        assert resp.status_code == 413, resp.text[:300]
        assert resp.headers["Content-Type"].startswith("application/json")
        answers[size_mb] = resp
    # Over the gateway's limit: its own answer passes through nginx (with its request id)...
    assert "X-Request-Id" in answers[app_limit_mb + 1].headers
    assert "client_max_body_size" not in answers[app_limit_mb + 1].json()["error"]["message"]
    # ...over nginx's: nginx's JSON stand-in, which the SDK reads the same way.
    assert answers[limit_mb + 1].json()["error"]["code"] == "request_too_large"


def test_nginx_own_502_is_openai_json(nginx_bin, run_dir):

    # gunicorn down (nothing listens on the upstream port): nginx's 502 is the OpenAI error body.
    dead = Nginx(nginx_bin, run_dir, upstream=f"127.0.0.1:{procs.free_port()}", name="nginx-no-upstream",
                 ready_status=502)
    try:
        resp = chat(dead.url)
        assert resp.status_code == 502
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.json()["error"]["code"] == "upstream_unavailable"
    finally:
        dead.stop()
