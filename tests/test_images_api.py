"""Images through POST /v1/chat/completions: the worker's payload and prompt, routing to multimodal models only,
and the parts refused (each a 400 naming messages[i].content[j])."""
import json
import logging

import pytest
from responses import matchers

from tests.fakes import MODEL, VICUNA, text_frames
from tests.image_samples import b64, data_url, image_bytes, image_part
from tests.test_prompt import QWEN

CHAT = "/v1/chat/completions"
SYSTEM = VICUNA["system_message"]
PNG = image_bytes("image/png")
JPEG = image_bytes("image/jpeg", size=(5, 5))
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def post(client, content, model=MODEL, **body):
    return client.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": content}], **body})


def error(response, status=400):
    assert response.status_code == status, response.get_json()
    return response.get_json()["error"]


def vision_ready(cluster, **kwargs):
    cluster.multimodal(MODEL)
    cluster.chat_ready(**kwargs)


class TestTheWorkerGetsImages:
    def test_payload_and_prompt_for_a_data_url_are_exact(self, client, cluster):
        vision_ready(cluster, counted=False)
        cluster.generates(payload={
            "model": MODEL, "prompt": f"{SYSTEM} USER: $$<image>$$<image>\nWhat is this? ASSISTANT:",
            "temperature": 1.0, "logprobs": None, "top_p": 1.0, "top_k": -1, "presence_penalty": 0.0,
            "frequency_penalty": 0.0, "max_new_tokens": 10, "echo": False, "stop_token_ids": None,
            "images": [b64(PNG)], "stop": []})
        response = post(client, [{"type": "text", "text": "What is this?"}, image_part(data_url(data=PNG))],
                        max_tokens=10)
        assert response.status_code == 200, response.get_json()
        # FastChat's key order: images right after stop_token_ids.
        assert list(cluster.sent("/worker_generate")[0])[10:13] == ["stop_token_ids", "images", "stop"]

    def test_several_images_in_several_messages_keep_their_order(self, client, cluster):
        vision_ready(cluster)
        cluster.generates()
        client.post(CHAT, json={"model": MODEL, "messages": [
            {"role": "user", "content": [image_part(data_url(data=PNG)), {"type": "text", "text": "a"},
                                         {"type": "image_url", "image_url": data_url("image/jpeg", JPEG)}]},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": [{"type": "text", "text": "b"}, image_part(data_url(data=PNG))]}]})
        sent = cluster.sent("/worker_generate")[0]
        assert sent["images"] == [b64(PNG), b64(JPEG), b64(PNG)]
        assert sent["prompt"] == (f"{SYSTEM} USER: $$<image>$$$$<image>$$<image>\n<image>\na ASSISTANT: two</s>"
                                  "USER: $$<image>$$<image>\nb ASSISTANT:")

    def test_a_stream_sends_the_images_too(self, client, cluster):
        vision_ready(cluster)
        cluster.streams(text_frames(["Hi"]))
        response = post(client, [image_part(data_url(data=PNG), detail="low")], stream=True)
        assert response.status_code == 200
        response.get_data()
        assert cluster.sent("/worker_generate_stream")[0]["images"] == [b64(PNG)]

    def test_text_only_content_lists_send_no_images_and_never_ask_about_multimodal(self, client, cluster):
        cluster.chat_ready()
        cluster.generates()
        post(client, [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
        sent = cluster.sent("/worker_generate")[0]
        assert "images" not in sent and sent["prompt"].endswith("USER: a\nb ASSISTANT:")

    def test_images_survive_tool_rendering_and_results_merged_into_their_turn(self, client, cluster):
        cluster.multimodal(MODEL)
        cluster.serves(MODEL)
        cluster.routes()
        cluster.template(QWEN)  # CHATML, with the hermes tool format
        cluster.context()
        cluster.counts()
        cluster.generates()
        call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        response = client.post(CHAT, json={"model": MODEL, "tools": TOOLS, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "look"}, image_part(data_url(data=PNG))]},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "user", "content": [image_part(data_url("image/jpeg", JPEG)), {"type": "text", "text": "and?"}]}]})
        assert response.status_code == 200, response.get_json()
        sent = cluster.sent("/worker_generate")[0]
        assert sent["images"] == [b64(PNG), b64(JPEG)]
        # Each user turn starts with its images; the tool result and the next user message share one turn, which
        # carries that message's image.
        assert sent["prompt"].endswith(
            "<|im_start|>user\n$$<image>$$<image>\nlook<|im_end|>\n<|im_start|>assistant\n<tool_call>\n"
            '{"name": "f", "arguments": {}}\n</tool_call><|im_end|>\n<|im_start|>user\n$$<image>$$<image>\n'
            "<tool_response>\nsunny\n</tool_response>\n\nand?<|im_end|>\n<|im_start|>assistant\n")


class TestRouting:
    def test_a_model_that_is_not_multimodal_is_400_naming_the_first_image_part(self, client, cluster):
        cluster.multimodal("other-model")
        cluster.serves(MODEL)
        body = error(post(client, [{"type": "text", "text": "x"}, image_part(data_url(data=PNG)),
                                   image_part(data_url(data=PNG))]))
        assert body["param"] == "messages[0].content[1]"
        assert body["message"] == (f"The model `{MODEL}` does not accept image input (its workers did not "
                                   "register as multimodal).")
        assert cluster.sent("/worker_generate") == []

    def test_an_unknown_model_with_images_is_still_404(self, client, cluster):
        cluster.multimodal()
        cluster.serves("other")
        assert error(post(client, [image_part(data_url(data=PNG))], model="nope"), 404)["code"] == "model_not_found"

    def test_the_multimodal_list_is_cached_like_the_model_list(self, client, cluster):
        listing = cluster.multimodal(MODEL)
        cluster.chat_ready()
        cluster.generates()
        post(client, [image_part(data_url(data=PNG))])
        cluster.counts()
        post(client, [image_part(data_url(data=PNG))])
        assert listing.call_count == 1

    def test_without_a_controller_multimodal_models_says_which_take_images(self, config, upstream):
        from app import create_app

        config.update(WORKER_ADDRESSES=("http://w1.test",), MULTIMODAL_MODELS=("llava",))
        client = create_app(config, environ={}).test_client()
        upstream.post("http://w1.test/worker_get_status",
                      json={"model_names": ["llava", MODEL], "speed": 1, "queue_length": 0})
        upstream.post("http://w1.test/worker_get_conv_template", json={"conv": VICUNA})
        upstream.post("http://w1.test/model_details", json={"context_length": None})
        upstream.post("http://w1.test/worker_generate", json={"text": "ok", "error_code": 0},
                      match=[matchers.json_params_matcher({"images": [b64(PNG)]}, strict_match=False)])
        assert post(client, [image_part(data_url(data=PNG))], model="llava").status_code == 200
        assert error(post(client, [image_part(data_url(data=PNG))]))["param"] == "messages[0].content[0]"


class TestTemplates:
    @pytest.mark.parametrize("sep_style, name", [(7, "llama-2"), (8, "llama-3"), (21, "gemma")])
    def test_a_template_that_cannot_place_images_is_400_naming_the_part(self, client, cluster, sep_style, name):
        cluster.multimodal(MODEL)
        cluster.serves(MODEL)
        cluster.routes()
        cluster.template({**VICUNA, "name": name, "sep_style": sep_style})
        body = error(post(client, [{"type": "text", "text": "x"}, image_part(data_url(data=PNG))]))
        assert body["param"] == "messages[0].content[1]"
        assert f"The conversation template '{name}' cannot place images" in body["message"]

    def test_the_default_style_keeps_only_the_text(self, client, cluster):
        cluster.multimodal(MODEL)
        cluster.serves(MODEL)
        cluster.routes()
        cluster.template({**VICUNA, "name": "api_based_default", "system_message": "", "sep_style": 23,
                          "sep": None, "sep2": None})
        cluster.context()
        cluster.counts()
        cluster.generates()
        post(client, [{"type": "text", "text": "x"}, image_part(data_url(data=PNG))])
        assert cluster.sent("/worker_generate")[0]["prompt"] == "\nUSER: <image>\nx\nASSISTANT:"


REFUSED = [
    ("system message", [{"role": "system", "content": [image_part(data_url(data=PNG))]},
                        {"role": "user", "content": "x"}], "messages[0].content[0]", "unsupported_parameter",
     "Images are accepted only in user messages, not in system messages."),
    ("assistant message", [{"role": "user", "content": "x"},
                           {"role": "assistant", "content": [{"type": "text", "text": "a"},
                                                             image_part(data_url(data=PNG))]}],
     "messages[1].content[1]", "unsupported_parameter", "not in assistant messages"),
    ("tool message", [{"role": "user", "content": "x"},
                      {"role": "assistant", "content": None, "tool_calls": [
                          {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                      {"role": "tool", "tool_call_id": "call_1", "content": [image_part(data_url(data=PNG))]}],
     "messages[2].content[0]", "unsupported_parameter", "not in tool messages"),
    ("file url", [{"role": "user", "content": [image_part("file:///etc/passwd")]}], "messages[0].content[0]",
     "unsupported_parameter", "local paths, file: and other schemes are never read"),
    ("local path", [{"role": "user", "content": [image_part("/etc/passwd.png")]}], "messages[0].content[0]",
     "unsupported_parameter", "local paths, file: and other schemes are never read"),
    ("other scheme", [{"role": "user", "content": [image_part("ftp://example.com/x.png")]}],
     "messages[0].content[0]", "unsupported_parameter", "never read"),
    ("http when fetching is off", [{"role": "user", "content": [
        {"type": "text", "text": "x"}, image_part("https://example.com/cat.png")]}], "messages[0].content[1]",
     "unsupported_parameter", "This gateway does not fetch image URLs"),
    ("bad base64", [{"role": "user", "content": [image_part("data:image/png;base64,iVBOR*w0KGgo=")]}],
     "messages[0].content[0]", "invalid_image_format", "not valid base64"),
    ("base64 with whitespace", [{"role": "user", "content": [
        image_part(data_url(data=PNG)[:40] + "\n" + data_url(data=PNG)[40:])]}], "messages[0].content[0]",
     "invalid_image_format", "not valid base64"),
    ("svg media type", [{"role": "user", "content": [image_part("data:image/svg+xml;base64,PHN2Zz4=")]}],
     "messages[0].content[0]", "invalid_image_format", "with type one of image/png"),
    ("not base64 encoded", [{"role": "user", "content": [image_part("data:image/png,rawbytes")]}],
     "messages[0].content[0]", "invalid_image_format", "data:<type>;base64,<data>"),
    ("jpeg bytes declared png", [{"role": "user", "content": [image_part(data_url("image/png", JPEG))]}],
     "messages[0].content[0]", "invalid_image_format", "not a valid image/png image"),
    ("text declared gif", [{"role": "user", "content": [image_part(data_url("image/gif", b"hello, world"))]}],
     "messages[0].content[0]", "invalid_image_format", "not a valid image/gif image"),
    ("bad detail", [{"role": "user", "content": [image_part(data_url(data=PNG), detail="ultra")]}],
     "messages[0].content[0]", None, "detail must be auto, low or high"),
    ("no url", [{"role": "user", "content": [{"type": "image_url", "image_url": {"detail": "low"}}]}],
     "messages[0].content[0]", None, "Must be an image part"),
]


@pytest.mark.parametrize("messages, param, code, text", [case[1:] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
def test_refused_parts_are_400_naming_the_part(client, messages, param, code, text):
    body = error(client.post(CHAT, json={"model": MODEL, "messages": messages}))
    assert body["param"] == param
    assert body["code"] == code
    assert text in body["message"]
    assert body["type"] == "invalid_request_error"


class TestLimits:
    def test_too_many_images_names_the_first_one_over(self, config, upstream):
        from app import create_app

        config["IMAGE_MAX_COUNT"] = 2
        client = create_app(config, environ={}).test_client()
        body = error(client.post(CHAT, json={"model": MODEL, "messages": [
            {"role": "user", "content": [image_part(data_url(data=PNG))]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "x"}, image_part(data_url(data=PNG)),
                                         image_part(data_url(data=PNG))]}]}))
        assert (body["param"], body["code"]) == ("messages[2].content[2]", "too_many_images")
        assert body["message"].endswith("At most 2 images are accepted in one request (IMAGE_MAX_COUNT).")

    def test_too_many_bytes(self, config, upstream):
        from app import create_app

        config["IMAGE_MAX_BYTES"] = len(PNG) - 1
        body = error(post(create_app(config, environ={}).test_client(), [image_part(data_url(data=PNG))]))
        assert (body["param"], body["code"]) == ("messages[0].content[0]", "image_too_large")
        assert f"larger than {len(PNG) - 1} bytes (IMAGE_MAX_BYTES)" in body["message"]

    def test_too_many_pixels(self, config, upstream):
        from app import create_app

        config["IMAGE_MAX_PIXELS"] = 100
        body = error(post(create_app(config, environ={}).test_client(),
                          [image_part(data_url(data=image_bytes(size=(11, 10))))]))
        assert (body["param"], body["code"]) == ("messages[0].content[0]", "image_too_large")
        assert "11x10 pixels, more than 100 (IMAGE_MAX_PIXELS)" in body["message"]

    def test_exactly_at_the_limits_is_accepted(self, config, upstream):
        from app import create_app
        from tests.fakes import FakeCluster

        png = image_bytes(size=(11, 10))
        config.update(IMAGE_MAX_PIXELS=110, IMAGE_MAX_BYTES=len(png), IMAGE_MAX_COUNT=1)
        cluster = FakeCluster(upstream)
        vision_ready(cluster)
        cluster.generates()
        response = post(create_app(config, environ={}).test_client(), [image_part(data_url(data=png))])
        assert response.status_code == 200, response.get_json()

    def test_a_body_over_the_limit_is_413_before_any_image_is_decoded(self, config, upstream):
        from app import create_app

        config["MAX_REQUEST_BODY_BYTES"] = 1000
        response = post(create_app(config, environ={}).test_client(), [image_part(data_url(data=b"x" * 2000))])
        assert response.status_code == 413


class TestLogs:
    def test_request_body_logging_shows_placeholders_not_image_data(self, config, upstream, caplog):
        from app import create_app
        from tests.fakes import FakeCluster

        config["LOG_REQUEST_BODIES"] = True
        cluster = FakeCluster(upstream)
        vision_ready(cluster)
        cluster.generates()
        with caplog.at_level(logging.INFO):
            response = post(create_app(config, environ={}).test_client(),
                            [{"type": "text", "text": "see"}, image_part(data_url(data=PNG))])
        assert response.status_code == 200
        assert f"<image/png {len(PNG)} bytes>" in caplog.text
        assert b64(PNG)[:24] not in caplog.text and "base64" not in caplog.text

    def test_the_access_log_has_no_image_data(self, client, cluster, caplog):
        vision_ready(cluster)
        cluster.generates()
        with caplog.at_level(logging.INFO, logger="app.access"):
            post(client, [image_part(data_url(data=PNG))])
        lines = [record.getMessage() for record in caplog.records if record.name == "app.access"]
        assert len(lines) == 1 and "status=200" in lines[0]
        assert b64(PNG)[:24] not in caplog.text

    def test_a_refused_image_is_not_echoed_in_the_error(self, client):
        url = data_url("image/png", JPEG)
        body = error(post(client, [image_part(url)]))
        assert b64(JPEG)[:24] not in json.dumps(body)
