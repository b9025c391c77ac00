"""Issue 17: the gateway under gunicorn routing a model to an OpenAI-compatible server nobody here wrote (FastChat's
own openai_api_server, over its real controller and a simulated worker), driven by the official openai SDK."""
from __future__ import annotations

import openai
import pytest

from harness import procs
from harness.fastchat import FastChatApiServer, wait_registered
from harness.gateway import Gateway
from harness.procs import ProcError, free_port
from harness.simworkers import SimulatedWorker

KEY = "sk-e2e-routes"
UPSTREAM_KEY = "sk-upstream-only"


@pytest.fixture(scope="module")
def stack(fastchat_venv, fastchat_controller, run_dir):
    ctl = fastchat_controller.address
    started = []
    try:
        worker = SimulatedWorker(run_dir, "--tokens", "8", "--context-length", "64", controller=ctl,
                                 model="sim-upstream", name="sim-routes")
        started.append(worker)
        doomed = SimulatedWorker(run_dir, "--tokens", "50", "--token-delay", "0.02", controller=ctl,
                                 model="sim-doomed", name="sim-routes-doomed")
        started.append(doomed)
        for each in (worker, doomed):
            wait_registered(ctl, each.model)
        api = procs.require(FastChatApiServer, fastchat_venv / "bin" / "python", ctl, run_dir,
                            models=["sim-upstream", "sim-doomed"], name="fastchat-api-routes")
        started.append(api)
        routes = run_dir / "routes-e2e.toml"
        # A base URL nobody listens on, chosen first (its weight dwarfs the other's): every request fails over.
        routes.write_text(f'''
[[routes]]
model = "routed"
base_url = "http://127.0.0.1:{free_port()}/v1"
weight = 1e12

[[routes]]
model = "routed"
base_url = "{api.url}/v1"
api_key = "{UPSTREAM_KEY}"
upstream_model = "sim-upstream"
weight = 1e-12

[[routes]]
model = "routed-doomed"
base_url = "{api.url}/v1"
upstream_model = "sim-doomed"
''')
        gateway = Gateway(run_dir, name="gateway-routes", CONTROLLER_ADDRESS=ctl, API_KEYS=KEY,
                          ROUTES_FILE=str(routes), UPSTREAM_CONNECT_RETRIES="0")
        started.append(gateway)
        yield {"gateway": gateway, "api": api}
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.fixture
def sdk(stack):
    with openai.OpenAI(base_url=f"{stack['gateway'].url}/v1", api_key=KEY, max_retries=0, timeout=20) as client:
        yield client


def test_routed_models_are_listed_beside_the_controllers(sdk):
    ids = {model.id for model in sdk.models.list()}
    assert {"routed", "sim-upstream"} <= ids
    assert sdk.models.retrieve("routed").id == "routed"


def test_chat_whole_goes_through_the_upstream_after_failover(sdk, stack):
    reply = sdk.chat.completions.create(model="routed", messages=[{"role": "user", "content": "Hi"}],
                                        max_tokens=8, seed=3)
    assert reply.choices[0].message.content
    assert reply.model == "sim-upstream"  # the upstream's own reply, relayed
    assert reply.usage.completion_tokens > 0
    log = stack["gateway"].proc.log_path.read_text()
    assert "trying another" in log and UPSTREAM_KEY not in log


def test_chat_streamed_chunk_by_chunk(sdk):
    chunks = list(sdk.chat.completions.create(model="routed", messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=8, stream=True))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert len(chunks) > 2 and text


def test_completions(sdk):
    reply = sdk.completions.create(model="routed", prompt="Once upon", max_tokens=8)
    assert reply.choices[0].text


def test_an_upstream_400_keeps_its_status_and_message(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="routed", messages=[{"role": "user", "content": "word " * 200}],
                                    max_tokens=8)
    assert "context" in str(caught.value).lower()


def test_embeddings(sdk):
    reply = sdk.embeddings.create(model="routed", input=["a", "b"], encoding_format="float")
    assert len(reply.data) == 2 and reply.data[0].embedding


def test_the_responses_api_over_an_upstream_that_has_none(sdk):
    """FastChat's server has no /v1/responses: the gateway sends it the chat translation."""
    response = sdk.responses.create(model="routed", instructions="Be brief.", input="Hi", max_output_tokens=8)
    assert response.status in ("completed", "incomplete") and response.output_text
    assert response.model == "routed" and response.usage.output_tokens > 0


def test_the_responses_api_streamed_over_an_upstream(sdk):
    with sdk.responses.stream(model="routed", input="Hi", max_output_tokens=32) as stream:  # ends by itself
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) > 1 and "".join(deltas) == final.output_text
    assert final.status == "completed" and final.usage is None  # fschat 0.2.36 streams no usage, even when asked


def test_a_responses_request_refused_upstream_keeps_its_status(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="routed", input="word " * 200, max_output_tokens=8)
    assert "context" in str(caught.value).lower()


def test_an_upstream_error_mid_stream_ends_the_stream_with_an_error(sdk):
    stream = sdk.chat.completions.create(model="routed", messages=[{"role": "user", "content": "[[fault:error]] hi"}],
                                         max_tokens=8, stream=True)
    with pytest.raises(openai.APIError):
        list(stream)


def test_an_upstream_that_dies_mid_stream_ends_the_stream_with_an_error(sdk):
    """The worker behind FastChat's API server exits mid-stream (last: it does not come back)."""
    stream = sdk.chat.completions.create(model="routed-doomed", stream=True, max_tokens=50,
                                         messages=[{"role": "user", "content": "[[fault:die after=3]] hi"}])
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk)
    assert received  # it had begun: no failover, an error event instead


def test_a_name_the_controller_serves_too_stops_the_start(fastchat_controller, stack, run_dir):
    routes = run_dir / "routes-shared.toml"
    routes.write_text(f'[[routes]]\nmodel = "sim-upstream"\nbase_url = "{stack["api"].url}/v1"\n')
    with pytest.raises(ProcError) as caught:
        Gateway(run_dir, name="gateway-routes-shared", CONTROLLER_ADDRESS=fastchat_controller.address,
                ROUTES_FILE=str(routes))
    assert "'sim-upstream' also served by FastChat workers" in str(caught.value) + (
        run_dir / "gateway-routes-shared.log").read_text()
