"""The status page (/status, /status.json): off without ADMIN_API_KEY, only for that key, and what it shows."""
import base64
import json

import pytest
import requests

from app.status.windows import Windows
from tests.fakes import CONTROLLER, MODEL, WORKER, frames, text_frames

ADMIN = "admin-secret-Zq81"
BEARER = {"Authorization": f"Bearer {ADMIN}"}
CHAT = "/v1/chat/completions"
OTHER_WORKER = "http://worker-2.test"


def chat(client, headers=None, **body):
    return client.post(CHAT, json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **body},
                       headers=headers or {})


def worker_status(cluster, at=WORKER, models=(MODEL,), queue_length=3, speed=2.0):
    return cluster.rsps.post(f"{at}/worker_get_status",
                             json={"model_names": list(models), "queue_length": queue_length, "speed": speed})


@pytest.fixture
def config(config):
    config["ADMIN_API_KEY"] = ADMIN
    return config


class TestOff:
    @pytest.mark.parametrize("keys", [(), ("sk-user",)])
    def test_without_an_admin_key_the_routes_answer_as_an_unknown_path(self, config, keys):
        from app import create_app

        config.update(ADMIN_API_KEY="", API_KEYS=keys)
        client = create_app(config, environ={}).test_client()
        unknown = client.get("/no-such-page", headers={"Authorization": "Bearer sk-user"})
        for path in ("/status", "/status.json"):
            response = client.get(path, headers={"Authorization": "Bearer sk-user"})
            assert (response.status_code, response.get_json()) == (unknown.status_code, unknown.get_json())


class TestAdminKey:
    @pytest.mark.parametrize("path", ["/status", "/status.json"])
    @pytest.mark.parametrize("header", [None, "Bearer wrong", f"Bearer {ADMIN}x", f"Token {ADMIN}", "Bearer ",
                                        "Basic " + base64.b64encode(b"admin:wrong").decode(), "Basic !!"])
    def test_anything_but_the_admin_key_is_refused(self, client, path, header):
        response = client.get(path, headers={"Authorization": header} if header else {})
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "invalid_api_key"

    def test_the_html_page_asks_a_browser_for_the_key(self, client):
        assert client.get("/status").headers["WWW-Authenticate"].startswith("Basic ")
        assert "WWW-Authenticate" not in client.get("/status.json").headers

    def test_the_admin_key_as_bearer_or_basic_password(self, client, cluster):
        cluster.serves(MODEL)
        cluster.serves(MODEL)
        basic = "Basic " + base64.b64encode(f"anyone:{ADMIN}".encode()).decode()
        assert client.get("/status.json", headers=BEARER).status_code == 200
        assert client.get("/status", headers={"Authorization": basic}).status_code == 200

    def test_an_api_key_does_not_open_it_and_the_admin_key_opens_nothing_else(self, config, upstream, cluster):
        from app import create_app

        config["API_KEYS"] = ("sk-user",)
        client = create_app(config, environ={}).test_client()
        assert client.get("/status.json", headers={"Authorization": "Bearer sk-user"}).status_code == 401
        assert client.get("/v1/models", headers=BEARER).status_code == 401
        cluster.serves(MODEL)
        assert client.get("/status.json", headers=BEARER).status_code == 200


class TestWithAController:
    def test_models_workers_and_the_controller(self, client, cluster):
        cluster.chat_ready()
        cluster.generates()
        assert chat(client).status_code == 200
        cluster.serves(MODEL)
        assert client.get("/v1/models").status_code == 200  # reaches no worker: not the chat's worker's
        cluster.serves(MODEL, "other-model")
        worker_status(cluster, queue_length=3, speed=2.0)
        status = client.get("/status.json", headers=BEARER).get_json()
        assert status["controller"] == {"address": CONTROLLER, "reachable": True, "error": None}
        assert [model["name"] for model in status["models"]] == ["other-model", MODEL]
        [worker] = status["workers"]
        assert worker | {"last_seen": None} == {"address": WORKER, "models": [MODEL], "healthy": True, "speed": 2.0,
                                                "queue_length": 3, "last_seen": None, "last_seen_seconds_ago": 0.0,
                                                "last_minutes": {"requests": 1, "errors": 0}}
        model = status["models"][1]
        assert (model["workers"], model["healthy_workers"]) == ([WORKER], 1)
        last = model["last_minutes"]
        assert (last["requests"], last["errors"], last["error_rate"]) == (1, 0, 0.0)
        assert (last["prompt_tokens"], last["completion_tokens"]) == (5, 2)
        assert last["requests_per_second"] > 0 and last["tokens_per_second"] > 0
        assert sum(last["requests_per_bucket"]) == 1 and len(last["requests_per_bucket"]) == 30
        assert model["since_start"]["requests"] >= 1  # the process-wide Prometheus counters: other tests add
        assert status["keys"] is None

    def test_an_unreachable_controller_and_a_dead_worker(self, client, cluster):
        cluster.chat_ready()
        cluster.generates()
        assert chat(client).status_code == 200
        cluster.unreachable(f"{CONTROLLER}/list_models")
        cluster.unreachable(f"{WORKER}/worker_get_status")
        status = client.get("/status.json", headers=BEARER).get_json()
        assert status["controller"]["reachable"] is False and status["controller"]["error"]
        [worker] = status["workers"]
        assert (worker["healthy"], worker["queue_length"], worker["models"]) == (False, None, [MODEL])
        assert worker["last_seen_seconds_ago"] is not None  # when the controller named it
        assert status["models"][0]["healthy_workers"] == 0

    def test_a_stream_counts_its_time_to_first_token_and_in_flight(self, client, cluster):
        cluster.chat_ready()
        cluster.streams(text_frames(["Hel", "lo"]))
        response = chat(client, stream=True)
        assert b"[DONE]" in response.get_data()
        cluster.serves(MODEL)
        worker_status(cluster)
        status = client.get("/status.json", headers=BEARER).get_json()
        assert status["models"][0]["last_minutes"]["time_to_first_token_ms"] is not None
        assert status["streams_in_flight"] == 0

    def test_a_worker_failure_counts_as_an_error(self, client, cluster, config):
        cluster.chat_ready()
        cluster.rsps.post(f"{WORKER}/worker_generate", json={"text": "boom", "error_code": 50001})
        assert chat(client).status_code >= 500
        cluster.serves(MODEL)
        worker_status(cluster)
        status = client.get("/status.json", headers=BEARER).get_json()
        last = status["models"][0]["last_minutes"]
        assert (last["requests"], last["errors"], last["error_rate"]) == (1, 1, 1.0)
        assert status["workers"][0]["last_minutes"] == {"requests": 1, "errors": 1}

    def test_a_made_up_model_is_not_listed(self, client, cluster):
        cluster.rsps.post(f"{CONTROLLER}/list_models", json={"models": [MODEL]})
        assert client.post(CHAT, json={"model": "made-up", "messages": [{"role": "user", "content": "Hi"}]}
                           ).status_code == 404
        cluster.serves(MODEL)
        assert [m["name"] for m in client.get("/status.json", headers=BEARER).get_json()["models"]] == [MODEL]

    def test_the_html_page_shows_models_workers_and_reloads_itself(self, client, cluster):
        cluster.chat_ready()
        cluster.generates()
        chat(client)
        cluster.serves(MODEL)
        worker_status(cluster)
        response = client.get("/status", headers=BEARER)
        html = response.get_data(as_text=True)
        assert response.mimetype == "text/html"
        assert '<meta http-equiv="refresh"' in html and "<svg" in html
        assert MODEL in html and WORKER in html and "healthy" in html and "reachable" in html
        assert "http://" not in html.replace(WORKER, "").replace(CONTROLLER, "")  # no external asset


class TestWithoutAController:
    @pytest.fixture
    def config(self, config):
        config.update(WORKER_ADDRESSES=(WORKER, OTHER_WORKER), WORKER_STATUS_INTERVAL=3600)
        return config

    def test_every_listed_worker_with_the_last_poll(self, client, cluster):
        worker_status(cluster, queue_length=1, speed=1.5)
        cluster.unreachable(f"{OTHER_WORKER}/worker_get_status")
        status = client.get("/status.json", headers=BEARER).get_json()
        assert status["controller"] is None
        up, down = status["workers"]
        assert (up["address"], up["healthy"], up["queue_length"], up["speed"]) == (WORKER, True, 1, 1.5)
        assert up["last_seen"].endswith("Z")
        assert (down["address"], down["healthy"], down["last_seen"], down["models"]) == (OTHER_WORKER, False, None,
                                                                                         [])
        assert [(m["name"], m["workers"]) for m in status["models"]] == [(MODEL, [WORKER])]
        html = client.get("/status", headers=BEARER).get_data(as_text=True)
        assert OTHER_WORKER in html and "unhealthy" in html and "never" in html


    def test_a_worker_gone_down_keeps_its_models_and_when_it_was_last_seen(self, app, client, cluster):
        worker_status(cluster)
        worker_status(cluster, at=OTHER_WORKER)
        cluster.unreachable(f"{OTHER_WORKER}/worker_get_status")
        before = client.get("/status.json", headers=BEARER).get_json()["workers"][1]
        worker_status(cluster)
        app.extensions["cluster"].controller.poll()  # the poller's next round
        after = client.get("/status.json", headers=BEARER).get_json()["workers"][1]
        assert (before["healthy"], after["healthy"]) == (True, False)
        assert (after["models"], after["last_seen"]) == ([MODEL], before["last_seen"])


class TestKeys:
    @pytest.fixture
    def config(self, config, tmp_path):
        path = tmp_path / "keys.toml"
        path.write_text('[[keys]]\nname = "team-a"\nkey = "sk-team-a-SECRET"\nmodels = ["vicuna-*"]\n'
                        'requests_per_minute = 100\n\n'
                        f'[[keys]]\nname = "team-b"\nsha256 = "{"ab" * 32}"\n')
        config["API_KEYS_FILE"] = str(path)
        return config

    def test_per_key_usage_by_name_and_never_a_secret(self, client, cluster):
        cluster.chat_ready()
        cluster.generates()
        assert chat(client, headers={"Authorization": "Bearer sk-team-a-SECRET"}).status_code == 200
        cluster.serves(MODEL)
        cluster.serves(MODEL)
        worker_status(cluster)
        worker_status(cluster)
        data = client.get("/status.json", headers=BEARER)
        html = client.get("/status", headers=BEARER)
        keys = {key["name"]: key for key in data.get_json()["keys"]}
        assert keys["team-a"]["limits"]["requests_per_minute"] == 100
        assert keys["team-a"]["models"] == ["vicuna-*"]
        assert (keys["team-a"]["last_minutes"]["requests"], keys["team-b"]["last_minutes"]["requests"]) == (1, 0)
        assert "team-a" in html.get_data(as_text=True)
        for body in (data.get_data(as_text=True), html.get_data(as_text=True)):
            for secret in ("sk-team-a-SECRET", "ab" * 32, ADMIN):
                assert secret not in body


class TestWindows:
    def test_requests_fall_out_after_the_window(self):
        now = [1000.0]
        windows = Windows(bucket_seconds=10, buckets=3, clock=lambda: now[0])
        windows.add("model", "m", error=True, ttft=0.5, completion_tokens=30)
        now[0] += 10
        windows.add("model", "m", error=False, ttft=0.1)
        summary = windows.summary("model", "m")
        assert summary["requests_per_bucket"] == [0, 1, 1]
        assert (summary["requests"], summary["error_rate"], summary["time_to_first_token_ms"]) == (2, 0.5, 300.0)
        assert summary["tokens_per_second"] == 3.0  # 30 tokens over the 10 s the process has run
        now[0] += 30  # three buckets on: both out
        assert windows.summary("model", "m")["requests_per_bucket"] == [0, 0, 0]
        assert windows.summary("model", "m")["error_rate"] is None

    def test_processes_sharing_a_directory_see_each_others_figures(self, tmp_path):
        now = [1000.0]
        first, second = (Windows(bucket_seconds=10, buckets=3, clock=lambda: now[0], directory=str(tmp_path),
                                 process=lambda pid=pid: pid) for pid in (101, 102))
        first.add("model", "m", error=False, ttft=0.2, completion_tokens=10)
        second.add("model", "m", error=True, ttft=0.4, completion_tokens=20)
        second.add("key", "team", error=False)
        second.flush()  # what its background thread does within FLUSH_SECONDS
        for seen_from in (first, second):
            merged = seen_from.merged()
            summary = merged.summary("model", "m")
            assert (summary["requests"], summary["errors"], summary["time_to_first_token_ms"]) == (2, 1, 300.0)
            assert summary["completion_tokens"] == 30 and merged.names("key") == ["team"]
        (tmp_path / "status-windows-999.json").write_text('{"bucket_seconds": 10, "series": [{"group": 1}]}')
        assert first.merged().summary("model", "m")["requests"] == 2  # a file not written by a process: skipped
        now[0] += 30  # both processes' buckets age out, a process that is gone included
        assert first.merged().summary("model", "m")["requests"] == 0

    def test_without_a_directory_a_process_has_its_own(self):
        windows = Windows()
        windows.add("model", "m", error=False)
        assert windows.merged() is windows

    def test_names_by_group(self):
        windows = Windows()
        windows.add("key", "k", error=False)
        assert (windows.names("key"), windows.names("model")) == (["k"], [])


def test_the_routes_are_in_the_openapi_document(app):
    from app.openapi import build_spec

    paths = build_spec(app)["paths"]
    assert "text/html" in paths["/status"]["get"]["responses"]["200"]["content"]
    assert "401" in paths["/status.json"]["get"]["responses"]
