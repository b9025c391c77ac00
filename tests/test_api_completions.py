
import pytest
from responses import matchers

from tests.fakes import MODEL, VICUNA, WORKER, frames, text_frames
from tests.test_api_chat import sse_events

COMPLETIONS = "/v1/completions"


def complete(client, **body):
    return client.post(COMPLETIONS, json={"model": MODEL, "prompt": "Once upon", **body})


def ready(cluster, prompts=0, prompt_tokens=5, context=2048, conv=VICUNA):
    """prompts: how many /count_token calls to expect (none when max_tokens surely fits the context)."""
    cluster.serves(MODEL)
    cluster.routes()
    cluster.template(conv)
    cluster.context(context)
    for _ in range(prompts):
        cluster.counts(prompt_tokens)


def test_payload_is_the_raw_prompt_with_openai_defaults(client, cluster):
    ready(cluster)
    cluster.generates(payload={
        "model": MODEL, "prompt": "Once upon", "temperature": 1.0, "logprobs": None, "top_p": 1.0, "top_k": -1,
        "presence_penalty": 0.0, "frequency_penalty": 0.0, "max_new_tokens": 16, "echo": False,
        "stop_token_ids": None, "stop": []})
    body = complete(client).get_json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"] == [{"index": 0, "text": "Hello there", "logprobs": None, "finish_reason": "stop"}]


def test_echo_logprobs_best_of_and_beam_search_are_forwarded(client, cluster):
    ready(cluster)
    logprobs = {"text_offset": [0], "token_logprobs": [None], "tokens": ["Once"], "top_logprobs": [{}],
                "extra": "dropped"}
    cluster.generates("Once upon a time", logprobs=logprobs)
    body = complete(client, echo=True, logprobs=1, best_of=2, use_beam_search=True, max_tokens=4).get_json()
    sent = cluster.sent("/worker_generate")[0]
    assert (sent["echo"], sent["logprobs"], sent["best_of"], sent["use_beam_search"]) == (True, 1, 2, True)
    assert body["choices"][0]["logprobs"] == {"text_offset": [0], "token_logprobs": [None], "tokens": ["Once"],
                                              "top_logprobs": [{}]}


def test_several_prompts_and_n_number_choices_prompt_major(client, cluster, upstream):
    ready(cluster, prompts=2, context=24)  # small enough that 16 max_tokens might not fit: every prompt counted
    for prompt, text in (("p one", "A"), ("p two", "B")):
        upstream.post(f"{WORKER}/worker_generate", match=[matchers.json_params_matcher({"prompt": prompt},
                                                                                      strict_match=False)],
                      json={"text": text, "error_code": 0, "finish_reason": "length",
                            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
    body = complete(client, prompt=["p one", "p two"], n=2).get_json()
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "A"), (1, "A"), (2, "B"), (3, "B")]
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22}
    assert len(cluster.sent("/count_token")) == 2  # each prompt counted once, not once per choice
    assert len(cluster.sent("/worker_generate")) == 4


def test_with_a_seed_each_choice_of_a_prompt_gets_its_own(client, cluster):
    ready(cluster, prompts=2, context=24)
    cluster.generates()
    complete(client, prompt=["p one", "p two"], n=2, seed=100, stream=False)
    seeds = sorted((sent["prompt"], sent["seed"]) for sent in cluster.sent("/worker_generate"))
    assert seeds == [("p one", 100), ("p one", 101), ("p two", 100), ("p two", 101)]


def test_every_prompt_is_checked_against_the_context_before_generating(client, cluster, upstream):
    ready(cluster, prompts=0, context=20)
    cluster.counts(10)
    cluster.counts(60)
    response = complete(client, prompt=["short", "long"], max_tokens=10)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"]["code"] == "context_length_exceeded" and body["error"]["param"] == "prompt"
    assert cluster.sent("/worker_generate") == []


def test_template_stop_strings_apply_to_raw_completions(client, cluster):
    ready(cluster, conv={**VICUNA, "stop_str": "###", "stop_token_ids": [2]})
    cluster.generates()
    complete(client, stop="END")
    sent = cluster.sent("/worker_generate")[0]
    assert (sent["stop"], sent["stop_token_ids"]) == (["END", "###"], [2])


def test_streamed_choices_have_global_indexes_and_usage(client, cluster, upstream):
    ready(cluster)
    for prompt, texts in (("p one", ["a", "ab"]), ("p two", ["x", "xy"])):
        for _ in range(2):
            upstream.post(f"{WORKER}/worker_generate_stream", body=text_frames(texts, prompt_tokens=5),
                          match=[matchers.json_params_matcher({"prompt": prompt}, strict_match=False)])
    events = sse_events(complete(client, prompt=["p one", "p two"], n=2, stream=True,
                                 stream_options={"include_usage": True}))[:-1]
    texts = {}
    for event in events[:-1]:
        assert event["object"] == "text_completion" and event["usage"] is None
        choice = event["choices"][0]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {0: "ab", 1: "ab", 2: "xy", 3: "xy"}
    assert events[-1]["choices"] == [] and events[-1]["usage"] == {  # the workers' counts: 5 per prompt
        "prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}
    assert all("best_of" not in sent for sent in cluster.sent("/worker_generate_stream"))


def test_streamed_logprobs_are_per_chunk_not_cumulative(client, cluster):
    ready(cluster)
    lp = {"text_offset": [0, 1], "token_logprobs": [-0.1, -0.2], "tokens": ["a", "b"], "top_logprobs": [{}, {}]}
    cluster.streams(frames({"text": "a", "error_code": 0, "logprobs": {k: v[:1] for k, v in lp.items()}},
                           {"text": "ab", "error_code": 0, "logprobs": lp, "finish_reason": "length"}))
    events = sse_events(complete(client, stream=True, logprobs=0))[:-1]
    assert [e["choices"][0]["logprobs"]["tokens"] for e in events] == [["a"], ["b"]]


@pytest.mark.parametrize("body, param", [
    ({"prompt": []}, "prompt"), ({"prompt": [[]]}, "prompt"), ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": None}, "prompt"), ({"suffix": "tail"}, "suffix"), ({"logprobs": 6}, "logprobs"),
    ({"best_of": 1, "n": 2}, "best_of"), ({"best_of": 2, "stream": True}, "best_of"),
    ({"use_beam_search": True, "stream": True}, "use_beam_search"), ({"max_tokens": 0}, "max_tokens"),
    ({"echo": "yes"}, "echo")])
def test_invalid_requests_are_400_naming_the_field(client, body, param):
    response = client.post(COMPLETIONS, json={"model": MODEL, "prompt": "x", **body})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == param


def test_empty_suffix_and_null_max_tokens_are_fine(client, cluster):
    ready(cluster)
    cluster.generates()
    assert complete(client, suffix="", max_tokens=None).status_code == 200
    assert cluster.sent("/worker_generate")[0]["max_new_tokens"] == 16


class FakeEncoding:
    name = "fake_base"

    def decode(self, ids):
        if any(i >= 100 for i in ids):
            raise KeyError(ids)
        return " ".join(f"t{i}" for i in ids)


@pytest.fixture
def fake_tiktoken(monkeypatch):
    import tiktoken

    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda model: (_ for _ in ()).throw(KeyError(model)))
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: FakeEncoding())


def test_token_id_prompts_are_decoded_to_text(client, cluster, fake_tiktoken):
    ready(cluster)
    cluster.generates()
    cluster.generates()
    assert complete(client, prompt=[[1, 2], [3]]).status_code == 200
    assert sorted(p["prompt"] for p in cluster.sent("/worker_generate")) == ["t1 t2", "t3"]


def test_unknown_token_ids_are_400(client, cluster, fake_tiktoken):
    cluster.serves(MODEL)
    cluster.routes()
    response = complete(client, prompt=[1, 999])
    assert response.status_code == 400 and "vocabulary" in response.get_json()["message"]


def test_token_ids_when_tiktoken_cannot_load_its_files_are_a_clear_400(client, cluster, monkeypatch):
    import tiktoken

    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda model: (_ for _ in ()).throw(KeyError(model)))
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    cluster.serves(MODEL)
    cluster.routes()
    response = complete(client, prompt=[1, 2])
    assert response.status_code == 400
    assert "TIKTOKEN_CACHE_DIR" in response.get_json()["message"]
    assert response.get_json()["error"]["param"] == "prompt"
