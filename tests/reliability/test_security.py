"""Security (issue 7, part 5) against the live gateway and, for the key comparison, the app's own code.

(a) Every route of the live /openapi.json, plus unknown paths, wrong methods and path tricks, needs the key: no key,
    a wrong key, the key under another scheme or in another place all get 401 and the error body; /health, /ready,
    /metrics and /openapi.json answer without one.
(b) The key check is constant-time: every configured key is compared, as a fixed-size SHA-256 digest, with
    hmac.compare_digest, whatever the client offers; app/auth.py has no ==/in on keys or tokens. (No timing
    measurement: it would be flaky.)
(c) Keys and prompts never reach the logs or the error bodies at default settings (LOG_REQUEST_BODIES off), for
    good and failing requests alike; a client-chosen string cannot forge a log line.
(d) No request field or header makes the gateway connect anywhere but its configured worker: a listener on a free
    127.0.0.1 port, named in every way a request can name an address, sees no connection, and every accepted
    generation shows up at the simulated worker.
"""
from __future__ import annotations

import ast
import base64
import hashlib
import http.client
import inspect
import json
import re
import socket
import threading
import time
import uuid
from urllib.parse import quote, urlsplit

import pytest
import requests

import app.auth
from app import create_app

MODEL = "sim-model"
TIMEOUT = 30
PUBLIC = {"GET /health", "GET /ready", "GET /metrics", "GET /openapi.json"}
COUNTS = {"routes": 0, "auth_probes": 0, "unauthorized_401": 0, "public_ok": 0, "compare_digest_calls": 0,
          "leak_requests": 0, "log_bytes_scanned": 0, "ssrf_requests": 0, "listener_connections": 0,
          "worker_generation_calls": 0}

# A run-unique marker for prompts, so nothing else in the logs can contain it by chance.
RUN = uuid.uuid4().hex[:12]
PROMPT_MARK = f"PROMPT-MARK-{RUN}"
WRONG_KEY = f"sk-wrong-{RUN}"


def _key(auth: dict) -> str:
    return auth["Authorization"].split(" ", 1)[1]


@pytest.fixture(scope="module", autouse=True)
def _write_counts(report, gateway, sim_worker):
    yield
    report.add("security", **COUNTS, gateway_rss_kib=gateway.proc.tree_rss_kib())


def assert_error(resp: requests.Response | tuple, status: int, code=..., fastchat=...) -> dict:
    if isinstance(resp, tuple):
        got_status, headers, body = resp
    else:
        got_status, headers, body = resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content
    assert got_status == status, (got_status, body[:300])
    assert headers.get("content-type", "").split(";")[0] == "application/json", headers
    data = json.loads(body)
    assert set(data) == {"object", "message", "code", "error"} and data["object"] == "error", data
    assert set(data["error"]) == {"message", "type", "param", "code"}, data
    assert data["error"]["message"] == data["message"]
    if code is not ...:
        assert data["error"]["code"] == code, data
    if fastchat is not ...:
        assert data["code"] == fastchat, data
    return data


def raw_request(gateway, method: str, target: str, headers: dict | None = None,
                body: bytes | None = None) -> tuple[int, dict, bytes]:
    """Send the request target exactly as given (no client-side normalisation of dots, slashes or escapes)."""
    url = urlsplit(gateway.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        headers = {"Host": f"{url.hostname}:{url.port}", **(headers or {})}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        for name, value in headers.items():
            conn.putheader(name, value)
        try:
            conn.endheaders(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (413) and closed before the whole body was sent: read the answer
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# --- (a) every route needs the key ---------------------------------------------------------------------------------

BODIES = {
    "/v1/chat/completions": {"model": MODEL, "messages": "hi", "max_tokens": 2},
    "/api/v1/chat/completions": {"model": MODEL, "messages": "hi", "max_tokens": 2},
    "/v1/completions": {"model": MODEL, "prompt": "hi", "max_tokens": 2},
    "/v1/embeddings": {"model": MODEL, "input": "hi"},
    "/v1/engines/{model}/embeddings": {"input": "hi"},
    "/api/v1/token_check": {"prompts": [{"model": MODEL, "prompt": "hi", "max_tokens": 2}]},
    "/v1/responses": {"model": MODEL, "input": "hi", "max_output_tokens": 2},
}


def documented_routes(gateway) -> list[tuple[str, str, str, dict | None]]:
    """(label, method, concrete path, body) for every operation of the live /openapi.json."""
    spec = requests.get(f"{gateway.url}/openapi.json", timeout=TIMEOUT).json()
    routes = []
    for path, item in spec["paths"].items():
        for method in item:
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            label = f"{method.upper()} {path}"
            routes.append((label, method.upper(), path.replace("{model}", MODEL),
                           BODIES.get(path, {}) if method != "get" else None))
    return routes


# Requests that are not documented routes; none may answer without the key (unknown paths are 401 before 404).
UNDOCUMENTED = [
    ("GET", "/v1/nothing-here"), ("POST", "/v1/nothing-here"), ("GET", "/admin"), ("GET", "/"),
    ("GET", "/docs"), ("GET", "/v1"), ("GET", "/v1/"), ("GET", "/v1/models/"), ("POST", "/v1/models"),
    ("DELETE", "/v1/chat/completions"), ("PUT", "/v1/completions"), ("PATCH", "/v1/embeddings"),
    ("HEAD", "/v1/models"), ("GET", "/v1/chat/completions"), ("PUT", "/health"), ("POST", "/metrics"),
    ("DELETE", "/openapi.json"), ("GET", "/worker_generate_stream"), ("POST", "/worker_generate_stream"),
    ("POST", "/worker_generate"), ("POST", "/count_token"), ("POST", "/register_worker"),
    ("POST", "/list_models"), ("POST", "/get_worker_address"), ("POST", "/refresh_all_workers"),
    ("POST", "/api/v1/worker_generate"), ("POST", "/api/v1/completions"), ("POST", "/api/v1/embeddings"),
    ("GET", "/api/v1/models"), ("POST", "/sim/fault"), ("GET", "/sim/stats"), ("POST", "/v1/engines/x/completions"),
    ("GET", "/v1/files"), ("POST", "/v1/audio/transcriptions"),
]

# Request targets sent byte-exact: dot segments, doubled or encoded slashes, case, parameters, absolute form.
PATH_TRICKS = [
    "/health/../v1/models", "/health/..%2Fv1%2Fmodels", "/health%2F..%2Fv1%2Fmodels", "/./v1/models",
    "/v1/./models", "/v1/models/./", "//v1/models", "/v1//models", "/v1/models//sim-model", "/V1/MODELS",
    "/v1/Models", "/v1%2Fmodels", "/%76%31/models", "/v1/models;/health", "/health;/v1/models",
    "/health/;/v1/models", "/v1/models%00/health", "/v1/models%23/health", "/metrics/../v1/models",
    "/openapi.json/../v1/models", "/openapi.json%2F..%2Fv1%2Fmodels", "/ready/..;/v1/models",
    "/v1/models/..%2F..%2Fhealth", "/v1/chat/completions/", "/v1/chat/completions%20",
]

CREDENTIALS = {
    "no-key": lambda key, url: {},
    "wrong-key": lambda key, url: {"headers": {"Authorization": f"Bearer {WRONG_KEY}"}},
    "empty-bearer": lambda key, url: {"headers": {"Authorization": "Bearer "}},
    "bearer-only": lambda key, url: {"headers": {"Authorization": "Bearer"}},
    "key-without-scheme": lambda key, url: {"headers": {"Authorization": key}},
    "basic-scheme-key": lambda key, url: {"headers": {"Authorization": f"Basic {key}"}},
    "basic-user-key": lambda key, url: {"headers": {
        "Authorization": "Basic " + base64.b64encode(f"user:{key}".encode()).decode()}},
    "basic-key-empty-password": lambda key, url: {"headers": {
        "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}},
    "token-scheme": lambda key, url: {"headers": {"Authorization": f"Token {key}"}},
    "key-prefix": lambda key, url: {"headers": {"Authorization": f"Bearer {key[:-1]}"}},
    "key-plus-suffix": lambda key, url: {"headers": {"Authorization": f"Bearer {key}x"}},
    "key-twice": lambda key, url: {"headers": {"Authorization": f"Bearer {key} {key}"}},
    "key-uppercased": lambda key, url: {"headers": {"Authorization": f"Bearer {key.upper()}"}},
    "key-in-query-api_key": lambda key, url: {"params": {"api_key": key}},
    "key-in-query-key": lambda key, url: {"params": {"key": key}},
    "key-in-query-authorization": lambda key, url: {"params": {"Authorization": f"Bearer {key}"}},
    "key-in-x-api-key": lambda key, url: {"headers": {"X-API-Key": key}},
    "key-in-api-key-header": lambda key, url: {"headers": {"api-key": key}},
    "key-in-proxy-authorization": lambda key, url: {"headers": {"Proxy-Authorization": f"Bearer {key}"}},
    "key-in-cookie": lambda key, url: {"headers": {"Cookie": f"api_key={key}; Authorization=Bearer%20{key}"}},
    "key-in-url-userinfo": lambda key, url: {"auth": ("", key)},
}


def _call(gateway, method: str, path: str, body, **kw) -> requests.Response:
    kw.setdefault("headers", {})
    if body is not None:
        kw["data"] = json.dumps(body)
        kw["headers"] = {**kw["headers"], "Content-Type": "application/json"}
    return requests.request(method, f"{gateway.url}{path}", timeout=TIMEOUT, allow_redirects=False, **kw)


def _success_status(spec: dict, label: str) -> int:
    """200, or for an operation that always answers an error (the stored-response routes: 404) its one
    documented status."""
    method, path = label.split(" ", 1)
    documented = spec["paths"][path][method.lower()]["responses"]
    return 200 if "200" in documented else min(int(status) for status in documented if status != "401")


def test_documented_routes_answer_with_the_key(gateway, auth):
    """Control: with the key every documented route works (so the 401s below are about the key, nothing else)."""
    routes = documented_routes(gateway)
    spec = requests.get(f"{gateway.url}/openapi.json", timeout=TIMEOUT).json()
    assert {label for label, *_ in routes} >= PUBLIC
    for label, method, path, body in routes:
        resp = _call(gateway, method, path, body, headers=dict(auth))
        expected = _success_status(spec, label)
        assert resp.status_code == expected, (label, resp.status_code, resp.text[:300])


@pytest.mark.parametrize("credential", list(CREDENTIALS))
def test_every_route_needs_the_key(gateway, auth, credential):
    key = _key(auth)
    routes = documented_routes(gateway)
    COUNTS["routes"] = len(routes)
    problems = []
    for label, method, path, body in routes:
        resp = _call(gateway, method, path, body, **CREDENTIALS[credential](key, gateway.url))
        COUNTS["auth_probes"] += 1
        if label in PUBLIC:
            if resp.status_code != 200:
                problems.append(f"{label}: public route answered {resp.status_code}")
            COUNTS["public_ok"] += 1
            continue
        try:
            assert_error(resp, 401, code="invalid_api_key", fastchat=40101)
            COUNTS["unauthorized_401"] += 1
        except AssertionError as exc:
            problems.append(f"{label}: {exc}")
        if key in resp.text or WRONG_KEY in resp.text:
            problems.append(f"{label}: the offered key is echoed in the response")
    for method, path in UNDOCUMENTED:
        resp = _call(gateway, method, path, None, **CREDENTIALS[credential](key, gateway.url))
        COUNTS["auth_probes"] += 1
        if resp.status_code != 401 or (method != "HEAD" and resp.json()["error"]["code"] != "invalid_api_key"):
            problems.append(f"{method} {path}: {resp.status_code} {resp.text[:200]}")
        else:
            COUNTS["unauthorized_401"] += 1
    assert not problems, "\n".join(problems)


PUBLIC_BODIES = {"/health": b'{"status":"ok"}', "/ready": b'{"status":"ready"}'}


@pytest.mark.parametrize("target", PATH_TRICKS)
def test_path_tricks_do_not_bypass_the_key(gateway, target):
    """Without a key, a request target that is not exactly a public route gets a 401, never a protected answer."""
    status, headers, body = raw_request(gateway, "GET", target)
    COUNTS["auth_probes"] += 1
    assert MODEL.encode() not in body, (target, status, body[:300])  # no model list, no model card
    if status == 200:  # only a public route may answer, with its own body
        assert body.strip() in PUBLIC_BODIES.values() or target.startswith(("/metrics", "/openapi.json")), \
            (target, body[:300])
    else:
        assert_error((status, headers, body), 401, code="invalid_api_key")
        COUNTS["unauthorized_401"] += 1


def test_absolute_form_request_target_needs_the_key(gateway):
    here = urlsplit(gateway.url).netloc
    for target in (f"http://{here}/v1/models", f"http://{here}/health/../v1/models", "http://evil.example/v1/models"):
        status, headers, body = raw_request(gateway, "GET", target)
        COUNTS["auth_probes"] += 1
        assert MODEL.encode() not in body, (target, status, body[:300])
        assert status in (400, 401), (target, status, body[:300])


def test_options_needs_the_key_when_cors_is_off(gateway, sim_worker):
    """OPTIONS skips the key check (for CORS preflights). CORS is off here (CORS_ALLOWED_ORIGINS unset), so no
    preflight needs answering: OPTIONS must be refused like any other method (README: every route but the four
    probes needs the key, unknown paths answer 401 before 404); it must never run a view or reach a worker."""
    before = _generation_calls(sim_worker)
    problems = []
    for path in ("/v1/chat/completions", "/v1/models", "/v1/completions", "/api/v1/token_check", "/v1/nothing-here",
                 "/admin"):
        resp = requests.options(f"{gateway.url}{path}", timeout=TIMEOUT,
                                data=json.dumps(BODIES.get(path, {})), headers={"Content-Type": "application/json"})
        COUNTS["auth_probes"] += 1
        assert MODEL not in resp.text and "choices" not in resp.text, (path, resp.text[:300])
        if resp.status_code != 401:
            problems.append(f"OPTIONS {path} without a key: {resp.status_code} (Allow: {resp.headers.get('Allow')})")
    assert _generation_calls(sim_worker) == before
    assert not problems, "\n".join(problems)


# --- (b) constant-time key comparison --------------------------------------------------------------------------------

UNIT_KEYS = ("sk-unit-alpha", "sk-unit-beta-is-longer-than-the-others", "k")


@pytest.fixture
def unit_app():
    return create_app({"CONTROLLER_ADDRESS": "http://127.0.0.1:9", "API_KEYS": UNIT_KEYS,
                       "UPSTREAM_CONNECT_RETRIES": 0}, environ={})


OFFERED = {
    "first-key": "Bearer sk-unit-alpha",
    "second-key": "Bearer sk-unit-beta-is-longer-than-the-others",
    "short-key": "Bearer k",
    "wrong-same-length": "Bearer sk-unit-alphx",
    "prefix-of-a-key": "Bearer sk-unit-al",
    "empty-token": "Bearer ",
    "no-header": None,
    "huge-token": "Bearer " + "x" * 100_000,
    "unicode-token": "Bearer \u043a\u043b\u044e\u0447-\U0001f511",
    "basic-scheme-with-key": "Basic sk-unit-alpha",
}


@pytest.mark.parametrize("offered", list(OFFERED))
def test_every_key_is_compared_as_a_fixed_size_digest(unit_app, monkeypatch, offered):
    calls = []
    original = app.auth.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(app.auth.hmac, "compare_digest", spy)
    header = OFFERED[offered]
    headers = {"Authorization": header} if header is not None else {}
    resp = unit_app.test_client().get("/no-such-route", headers=headers)  # unknown path: no upstream call
    COUNTS["compare_digest_calls"] += len(calls)
    digests = {hashlib.sha256(key.encode()).digest() for key in UNIT_KEYS}
    assert len(calls) == len(UNIT_KEYS), calls  # every key, every time, whatever is offered
    assert {b for _, b in calls} == digests  # each configured key once, as its digest
    token = (header or "").partition(" ")[2].strip()
    for a, b in calls:
        assert isinstance(a, bytes) and isinstance(b, bytes) and len(a) == len(b) == 32
        assert a == hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
    valid = offered in ("first-key", "second-key", "short-key")
    assert resp.status_code == (404 if valid else 401), resp.get_data(as_text=True)


def test_key_check_source_uses_compare_digest_and_no_plain_comparison(unit_app):
    source = inspect.getsource(app.auth)
    tree = ast.parse(source)
    check = next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                 and node.name == "require_api_key")
    assert any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
               and node.func.attr == "compare_digest" for node in ast.walk(check)), \
        "require_api_key does not call hmac.compare_digest"
    secret_names = {"token", "offered", "digest", "digests", "key", "keys", "API_KEYS", "digests"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
                    {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)} | \
                    {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
            assert not names & secret_names, f"plain comparison on a key or token: {ast.unparse(node)}"
    # The app keeps only digests for the check.
    stored = unit_app.extensions["api_keys"].current().digests
    assert len(stored) == len(UNIT_KEYS) and all(isinstance(d, bytes) and len(d) == 32 for d in stored)
    assert not {key.encode() for key in UNIT_KEYS} & set(stored)


# --- (c) keys and prompts stay out of logs and error bodies ---------------------------------------------------------

def _leak_probes(key: str) -> list[tuple[str, str, str, dict, bytes | None]]:
    """(name, method, path, headers, body) of requests that carry the key and/or a marked prompt; most fail."""
    good = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    wrong = {"Authorization": f"Bearer {WRONG_KEY}", "Content-Type": "application/json"}

    def j(obj) -> bytes:
        return json.dumps(obj).encode()

    msg = [{"role": "user", "content": PROMPT_MARK}]
    return [
        ("chat-ok", "POST", "/v1/chat/completions", good, j({"model": MODEL, "messages": msg})),
        ("chat-stream-ok", "POST", "/v1/chat/completions", good, j({"model": MODEL, "messages": msg, "stream": True})),
        ("completion-ok", "POST", "/v1/completions", good, j({"model": MODEL, "prompt": PROMPT_MARK})),
        ("embedding-ok", "POST", "/v1/embeddings", good, j({"model": MODEL, "input": [PROMPT_MARK]})),
        ("token-check-ok", "POST", "/api/v1/token_check", good,
         j({"prompts": [{"model": MODEL, "prompt": PROMPT_MARK, "max_tokens": 1}]})),
        ("wrong-key-with-prompt", "POST", "/v1/chat/completions", wrong, j({"model": MODEL, "messages": msg})),
        ("wrong-key-get", "GET", "/v1/models", wrong, None),
        ("key-in-query", "GET", f"/v1/models?api_key={quote(key)}&k2={quote(WRONG_KEY)}", {}, None),
        ("bad-temperature", "POST", "/v1/chat/completions", good, j({"model": MODEL, "messages": msg,
                                                                       "temperature": 7})),
        ("bad-type-content", "POST", "/v1/chat/completions", good,
         j({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT_MARK},
                                                                      {"type": "image_url", "image_url": {}}]}]})),
        ("bad-role", "POST", "/v1/chat/completions", good,
         j({"model": MODEL, "messages": [{"role": "hacker", "content": PROMPT_MARK}]})),
        ("bad-stop", "POST", "/v1/chat/completions", good, j({"model": MODEL, "messages": msg,
                                                                "stop": [PROMPT_MARK] * 40})),
        ("stop-wrong-type", "POST", "/v1/chat/completions", good, j({"model": MODEL, "messages": msg,
                                                                       "stop": [PROMPT_MARK, 3]})),
        ("context-overflow", "POST", "/v1/chat/completions", good,
         j({"model": MODEL, "messages": [{"role": "user", "content": (PROMPT_MARK + " ") * 600}]})),
        ("completion-overflow", "POST", "/v1/completions", good,
         j({"model": MODEL, "prompt": (PROMPT_MARK + " ") * 600, "max_tokens": 1})),
        ("unknown-model", "POST", "/v1/chat/completions", good, j({"model": f"nope-{RUN}", "messages": msg})),
        ("unknown-model-completion", "POST", "/v1/completions", good,
         j({"model": f"nope-{RUN}", "prompt": PROMPT_MARK})),
        ("worker-error", "POST", "/v1/chat/completions", good,
         j({"model": MODEL, "messages": [{"role": "user", "content": f"{PROMPT_MARK} [[fault:error]]"}]})),
        ("worker-error-stream", "POST", "/v1/chat/completions", good,
         j({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": f"{PROMPT_MARK} "
                                                                                      "[[fault:error]]"}]})),
        ("worker-http-500", "POST", "/v1/completions", good,
         j({"model": MODEL, "prompt": f"{PROMPT_MARK} [[fault:http-500]]"})),
        ("worker-garbage", "POST", "/v1/chat/completions", good,
         j({"model": MODEL, "messages": [{"role": "user", "content": f"{PROMPT_MARK} [[fault:garbage]]"}]})),
        ("truncated-json", "POST", "/v1/chat/completions", good, j({"model": MODEL, "messages": msg})[:-7]),
        ("not-json", "POST", "/v1/chat/completions", good, f"prompt={PROMPT_MARK}".encode()),
        ("over-the-limit", "POST", "/v1/chat/completions", good,
         j({"model": MODEL, "messages": [{"role": "user", "content": PROMPT_MARK * 100_000}]})),
        ("embedding-bad-format", "POST", "/v1/embeddings", good,
         j({"model": MODEL, "input": PROMPT_MARK, "encoding_format": "hex"})),
        ("token-check-bad", "POST", "/api/v1/token_check", good,
         j({"prompts": [{"model": MODEL, "prompt": PROMPT_MARK, "max_tokens": -1}]})),
    ]


def test_keys_and_prompts_stay_out_of_bodies_and_logs(gateway, sim_worker, auth):
    key = _key(auth)
    log_offset = len(gateway.proc.log_text())
    statuses = {}
    for name, method, path, headers, body in _leak_probes(key):
        status, resp_headers, resp_body = raw_request(gateway, method, path, headers, body)
        statuses[name] = status
        COUNTS["leak_requests"] += 1
        text = resp_body.decode("utf-8", "replace")
        assert key not in text and WRONG_KEY not in text, (name, status, text[:300])
        if status >= 400 or "error" in text:
            assert PROMPT_MARK not in text, f"{name}: the prompt is echoed in the error body: {text[:300]}"
    # Gunicorn-level refusals carrying the key: an oversized header and an oversized request line.
    for data in (f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nX-Pad: {'p' * 70000}"
                 f"\r\nX-Prompt: {PROMPT_MARK}\r\n\r\n".encode(),
                 f"GET /v1/models?api_key={key}&q={PROMPT_MARK}&pad={'p' * 5000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                 f"GET /v1/models?api_key={key} HTTP/1.1 junk\r\nHost: x\r\n\r\n".encode()):
        url = urlsplit(gateway.url)
        with socket.create_connection((url.hostname, url.port), timeout=TIMEOUT) as sock:
            sock.sendall(data)
            reply = sock.recv(65536)
        COUNTS["leak_requests"] += 1
        assert reply.startswith(b"HTTP/1.1 4"), reply[:200]
        assert key.encode() not in reply and PROMPT_MARK.encode() not in reply, reply[:300]
    assert statuses["chat-ok"] == statuses["completion-ok"] == statuses["embedding-ok"] == 200, statuses
    assert statuses["context-overflow"] == 400 and statuses["over-the-limit"] == 413, statuses
    assert statuses["wrong-key-with-prompt"] == statuses["key-in-query"] == 401, statuses
    time.sleep(0.5)  # access lines of streams are written when their last byte is sent
    gateway_log = gateway.proc.log_text()[log_offset:]
    worker_log = sim_worker.proc.log_text()
    COUNTS["log_bytes_scanned"] += len(gateway_log) + len(worker_log)
    assert gateway_log.count("request_id=") >= len(statuses), "the gateway wrote no access lines: wrong log?"
    for where, text in (("gateway log", gateway_log), ("simulated worker log", worker_log)):
        for secret in (key, WRONG_KEY, PROMPT_MARK):
            assert secret not in text, f"{secret!r} appears in the {where}: " + \
                next(line for line in text.splitlines() if secret in line)[:300]
    # The key never travels to the worker either.
    payloads = json.dumps(_sim_stats(sim_worker).get("generate_payloads", []))
    assert key not in payloads


def test_client_strings_cannot_forge_log_lines(gateway, auth):
    """A model name (or any client string) with a line break must not start a new, forged line in the log."""
    forged = f"FORGED-{RUN} request_id=forged status=200"
    log_offset = len(gateway.proc.log_text())
    for model in (f"x\n{forged}", f"x\r\n{forged}", f"x\r{forged}"):
        resp = requests.post(f"{gateway.url}/v1/chat/completions", headers=auth, timeout=TIMEOUT,
                             json={"model": model, "messages": "hi"})
        assert_error(resp, 404, code="model_not_found")
    resp = requests.get(f"{gateway.url}/v1/models/x%0A{quote(forged)}", headers=auth, timeout=TIMEOUT)
    assert_error(resp, 404)
    time.sleep(0.3)
    log = gateway.proc.log_text()[log_offset:]
    lines = [line for line in re.split(r"\r\n|\r|\n", log) if line.startswith("FORGED-")]
    assert not lines, f"client text started {len(lines)} log line(s) of its own: {lines[:2]}"


# --- (d) no request can pick the address the gateway connects to ----------------------------------------------------

class Listener:
    """A TCP listener on a free 127.0.0.1 port that counts (and drops) every connection."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.first_bytes: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ssrf-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            with conn:
                conn.settimeout(0.5)
                try:
                    self.first_bytes.append(conn.recv(200))
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener():
    probe = Listener()
    yield probe
    probe.close()


def _sim_stats(sim_worker) -> dict:
    try:
        return sim_worker.stats()
    except ValueError:  # a lone surrogate in its payload log (see test_hostile_input.sim_stats): reset it
        sim_worker.reset()
        return sim_worker.stats()


def _generation_calls(sim_worker) -> int:
    counts = _sim_stats(sim_worker)["requests"]
    return sum(counts.get(path, 0) for path in ("/worker_generate", "/worker_generate_stream",
                                                  "/worker_get_embeddings"))


def _ssrf_probes(port: int) -> list[tuple[str, str, dict, dict, bool]]:
    """(name, path, body, extra headers, counts as one generation when accepted)."""
    here = f"127.0.0.1:{port}"
    urls = [f"http://{here}/x", f"http://{here}", f"//{here}/x", here, f"http://{MODEL}@{here}/",
            f"{MODEL}@{here}", f"@{here}", f"http://localhost:{port}/worker_generate", "file:///etc/passwd",
            f"http://[::ffff:127.0.0.1]:{port}/", f"http://0x7f000001:{port}/", f"gopher://{here}/_x"]
    msg = [{"role": "user", "content": "hi"}]
    probes = []
    for i, url in enumerate(urls):
        probes += [
            (f"chat-model-{i}", "/v1/chat/completions", {"model": url, "messages": msg}, {}, False),
            (f"completion-model-{i}", "/v1/completions", {"model": url, "prompt": "hi"}, {}, False),
            (f"embedding-model-{i}", "/v1/embeddings", {"model": url, "input": "hi"}, {}, False),
            (f"token-check-model-{i}", "/api/v1/token_check",
             {"prompts": [{"model": url, "prompt": "hi", "max_tokens": 1}]}, {}, False),
            (f"image-url-{i}", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]}]}, {}, False),
        ]
    address_fields = {name: f"http://{here}" for name in (
        "base_url", "api_base", "worker_address", "controller_address", "worker_addresses", "address", "url",
        "callback_url", "webhook", "endpoint", "host", "upstream", "proxy")}
    probes += [
        ("chat-address-fields", "/v1/chat/completions", {"model": MODEL, "messages": msg, **address_fields}, {}, True),
        ("chat-stream-address-fields", "/v1/chat/completions",
         {"model": MODEL, "messages": msg, "stream": True, **address_fields}, {}, True),
        ("completion-address-fields", "/v1/completions", {"model": MODEL, "prompt": "hi", **address_fields}, {}, True),
        ("embedding-address-fields", "/v1/embeddings", {"model": MODEL, "input": "hi", **address_fields}, {}, True),
        ("metadata-urls", "/v1/chat/completions", {"model": MODEL, "messages": msg, "user": f"http://{here}",
                                                    "metadata": {"url": f"http://{here}"}, "stop": [f"http://{here}"]},
         {}, True),
        ("prompt-is-url", "/v1/completions", {"model": MODEL, "prompt": f"GET http://{here}/ HTTP/1.1"}, {}, True),
    ]
    header_sets = {
        "host": {"Host": here},
        "x-forwarded-host": {"X-Forwarded-Host": here, "X-Forwarded-Proto": "http", "X-Forwarded-Port": str(port)},
        "forwarded": {"Forwarded": f"for=127.0.0.1;host={here};proto=http"},
        "x-original-url": {"X-Original-URL": f"http://{here}/x", "X-Rewrite-URL": f"http://{here}/x"},
        "worker-headers": {"X-Worker-Address": f"http://{here}", "X-Controller-Address": f"http://{here}",
                           "X-Upstream": f"http://{here}", "X-Forwarded-Server": here, "X-Real-IP": "127.0.0.1"},
        "referer-origin": {"Referer": f"http://{here}/", "Origin": f"http://{here}"},
    }
    for name, headers in header_sets.items():
        probes.append((f"headers-{name}", "/v1/chat/completions", {"model": MODEL, "messages": msg}, headers, True))
        probes.append((f"headers-{name}-stream", "/v1/chat/completions",
                       {"model": MODEL, "messages": msg, "stream": True}, headers, True))
    probes.append(("engines-path-url", f"/v1/engines/{quote(f'http://{here}/x', safe='')}/embeddings",
                   {"input": "hi"}, {}, False))
    return probes


def test_no_request_makes_the_gateway_connect_elsewhere(gateway, sim_worker, auth, listener):
    before = _generation_calls(sim_worker)
    accepted = 0
    outcomes = {}
    for name, path, body, headers, generates in _ssrf_probes(listener.port):
        resp = requests.post(f"{gateway.url}{path}", timeout=TIMEOUT, json=body, allow_redirects=False,
                             headers={**auth, **headers})
        COUNTS["ssrf_requests"] += 1
        outcomes[name] = resp.status_code
        assert resp.status_code < 500, (name, resp.status_code, resp.text[:300])
        if generates:
            assert resp.status_code == 200, (name, resp.status_code, resp.text[:300])
            accepted += 1
        else:
            assert resp.status_code in (400, 404), (name, resp.status_code, resp.text[:300])
    # Model-card lookups by URL-like ids.
    for model in (f"http://127.0.0.1:{listener.port}/x", f"127.0.0.1:{listener.port}"):
        resp = requests.get(f"{gateway.url}/v1/models/{quote(model, safe='')}", headers=auth, timeout=TIMEOUT)
        COUNTS["ssrf_requests"] += 1
        assert_error(resp, 404, code="model_not_found")
    time.sleep(1.0)  # anything the gateway might start in the background has had time to connect
    COUNTS["listener_connections"] += listener.connections
    assert listener.connections == 0, f"the gateway connected to the client-named address: {listener.first_bytes}"
    calls = _generation_calls(sim_worker) - before
    COUNTS["worker_generation_calls"] += calls
    assert calls == accepted, f"{accepted} accepted generations but {calls} generation calls at the configured worker"
