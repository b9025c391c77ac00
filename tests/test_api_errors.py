"""The one error envelope, for every kind of failure."""
import pytest

from app.upstream.errors import UpstreamError
from tests.fakes import MODEL

CHAT = "/v1/chat/completions"


def assert_envelope(response, status, type_, code=None, param=None, fastchat_code=None):
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"object", "message", "code", "error"}
    assert body["object"] == "error"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] == body["message"] and body["message"]
    assert body["error"]["type"] == type_
    assert body["error"]["code"] == code
    assert body["error"]["param"] == param
    if fastchat_code is not None:
        assert body["code"] == fastchat_code
    return body


def test_unknown_route_is_404_envelope(client):
    assert_envelope(client.get("/v1/nothing"), 404, "invalid_request_error", fastchat_code=40001)


def test_wrong_method_is_405_envelope_with_allow_header(client):
    response = client.get(CHAT)
    assert_envelope(response, 405, "invalid_request_error")
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe", b"[" * 100000])
def test_malformed_json_is_400(client, body):
    response = client.post(CHAT, data=body, content_type="application/json")
    assert_envelope(response, 400, "invalid_request_error", fastchat_code=40001)


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"3", b"null"])
def test_body_that_is_not_an_object_is_400(client, body):
    response = client.post(CHAT, data=body, content_type="application/json")
    assert_envelope(response, 400, "invalid_request_error")
    assert "object" in response.get_json()["message"]


def test_missing_content_type_is_accepted_as_json(client, cluster):
    response = client.post(CHAT, data=b'{"model": 1}')
    assert_envelope(response, 400, "invalid_request_error", param="model")


def test_json_sent_as_form_content_type_is_accepted(client):
    # curl -d sends application/x-www-form-urlencoded unless told otherwise
    response = client.post(CHAT, data=b'{"model": 1}', content_type="application/x-www-form-urlencoded")
    assert_envelope(response, 400, "invalid_request_error", param="model")


def test_a_form_body_is_400_naming_the_content_type(client):
    response = client.post(CHAT, data={"model": "m"})
    body = assert_envelope(response, 400, "invalid_request_error")
    assert "multipart/form-data" in body["message"] or "form-urlencoded" in body["message"]


def test_uncaught_exception_is_500_envelope_without_details(app, client, monkeypatch, caplog):
    def boom(*args):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("app.serving.chat.create_chat_completion", boom)
    response = client.post(CHAT, json={"model": MODEL, "messages": "hi"})
    assert_envelope(response, 500, "server_error", fastchat_code=50001)
    assert "secret" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    assert "secret internals" in caplog.text


@pytest.mark.parametrize("kind, status, type_, code, fastchat_code", [
    ("unavailable", 503, "service_unavailable_error", "upstream_unavailable", 50005),
    ("timeout", 504, "server_error", "upstream_timeout", 50006),
    ("bad_response", 502, "server_error", "upstream_error", 50001),
])
def test_upstream_failures_map_to_statuses(client, monkeypatch, kind, status, type_, code, fastchat_code):
    def fail(*args):
        raise UpstreamError(kind, "upstream said no")

    monkeypatch.setattr("app.serving.chat.create_chat_completion", fail)
    response = client.post(CHAT, json={"model": MODEL, "messages": "hi"})
    assert_envelope(response, status, type_, code=code, fastchat_code=fastchat_code)


def test_timeout_asks_the_sdk_not_to_retry(client, monkeypatch):
    monkeypatch.setattr("app.serving.chat.create_chat_completion",
                        lambda *a: (_ for _ in ()).throw(UpstreamError("timeout", "slow")))
    assert client.post(CHAT, json={"model": MODEL, "messages": "hi"}).headers["x-should-retry"] == "false"


@pytest.mark.parametrize("error_code, status", [(50001, 500), (50002, 503), (40303, 400), (40001, 400)])
def test_worker_error_codes_map_to_statuses(client, monkeypatch, error_code, status):
    monkeypatch.setattr("app.serving.chat.create_chat_completion",
                        lambda *a: (_ for _ in ()).throw(UpstreamError("worker_error", "boom", error_code=error_code)))
    response = client.post(CHAT, json={"model": MODEL, "messages": "hi"})
    body = assert_envelope(response, status, "server_error", code="worker_error", fastchat_code=error_code)
    assert body["message"] == "boom"


class TestFastChatStatusMode:
    @pytest.fixture
    def config(self, config):
        return {**config, "ERROR_STATUS_MODE": "fastchat", "API_KEYS": ("k",)}

    def test_handled_errors_are_400(self, client, cluster):
        cluster.serves("other")
        response = client.post(CHAT, json={"model": "nope", "messages": "hi"}, headers={"Authorization": "Bearer k"})
        assert_envelope(response, 400, "invalid_request_error", code="model_not_found", param="model",
                               fastchat_code=40301)

    def test_auth_keeps_401(self, client):
        assert client.post(CHAT, json={}).status_code == 401

    def test_routing_keeps_404(self, client):
        assert client.get("/nothing", headers={"Authorization": "Bearer k"}).status_code == 404
