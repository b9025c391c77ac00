"""Per-key limits as requests see them: 429s with OpenAI's body and headers, x-ratelimit-* on every response of a
limited key, tokens settled from what was really used (whole replies, streams, cut streams), parallel slots, the
openai SDK's own retry, and the embedded store shared by separate connections (as gunicorn's processes are).

Time is the limiter's clock, moved by the tests: no test waits."""
import subprocess
import sys

import openai
import pytest
from prometheus_client import REGISTRY

from limits import RateLimitItemPerMinute
from limits.strategies import FixedWindowRateLimiter

from app import create_app
from app.limits.embedded import EmbeddedStorage
from app.limits.guard import StoreGuard
from app.limits.headers import duration
from app.limits.limiter import KeyLimiter
from tests.fakes import CONTROLLER, MODEL, text_frames

try:  # openai >= 3 is built on httpx2; older releases on httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

KEYS = '''
[[keys]]
name = "free"
key = "sk-free"

[[keys]]
name = "rpm"
key = "sk-rpm"
requests_per_minute = 2

[[keys]]
name = "tpm"
key = "sk-tpm"
tokens_per_minute = 10

[[keys]]
name = "one-at-a-time"
key = "sk-one"
max_parallel_requests = 1
requests_per_minute = 100
'''
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def clock():
    return Clock()


def limited_app(config, tmp_path, clock):
    path = tmp_path / "keys.toml"
    path.write_text(KEYS)
    app = create_app({**config, "API_KEYS_FILE": str(path), "RATE_LIMIT_DIR": str(tmp_path / "limits")},
                     environ={})
    store = EmbeddedStorage(str(tmp_path / "limits"), clock=clock)
    app.extensions["limiter"] = KeyLimiter(store, StoreGuard(fail_open=True))
    return app


@pytest.fixture
def app(config, tmp_path, clock):
    return limited_app(config, tmp_path, clock)


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def ratelimit_headers(response):
    return {name.lower(): value for name, value in response.headers.items()
            if name.lower().startswith(("x-ratelimit-", "retry-after"))}


def test_a_key_without_limits_gets_no_ratelimit_headers(client, cluster):
    cluster.chat_ready()
    for _ in range(3):
        cluster.generates()
        response = client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-free"))
        assert response.status_code == 200 and ratelimit_headers(response) == {}


def test_requests_per_minute_gives_openais_429_and_headers(client, cluster, clock):
    rejected = sample("fastchat_gateway_rejections_total", key="rpm", reason="rate")
    cluster.chat_ready()
    cluster.generates()
    first = client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-rpm"))
    assert first.status_code == 200
    assert ratelimit_headers(first) == {"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1",
                                        "x-ratelimit-reset-requests": "1m0s"}
    clock.now += 15.5
    cluster.generates()
    second = client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-rpm"))
    assert second.status_code == 200
    assert ratelimit_headers(second)["x-ratelimit-remaining-requests"] == "0"
    assert ratelimit_headers(second)["x-ratelimit-reset-requests"] == "44.5s"

    third = client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-rpm"))  # no upstream call at all
    assert third.status_code == 429
    message = ("Rate limit reached for key rpm on requests per min (RPM): Limit 2, Used 2, Requested 1. "
               "Please try again in 44.5s.")
    assert third.get_json() == {"object": "error", "message": message, "code": 42901, "error": {
        "message": message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
    assert ratelimit_headers(third) == {"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "0",
                                        "x-ratelimit-reset-requests": "44.5s", "retry-after": "45",
                                        "retry-after-ms": "44500"}
    assert sample("fastchat_gateway_rejections_total", key="rpm", reason="rate") == rejected + 1
    # A refused request is not counted: once the window is over, two more get in.
    clock.now += 44.5
    for _ in range(2):
        cluster.generates()
        assert client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-rpm")).status_code == 200


def test_a_request_turned_away_by_back_pressure_is_given_back_to_its_key(config, tmp_path, clock, cluster):
    client = limited_app({**config, "MAX_STREAMS_PER_PROCESS": 1}, tmp_path, clock).test_client()
    cluster.chat_ready()
    cluster.streams(text_frames(["Hel", "Hello"]))
    held = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth("sk-rpm"))
    assert held.status_code == 200 and ratelimit_headers(held)["x-ratelimit-remaining-requests"] == "1"
    overloaded = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth("sk-rpm"))
    assert overloaded.status_code == 503 and overloaded.get_json()["error"]["code"] == "server_overloaded"
    held.close()
    cluster.generates()  # the 503 used none of the key's two requests: this one is its second
    second = client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-rpm"))
    assert second.status_code == 200 and ratelimit_headers(second)["x-ratelimit-remaining-requests"] == "0"


def test_every_response_of_a_limited_key_has_the_headers_errors_too(client, cluster):
    cluster.serves(MODEL)
    response = client.post("/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=auth("sk-rpm"))
    assert response.status_code == 404
    assert ratelimit_headers(response)["x-ratelimit-remaining-requests"] == "1"
    bad = client.post("/v1/chat/completions", json={"model": MODEL}, headers=auth("sk-rpm"))
    assert bad.status_code == 400 and ratelimit_headers(bad)["x-ratelimit-remaining-requests"] == "0"


def test_only_generation_counts_listing_models_takes_nothing_from_the_limit(client, cluster, upstream):
    upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
    cluster.chat_ready()
    for _ in range(3):
        listed = client.get("/v1/models", headers=auth("sk-rpm"))
        assert listed.status_code == 200 and ratelimit_headers(listed) == {}
    assert client.post("/api/v1/token_check", json={"prompts": []}, headers=auth("sk-rpm")).status_code != 429
    assert client.get("/v1/responses/resp_1", headers=auth("sk-rpm")).status_code == 404
    cluster.generates()
    first = client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-rpm"))
    assert first.status_code == 200 and ratelimit_headers(first)["x-ratelimit-remaining-requests"] == "1"
    assert client.get("/v1/models", headers=auth("sk-wrong")).status_code == 401  # the key is still checked


def test_tokens_are_counted_when_a_reply_ends_and_may_overshoot_once(client, cluster, clock):
    rejected = sample("fastchat_gateway_rejections_total", key="tpm", reason="tokens")
    cluster.chat_ready()
    cluster.generates()  # 5 prompt + 2 completion tokens
    first = client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-tpm"))
    assert ratelimit_headers(first) == {"x-ratelimit-limit-tokens": "10", "x-ratelimit-remaining-tokens": "10",
                                        "x-ratelimit-reset-tokens": "0ms"}  # nothing used yet in this window
    clock.now += 6
    cluster.generates()
    second = client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-tpm"))
    assert second.status_code == 200  # 3 tokens left: let in, and it uses 7
    assert ratelimit_headers(second) == {"x-ratelimit-limit-tokens": "10", "x-ratelimit-remaining-tokens": "3",
                                         "x-ratelimit-reset-tokens": "54s"}
    third = client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-tpm"))
    assert third.status_code == 429
    assert third.get_json()["error"] == {
        "message": "Rate limit reached for key tpm on tokens per min (TPM): Limit 10, Used 14. Please try again in "
                   "54s.", "type": "tokens", "param": None, "code": "rate_limit_exceeded"}
    assert ratelimit_headers(third)["retry-after"] == "54"
    assert ratelimit_headers(third)["x-ratelimit-remaining-tokens"] == "0"
    assert sample("fastchat_gateway_rejections_total", key="tpm", reason="tokens") == rejected + 1
    clock.now += 54
    cluster.generates()
    assert client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-tpm")).status_code == 200


def _remaining_tokens(client, cluster):
    """What the next request of the tpm key is told it has left."""
    cluster.generates()
    return int(client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-tpm"))
               .headers["x-ratelimit-remaining-tokens"])


def test_a_stream_counts_its_tokens_when_it_ends_and_sends_the_headers_first(client, cluster):
    cluster.chat_ready()
    cluster.streams(text_frames(["a", "ab", "abc"], prompt_tokens=4))  # 4 + 3 tokens
    response = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth("sk-tpm"))
    assert ratelimit_headers(response)["x-ratelimit-remaining-tokens"] == "10"  # before the first byte
    assert b"data: [DONE]" in response.get_data()
    assert _remaining_tokens(client, cluster) == 3


def test_a_stream_cut_by_the_client_counts_what_was_generated_until_then(client, cluster):
    cluster.chat_ready()
    cluster.streams(text_frames(["a", "ab", "abc", "abcd", "abcde"], prompt_tokens=4))
    response = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth("sk-tpm"),
                           buffered=False)
    events = iter(response.response)
    taken = [next(events) for _ in range(2)]  # the role chunk, then "a": one completion token
    assert b'"content":"a"' in taken[1]
    response.close()  # what the WSGI server does when the client has gone
    assert _remaining_tokens(client, cluster) == 10 - (4 + 1)


def test_a_cut_responses_stream_counts_too(client, cluster):
    cluster.chat_ready()
    cluster.streams(text_frames(["a", "ab", "abc", "abcd"], prompt_tokens=4))
    response = client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "stream": True},
                           headers=auth("sk-tpm"), buffered=False)
    events = iter(response.response)
    while b"output_text.delta" not in next(events):
        pass
    response.close()
    assert _remaining_tokens(client, cluster) == 10 - (4 + 1)


def test_parallel_requests_over_the_limit_get_a_429_until_one_ends(client, cluster):
    rejected = sample("fastchat_gateway_rejections_total", key="one-at-a-time", reason="parallel")
    cluster.chat_ready()
    cluster.streams(text_frames(["a", "ab"]))
    open_stream = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth("sk-one"),
                              buffered=False)
    assert open_stream.status_code == 200 and open_stream.headers["x-ratelimit-remaining-requests"] == "99"
    refused = client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-one"))
    assert refused.status_code == 429
    assert refused.get_json()["error"] == {
        "message": "Too many parallel requests for key one-at-a-time: Limit 1, In progress 1, Requested 1. Please "
                   "try again in 1s.", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    assert refused.headers["Retry-After"] == "1" and refused.headers["retry-after-ms"] == "1000"
    assert refused.headers["x-ratelimit-remaining-requests"] == "99"  # the refused one was given back
    assert sample("fastchat_gateway_rejections_total", key="one-at-a-time", reason="parallel") == rejected + 1
    open_stream.close()  # its slot is free again
    cluster.generates()
    assert client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-one")).status_code == 200
    cluster.generates()
    assert client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-one")).status_code == 200


def test_a_429_keeps_its_status_in_fastchat_error_mode(config, tmp_path, clock, cluster):
    client = limited_app({**config, "ERROR_STATUS_MODE": "fastchat"}, tmp_path, clock).test_client()
    for _ in range(2):
        cluster.generates()
    cluster.chat_ready()
    statuses = [client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-rpm")).status_code
                for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_the_openai_sdk_waits_as_told_and_then_succeeds(app, cluster, clock, monkeypatch):
    slept = []

    def sleep(seconds):  # the SDK's wait, as time passing for the limiter
        slept.append(seconds)
        clock.now += seconds

    monkeypatch.setattr(openai._base_client.time, "sleep", sleep)
    http_client = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://gateway.test")
    cluster.chat_ready()
    for _ in range(3):
        cluster.generates()
    with openai.OpenAI(base_url="http://gateway.test/v1", api_key="sk-rpm", http_client=http_client,
                       max_retries=2) as sdk:
        for _ in range(2):
            sdk.chat.completions.create(**CHAT)
        clock.now += 20
        completion = sdk.chat.completions.create(**CHAT)  # refused once, retried after 40 s
    assert completion.choices[0].message.content == "Hello there"
    assert slept == [40.0]


def test_durations_are_written_as_openai_does():
    assert [duration(s) for s in (0, 0.12, 1, 17.5, 59.9996, 60, 90.5, 360)] == [
        "0ms", "120ms", "1s", "17.5s", "1m0s", "1m0s", "1m30.5s", "6m0s"]


def test_the_embedded_store_is_one_count_for_every_connection(tmp_path, clock):
    """Two storages on one directory stand for two gunicorn processes: each sees the other's hits."""
    first, second = (EmbeddedStorage(str(tmp_path), clock=clock) for _ in range(2))
    assert first.admit("k", True, False, None, "a", 900).requests == 1
    assert second.admit("k", True, False, None, "b", 900).requests == 2
    second.settle("k", 30, None)
    clock.now += 10
    counts = first.admit("k", True, True, None, "c", 900)
    assert (counts.requests, counts.requests_reset, counts.tokens_used, counts.tokens_reset) == (3, 50, 30, 50)
    clock.now += 50
    counts = second.admit("k", True, True, None, "d", 900)
    assert (counts.requests, counts.tokens_used, counts.tokens_reset) == (1, 0, 0)  # new windows


def test_limits_own_fixed_window_strategy_runs_on_the_embedded_store(tmp_path, clock):
    """EmbeddedStorage is a `limits` Storage like the library's own: its FixedWindowRateLimiter works on it."""
    store = EmbeddedStorage(str(tmp_path), clock=clock)
    limiter, per_minute = FixedWindowRateLimiter(store), RateLimitItemPerMinute(2)
    assert [limiter.hit(per_minute, "k") for _ in range(3)] == [True, True, False]
    stats = limiter.get_window_stats(per_minute, "k")
    assert stats.remaining == 0 and stats.reset_time == clock.now + 60
    clock.now += 60
    assert limiter.hit(per_minute, "k") and limiter.test(per_minute, "k")


def test_a_parallel_slot_of_a_dead_process_is_freed_when_the_key_is_full(tmp_path, clock):
    store = EmbeddedStorage(str(tmp_path), clock=clock)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    with store._lock:
        store._db().execute("INSERT INTO leases VALUES ('k/parallel', 'gone', ?, ?)", (int(dead), clock.now + 900))

    def slot(lease):
        counts = store.admit("k", requests=False, tokens=False, parallel=1, lease=lease, ttl=900)
        return counts.slot_taken, counts.in_use

    assert slot("mine") == (True, 1)  # the dead process's slot was dropped
    assert slot("other") == (False, 1)  # a live one (this process) is kept
    store.settle("k", 0, "mine")
    assert slot("other") == (True, 1)
    clock.now += 901  # a slot expires whoever holds it
    assert slot("third") == (True, 1)
