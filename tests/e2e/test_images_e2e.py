"""Images end to end: the official openai SDK -> the gateway under real gunicorn -> simulated vision workers
(``--multimodal``, bench/simworker/vision.py: they check images and ``$$<image>$$`` placeholders as FastChat's
sglang_worker does and describe what they got) and a plain one, first through FastChat's real controller (which
learns which models are multimodal from the workers' registrations: /list_multimodal_models), then without a
controller (WORKER_ADDRESSES + MULTIMODAL_MODELS). The workers report what reached them (/sim/stats, /sim/images),
so the tests assert on the exact ``images`` and prompt the gateway sent. Then fetching of http URLs
(IMAGE_FETCH_HOSTS) from a local http.server, with IMAGE_FETCH_ALLOW_PRIVATE and without."""
from __future__ import annotations

import base64
import hashlib
import http.server
import io
import random
import re
import threading

import openai
import pytest
import requests
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from harness.fastchat import wait_registered
from harness.gateway import Gateway
from harness.procs import wait_until
from harness.simworkers import SimulatedWorker

KEY = "sk-images"
VICUNA, CHATML, PLAIN = "sim-vision", "sim-vision-chatml", "sim-plain"
VISION = (VICUNA, CHATML)
TEMPLATES = {VICUNA: "vicuna_v1.1", CHATML: "qwen-7b-chat", PLAIN: "vicuna_v1.1"}
QUESTION = "What is in this image?"
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                 "helpful, detailed, and polite answers to the user's questions.")


def png(color=(200, 30, 30), size=(3, 2)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def noisy_png(size=48) -> bytes:
    """A PNG that does not compress: its base64 is a long run the logs must not hold."""
    noise = random.Random(14).randbytes(size * size * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (size, size), noise).save(out, format="PNG")
    return out.getvalue()


def padded_png(size: int) -> bytes:
    """A 10x10 PNG of about `size` bytes: the rest is an uncompressed text chunk of noise."""
    info = PngInfo()
    info.add_text("pad", random.Random(size).randbytes(max(0, size - 93) // 2).hex())
    out = io.BytesIO()
    Image.new("RGB", (10, 10), (1, 2, 3)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


RED, BLUE = png(), png((0, 0, 255), (5, 4))
b64 = base64.b64encode


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{b64(data).decode()}"


def image_part(url: str, detail: str | None = None) -> dict:
    return {"type": "image_url", "image_url": {"url": url, **({"detail": detail} if detail else {})}}


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def user_turn(text: str, images: int) -> str:
    """A user message with `images` images as FastChat HEAD renders it: the template's "$$<image>$$" per image
    (ADD_COLON_TWO, CHATML: the tuple rendering), then get_gen_params' "<image>\\n" per image, then the text."""
    return "$$<image>$$" * images + "<image>\n" * images + text


def expected_prompt(model: str, turns: list[tuple[str, str | None]]) -> str:
    """The prompt of (user, assistant) turns, the last assistant None, in the template `model`'s worker serves
    (fastchat-protocol.md §6.3, spelled out here rather than taken from the gateway)."""
    if TEMPLATES[model] == "vicuna_v1.1":  # ADD_COLON_TWO, sep " ", sep2 "</s>"
        prompt = VICUNA_SYSTEM + " "
        for user, assistant in turns:
            prompt += f"USER: {user} " + (f"ASSISTANT: {assistant}</s>" if assistant is not None else "ASSISTANT:")
        return prompt
    prompt = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"  # CHATML, sep "<|im_end|>"
    for user, assistant in turns:
        prompt += f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        prompt += f"{assistant}<|im_end|>\n" if assistant is not None else ""
    return prompt


def description(*images: bytes) -> str:
    """What a simulated vision worker answers to a prompt with one placeholder per image (bench/simworker/vision)."""
    n = len(images)
    parts = "; ".join(f"image {i + 1}: {len(data)} bytes png sha256:{hashlib.sha256(data).hexdigest()[:12]}"
                      for i, data in enumerate(images))
    return f"I received {n} image{'s' * (n != 1)} for {n} placeholder{'s' * (n != 1)}. {parts}."


def seen(*images: bytes) -> list[dict]:
    """The simulated worker's /sim/images report of `images` received as plain base64."""
    return [{"form": "base64", "bytes": len(data), "type": "png", "sha256": hashlib.sha256(data).hexdigest()}
            for data in images]


# -- the stack ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workers(fastchat_controller, run_dir):
    ctl = fastchat_controller.address
    started = {model: SimulatedWorker(run_dir, "--conv-template", TEMPLATES[model], controller=ctl, model=model,
                                      name=f"sim-images-{model}", multimodal=model in VISION, wait=False)
               for model in TEMPLATES}
    try:
        for model, worker in started.items():
            worker.wait_ready()
            wait_registered(ctl, model)
        yield started
    finally:
        for worker in started.values():
            worker.stop()


@pytest.fixture(scope="module", params=["controller", "no-controller"])
def gateway(request, workers, fastchat_controller, run_dir):
    # Request bodies logged (debugging) and gunicorn's access log on: neither may hold image data.
    logging = {"API_KEYS": KEY, "LOG_REQUEST_BODIES": "1", "GUNICORN_ACCESS_LOG": "-"}
    if request.param == "controller":
        gateway = Gateway(run_dir, name="gateway-images-controller", CONTROLLER_ADDRESS=fastchat_controller.address,
                          **logging)
    else:
        gateway = Gateway(run_dir, name="gateway-images-static", MULTIMODAL_MODELS=",".join(VISION),
                          WORKER_ADDRESSES=",".join(worker.address for worker in workers.values()), **logging)
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def client(gateway):
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0, timeout=30) as client:
        yield client


@pytest.fixture
def sims(workers):
    for worker in workers.values():
        worker.reset()
    return workers


@pytest.fixture(params=VISION)
def model(request):
    return request.param


# -- what the workers receive ---------------------------------------------------------------------------------------
def test_the_controller_lists_the_vision_workers_as_multimodal(fastchat_controller, workers):
    for refreshed in (False, True):  # /refresh_all_workers (GET /v1/models asks for it) keeps the flag
        if refreshed:
            fastchat_controller.post("/refresh_all_workers").raise_for_status()
        listed = fastchat_controller.post("/list_multimodal_models").json()["models"]
        assert set(VISION) <= set(listed) and PLAIN not in listed
        assert PLAIN in fastchat_controller.post("/list_language_models").json()["models"]


def test_an_image_data_url_reaches_the_worker_as_base64_with_its_placeholders(client, sims, model):
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": [text_part(QUESTION), image_part(data_url(RED))]}])
    assert reply.choices[0].message.content == description(RED)
    assert reply.choices[0].finish_reason == "stop"
    (payload,) = sims[model].payloads()
    assert payload["images"] == [b64(RED).decode()]
    assert base64.b64decode(payload["images"][0], validate=True) == RED
    assert payload["prompt"] == expected_prompt(model, [(user_turn(QUESTION, 1), None)])
    assert [report["images"] for report in sims[model].received()] == [seen(RED)]
    assert sims[PLAIN].payloads() == []


def test_two_images_in_either_url_form_keep_their_order(client, sims, model):
    content = [image_part(data_url(BLUE), detail="low"), text_part("Compare"),
               {"type": "image_url", "image_url": data_url(RED)}, text_part("these.")]
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])
    assert reply.choices[0].message.content == description(BLUE, RED)
    (payload,) = sims[model].payloads()
    assert payload["images"] == [b64(BLUE).decode(), b64(RED).decode()]
    assert payload["prompt"] == expected_prompt(model, [(user_turn("Compare\nthese.", 2), None)])


def test_images_of_earlier_turns_are_sent_with_their_placeholders(client, sims, model):
    messages = [{"role": "user", "content": [image_part(data_url(RED)), text_part(QUESTION)]},
                {"role": "assistant", "content": "A red square."},
                {"role": "user", "content": [text_part("And this one?"), image_part(data_url(BLUE))]}]
    reply = client.chat.completions.create(model=model, messages=messages)
    assert reply.choices[0].message.content == description(RED, BLUE)
    (payload,) = sims[model].payloads()
    assert payload["images"] == [b64(RED).decode(), b64(BLUE).decode()]
    assert payload["prompt"] == expected_prompt(
        model, [(user_turn(QUESTION, 1), "A red square."), (user_turn("And this one?", 1), None)])


def test_a_stream_with_an_image(client, sims, model):
    chunks = list(client.chat.completions.create(
        model=model, stream=True,
        messages=[{"role": "user", "content": [text_part(QUESTION), image_part(data_url(RED))]}]))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == description(RED)
    assert chunks[-1].choices[0].finish_reason == "stop"
    (payload,) = sims[model].payloads()
    assert payload["images"] == [b64(RED).decode()]
    assert payload["prompt"] == expected_prompt(model, [(user_turn(QUESTION, 1), None)])


def test_text_only_content_lists_still_work_for_every_model(client, sims):
    for name in (*VISION, PLAIN):
        reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": [text_part("Hi")]}])
        assert reply.choices[0].message.content and "received" not in reply.choices[0].message.content
        (payload,) = sims[name].payloads()
        assert "images" not in payload and "<image>" not in payload["prompt"]


# -- what is refused ------------------------------------------------------------------------------------------------
def assert_refused(client, model: str, content: list, param: str, stream: bool = False) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=model, stream=stream, messages=[
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": content}])
    error = raised.value
    assert error.status_code == 400 and error.type == "invalid_request_error"
    assert error.param == param, error.body
    return error


@pytest.mark.parametrize("stream", [False, True])
def test_an_image_for_a_model_without_vision_is_a_400_naming_the_part(client, sims, stream):
    error = assert_refused(client, PLAIN, [text_part(QUESTION), image_part(data_url(RED))], "messages[1].content[1]",
                           stream=stream)
    assert "image" in error.message.lower()
    assert all(worker.payloads() == [] for worker in sims.values())


@pytest.mark.parametrize("url, code", [
    ("data:image/png;base64," + b64(RED).decode()[:-3] + "!!!", "invalid_image_format"),  # not base64
    (data_url(RED, "image/jpeg"), "invalid_image_format"),  # a PNG declared as JPEG
    (data_url(b"\x89PNG\r\n\x1a\n but then no image at all"), "invalid_image_format"),
    (data_url(RED, "image/bmp"), "invalid_image_format"),
    ("data:image/png," + b64(RED).decode(), "invalid_image_format"),  # not base64-encoded
    ("http://127.0.0.1:9/red.png", "unsupported_parameter"),  # fetching is off
    ("file:///etc/passwd", "unsupported_parameter"),
    ("/etc/hostname.png", "unsupported_parameter"),  # FastChat's load_image would open it
])
def test_bad_image_data_and_urls_are_400s(client, sims, url, code):
    error = assert_refused(client, VICUNA, [image_part(url), text_part(QUESTION)], "messages[1].content[0]")
    assert error.code == code, error.body
    assert all(worker.payloads() == [] for worker in sims.values())


def test_the_logs_hold_no_image_data(client, sims, gateway):
    image = noisy_png()
    encoded = b64(image).decode()
    assert len(encoded) > 5000
    question = "Describe this noisy picture, marker 7f3a."
    content = [text_part(question), image_part(data_url(image))]
    whole = client.chat.completions.create(model=VICUNA, messages=[{"role": "user", "content": content}])
    assert whole.choices[0].message.content == description(image)
    list(client.chat.completions.create(model=VICUNA, messages=[{"role": "user", "content": content}], stream=True))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=PLAIN, messages=[{"role": "user", "content": content}])
    assert [payload["images"] for payload in sims[VICUNA].payloads()] == [[encoded], [encoded]]
    # LOG_REQUEST_BODIES logs the prompts of the two served requests, and the access log a line per request.
    log = wait_until("the gateway's log lines of the three requests",
                     lambda: (text := gateway.proc.log_text()).count(question) >= 2
                     and text.count("/v1/chat/completions") >= 3 and text, timeout=10)
    assert "iVBORw0KGgo" not in log  # how the base64 of every PNG begins
    assert not any(encoded[at:at + 24] in log for at in range(0, len(encoded) - 24, 997))
    assert not re.search(r"[A-Za-z0-9+/]{200,}", log)


# -- the Responses API: input_image parts take the chat path's image rules --------------------------------------------
def test_responses_input_images_reach_the_worker(client, sims, model):
    response = client.responses.create(model=model, instructions="Be brief.", input=[{"role": "user", "content": [
        {"type": "input_text", "text": QUESTION}, {"type": "input_image", "image_url": data_url(RED), "detail": "low"},
        {"type": "input_image", "image_url": data_url(BLUE)}]}])
    assert response.status == "completed" and response.output_text == description(RED, BLUE)
    (payload,) = sims[model].payloads()
    assert payload["images"] == [b64(RED).decode(), b64(BLUE).decode()]
    assert "Be brief." in payload["prompt"] and user_turn(QUESTION, 2) in payload["prompt"]


def test_a_responses_stream_with_an_image(client, sims, model):
    with client.responses.stream(model=model, input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": data_url(RED)}, {"type": "input_text", "text": QUESTION}]}]) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == description(RED)
    (payload,) = sims[model].payloads()
    assert payload["images"] == [b64(RED).decode()]
    assert payload["prompt"] == expected_prompt(model, [(user_turn(QUESTION, 1), None)])


@pytest.mark.parametrize("target, url, code", [
    (PLAIN, data_url(RED), "unsupported_parameter"),  # found while serving: the model has no vision
    (VICUNA, data_url(RED, "image/jpeg"), "invalid_image_format"),  # found validating
    (VICUNA, "file:///etc/passwd", "unsupported_parameter"),
])
def test_responses_image_refusals_name_the_input_part(client, sims, target, url, code):
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=target, instructions="Be brief.", input=[
            {"role": "user", "content": "Hello."},
            {"role": "user", "content": [{"type": "input_text", "text": QUESTION},
                                         {"type": "input_image", "image_url": url}]}])
    assert raised.value.code == code and raised.value.param == "input[1].content[1]", raised.value.body
    assert all(worker.payloads() == [] for worker in sims.values())


# -- fetching http URLs ---------------------------------------------------------------------------------------------
class ImageServer:
    """A local http.server: each path of `files` answers its PNG, /redirect a 302 to /red.png; ``paths`` records
    every GET."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.paths: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.paths.append(self.path)
                if self.path in files:
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(files[self.path])))
                    self.end_headers()
                    self.wfile.write(files[self.path])
                elif self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "/red.png")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_error(404)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def image_server():
    server = ImageServer({"/red.png": RED, "/padded.png": padded_png(3600)})
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def fetching(workers, run_dir):
    """Two gateways fetching from 127.0.0.1: one allowed to reach private addresses, one not."""
    addresses = ",".join(worker.address for worker in workers.values())
    started = {}
    try:
        for name, private in (("private", "true"), ("public-only", "false")):
            started[name] = Gateway(run_dir, name=f"gateway-images-fetch-{name}", API_KEYS=KEY,
                                    WORKER_ADDRESSES=addresses, MULTIMODAL_MODELS=",".join(VISION),
                                    IMAGE_FETCH_HOSTS="127.0.0.1", IMAGE_FETCH_ALLOW_PRIVATE=private,
                                    IMAGE_FETCH_TIMEOUT="2")
        clients = {name: openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0, timeout=30)
                   for name, gateway in started.items()}
        yield clients
        for sdk in clients.values():
            sdk.close()
    finally:
        for gateway in started.values():
            gateway.stop()


def test_an_allowed_url_is_fetched_by_the_gateway_and_sent_as_base64(fetching, sims, image_server, model):
    image_server.paths.clear()
    reply = fetching["private"].chat.completions.create(
        model=model, messages=[{"role": "user", "content": [text_part(QUESTION),
                                                            image_part(f"{image_server.url}/red.png")]}])
    assert reply.choices[0].message.content == description(RED)
    assert image_server.paths == ["/red.png"]
    (payload,) = sims[model].payloads()
    assert payload["images"] == [b64(RED).decode()]
    assert payload["prompt"] == expected_prompt(model, [(user_turn(QUESTION, 1), None)])


@pytest.mark.parametrize("gateway_name, path", [
    ("private", "/redirect"),  # never followed
    ("private", "/missing.png"),  # a 404
    ("public-only", "/red.png"),  # 127.0.0.1 is not a public address
])
def test_refused_fetches_are_400s(fetching, sims, image_server, gateway_name, path):
    image_server.paths.clear()
    error = assert_refused(fetching[gateway_name], VICUNA, [image_part(f"{image_server.url}{path}")],
                           "messages[1].content[0]")
    assert error.code == "invalid_image_url", error.body
    assert image_server.paths == ([] if gateway_name == "public-only" else [path])
    assert all(worker.payloads() == [] for worker in sims.values())


def test_a_host_not_allowed_is_never_asked(fetching, sims, image_server):
    image_server.paths.clear()
    url = f"http://localhost:{image_server.server.server_port}/red.png"
    error = assert_refused(fetching["private"], VICUNA, [image_part(url)], "messages[1].content[0]")
    assert error.code == "invalid_image_url" and "localhost" in error.message
    assert image_server.paths == []
    assert requests.get(url, timeout=5).content == RED  # the server itself would have answered


# -- limits ---------------------------------------------------------------------------------------------------------
LIMITS = {"MAX_REQUEST_BODY_BYTES": "20000", "IMAGE_MAX_BYTES": "4000", "IMAGE_MAX_COUNT": "2",
          "IMAGE_MAX_PIXELS": "1000"}


@pytest.fixture(scope="module")
def limited(workers, run_dir):
    """A gateway with small image and body limits, fetching from 127.0.0.1."""
    gateway = Gateway(run_dir, name="gateway-images-limits", API_KEYS=KEY, MULTIMODAL_MODELS=",".join(VISION),
                      WORKER_ADDRESSES=",".join(worker.address for worker in workers.values()),
                      IMAGE_FETCH_HOSTS="127.0.0.1", IMAGE_FETCH_ALLOW_PRIVATE="true", **LIMITS)
    try:
        with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0, timeout=30) as sdk:
            yield sdk
    finally:
        gateway.stop()


@pytest.mark.parametrize("content, param, code", [
    ([image_part(data_url(padded_png(5000))), text_part(QUESTION)], "messages[1].content[0]", "image_too_large"),
    ([text_part(QUESTION), image_part(data_url(png(size=(40, 30))))], "messages[1].content[1]", "image_too_large"),
    ([image_part(data_url(RED)), image_part(data_url(BLUE)), image_part(data_url(RED))], "messages[1].content[2]",
     "too_many_images"),
])
def test_images_over_the_limits_are_400s(limited, sims, content, param, code):
    error = assert_refused(limited, VICUNA, content, param)
    assert error.code == code, error.body
    assert all(worker.payloads() == [] for worker in sims.values())


def test_image_bytes_count_toward_the_body_limit(limited, sims, image_server):
    # Inline: the body itself is over MAX_REQUEST_BODY_BYTES (each image is within IMAGE_MAX_BYTES).
    with pytest.raises(openai.APIStatusError) as raised:
        limited.chat.completions.create(model=VICUNA, messages=[{"role": "user", "content": [
            text_part(QUESTION), image_part(data_url(padded_png(3900))), image_part(data_url(padded_png(3901))),
            text_part("x" * 12000)]}])
    assert raised.value.status_code == 413 and raised.value.type == "invalid_request_error"
    # Fetched: 3,600 bytes is within IMAGE_MAX_BYTES, but not within what the body leaves of the limit.
    fetched = [text_part(QUESTION), image_part(f"{image_server.url}/padded.png")]
    reply = limited.chat.completions.create(model=VICUNA, messages=[{"role": "user", "content": fetched}])
    assert reply.choices[0].message.content == description(padded_png(3600))
    error = assert_refused(limited, VICUNA, [*fetched, text_part("y" * 17000)], "messages[1].content[1]")
    assert error.code == "image_too_large" and "MAX_REQUEST_BODY_BYTES" in error.message
    assert [payload["images"] for payload in sims[VICUNA].payloads()] == [[b64(padded_png(3600)).decode()]]
