"""A REAL FastChat 0.2.36 model worker serves the tiny locally built model.

This pins down, against the real peer, the worker protocol the gateway speaks:
registration with the controller, /worker_get_status, /worker_generate,
/worker_generate_stream (NUL-delimited JSON chunks) and
/worker_get_conv_template (with 0.2.36's SeparatorStyle numbering).
"""

from __future__ import annotations

import itertools
import json

import pytest

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
PROMPT = f"{VICUNA_SYSTEM} USER: Write a function that parses JSON. ASSISTANT:"

# fastchat.conversation.SeparatorStyle in 0.2.36 (IntEnum with auto(), from 1).
ADD_COLON_TWO = 2


def _params(worker, **over):
    params = {
        "model": worker.model_name,
        "prompt": PROMPT,
        "temperature": 0.0,  # FastChat switches to greedy below 1e-5
        "top_p": 1.0,
        "max_new_tokens": 16,
        "echo": False,
        "stop_token_ids": None,
        "stop": "</s>",
    }
    params.update(over)
    return params


def _stream_chunks(resp):
    """Split FastChat's worker stream: JSON objects each followed by b"\\0"."""
    buf = b""
    for piece in resp.iter_content(chunk_size=None):
        buf += piece
        while b"\0" in buf:
            raw, buf = buf.split(b"\0", 1)
            if raw:
                yield json.loads(raw)
    assert buf == b"", f"trailing bytes without NUL terminator: {buf!r}"


def test_worker_registers_with_controller(tiny_model_worker, interop_controller):
    print(f"\nworker ready in {tiny_model_worker.start_seconds:.2f}s, "
          f"RSS {tiny_model_worker.start_rss_kib / 1024:.0f} MiB")
    assert tiny_model_worker.model_name in interop_controller.list_models()
    resp = interop_controller.post("/get_worker_address", {"model": tiny_model_worker.model_name})
    assert resp.json() == {"address": tiny_model_worker.address}

    status = tiny_model_worker.post("/worker_get_status").json()
    assert status["model_names"] == [tiny_model_worker.model_name]
    assert status["queue_length"] == 0
    assert "speed" in status


def test_worker_generate_greedy(tiny_model_worker):
    resp = tiny_model_worker.post("/worker_generate", _params(tiny_model_worker))
    assert resp.status_code == 200, resp.text
    out = resp.json()
    print(f"\n/worker_generate -> {json.dumps(out)}")
    assert out["error_code"] == 0
    assert isinstance(out["text"], str) and out["text"].strip()
    usage = out["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert out["finish_reason"] in ("stop", "length")
    assert not out["text"].startswith(VICUNA_SYSTEM)  # echo false

    # Greedy decoding is deterministic.
    again = tiny_model_worker.post("/worker_generate", _params(tiny_model_worker)).json()
    assert again["text"] == out["text"]
    assert again["usage"] == usage


def test_worker_generate_stream_matches(tiny_model_worker):
    whole = tiny_model_worker.post("/worker_generate", _params(tiny_model_worker)).json()
    with tiny_model_worker.post_stream("/worker_generate_stream", _params(tiny_model_worker)) as resp:
        assert resp.status_code == 200
        chunks = list(_stream_chunks(resp))
    assert chunks, "no stream chunks"
    assert all(c["error_code"] == 0 for c in chunks)
    # Each chunk carries the cumulative text so far; the last one is final.
    texts = [c["text"] for c in chunks]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts)), texts
    assert texts[-1] == whole["text"]
    assert chunks[-1]["finish_reason"] == whole["finish_reason"]
    assert chunks[-1]["usage"] == whole["usage"]


def test_worker_conv_template(tiny_model_worker):
    resp = tiny_model_worker.post("/worker_get_conv_template")
    assert resp.status_code == 200
    conv = resp.json()["conv"]
    print(f"\n/worker_get_conv_template -> {json.dumps(conv)}")
    assert conv["name"] == "vicuna_v1.1"
    assert conv["system_message"] == VICUNA_SYSTEM
    assert conv["roles"] == ["USER", "ASSISTANT"]
    assert conv["sep_style"] == ADD_COLON_TWO
    assert (conv["sep"], conv["sep2"]) == (" ", "</s>")
    assert conv["messages"] == []


@pytest.mark.parametrize("path", ["/model_details", "/count_token"])
def test_worker_misc_endpoints(tiny_model_worker, path):
    resp = tiny_model_worker.post(path, {"prompt": PROMPT})
    assert resp.status_code == 200
    body = resp.json()
    if path == "/model_details":
        assert body == {"context_length": 512}
    else:
        assert body["error_code"] == 0 and body["count"] > 0
