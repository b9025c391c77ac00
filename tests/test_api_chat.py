import pytest

from app import create_app
from harness import sse

from tests.fakes import CONTROLLER, MODEL, VICUNA, WORKER, frames, text_frames

CHAT = "/v1/chat/completions"
SYSTEM = VICUNA["system_message"]


def chat(client, **body):
    return client.post(CHAT, json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **body})


def sse_events(response) -> list:
    """The JSON events of a streamed response, its framing checked strictly; the [DONE] sentinel is the last."""
    return sse.parse_json(response.get_data())


class TestNonStreaming:
    def test_payload_sent_to_the_worker_is_exact(self, client, cluster):
        cluster.chat_ready(counted=False)
        cluster.generates(payload={
            "model": MODEL, "prompt": f"{SYSTEM} USER: Hi ASSISTANT:", "temperature": 0.5, "logprobs": None,
            "top_p": 0.9, "top_k": 5, "presence_penalty": 0.1, "frequency_penalty": 0.2, "max_new_tokens": 7,
            "echo": False, "stop_token_ids": None, "stop": ["X", "Y"], "seed": 42, "repetition_penalty": 1.1})
        response = chat(client, temperature=0.5, top_p=0.9, top_k=5, presence_penalty=0.1, frequency_penalty=0.2,
                        max_tokens=7, stop=["X", "Y", "X"], seed=42, repetition_penalty=1.1, user="u1")
        assert response.status_code == 200, response.get_json()

    def test_response_shape(self, client, cluster):
        cluster.chat_ready()
        cluster.generates("Hello there", finish_reason="length",
                          usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
        body = chat(client).get_json()
        assert body["object"] == "chat.completion"
        assert body["id"].startswith("chatcmpl-")
        assert isinstance(body["created"], int)
        assert body["model"] == MODEL
        assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello there",
                                                                "refusal": None},
                                    "logprobs": None, "finish_reason": "length"}]
        assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}

    def test_defaults_sent_to_the_worker(self, client, cluster):
        cluster.chat_ready(prompt_tokens=48, context=64)
        cluster.generates()
        chat(client)
        sent = cluster.sent("/worker_generate")[0]
        assert (sent["temperature"], sent["top_p"], sent["top_k"], sent["max_new_tokens"]) == (1.0, 1.0, -1, 16)
        assert "seed" not in sent and "repetition_penalty" not in sent

    def test_explicit_nulls_mean_defaults(self, client, cluster):
        cluster.chat_ready()
        cluster.generates()
        chat(client, temperature=None, top_p=None, n=None, presence_penalty=None, stop=None, stream=None)
        sent = cluster.sent("/worker_generate")[0]
        assert (sent["temperature"], sent["top_p"], sent["presence_penalty"], sent["stop"]) == (1.0, 1.0, 0.0, [])

    def test_n_choices_run_concurrently_and_count_prompt_tokens_once(self, client, cluster):
        cluster.chat_ready()
        generation = cluster.generates("same", usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
        body = chat(client, n=3).get_json()
        assert [c["index"] for c in body["choices"]] == [0, 1, 2]
        assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}
        assert generation.call_count == 3

    def test_with_a_seed_each_choice_gets_its_own(self, client, cluster):
        """One seed for every choice would make a worker that honours seeds return n identical choices."""
        cluster.chat_ready()
        cluster.generates()
        chat(client, n=3, seed=7)
        assert sorted(sent["seed"] for sent in cluster.sent("/worker_generate")) == [7, 8, 9]

    def test_without_a_seed_no_choice_gets_one(self, client, cluster):
        cluster.chat_ready()
        cluster.generates()
        chat(client, n=2)
        assert all("seed" not in sent for sent in cluster.sent("/worker_generate"))

    def test_multi_turn_with_system_message_renders_the_template(self, client, cluster):
        cluster.chat_ready()
        cluster.generates()
        client.post(CHAT, json={"model": MODEL, "messages": [
            {"role": "system", "content": "You are X."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": "How are"}, {"type": "text", "text": "you?"}]}]})
        assert cluster.sent("/worker_generate")[0]["prompt"] == \
            "You are X. USER: Hi ASSISTANT: Hello!</s>USER: How are\nyou? ASSISTANT:"

    def test_string_messages_are_a_raw_prompt(self, client, cluster):
        cluster.chat_ready()
        cluster.generates()
        client.post(CHAT, json={"model": MODEL, "messages": "raw prompt"})
        assert cluster.sent("/worker_generate")[0]["prompt"] == "raw prompt"

    def test_template_stop_strings_are_merged_after_the_request_ones(self, client, cluster, upstream):
        conv = {**VICUNA, "stop_str": ["</s>", "X"], "stop_token_ids": [2, 7]}
        cluster.serves(MODEL)
        cluster.routes()
        cluster.template(conv)
        cluster.context()
        cluster.counts()
        cluster.generates()
        chat(client, stop=["X", "Z"])
        sent = cluster.sent("/worker_generate")[0]
        assert sent["stop"] == ["X", "Z", "</s>"]
        assert sent["stop_token_ids"] == [2, 7]

    def test_warm_request_makes_two_upstream_calls(self, client, cluster, upstream):
        cluster.chat_ready()
        cluster.generates()
        chat(client)
        cluster.counts()
        cluster.generates()
        before = len(upstream.calls)
        assert chat(client).status_code == 200  # the controller's pick is reused within WORKER_PICK_INTERVAL
        assert [c.request.url for c in upstream.calls[before:]] == [f"{WORKER}/count_token", f"{WORKER}/worker_generate"]

    def test_without_a_pick_interval_every_request_asks_the_controller(self, config, cluster, upstream):
        client = create_app({**config, "WORKER_PICK_INTERVAL": 0}, environ={}).test_client()
        cluster.chat_ready()
        cluster.generates()
        chat(client)
        cluster.routes()
        cluster.counts()
        cluster.generates()
        before = len(upstream.calls)
        assert chat(client).status_code == 200
        assert [c.request.url for c in upstream.calls[before:]] == [
            f"{CONTROLLER}/get_worker_address", f"{WORKER}/count_token", f"{WORKER}/worker_generate"]

    def test_template_cache_is_dropped_when_the_worker_fails(self, client, cluster, upstream):
        cluster.chat_ready()
        cluster.unreachable(f"{WORKER}/worker_generate")
        assert chat(client).status_code == 503
        cluster.routes()
        conv = cluster.template()
        cluster.context()
        cluster.counts()
        cluster.generates()
        assert chat(client).status_code == 200
        assert conv.call_count == 1  # fetched again after the failure

    def test_unknown_model_is_404_without_listing_models(self, client, cluster):
        cluster.serves("secret-model-a", "secret-model-b")
        response = client.post(CHAT, json={"model": "gpt-4", "messages": "hi"})
        assert response.status_code == 404
        body = response.get_json()
        assert body["error"]["code"] == "model_not_found" and body["error"]["param"] == "model"
        assert "secret-model" not in response.get_data(as_text=True)

    def test_no_worker_for_the_model_is_503(self, client, cluster):
        cluster.serves(MODEL)
        cluster.routes(to="")
        response = chat(client)
        assert response.status_code == 503
        assert response.get_json()["error"]["type"] == "service_unavailable_error"
        assert response.headers["Retry-After"] == "1"  # a restart under way, mostly: worth retrying soon

    def test_a_controller_with_no_worker_registered_is_503_not_404(self, client, cluster):
        cluster.serves()  # a controller that just restarted, before the workers' heartbeats
        response = chat(client)
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert response.get_json()["error"]["code"] == "upstream_unavailable"

    def test_controller_unreachable_is_503(self, client, cluster):
        cluster.unreachable(f"{CONTROLLER}/list_models")
        assert chat(client).status_code == 503

    def test_worker_in_band_error_is_reported(self, client, cluster, upstream):
        cluster.chat_ready()
        upstream.post(f"{WORKER}/worker_generate", json={"text": "CUDA out of memory", "error_code": 50002})
        response = chat(client)
        assert response.status_code == 503
        assert response.get_json()["code"] == 50002
        assert response.get_json()["message"] == "CUDA out of memory"


class TestContextLength:
    def test_a_max_tokens_that_fits_whatever_the_prompt_skips_counting(self, client, cluster):
        cluster.chat_ready(counted=False)
        cluster.generates(usage={"prompt_tokens": 40, "completion_tokens": 2, "total_tokens": 42})
        response = chat(client, max_tokens=100)
        assert cluster.sent("/count_token") == [] and cluster.sent("/worker_generate")[0]["max_new_tokens"] == 100
        assert response.get_json()["usage"]["prompt_tokens"] == 40  # the worker's own count

    def test_a_max_tokens_that_might_not_fit_is_counted(self, client, cluster):
        # the rendered vicuna prompt is ~190 bytes: 190 + 8 + 1900 > 2048, so the exact count decides
        cluster.chat_ready(prompt_tokens=50)
        cluster.generates()
        assert chat(client, max_tokens=1900).status_code == 200
        assert len(cluster.sent("/count_token")) == 1

    def test_absent_max_tokens_uses_the_rest_of_the_context(self, client, cluster):
        cluster.chat_ready(prompt_tokens=50, context=64)
        cluster.generates()
        chat(client)
        assert cluster.sent("/worker_generate")[0]["max_new_tokens"] == 14

    def test_max_tokens_over_the_context_is_400(self, client, cluster):
        cluster.chat_ready(prompt_tokens=50, context=64)
        response = chat(client, max_tokens=20)
        assert response.status_code == 400
        body = response.get_json()
        assert body["error"]["code"] == "context_length_exceeded" and body["error"]["param"] == "messages"
        assert body["code"] == 40303
        assert body["message"].startswith("This model's maximum context length is 64 tokens. However, you "
                                          "requested 70 tokens (50 in the messages, 20 in the completion).")

    def test_max_tokens_that_fits_exactly_is_sent(self, client, cluster):
        cluster.chat_ready(prompt_tokens=50, context=64)
        cluster.generates()
        assert chat(client, max_completion_tokens=14).status_code == 200
        assert cluster.sent("/worker_generate")[0]["max_new_tokens"] == 14

    def test_prompt_filling_the_context_is_400(self, client, cluster):
        cluster.chat_ready(prompt_tokens=64, context=64)
        response = chat(client)
        assert response.status_code == 400
        assert response.get_json()["error"]["code"] == "context_length_exceeded"

    def test_clip_mode_clips_silently(self, app, client, cluster):
        app.extensions["cluster"] = app.extensions["cluster"].__class__(
            **{**app.extensions["cluster"].__dict__, "clip_overflow": True})
        cluster.chat_ready(prompt_tokens=50, context=64)
        cluster.generates()
        assert chat(client, max_tokens=1000).status_code == 200
        assert cluster.sent("/worker_generate")[0]["max_new_tokens"] == 14

    def test_unknown_context_length_skips_counting(self, client, cluster):
        cluster.serves(MODEL)
        cluster.routes()
        cluster.template()
        cluster.context(None)
        cluster.generates(usage={"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5})
        response = chat(client)
        assert response.status_code == 200
        assert "max_new_tokens" not in cluster.sent("/worker_generate")[0]
        assert response.get_json()["usage"]["prompt_tokens"] == 4


class TestStreaming:
    def test_chunks_follow_openai(self, client, cluster):
        cluster.chat_ready()
        cluster.streams(text_frames(["Hel", "Hello", "Hello there"], finish_reason="length"))
        response = chat(client, stream=True)
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        events = sse_events(response)
        chunks = events[:-1]
        assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
        assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
        assert all("usage" not in c for c in chunks)
        choices = [c["choices"][0] for c in chunks]
        assert choices[0]["delta"] == {"role": "assistant", "content": ""}
        assert [c["delta"].get("content") for c in choices[1:]] == ["Hel", "lo", " there"]
        assert [c["finish_reason"] for c in choices] == [None, None, None, "length"]

    def test_frames_that_arrive_together_are_relayed_as_one_chunk(self, client, cluster):
        cluster.chat_ready()
        cluster.streams(text_frames(["Hel", "Hello", "Hello there"], finish_reason="length"), one_read=True)
        choices = [e["choices"][0] for e in sse_events(chat(client, stream=True))[:-1]]
        assert [(c["delta"].get("content"), c["finish_reason"]) for c in choices] == [
            ("", None), ("Hello there", "length")]

    def test_finish_without_new_text_is_its_own_chunk(self, client, cluster):
        cluster.chat_ready()
        cluster.streams(text_frames(["Hi", "Hi", "Hi"], finish_reason="stop"))
        choices = [e["choices"][0] for e in sse_events(chat(client, stream=True))[:-1]]
        assert [(c["delta"], c["finish_reason"]) for c in choices] == [
            ({"role": "assistant", "content": ""}, None), ({"content": "Hi"}, None), ({}, "stop")]

    def test_payload_for_streams_is_the_same_as_for_whole_replies(self, client, cluster):
        cluster.chat_ready(counted=False)
        cluster.streams(text_frames(["a"]))
        sse_events(chat(client, stream=True, max_tokens=3))
        sent = cluster.sent("/worker_generate_stream")[0]
        assert sent["prompt"] == f"{SYSTEM} USER: Hi ASSISTANT:" and sent["max_new_tokens"] == 3

    def test_worker_error_mid_stream_becomes_an_error_event_then_done(self, client, cluster):
        cluster.chat_ready()
        cluster.streams(frames({"text": "Hel", "error_code": 0},
                               {"text": "**NETWORK ERROR**\n\n(boom)", "error_code": 50001}))
        events = sse_events(chat(client, stream=True))
        assert events[1]["choices"][0]["delta"] == {"content": "Hel"}
        error = events[-2]
        assert error["error"]["code"] == "worker_error" and error["error"]["type"] == "server_error"
        assert error["code"] == 50001 and "(boom)" in error["message"]

    def test_truncated_stream_becomes_an_error_event_then_done(self, client, cluster):
        cluster.chat_ready()
        cluster.streams(frames({"text": "Hel", "error_code": 0}) + b'{"text": "Hel')
        events = sse_events(chat(client, stream=True))
        assert events[-2]["error"]["code"] == "upstream_error"

    def test_failures_before_the_stream_keep_their_status(self, client, cluster, upstream):
        cluster.chat_ready()
        upstream.post(f"{WORKER}/worker_generate_stream", status=500, body="Internal Server Error")
        response = chat(client, stream=True)
        assert response.status_code == 502
        assert response.mimetype == "application/json"

    def test_context_overflow_is_a_400_not_a_stream(self, client, cluster):
        cluster.chat_ready(prompt_tokens=64, context=64)
        assert chat(client, stream=True).status_code == 400

    def test_include_usage_adds_a_usage_chunk(self, client, cluster):
        cluster.chat_ready()
        cluster.streams(text_frames(["a", "ab"], prompt_tokens=5))
        events = sse_events(chat(client, stream=True, stream_options={"include_usage": True}))
        assert all(e["usage"] is None for e in events[:-2])
        assert events[-2]["choices"] == []
        assert events[-2]["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}

    def test_n_choices_stream_each_with_its_index(self, client, cluster):
        cluster.chat_ready()
        body = text_frames(["x", "xy"])
        cluster.streams(body)
        cluster.streams(body)
        events = sse_events(chat(client, stream=True, n=2))[:-1]
        by_index = {0: "", 1: ""}
        for event in events:
            choice = event["choices"][0]
            by_index[choice["index"]] += choice["delta"].get("content", "")
        assert by_index == {0: "xy", 1: "xy"}
        finishes = [e["choices"][0]["index"] for e in events if e["choices"][0]["finish_reason"]]
        assert sorted(finishes) == [0, 1]

    def test_clean_end_without_finish_reason_still_finishes_the_choice(self, client, cluster):
        cluster.chat_ready()
        cluster.streams(frames({"text": "a", "error_code": 0}))
        choices = [e["choices"][0] for e in sse_events(chat(client, stream=True))[:-1]]
        assert choices[-1]["finish_reason"] == "stop"


class TestValidation:
    @pytest.mark.parametrize("field, value, fastchat_code", [
        ("max_tokens", 0, 40302), ("n", 0, 40302), ("n", 129, 40302), ("temperature", 2.5, 40302),
        ("temperature", -0.1, 40302), ("top_p", 1.5, 40302), ("top_k", 0, 40302), ("top_k", -2, 40302),
        ("presence_penalty", 3, 40302), ("max_tokens", "10", 40001), ("max_tokens", 1.5, 40001),
        ("stream", "yes", 40001), ("stop", 3, 40001), ("temperature", "hot", 40001), ("temperature", "0.5", 40001),
        ("top_p", True, 40001)])
    def test_bad_parameters_are_400_naming_the_field(self, client, field, value, fastchat_code):
        response = chat(client, **{field: value})
        assert response.status_code == 400
        body = response.get_json()
        assert body["error"]["param"] == field
        assert body["code"] == fastchat_code
        assert body["error"]["type"] == "invalid_request_error"

    # tools, tool_choice, response_format and role "tool" are served now (tests/test_api_tools.py).
    @pytest.mark.parametrize("field, value", [
        ("functions", [{"name": "f"}]), ("logit_bias", {"1": 5}), ("audio", {"voice": "x"})])
    def test_unsupported_parameters_are_rejected_by_name(self, client, field, value):
        body = chat(client, **{field: value}).get_json()
        assert body["error"]["code"] == "unsupported_parameter"
        assert body["error"]["param"] == field

    @pytest.mark.parametrize("messages, param", [
        ([{"role": "user", "content": "a"}, {"role": "function", "content": "x"}], "messages[1].role"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}],
         "messages[0].content[0]")])
    def test_roles_and_parts_fastchat_cannot_render_are_400(self, client, messages, param):
        response = client.post(CHAT, json={"model": MODEL, "messages": messages})
        assert response.status_code == 400
        assert response.get_json()["error"]["param"] == param
        assert response.get_json()["error"]["code"] == "unsupported_parameter"

    @pytest.mark.parametrize("messages", [[], None, [{"role": "user"}], [{"role": "user", "content": None}],
                                          [{"role": "robot", "content": "x"}], [{"content": "x"}], ["hi"]])
    def test_malformed_messages_are_400(self, client, messages):
        response = client.post(CHAT, json={"model": MODEL, "messages": messages})
        assert response.status_code == 400
        assert response.get_json()["error"]["param"].startswith("messages")

    def test_missing_model_is_400(self, client):
        response = client.post(CHAT, json={"messages": "hi"})
        assert response.get_json()["error"]["param"] == "model"

    def test_stream_options_without_stream_is_400(self, client):
        response = chat(client, stream_options={"include_usage": True})
        assert response.get_json()["error"]["param"] == "stream_options"

    def test_unknown_and_hosted_only_fields_are_accepted(self, client, cluster):
        cluster.chat_ready()
        cluster.generates()
        assert chat(client, metadata={"a": "b"}, store=False, service_tier="auto", whatever=1).status_code == 200


WORKER_LOGPROBS = {"text_offset": [0, 2], "token_logprobs": [-0.5, -1.25], "tokens": ["He", "llo"],
                   "top_logprobs": [{"He": -0.5, "Hi": -1.0}, {}]}


class TestLogprobs:
    def test_logprobs_are_asked_of_the_worker_and_mapped_to_the_chat_shape(self, client, cluster):
        cluster.chat_ready()
        cluster.generates("Hello", logprobs=WORKER_LOGPROBS)
        body = chat(client, logprobs=True, top_logprobs=1).get_json()
        assert cluster.sent("/worker_generate")[0]["logprobs"] == 1
        assert body["choices"][0]["logprobs"] == {"refusal": None, "content": [
            {"token": "He", "logprob": -0.5, "bytes": [72, 101],
             "top_logprobs": [{"token": "He", "logprob": -0.5, "bytes": [72, 101]}]},
            {"token": "llo", "logprob": -1.25, "bytes": [108, 108, 111], "top_logprobs": []}]}

    def test_without_logprobs_none_are_asked_or_returned(self, client, cluster):
        cluster.chat_ready()
        cluster.generates("Hello", logprobs=WORKER_LOGPROBS)
        body = chat(client).get_json()
        assert cluster.sent("/worker_generate")[0]["logprobs"] is None
        assert body["choices"][0]["logprobs"] is None

    def test_streamed_logprobs_cover_only_the_new_tokens(self, client, cluster):
        cluster.chat_ready()
        first = {key: values[:1] for key, values in WORKER_LOGPROBS.items()}
        cluster.streams(frames({"text": "He", "error_code": 0, "logprobs": first, "finish_reason": None},
                               {"text": "Hello", "error_code": 0, "logprobs": WORKER_LOGPROBS,
                                "finish_reason": "stop"}))
        events = sse_events(chat(client, stream=True, logprobs=True))[:-1]
        tokens = [[entry["token"] for entry in e["choices"][0]["logprobs"]["content"]] for e in events[1:]]
        assert tokens == [["He"], ["llo"]]

    def test_top_logprobs_without_logprobs_is_400(self, client):
        assert chat(client, top_logprobs=2).get_json()["error"]["param"] == "top_logprobs"

    def test_a_worker_without_logprobs_gives_null(self, client, cluster):
        cluster.chat_ready()
        cluster.generates("Hello", logprobs=None)
        assert chat(client, logprobs=True).get_json()["choices"][0]["logprobs"] is None


class TestFastChatChatRoute:
    def test_repetition_penalty_is_always_sent(self, client, cluster):
        cluster.chat_ready()
        cluster.generates()
        response = client.post("/api/v1/chat/completions", json={"model": MODEL, "messages": "hi"})
        assert response.status_code == 200
        assert cluster.sent("/worker_generate")[0]["repetition_penalty"] == 1.0

    def test_it_validates_like_the_v1_route(self, client):
        response = client.post("/api/v1/chat/completions", json={"model": MODEL, "messages": "hi", "n": 0})
        assert response.status_code == 400 and response.get_json()["error"]["param"] == "n"


class TestSepStyleNumbering:
    # A 0.2.36 worker's CHATML template: 11 keys, sep_style 9 (CHATGLM in HEAD's numbering).
    CHATML_0236 = {"name": "my-chatml", "system_template": "<|im_start|>system\n{system_message}",
                   "system_message": "S", "roles": ["<|im_start|>user", "<|im_start|>assistant"], "messages": [],
                   "offset": 0, "sep_style": 9, "sep": "<|im_end|>", "sep2": None, "stop_str": None,
                   "stop_token_ids": None}

    def send(self, app, cluster):
        cluster.serves(MODEL)
        cluster.routes()
        cluster.template(self.CHATML_0236)
        cluster.context()
        cluster.counts()
        cluster.generates()
        chat(app.test_client())
        return cluster.sent("/worker_generate")[0]["prompt"]

    def test_auto_detects_the_0_2_36_numbering(self, app, cluster):
        assert self.send(app, cluster) == \
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"

    def test_the_setting_can_force_a_numbering(self, config, cluster):
        from app import create_app

        forced = create_app({**config, "SEP_STYLE_NUMBERING": "head"}, environ={})
        # misread as CHATGLM, exactly what a HEAD server does with this worker
        assert self.send(forced, cluster).startswith("<|im_start|>system\nS<|im_end|>[Round 0]")
