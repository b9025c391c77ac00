"""Tests for bench/simworker (the simulated FastChat worker used by tests and benchmarks). Every simulator runs as a
subprocess (`python -m bench.simworker` from the repository root) on 127.0.0.1 and is stopped by PID in a fixture
finalizer."""

from __future__ import annotations

import base64
import http.server
import json
import math
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

# Starts real processes on 127.0.0.1 (see the e2e marker in setup.cfg).
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
SIMWORKER = [sys.executable, "-m", "bench.simworker"]
SERVER_ERROR_MSG = (
    "**NETWORK ERROR DUE TO HIGH TRAFFIC. PLEASE REGENERATE OR REFRESH THIS PAGE.**"
)
FAULT_TEXT = SERVER_ERROR_MSG + "\n\n(simulated fault)"

# Verbatim from fastchat-protocol.md §6.1 (HEAD, vicuna_v1.1).
VICUNA_WIRE = (
    '{"conv":{"name":"vicuna_v1.1","system_template":"{system_message}",'
    '"system_message":"A chat between a curious user and an artificial intelligence '
    "assistant. The assistant gives helpful, detailed, and polite answers to the user's "
    'questions.","system_message_vision":"","roles":["USER","ASSISTANT"],"messages":[],'
    '"offset":0,"sep_style":2,"sep":" ","sep2":"</s>","stop_str":null,'
    '"stop_token_ids":null,"max_image_size_mb":null}}'
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sim:
    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, path, payload=None, **kw):
        kw.setdefault("timeout", 5)
        return requests.post(self.url + path, json=payload if payload is not None else {}, **kw)

    def stats(self) -> dict:
        return requests.get(self.url + "/sim/stats", timeout=5).json()

    def fault(self, **body) -> dict:
        r = requests.post(self.url + "/sim/fault", json=body, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()["fault"]

    def reset(self) -> None:
        self.fault(mode="none")
        requests.post(self.url + "/sim/reset", timeout=5).raise_for_status()

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


def launch(tmp_dir: Path, *args: str, wait: bool = True) -> Sim:
    port = free_port()
    log_path = tmp_dir / f"sim-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*SIMWORKER, "--port", str(port), *args], cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
        )
    sim = Sim(proc, port, log_path)
    if wait:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"simulator exited early:\n{sim.log()}")
            try:
                requests.post(sim.url + "/worker_get_status", timeout=0.5).raise_for_status()
                break
            except requests.HTTPError:
                sim.stop()  # answers, but wrongly: do not leave it running
                raise
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    sim.stop()
                    raise AssertionError(f"simulator not ready:\n{sim.log()}")
                time.sleep(0.05)
    return sim


@pytest.fixture(scope="module")
def spawn(tmp_path_factory):
    started: list[Sim] = []
    tmp_dir = tmp_path_factory.mktemp("sim")

    def _spawn(*args: str, wait: bool = True) -> Sim:
        sim = launch(tmp_dir, *args, wait=wait)
        started.append(sim)
        return sim

    yield _spawn
    for sim in started:
        sim.stop()


@pytest.fixture(scope="module")
def sim_proc(spawn):
    return spawn("--model-names", "sim-a,sim-b", "--context-length", "4096")


@pytest.fixture
def sim(sim_proc):
    sim_proc.reset()
    yield sim_proc
    sim_proc.fault(mode="none")


@pytest.fixture(scope="module")
def slow_sim(spawn):
    # Long streams with a per-token delay, concurrency limited to 2.
    return spawn("--token-delay", "0.2", "--tokens", "1000",
                 "--limit-worker-concurrency", "2")


@pytest.fixture(scope="module")
def alt_sim(spawn):
    return spawn("--conv-template", "qwen-7b-chat", "--sep-style-numbering", "0.2.36",
                 "--stream-interval", "3", "--usage-off-by-one", "--embedding-dim", "16")


def frames_of(raw: bytes) -> list:
    assert raw.endswith(b"\0"), raw[-50:]
    return [json.loads(seg) for seg in raw.split(b"\0") if seg]


def stream(sim: Sim, payload: dict) -> list:
    r = sim.post("/worker_generate_stream", payload)
    assert r.status_code == 200
    return frames_of(r.content)


def gen_payload(prompt="Hello there friend", **kw) -> dict:
    p = {"model": "sim-a", "prompt": prompt, "temperature": 0.7, "logprobs": None,
         "top_p": 1.0, "top_k": -1, "presence_penalty": 0.0, "frequency_penalty": 0.0,
         "max_new_tokens": 5, "echo": False, "stop_token_ids": None, "stop": []}
    p.update(kw)
    return p


def wait_for(pred, timeout=1.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# --------------------------------------------------------------------------
# Plain endpoints
# --------------------------------------------------------------------------
def test_status_count_token_model_details(sim):
    r = sim.post("/worker_get_status")
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"model_names": ["sim-a", "sim-b"], "speed": 1, "queue_length": 0}
    r = sim.post("/count_token", {"model": "sim-a", "prompt": "hello  big\nworld"})
    assert r.json() == {"count": 4, "error_code": 0}
    assert sim.post("/count_token", {"model": "x", "prompt": ""}).json()["count"] == 1
    assert sim.post("/model_details", {"model": "sim-a"}).json() == {"context_length": 4096}
    r = sim.post("/count_token", {"model": "sim-a"})  # no prompt: FastChat gives 500
    assert r.status_code == 500 and r.text == "Internal Server Error"


def test_conv_template_head_is_byte_exact(sim):
    r = sim.post("/worker_get_conv_template", {"model": "sim-a"})
    assert r.headers["content-type"] == "application/json"
    assert r.text == VICUNA_WIRE


def test_conv_template_0236_numbering(alt_sim):
    conv = alt_sim.post("/worker_get_conv_template", {"model": "x"}).json()["conv"]
    assert list(conv) == ["name", "system_template", "system_message", "roles", "messages",
                          "offset", "sep_style", "sep", "sep2", "stop_str",
                          "stop_token_ids"]
    assert conv["name"] == "qwen-7b-chat"
    assert conv["sep_style"] == 9  # CHATML: 10 at HEAD, 9 in 0.2.36
    assert conv["stop_token_ids"] == [151643, 151644, 151645]


@pytest.mark.parametrize("args, message", [
    (["--conv-template", "no-such-template"], "unknown conversation template"),
    (["--conv-template", "llama-3", "--sep-style-numbering", "0.2.36"], "0.2.36"),
])
def test_bad_template_exits_with_clear_error(tmp_path, args, message):
    proc = subprocess.run([*SIMWORKER, "--port", "0", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_unknown_path_and_method(sim):
    r = requests.post(sim.url + "/nope", timeout=5)
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = requests.get(sim.url + "/worker_generate", timeout=5)
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}


# --------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------
def test_stream_framing_cumulative_usage(sim):
    payload = gen_payload("one two three", max_new_tokens=5)
    r = sim.post("/worker_generate_stream", payload)
    assert r.status_code == 200
    assert "content-type" not in r.headers  # FastChat's stream has none
    assert r.headers["transfer-encoding"] == "chunked"
    raw = r.content
    segments = [s for s in raw.split(b"\0") if s]
    # json.dumps default separators, ASCII.
    assert all(json.dumps(json.loads(s)).encode() == s for s in segments)
    frames = frames_of(raw)
    assert len(frames) == 6  # one per token + the final frame
    prev = ""
    for i, f in enumerate(frames[:-1]):
        assert list(f) == ["text", "error_code", "usage", "finish_reason", "logprobs"]
        assert f["error_code"] == 0 and f["finish_reason"] is None and f["logprobs"] is None
        assert f["text"].startswith(prev) and len(f["text"]) > len(prev)
        prev = f["text"]
        assert f["usage"] == {"prompt_tokens": 4, "completion_tokens": i + 1,
                              "total_tokens": 5 + i}
    final = frames[-1]
    assert final["text"] == prev and final["finish_reason"] == "length"
    assert final["usage"]["completion_tokens"] == 5
    words = final["text"].split(" ")
    assert len(words) == 5 and all(words)

    # max_new_tokens above --tokens (16): natural end, finish_reason "stop".
    frames = stream(sim, gen_payload("one two three", max_new_tokens=100))
    assert frames[-1]["finish_reason"] == "stop"
    assert frames[-1]["usage"]["completion_tokens"] == 16
    assert frames[-1]["text"].startswith(final["text"])


def test_generate_is_last_frame_compact(sim):
    payload = gen_payload("tell me a story", max_new_tokens=7)
    frames = stream(sim, payload)
    r = sim.post("/worker_generate", payload)
    assert r.headers["content-type"] == "application/json"
    assert r.json() == frames[-1]
    assert r.content == json.dumps(frames[-1], separators=(",", ":"),
                                   ensure_ascii=False).encode()


def test_deterministic_and_model_field_ignored(sim):
    a = sim.post("/worker_generate", gen_payload("same prompt", max_new_tokens=10)).json()
    b = sim.post("/worker_generate",
                 gen_payload("same prompt", max_new_tokens=10, model="whatever")).json()
    c = sim.post("/worker_generate", gen_payload("other prompt", max_new_tokens=10)).json()
    assert a == b and a["error_code"] == 0
    assert a["text"] != c["text"]
    # A shorter request yields a prefix of the same text.
    d = sim.post("/worker_generate", gen_payload("same prompt", max_new_tokens=3)).json()
    assert a["text"].startswith(d["text"])


def test_echo(sim):
    prompt = "USER: hi ASSISTANT:"
    payload = gen_payload(prompt)
    del payload["echo"]  # absent -> worker default True
    frames = stream(sim, payload)
    assert all(f["text"].startswith(prompt) for f in frames)
    no_echo = sim.post("/worker_generate", gen_payload(prompt, echo=False)).json()
    assert frames[-1]["text"] == prompt + no_echo["text"]
    assert not no_echo["text"].startswith(prompt)


def test_stop_strings(sim):
    full = sim.post("/worker_generate", gen_payload("stop test", max_new_tokens=8)).json()
    words = full["text"].split(" ")
    stop = " " + words[3]
    expect = " ".join(words[:3])
    assert stop not in expect
    for stop_value in (stop, ["QQQ", stop], [stop, "QQQ"]):
        out = sim.post("/worker_generate",
                       gen_payload("stop test", max_new_tokens=8, stop=stop_value)).json()
        assert out["text"] == expect and out["finish_reason"] == "stop"
    frames = stream(sim, gen_payload("stop test", max_new_tokens=8, stop=[stop]))
    assert frames[-1]["text"] == expect and frames[-1]["finish_reason"] == "stop"
    assert all(f["finish_reason"] is None for f in frames[:-1])
    # A stop that never occurs changes nothing; an echoed prompt is not searched.
    out = sim.post("/worker_generate",
                   gen_payload("stop test", max_new_tokens=8, stop=["QQQ"])).json()
    assert out == full
    out = sim.post("/worker_generate",
                   gen_payload("stop test", max_new_tokens=8, stop=["test"], echo=True)).json()
    assert out["text"] == "stop test" + full["text"]


def test_partial_stop_is_withheld(sim):
    full = sim.post("/worker_generate", gen_payload("partial", max_new_tokens=5)).json()
    words = full["text"].split(" ")
    frames = stream(sim, gen_payload("partial", max_new_tokens=5, stop=[words[1] + "QQ"]))
    texts = [f["text"] for f in frames]
    assert " ".join(words[:2]) not in texts  # ends with a prefix of the stop string
    assert texts[-1] == full["text"] and frames[-1]["finish_reason"] == "length"


def test_logprobs_shape(sim):
    out = sim.post("/worker_generate", gen_payload("a b c", max_new_tokens=4, logprobs=1)).json()
    lp = out["logprobs"]
    assert list(lp) == ["text_offset", "tokens", "token_logprobs", "top_logprobs"]
    assert len(lp["tokens"]) == 4 and "".join(lp["tokens"]) == out["text"]
    assert lp["text_offset"] == [0, len(lp["tokens"][0]),
                                 sum(map(len, lp["tokens"][:2])),
                                 sum(map(len, lp["tokens"][:3]))]
    assert all(isinstance(v, float) and v < 0 for v in lp["token_logprobs"])
    # logprobs=1: the likeliest token at each position, which is the sampled one.
    assert lp["top_logprobs"] == [{t: v} for t, v in zip(lp["tokens"], lp["token_logprobs"])]
    echo = sim.post("/worker_generate",
                    gen_payload("a b c", max_new_tokens=4, logprobs=1, echo=True)).json()
    elp = echo["logprobs"]
    assert elp["token_logprobs"][0] is None
    assert len(elp["tokens"]) == echo["usage"]["total_tokens"] == 4 + 4
    assert "".join(elp["tokens"]) == echo["text"]
    assert elp["token_logprobs"][-4:] == lp["token_logprobs"]
    frames = stream(sim, gen_payload("a b c", max_new_tokens=4, logprobs=1))
    assert [len(f["logprobs"]["tokens"]) for f in frames] == [1, 2, 3, 4, 4]


def test_top_logprobs_are_the_k_likeliest_tokens(sim):
    out = sim.post("/worker_generate", gen_payload("a b c", max_new_tokens=6, logprobs=5, echo=True)).json()
    lp = out["logprobs"]
    assert lp["top_logprobs"][0] == {}  # the BOS token, as FastChat's HF worker
    for token, value, top in zip(lp["tokens"][1:], lp["token_logprobs"][1:], lp["top_logprobs"][1:]):
        assert len(top) == 5
        assert next(iter(top.items())) == (token, value)  # the sampled token is the likeliest
        assert list(top.values()) == sorted(top.values(), reverse=True)
        assert len(set(top.values())) == 5 and all(v < 0 for v in top.values())
        lead = token[:len(token) - len(token.lstrip())]
        assert all(alt.startswith(lead) and alt.strip() and alt.strip() != token.strip() for alt in list(top)[1:])
        assert sum(math.exp(v) for v in top.values()) <= 1.0
    again = sim.post("/worker_generate", gen_payload("a b c", max_new_tokens=6, logprobs=5, echo=True)).json()
    assert again == out
    # A stream's frames carry the same alternatives, cumulatively.
    frames = stream(sim, gen_payload("a b c", max_new_tokens=6, logprobs=5, echo=True))
    assert frames[-1]["logprobs"] == lp
    # logprobs=0 (what the gateway sends for chat's logprobs without top_logprobs): no alternatives; at most 20.
    zero = sim.post("/worker_generate", gen_payload("a b c", max_new_tokens=3, logprobs=0)).json()["logprobs"]
    assert zero["top_logprobs"] == [{}, {}, {}] and len(zero["token_logprobs"]) == 3
    many = sim.post("/worker_generate", gen_payload("a b c", max_new_tokens=2, logprobs=50)).json()["logprobs"]
    assert [len(top) for top in many["top_logprobs"]] == [20, 20]


def test_choices_differ_by_seed_and_are_deterministic(sim):
    """The gateway sends n identical payloads for n choices unless it gives each its own seed: then each choice
    gets its own text, the same every time; greedy decoding ignores the seed, as a real model's does."""
    def text(**kw):
        return sim.post("/worker_generate", gen_payload("choose", max_new_tokens=8, **kw)).json()["text"]

    texts = [text(seed=seed) for seed in (0, 1, 2)]
    assert len(set(texts)) == 3 and all(len(t.split(" ")) == 8 for t in texts)
    assert [text(seed=seed) for seed in (0, 1, 2)] == texts
    assert text() not in texts
    assert text(seed=1, temperature=0.0) == text(seed=2, temperature=0.0) == text(temperature=0.0)


def test_stream_interval_and_usage_off_by_one(alt_sim):
    frames = stream(alt_sim, gen_payload("x y", max_new_tokens=7))
    # steps 0, 3 and 6 are emitted, then the final frame
    assert [f["usage"]["completion_tokens"] for f in frames] == [0, 3, 6, 6]
    assert frames[-1]["finish_reason"] == "length"


# --------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------
def test_embeddings_float_and_base64(sim):
    inputs = ["hello world", "second input here"]
    r = sim.post("/worker_get_embeddings", {"model": "sim-a", "input": inputs,
                                            "encoding_format": None})
    body = r.json()
    assert body["token_num"] == 3 + 4
    rows = body["embedding"]
    assert len(rows) == 2 and all(len(row) == 8 for row in rows)
    for row in rows:
        assert math.isclose(math.sqrt(sum(v * v for v in row)), 1.0, rel_tol=1e-5)
    assert rows[0] != rows[1]
    again = sim.post("/worker_get_embeddings", {"model": "sim-a", "input": inputs[:1]}).json()
    assert again["embedding"][0] == rows[0]
    b64 = sim.post("/worker_get_embeddings", {"model": "sim-a", "input": inputs,
                                              "encoding_format": "base64"}).json()
    for enc, row in zip(b64["embedding"], rows):
        raw = base64.b64decode(enc)
        assert len(raw) == 8 * 4
        vec = struct.unpack("<8f", raw)
        assert list(vec) == row
        assert math.isclose(math.sqrt(sum(v * v for v in vec)), 1.0, rel_tol=1e-5)


def test_embedding_dim_flag(alt_sim):
    out = alt_sim.post("/worker_get_embeddings", {"model": "m", "input": ["q"]}).json()
    assert len(out["embedding"][0]) == 16


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------
@pytest.mark.parametrize("mode, code", [("error", 50001), ("oom", 50002)])
def test_fault_error_frames(sim, mode, code):
    sim.fault(mode=mode)
    frames = stream(sim, gen_payload(max_new_tokens=10))
    assert len(frames) == 3  # --fault-after 2 tokens, then the error frame
    assert frames[-1] == {"text": FAULT_TEXT, "error_code": code}
    assert all(f["error_code"] == 0 for f in frames[:-1])
    assert sim.post("/worker_generate", gen_payload()).json() == \
        {"text": FAULT_TEXT, "error_code": code}
    assert sim.post("/worker_get_embeddings", {"input": ["a"]}).json() == \
        {"text": FAULT_TEXT, "error_code": code}
    sim.fault(mode=mode, after=0)
    assert stream(sim, gen_payload()) == [{"text": FAULT_TEXT, "error_code": code}]


def test_fault_die(sim):
    sim.fault(mode="die")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        sim.post("/worker_generate_stream", gen_payload(max_new_tokens=10))
    with pytest.raises(requests.exceptions.ConnectionError):
        sim.post("/worker_generate", gen_payload())
    with pytest.raises(requests.exceptions.ConnectionError):
        sim.post("/worker_get_embeddings", {"input": ["a"]})
    sim.fault(mode="none")
    assert wait_for(lambda: sim.stats()["open_streams"] == 0)
    assert sim.stats()["stream_disconnects"] == 0


def test_fault_hang(sim):
    sim.fault(mode="hang")
    with requests.Session() as s:
        with s.post(sim.url + "/worker_generate_stream", json=gen_payload(max_new_tokens=10),
                    stream=True, timeout=(2, 0.4)) as r:
            assert r.status_code == 200
            got = b""
            with pytest.raises((requests.exceptions.ConnectionError,
                                requests.exceptions.Timeout)):
                for chunk in r.iter_content(chunk_size=None):
                    got += chunk
            assert len(frames_of(got)) == 2
        with pytest.raises(requests.exceptions.ReadTimeout):
            s.post(sim.url + "/worker_generate", json=gen_payload(), timeout=(2, 0.3))
    sim.fault(mode="none")
    # Both clients are gone: their tasks were cancelled and permits released.
    assert wait_for(lambda: sim.stats()["queue_length"] == 0)
    stats = sim.stats()
    assert stats["open_streams"] == 0 and stats["stream_disconnects"] == 1


def test_fault_http_500(sim):
    sim.fault(mode="http-500")
    for path, body in (("/worker_generate_stream", gen_payload()),
                       ("/worker_generate", gen_payload()),
                       ("/worker_get_embeddings", {"input": ["a"]})):
        r = sim.post(path, body)
        assert r.status_code == 500
        assert r.text == "Internal Server Error"
        assert r.headers["content-type"].startswith("text/plain")


def test_fault_garbage(sim):
    sim.fault(mode="garbage", after=1)
    raw = sim.post("/worker_generate_stream", gen_payload(max_new_tokens=3)).content
    segments = [s for s in raw.split(b"\0") if s]
    bad = [s for s in segments if not s.startswith(b"{")]
    assert len(bad) == 1 and segments.index(bad[0]) == 1
    with pytest.raises(ValueError):
        json.loads(bad[0])
    good = [json.loads(s) for s in segments if s.startswith(b"{")]
    assert good[-1]["finish_reason"] == "length"
    r = sim.post("/worker_generate", gen_payload())
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()


def test_fault_slow_first_token(sim):
    sim.fault(mode="slow-first-token", delay=0.5)
    t0 = time.monotonic()
    with sim.post("/worker_generate_stream", gen_payload(), stream=True) as r:
        # Keep one iterator: dropping a requests iterator closes the connection.
        chunks = r.iter_content(chunk_size=None)
        first = next(chunks)
        elapsed = time.monotonic() - t0
        rest = first + b"".join(chunks)
    assert elapsed > 0.5 * 0.8
    assert frames_of(rest)[-1]["finish_reason"] == "length"
    t0 = time.monotonic()
    out = sim.post("/worker_generate", gen_payload()).json()
    assert time.monotonic() - t0 > 0.4 and out["error_code"] == 0


def test_fault_count_then_back_to_normal(sim):
    state = sim.fault(mode="error", count=2)
    assert state == {"mode": "error", "count": 2, "after": 2, "delay": 5.0}
    assert sim.post("/worker_generate", gen_payload()).json()["error_code"] == 50001
    # non-generation endpoints are not affected and do not consume the count
    assert sim.post("/count_token", {"prompt": "a"}).json()["count"] == 2
    assert stream(sim, gen_payload())[-1]["error_code"] == 50001
    assert sim.post("/worker_generate", gen_payload()).json()["finish_reason"] == "length"
    assert requests.get(sim.url + "/sim/fault", timeout=5).json()["fault"]["mode"] == "none"
    assert sim.stats()["faults_injected"] == {"error": 2}


def test_fault_control_validation(sim):
    for body in ({"mode": "explode"}, {"mode": "error", "count": 0},
                 {"mode": "error", "after": -1}, {"mode": "hang", "delay": "x"}):
        r = requests.post(sim.url + "/sim/fault", json=body, timeout=5)
        assert r.status_code == 400 and "error" in r.json()
    assert sim.fault()["mode"] == "none"


def test_prompt_directive(sim):
    out = sim.post("/worker_generate", gen_payload("hi [[fault:oom]] there")).json()
    assert out == {"text": FAULT_TEXT, "error_code": 50002}
    assert sim.post("/worker_generate", gen_payload("hi there")).json()["error_code"] == 0
    frames = stream(sim, gen_payload("x [[fault:error after=0]]"))
    assert frames == [{"text": FAULT_TEXT, "error_code": 50001}]
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        sim.post("/worker_generate_stream", gen_payload("[[fault:die after=1]]"))
    out = sim.post("/worker_get_embeddings", {"input": ["ok", "[[fault:error]]"]}).json()
    assert out["error_code"] == 50001
    # A directive wins over the global mode and does not consume its count.
    sim.fault(mode="error", count=1)
    assert sim.post("/worker_generate", gen_payload("[[fault:none]]")).json()["error_code"] == 0
    assert sim.post("/worker_generate", gen_payload()).json()["error_code"] == 50001
    assert sim.post("/worker_generate", gen_payload()).json()["error_code"] == 0


def test_tools_in_the_prompt_stream_a_scripted_call(sim):
    # Tool replies are unit-tested in tests/test_simworker_tools.py; here: they go over the wire as any text does.
    prompt = ('[INST] [AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_time", "parameters": '
              '{"type": "object", "required": ["tz"], "properties": {"tz": {"type": "string"}}}}}][/AVAILABLE_TOOLS]'
              "What time is it? [/INST]")
    frames = stream(sim, gen_payload(prompt, max_new_tokens=256))
    call = '[TOOL_CALLS] [{"name": "get_time", "arguments": {"tz": "'
    assert frames[-1]["text"].startswith(call) and frames[-1]["text"].endswith('"}}]')
    assert frames[-1]["finish_reason"] == "stop" and len(frames) > 10
    assert all(len(b["text"]) - len(a["text"]) <= 6 for a, b in zip(frames, frames[1:]))
    assert sim.post("/worker_generate", gen_payload(prompt, max_new_tokens=256)).json() == frames[-1]
    # disobey: the same prompt gets filler, as from a model that ignores the tools.
    sim.fault(mode="disobey", count=1)
    disobeyed = sim.post("/worker_generate", gen_payload(prompt, max_new_tokens=256)).json()
    assert disobeyed["error_code"] == 0 and len(disobeyed["text"].split()) == 16
    assert sim.post("/worker_generate", gen_payload(prompt, max_new_tokens=256)).json() == frames[-1]
    directive = sim.post("/worker_generate", gen_payload(prompt + " [[fault:disobey]]", max_new_tokens=256)).json()
    assert "TOOL_CALLS" not in directive["text"] and directive["error_code"] == 0
    out = sim.post("/worker_get_embeddings", {"input": ["[[fault:disobey]]"]}).json()
    assert len(out["embedding"]) == 1


# --------------------------------------------------------------------------
# Introspection, disconnects, concurrency, HTTP details
# --------------------------------------------------------------------------
def test_stats_and_reset(sim):
    p1 = gen_payload("first", stop=["a", "b"])
    p2 = gen_payload("second", max_new_tokens=2)
    sim.post("/worker_generate", p1)
    stream(sim, p2)
    sim.post("/worker_get_embeddings", {"model": "sim-a", "input": ["e"]})
    sim.post("/worker_get_status")
    stats = requests.post(sim.url + "/sim/stats", timeout=5).json()
    assert stats["generate_payloads"] == [p1, p2]
    assert stats["embedding_payloads"] == [{"model": "sim-a", "input": ["e"]}]
    assert stats["requests"] == {"/worker_generate": 1, "/worker_generate_stream": 1,
                                 "/worker_get_embeddings": 1, "/worker_get_status": 1}
    assert stats["open_streams"] == 0 and stats["streams_completed"] == 1
    sim.reset()
    stats = sim.stats()
    assert stats["requests"] == {} and stats["generate_payloads"] == []
    for i in range(55):
        sim.post("/worker_generate", gen_payload(f"p{i}", max_new_tokens=1))
    logged = sim.stats()["generate_payloads"]
    assert len(logged) == 50 and logged[0]["prompt"] == "p5"


def test_client_disconnect_releases_stream(slow_sim):
    slow_sim.reset()
    with requests.Session() as s:
        r = s.post(slow_sim.url + "/worker_generate_stream",
                   json=gen_payload(max_new_tokens=1000), stream=True, timeout=5)
        chunks = r.iter_content(chunk_size=None)  # keep it referenced (see above)
        got = b""
        while got.count(b"\0") < 2:
            got += next(chunks)
        stats = slow_sim.stats()
        assert stats["open_streams"] == 1 and stats["queue_length"] == 1
        assert slow_sim.post("/worker_get_status").json()["queue_length"] == 1
        r.close()
    assert wait_for(lambda: slow_sim.stats()["open_streams"] == 0, timeout=1.0)
    stats = slow_sim.stats()
    assert stats["queue_length"] == 0 and stats["stream_disconnects"] == 1


def test_concurrency_limit_queue_length(slow_sim):
    """--limit-worker-concurrency 2: a third stream waits; queue_length counts it."""
    slow_sim.reset()
    request = json.dumps(gen_payload(max_new_tokens=1000)).encode()
    raw = (b"POST /worker_generate_stream HTTP/1.1\r\nHost: x\r\n"
           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
           % (len(request), request))
    socks = [socket.create_connection(("127.0.0.1", slow_sim.port), timeout=5)
             for _ in range(3)]
    try:
        for sock in socks:
            sock.sendall(raw)
        assert wait_for(lambda: slow_sim.stats()["queue_length"] == 3)
        stats = slow_sim.stats()
        assert stats["open_streams"] == 2 and stats["active_requests"] == 2
        socks[0].close()  # frees a permit: the waiting stream starts
        assert wait_for(lambda: slow_sim.stats()["streams_started"] == 3)
        assert slow_sim.stats()["queue_length"] == 2
    finally:
        for sock in socks:
            sock.close()
    assert wait_for(lambda: slow_sim.stats()["queue_length"] == 0)
    assert slow_sim.stats()["open_streams"] == 0


def test_keep_alive_reuses_one_connection(sim):
    with requests.Session() as s:
        for _ in range(20):
            assert s.post(sim.url + "/worker_generate", json=gen_payload(), timeout=5).ok
            assert s.post(sim.url + "/worker_generate_stream", json=gen_payload(),
                          timeout=5).content.endswith(b"\0")
        stats = s.get(sim.url + "/sim/stats", timeout=5).json()
    assert stats["connections_total"] == 1


def _read_responses(sock, count):
    data = b""
    while data.count(b"HTTP/1.1 ") < count or not data.endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_pipelining_and_expect_continue(sim):
    def req(body):
        return (b"POST /count_token HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body))

    body = b'{"prompt": "a b"}'
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as sock:
        sock.sendall(req(body) + req(b'{"prompt": "a b c"}'))
        data = _read_responses(sock, 2)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert b'{"count":3,"error_code":0}' in data and b'{"count":4,"error_code":0}' in data
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as sock:
        sock.sendall(b"POST /count_token HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert _read_responses(sock, 1).endswith(b'{"count":3,"error_code":0}')


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_exit_on_signal(tmp_path, sig):
    sim = launch(tmp_path, "--no-register", "--controller-address", "http://127.0.0.1:9")
    try:
        assert "simulated worker listening on http://127.0.0.1:" in sim.log()
        assert sim.stop(sig) == 0
        assert "simulated worker stopped" in sim.log()
        assert "register_worker" not in sim.log()
    finally:
        sim.stop(signal.SIGKILL)


# --------------------------------------------------------------------------
# Controller registration and heartbeat
# --------------------------------------------------------------------------
class FakeController:
    """Records /register_worker and /receive_heart_beat; the first heartbeat is
    answered with exist:false to force a re-registration."""

    def __init__(self, port: int) -> None:
        self.calls: list = []
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                payload = json.loads(body) if body else None
                with owner.lock:
                    owner.calls.append((self.path, payload))
                    beats = sum(1 for p, _ in owner.calls if p == "/receive_heart_beat")
                if self.path == "/receive_heart_beat":
                    reply = {"exist": beats > 1}
                else:
                    reply = None
                out = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paths(self):
        with self.lock:
            return [p for p, _ in self.calls]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_registration_and_heartbeat(spawn):
    port = free_port()
    # The controller is not up yet: the worker must log, keep serving and retry.
    sim = spawn("--controller-address", f"http://127.0.0.1:{port}",
                "--heartbeat-interval", "0.2", "--model-names", "m1,m2")
    assert wait_for(lambda: "register_worker" in sim.log(), timeout=3)
    assert sim.post("/worker_get_status").ok
    controller = FakeController(port)
    try:
        assert wait_for(lambda: controller.paths().count("/register_worker") >= 2
                        and controller.paths().count("/receive_heart_beat") >= 3,
                        timeout=5)
        with controller.lock:
            calls = list(controller.calls)
    finally:
        controller.close()
    address = f"http://127.0.0.1:{sim.port}"
    paths = [p for p, _ in calls]
    assert paths[0] == "/register_worker"
    # heartbeat #1 answered exist:false -> immediate re-registration
    first_beat = paths.index("/receive_heart_beat")
    assert paths[first_beat + 1] == "/register_worker"
    register = calls[0][1]
    assert register == {"worker_name": address, "check_heart_beat": True,
                        "worker_status": {"model_names": ["m1", "m2"], "speed": 1,
                                          "queue_length": 0},
                        "multimodal": False}
    assert calls[first_beat][1] == {"worker_name": address, "queue_length": 0}
    assert sim.proc.poll() is None
