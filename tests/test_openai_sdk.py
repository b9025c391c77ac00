"""The official openai SDK against the app in-process (WSGI transport), upstream faked with `responses`."""
import openai
import pytest

from tests.fakes import CONTROLLER, MODEL, frames, text_frames

try:  # openai >= 3 is built on httpx2; older releases on httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx


@pytest.fixture
def config(config):
    return {**config, "API_KEYS": ("sk-test",)}


@pytest.fixture
def sdk(app, upstream):
    # responses would intercept the SDK's own transport too if it were requests-based; it is not (httpx).
    http_client = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://gateway.test")
    with openai.OpenAI(base_url="http://gateway.test/v1", api_key="sk-test", http_client=http_client,
                       max_retries=0) as client:
        yield client


def test_list_and_retrieve_models(sdk, cluster, upstream):
    upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
    cluster.serves(MODEL)
    assert [m.id for m in sdk.models.list()] == [MODEL]
    assert sdk.models.retrieve(MODEL).id == MODEL


def test_chat_completion(sdk, cluster):
    cluster.chat_ready()
    cluster.generates("Hello there")
    completion = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert completion.choices[0].message.content == "Hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == 7


def test_streamed_chat_completion(sdk, cluster):
    cluster.chat_ready()
    cluster.streams(text_frames(["Hel", "Hello", "Hello!"]))
    stream = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello!"
    assert chunks[-1].usage.completion_tokens == 3


def test_unknown_model_raises_not_found(sdk, cluster):
    cluster.serves(MODEL)
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "Hi"}])
    assert raised.value.code == "model_not_found"
    assert raised.value.param == "model"


def test_bad_parameter_raises_bad_request(sdk):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], temperature=5)
    assert raised.value.param == "temperature"


def test_wrong_key_raises_authentication_error(app, sdk):
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk.with_options(api_key="sk-wrong").models.list()
    assert raised.value.code == "invalid_api_key"


def test_worker_error_mid_stream_raises_in_the_sdk(sdk, cluster):
    cluster.chat_ready()
    cluster.streams(frames({"text": "Hel", "error_code": 0}, {"text": "boom", "error_code": 50001}))
    stream = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True)
    with pytest.raises(openai.APIError, match="boom"):
        list(stream)
