"""Request ids, access log, metrics, readiness, limits and CORS."""
import logging

import pytest
import requests
from prometheus_client import REGISTRY

from app import create_app
from tests.fakes import CONTROLLER, MODEL, text_frames
from tests.test_api_chat import chat, sse_events


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


class TestRequestId:
    def test_a_valid_incoming_id_is_kept(self, client):
        assert client.get("/health", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"] == "abc-123"

    @pytest.mark.parametrize("offered", ["", "has space", "x" * 129, "semi;colon"])
    def test_an_invalid_or_missing_id_is_replaced(self, client, offered):
        returned = client.get("/health", headers={"X-Request-Id": offered}).headers["X-Request-Id"]
        assert returned != offered and len(returned) == 32

    def test_errors_and_streams_carry_an_id(self, client, cluster):
        assert client.get("/nowhere").headers["X-Request-Id"]
        cluster.chat_ready()
        cluster.streams(text_frames(["a"]))
        assert chat(client, stream=True).headers["X-Request-Id"]


class TestAccessLog:
    def test_one_line_with_route_model_status_tokens_and_no_prompt(self, client, cluster, caplog):
        cluster.chat_ready()
        cluster.generates("secret answer")
        with caplog.at_level(logging.INFO, logger="app.access"):
            client.post("/v1/chat/completions", headers={"X-Request-Id": "rid-1"},
                        json={"model": MODEL, "messages": [{"role": "user", "content": "secret prompt"}]})
        lines = [r.getMessage() for r in caplog.records if r.name == "app.access"]
        assert len(lines) == 1
        line = lines[0]
        for part in ("request_id=rid-1", "route=/v1/chat/completions", f"model={MODEL}", "status=200",
                     "stream=false", "prompt_tokens=5", "completion_tokens=2"):
            assert part in line
        assert "secret" not in caplog.text

    def test_a_stream_is_logged_when_it_ends_with_its_tokens(self, client, cluster, caplog):
        cluster.chat_ready()
        cluster.streams(text_frames(["a", "ab", "abc"], prompt_tokens=5))
        with caplog.at_level(logging.INFO, logger="app.access"):
            response = chat(client, stream=True)
            assert not [r for r in caplog.records if r.name == "app.access"]  # not before the body is sent
            sse_events(response)
        line = [r.getMessage() for r in caplog.records if r.name == "app.access"][0]
        assert "stream=true" in line and "completion_tokens=3" in line and "ttft_ms=" in line

    def test_keys_never_appear(self, config, caplog):
        app = create_app({**config, "API_KEYS": ("sk-very-secret",)}, environ={})
        with caplog.at_level(logging.DEBUG):
            app.test_client().get("/v1/models", headers={"Authorization": "Bearer sk-very-secret-wrong"})
            app.test_client().get("/health", headers={"Authorization": "Bearer sk-very-secret"})
        assert "sk-very-secret" not in caplog.text

    def test_request_bodies_are_logged_only_when_configured(self, config, cluster, caplog):
        app = create_app({**config, "LOG_REQUEST_BODIES": True}, environ={})
        cluster.chat_ready()
        cluster.generates("the answer")
        with caplog.at_level(logging.INFO):
            chat(app.test_client())
        assert "Hi" in caplog.text and "the answer" in caplog.text


class TestMetrics:
    def test_requests_tokens_and_latency_are_counted(self, client, cluster):
        labels = {"route": "/v1/chat/completions", "model": MODEL, "status": "200"}
        before = (sample("fastchat_gateway_requests_total", **labels),
                  sample("fastchat_gateway_completion_tokens_total", model=MODEL),
                  sample("fastchat_gateway_request_duration_seconds_count", route="/v1/chat/completions"))
        cluster.chat_ready()
        cluster.generates()
        chat(client)
        after = (sample("fastchat_gateway_requests_total", **labels),
                 sample("fastchat_gateway_completion_tokens_total", model=MODEL),
                 sample("fastchat_gateway_request_duration_seconds_count", route="/v1/chat/completions"))
        assert [a - b for a, b in zip(after, before)] == [1, 2, 1]

    def test_streams_in_flight_go_up_and_back_down_and_ttft_is_observed(self, client, cluster):
        ttft = sample("fastchat_gateway_time_to_first_token_seconds_count", route="/v1/chat/completions")
        cluster.chat_ready()
        cluster.streams(text_frames(["a", "ab"]))
        response = chat(client, stream=True)
        assert sample("fastchat_gateway_streams_in_flight") == 1
        sse_events(response)
        assert sample("fastchat_gateway_streams_in_flight") == 0
        assert sample("fastchat_gateway_time_to_first_token_seconds_count", route="/v1/chat/completions") == ttft + 1

    def test_client_leaving_a_stream_also_brings_the_gauge_down(self, client, cluster):
        cluster.chat_ready()
        cluster.streams(text_frames(["a", "ab"]))
        response = chat(client, stream=True)
        response.close()
        assert sample("fastchat_gateway_streams_in_flight") == 0

    def test_upstream_errors_are_counted_by_kind(self, client, cluster):
        before = sample("fastchat_gateway_upstream_errors_total", upstream="controller", kind="unavailable")
        cluster.unreachable(f"{CONTROLLER}/list_models")
        chat(client)
        assert sample("fastchat_gateway_upstream_errors_total", upstream="controller",
                      kind="unavailable") == before + 1

    def test_unknown_models_do_not_create_series(self, client, cluster):
        cluster.serves(MODEL)
        client.post("/v1/chat/completions", json={"model": "made-up-123", "messages": "hi"})
        assert "made-up-123" not in client.get("/metrics").get_data(as_text=True)

    def test_metrics_are_prometheus_text_and_public(self, config):
        app = create_app({**config, "API_KEYS": ("k",)}, environ={})
        response = app.test_client().get("/metrics")
        assert response.status_code == 200
        assert response.mimetype == "text/plain"
        assert "# TYPE fastchat_gateway_requests_total counter" in response.get_data(as_text=True)


class TestReady:
    def test_ready_when_the_controller_answers(self, client, cluster):
        cluster.serves()
        assert client.get("/ready").get_json() == {"status": "ready"}

    def test_not_ready_when_it_does_not(self, config, cluster):
        app = create_app({**config, "API_KEYS": ("k",)}, environ={})
        cluster.unreachable(f"{CONTROLLER}/list_models")
        response = app.test_client().get("/ready")
        assert response.status_code == 503
        assert "controller" in response.get_json()["message"]
        assert response.get_json()["error"]["type"] == "service_unavailable_error"

    def test_without_a_controller_ready_means_a_worker_answers(self, upstream):
        app = create_app({"UPSTREAM_CONNECT_RETRIES": 0}, environ={"WORKER_ADDRESSES": "http://w1.test"})
        upstream.post("http://w1.test/worker_get_status", body=requests.ConnectionError())
        try:
            assert app.test_client().get("/ready").status_code == 503
        finally:
            app.extensions["cluster"].controller.close()


class TestLimits:
    @pytest.fixture
    def config(self, config):
        return {**config, "MAX_REQUEST_BODY_BYTES": 1000, "MAX_N": 4, "MAX_TOKENS_CAP": 100,
                "MAX_STOP_SEQUENCES": 2, "MAX_MESSAGES": 3}

    def test_an_oversized_body_is_413_with_the_error_body(self, client):
        response = client.post("/v1/chat/completions", json={"model": MODEL, "messages": "x" * 2000})
        assert response.status_code == 413
        assert response.get_json()["error"]["type"] == "invalid_request_error"

    @pytest.mark.parametrize("field, value", [("n", 5), ("max_tokens", 101), ("max_completion_tokens", 101),
                                              ("stop", ["a", "b", "c"])])
    def test_caps_are_400_out_of_range(self, client, field, value):
        response = chat(client, **{field: value})
        assert response.status_code == 400
        assert response.get_json()["error"]["param"] == field and response.get_json()["code"] == 40302

    def test_message_count_is_capped(self, client):
        response = client.post("/v1/chat/completions",
                               json={"model": MODEL, "messages": [{"role": "user", "content": "x"}] * 4})
        assert response.status_code == 400 and response.get_json()["error"]["param"] == "messages"

    def test_completion_max_tokens_is_capped(self, client):
        response = client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 101})
        assert response.get_json()["error"]["param"] == "max_tokens"


class TestCors:
    def test_off_by_default(self, client):
        response = client.get("/health", headers={"Origin": "http://evil.example"})
        assert "Access-Control-Allow-Origin" not in response.headers

    def test_configured_origins_get_headers_and_preflight_needs_no_key(self, config):
        app = create_app({**config, "API_KEYS": ("k",), "CORS_ALLOWED_ORIGINS": ("http://ui.example",)}, environ={})
        client = app.test_client()
        preflight = client.options("/v1/chat/completions", headers={
            "Origin": "http://ui.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type"})
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == "http://ui.example"
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        other = client.get("/health", headers={"Origin": "http://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers


class TestHardening:
    @pytest.mark.parametrize("value", [1, 0, 1.0])
    def test_booleans_must_be_json_booleans(self, client, value):
        response = chat(client, stream=value)
        assert response.status_code == 400 and response.get_json()["error"]["param"] == "stream"

    def test_a_model_name_cannot_forge_log_lines(self, client, cluster, caplog):
        cluster.serves(MODEL)
        with caplog.at_level(logging.INFO, logger="app.access"):
            client.post("/v1/chat/completions", json={"model": "x\nFORGED status=200 " + "y" * 500, "messages": "hi"})
        lines = [r.getMessage() for r in caplog.records if r.name == "app.access"]
        assert len(lines) == 1 and "\n" not in lines[0] and len(lines[0]) < 600
        assert "model=x\\nFORGED\\x20status=200" in lines[0]

    def test_double_slashes_are_a_json_404_not_a_redirect(self, client):
        response = client.get("/v1/models//etc/passwd", headers={"Host": "evil.example"})
        assert response.status_code == 404 and response.is_json and "Location" not in response.headers

    def test_options_needs_the_key_unless_it_is_a_cors_preflight(self, config):
        app = create_app({**config, "API_KEYS": ("k",)}, environ={})
        assert app.test_client().options("/v1/models").status_code == 401

    def test_completions_cannot_fan_out_beyond_max_n(self, client):
        response = client.post("/v1/completions", json={"model": MODEL, "prompt": ["a"] * 64, "n": 4})
        assert response.status_code == 400 and response.get_json()["error"]["param"] == "n"

    def test_upstream_redirects_are_not_followed(self, client, cluster, upstream):
        cluster.chat_ready()
        upstream.post("http://worker.test/worker_generate", status=307,
                      headers={"Location": "http://elsewhere.test/worker_generate"})
        assert chat(client).status_code == 502
