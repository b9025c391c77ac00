"""The simulated worker as a vision worker (``--multimodal``, bench/simworker/vision.py): it registers as multimodal,
checks images and ``$$<image>$$`` placeholders as FastChat's sglang_worker does (the same error frame), describes what
it received in its reply and on /sim/images; a plain worker ignores images, as FastChat's model_worker does."""
from __future__ import annotations

import base64
import hashlib
import io
import json

import pytest
from PIL import Image

from bench.simworker import vision
from bench.simworker.generation import Generation
from bench.simworker.scripted import JSON_OBJECT
from tests.test_simulated_worker import SERVER_ERROR_MSG, FakeController, frames_of, free_port, gen_payload, \
    launch, wait_for

e2e = pytest.mark.e2e  # the tests that start simulated workers (see setup.cfg)
COUNT_MISMATCH = ("The number of images passed in does not match the number of <image> tokens in the prompt!")


def png(color=(200, 30, 30), size=(3, 2)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


RED, BLUE = png(), png((0, 0, 255), (4, 4))
RED64, BLUE64 = base64.b64encode(RED).decode(), base64.b64encode(BLUE).decode()


def vicuna_prompt(n: int, text: str = "What is in the picture?") -> str:
    """What FastChat HEAD's vicuna_v1.1 template renders for one user message with n images."""
    return ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
            "detailed, and polite answers to the user's questions. USER: " + "$$<image>$$" * n + "<image>\n" * n
            + text + " ASSISTANT:")


def short_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


# -- vision.py on its own -------------------------------------------------------------------------------------------
def test_decoded_is_strict_base64_or_a_base64_data_url():
    assert vision.decoded(RED64) == RED
    assert vision.decoded("data:image/png;base64," + RED64) == RED
    for bad in (RED64[:-1], RED64 + "!", "not base64 at all", "", "data:image/png," + RED64,
                "http://127.0.0.1/x.png", None, 12):
        assert vision.decoded(bad) is None, bad


def test_check_counts_placeholders_like_sglang_worker():
    assert vision.check(vicuna_prompt(2), [RED64, BLUE64]) == [RED, BLUE]
    assert vision.check("no images", []) == []
    for prompt, images in ((vicuna_prompt(1), [RED64, BLUE64]), (vicuna_prompt(2), [RED64]),
                           (vicuna_prompt(1), []), ("<image>\nonly the literal token", [RED64])):
        with pytest.raises(vision.Refused) as refused:
            vision.check(prompt, images)
        assert refused.value.frame == {"text": f"{SERVER_ERROR_MSG}\n\n({COUNT_MISMATCH})", "error_code": 50001}
    for images in ([RED64[:-2]], ["http://127.0.0.1:1/red.png"], [7]):
        with pytest.raises(vision.Refused, match="image 0 is not base64"):
            vision.check(vicuna_prompt(1), images)
    with pytest.raises(vision.Refused, match="images must be a list"):
        vision.check(vicuna_prompt(1), RED64)


def test_description_and_report_name_count_size_type_and_digest():
    text = vision.description(vicuna_prompt(2), [RED, BLUE])
    assert text == (f"I received 2 images for 2 placeholders. image 1: {len(RED)} bytes png sha256:{short_sha(RED)}; "
                    f"image 2: {len(BLUE)} bytes png sha256:{short_sha(BLUE)}.")
    assert vision.image_type(b"\xff\xd8\xff\xe0rest") == "jpeg" and vision.image_type(b"GIF89a") == "gif"
    assert vision.image_type(b"RIFF\0\0\0\0WEBPVP8 ") == "webp" and vision.image_type(b"text") is None
    report = vision.report({"prompt": vicuna_prompt(1), "images": [RED64, "http://x/y.png"]})
    assert report == {"prompt": vicuna_prompt(1), "placeholders": 1, "has_images": True, "images": [
        {"form": "base64", "bytes": len(RED), "type": "png", "sha256": hashlib.sha256(RED).hexdigest()},
        {"form": "url", "bytes": None, "type": None, "sha256": None}]}
    assert vision.report({"prompt": "text"}) == {"prompt": "text", "placeholders": 0, "has_images": False,
                                                 "images": []}


# -- the worker ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim-images")
    started = {"vision": launch(tmp, "--multimodal", "--model-names", "sim-vision"),
               "plain": launch(tmp, "--model-names", "sim-plain")}
    yield started
    for sim in started.values():
        sim.stop()


@pytest.fixture
def vision_sim(sims):
    sims["vision"].reset()
    return sims["vision"]


@pytest.fixture
def plain_sim(sims):
    sims["plain"].reset()
    return sims["plain"]


def image_payload(n_placeholders: int, images: list, **kw) -> dict:
    return gen_payload(vicuna_prompt(n_placeholders), images=images, max_new_tokens=200, **kw)


@e2e
def test_vision_worker_describes_the_images_in_whole_and_streamed_replies(vision_sim):
    payload = image_payload(2, [RED64, "data:image/png;base64," + BLUE64])
    expected = vision.description(payload["prompt"], [RED, BLUE])
    assert f"sha256:{short_sha(RED)}" in expected and f"sha256:{short_sha(BLUE)}" in expected
    whole = vision_sim.post("/worker_generate", payload).json()
    assert whole["text"] == expected and whole["error_code"] == 0 and whole["finish_reason"] == "stop"
    frames = frames_of(vision_sim.post("/worker_generate_stream", payload).content)
    assert len(frames) > 2 and frames[-1]["text"] == expected and frames[-1]["finish_reason"] == "stop"
    assert all(expected.startswith(frame["text"]) for frame in frames)
    # Cut at max_new_tokens like any scripted reply.
    short = vision_sim.post("/worker_generate", {**payload, "max_new_tokens": 2}).json()
    assert expected.startswith(short["text"]) and short["text"] != expected and short["finish_reason"] == "length"


@e2e
def test_received_images_are_logged_and_reported_without_their_data(vision_sim):
    payload = image_payload(1, [RED64])
    vision_sim.post("/worker_generate", payload)
    vision_sim.post("/worker_generate", gen_payload("plain text"))
    assert vision_sim.stats()["generate_payloads"] == [payload, gen_payload("plain text")]
    reply = vision_sim.post("/sim/images")
    assert RED64 not in reply.text
    assert reply.json() == {"generate": [
        {"prompt": payload["prompt"], "placeholders": 1, "has_images": True,
         "images": [{"form": "base64", "bytes": len(RED), "type": "png", "sha256": hashlib.sha256(RED).hexdigest()}]},
        {"prompt": "plain text", "placeholders": 0, "has_images": False, "images": []}]}
    assert vision_sim.stats()["worker"]["multimodal"] is True
    vision_sim.reset()
    assert vision_sim.post("/sim/images").json() == {"generate": []}


@e2e
@pytest.mark.parametrize("n_placeholders, images, message", [
    (1, [RED64, BLUE64], COUNT_MISMATCH),
    (2, [RED64], COUNT_MISMATCH),
    (1, [], COUNT_MISMATCH),
    (0, [RED64], COUNT_MISMATCH),
    (1, ["not-base64!"], "image 0 is not base64 (base64); the simulated worker fetches nothing"),
    (1, ["http://127.0.0.1:9/red.png"], "image 0 is not base64 (url); the simulated worker fetches nothing"),
])
def test_vision_worker_refuses_with_sglang_workers_error_frame(vision_sim, n_placeholders, images, message):
    payload = image_payload(n_placeholders, images)
    if not images:
        del payload["images"]
    frame = {"text": f"{SERVER_ERROR_MSG}\n\n({message})", "error_code": 50001}
    assert vision_sim.post("/worker_generate", payload).json() == frame
    reply = vision_sim.post("/worker_generate_stream", payload)
    assert reply.status_code == 200 and frames_of(reply.content) == [frame]
    assert len(vision_sim.stats()["generate_payloads"]) == 2  # what was refused is still logged


@e2e
def test_text_requests_get_the_same_filler_from_both_workers(vision_sim, plain_sim):
    payload = gen_payload("Tell me a story", max_new_tokens=8)
    assert vision_sim.post("/worker_generate", payload).json() == plain_sim.post("/worker_generate", payload).json()
    assert frames_of(vision_sim.post("/worker_generate_stream", payload).content) == \
        frames_of(plain_sim.post("/worker_generate_stream", payload).content)


@e2e
def test_plain_worker_ignores_images_like_fastchats_model_worker(plain_sim):
    payload = image_payload(2, [RED64])  # a mismatch a vision worker would refuse
    reply = plain_sim.post("/worker_generate", payload).json()
    assert reply["error_code"] == 0 and "received" not in reply["text"]
    text_only = {key: value for key, value in payload.items() if key != "images"}
    assert reply == plain_sim.post("/worker_generate", text_only).json()
    assert plain_sim.post("/sim/images").json()["generate"][0]["images"][0]["sha256"] == \
        hashlib.sha256(RED).hexdigest()
    assert plain_sim.stats()["worker"]["multimodal"] is False


@e2e
def test_payload_log_size(tmp_path):
    sim = launch(tmp_path, "--payload-log", "0")
    try:
        sim.post("/worker_generate", gen_payload())
        sim.post("/worker_get_embeddings", {"input": ["a"]})
        stats = sim.stats()
        assert stats["generate_payloads"] == [] and stats["embedding_payloads"] == []
        assert stats["requests"]["/worker_generate"] == 1
    finally:
        sim.stop()
    bad = launch(tmp_path, "--payload-log", "-1", wait=False)
    assert bad.proc.wait(timeout=10) == 2 and "--payload-log must be >= 0" in bad.log()


@e2e
def test_multimodal_registration_and_re_registration(tmp_path):
    port = free_port()
    controller = FakeController(port)  # answers the first heartbeat with exist:false
    sim = launch(tmp_path, "--multimodal", "--controller-address", f"http://127.0.0.1:{port}",
                 "--heartbeat-interval", "0.2", "--model-names", "vision-model")
    try:
        assert wait_for(lambda: controller.paths().count("/register_worker") >= 2, timeout=5)
        with controller.lock:
            registrations = [body for path, body in controller.calls if path == "/register_worker"]
    finally:
        sim.stop()
        controller.close()
    assert registrations[0] == {"worker_name": sim.url, "check_heart_beat": True,
                                "worker_status": {"model_names": ["vision-model"], "speed": 1, "queue_length": 0},
                                "multimodal": True}
    assert all(body["multimodal"] is True for body in registrations)


def test_a_scripted_reply_wins_over_the_description():
    described = vision.description(vicuna_prompt(1), [RED])
    asked = Generation({"prompt": vicuna_prompt(1, JSON_OBJECT + "."), "max_new_tokens": 200}, 16,
                       fallback=described)
    asked.run_to_end()
    assert list(json.loads(asked.text)) == ["answer"]
    plain = Generation({"prompt": vicuna_prompt(1), "max_new_tokens": 200}, 16, fallback=described)
    plain.run_to_end()
    assert plain.text == described and plain.finish_reason == "stop"
