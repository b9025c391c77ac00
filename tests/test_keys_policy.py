"""Keys with names, digests, expiry and model allow-lists, as requests see them; the key in logs and metrics;
the key file re-read while requests run; `fastchat-gateway key-digest`."""
import hashlib
import io
import logging
import os
import threading
import time

import pytest
from prometheus_client import REGISTRY

from app import cli, create_app
from tests.fakes import CONTROLLER, MODEL

TEAM_DIGEST = hashlib.sha256(b"sk-team").hexdigest()
KEY_FILE = f'''
[[keys]]
name = "team"
sha256 = "{TEAM_DIGEST}"
models = ["{MODEL}", "allowed-*"]

[[keys]]
name = "all"
key = "sk-all"

[[keys]]
name = "old"
key = "sk-old"
expires = 2020-01-01
'''


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(KEY_FILE)
    return path


@pytest.fixture
def client(config, key_file):
    return create_app({**config, "API_KEYS_FILE": str(key_file)}, environ={}).test_client()


def auth(key):
    return {"Authorization": f"Bearer {key}"}


CHAT = {"model": "secret-model", "messages": [{"role": "user", "content": "Hi"}]}
FORBIDDEN = [  # every endpoint that takes a model, asked for one the key may not use: no upstream call at all
    ("post", "/v1/chat/completions", CHAT),
    ("post", "/api/v1/chat/completions", CHAT),
    ("post", "/v1/chat/completions", {**CHAT, "stream": True}),
    ("post", "/v1/completions", {"model": "secret-model", "prompt": "Hi"}),
    ("post", "/v1/embeddings", {"model": "secret-model", "input": "Hi"}),
    ("post", "/v1/engines/secret-model/embeddings", {"input": "Hi"}),
    ("post", "/api/v1/token_check", {"prompts": [{"model": MODEL, "prompt": "a", "max_tokens": 1},
                                                 {"model": "secret-model", "prompt": "b", "max_tokens": 1}]}),
    ("get", "/v1/models/secret-model", None),
    ("post", "/v1/responses", {"model": "secret-model", "input": "Hi"}),
    ("post", "/v1/responses", {"model": "secret-model", "input": "Hi", "stream": True}),
]


@pytest.mark.parametrize("method, path, body", FORBIDDEN)
def test_a_model_the_key_may_not_use_answers_like_an_unknown_one(client, upstream, method, path, body):
    response = getattr(client, method)(path, json=body, headers=auth("sk-team"))
    assert response.status_code == 404
    assert response.get_json() == {
        "object": "error", "message": "The model `secret-model` does not exist.", "code": 40301,
        "error": {"message": "The model `secret-model` does not exist.", "type": "invalid_request_error",
                  "param": "model", "code": "model_not_found"}}


def test_a_refused_model_counts_as_a_rejection_of_the_key(client, upstream):
    before = sample("fastchat_gateway_rejections_total", key="team", reason="model")
    client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-team"))
    assert sample("fastchat_gateway_rejections_total", key="team", reason="model") == before + 1


def test_the_same_body_as_a_model_no_worker_serves(config, cluster):
    cluster.serves(MODEL)
    unknown = create_app(config, environ={}).test_client().get("/v1/models/secret-model")
    assert unknown.status_code == 404 and unknown.get_json()["message"] == "The model `secret-model` does not exist."


def test_allowed_models_and_patterns_pass(client, cluster):
    cluster.serves(MODEL, "allowed-7b")
    assert client.get(f"/v1/models/{MODEL}", headers=auth("sk-team")).status_code == 200
    assert client.get("/v1/models/allowed-7b", headers=auth("sk-team")).status_code == 200


def test_the_model_list_shows_only_the_keys_models(client, cluster, upstream):
    upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
    cluster.serves(MODEL, "allowed-7b", "secret-model")
    team = client.get("/v1/models", headers=auth("sk-team")).get_json()
    assert [card["id"] for card in team["data"]] == sorted([MODEL, "allowed-7b"])
    everyone = client.get("/v1/models", headers=auth("sk-all")).get_json()
    assert [card["id"] for card in everyone["data"]] == sorted([MODEL, "allowed-7b", "secret-model"])


def test_a_key_allowed_a_model_generates(client, cluster):
    cluster.chat_ready()
    cluster.generates()
    response = client.post("/v1/chat/completions", json={**CHAT, "model": MODEL}, headers=auth("sk-team"))
    assert response.status_code == 200


def test_an_expired_key_is_told_so(client):
    response = client.get("/v1/models", headers=auth("sk-old"))
    assert response.status_code == 401
    assert response.get_json()["error"] == {
        "message": "The API key provided expired at 2020-01-01T00:00:00Z. Ask the gateway's operator for a new one.",
        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}


def test_a_digest_is_not_a_key(client):
    assert client.get("/v1/models", headers=auth(TEAM_DIGEST)).status_code == 401


def test_the_access_log_and_metrics_name_the_key_never_the_secret(client, cluster, caplog):
    cluster.chat_ready()
    cluster.generates()
    before = (sample("fastchat_gateway_key_requests_total", key="team", status="200"),
              sample("fastchat_gateway_key_tokens_total", key="team", kind="completion"),
              sample("fastchat_gateway_key_requests_total", key="old", status="401"),
              sample("fastchat_gateway_key_requests_total", key="-", status="401"))
    with caplog.at_level(logging.INFO, logger="app.access"):
        client.post("/v1/chat/completions", json={**CHAT, "model": MODEL}, headers=auth("sk-team"))
        client.get("/v1/models", headers=auth("sk-old"))
        client.get("/v1/models", headers=auth("sk-wrong"))
    lines = [r.getMessage() for r in caplog.records if r.name == "app.access"]
    assert [line.split(" key=")[1].split()[0] for line in lines] == ["team", "old", "-"]
    after = (sample("fastchat_gateway_key_requests_total", key="team", status="200"),
             sample("fastchat_gateway_key_tokens_total", key="team", kind="completion"),
             sample("fastchat_gateway_key_requests_total", key="old", status="401"),
             sample("fastchat_gateway_key_requests_total", key="-", status="401"))
    assert [a - b for a, b in zip(after, before)] == [1, 2, 1, 1]
    assert "sk-team" not in caplog.text and TEAM_DIGEST not in caplog.text


def test_without_auth_the_log_says_no_key(config, cluster, caplog):
    cluster.serves(MODEL)
    with caplog.at_level(logging.INFO, logger="app.access"):
        create_app(config, environ={}).test_client().get(f"/v1/models/{MODEL}")
    assert " key=- " in [r.getMessage() for r in caplog.records if r.name == "app.access"][0]


# ---------------------------------------------------------------------------------------------- re-reading the file
def rewrite(path, text):
    """Write in place, then date it a second back: as if it had been left alone since (files modified in the last
    0.2 s are read later, as they may be half written)."""
    path.write_text(text)
    stamp = time.time_ns() - 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


@pytest.fixture
def app_watching(config, key_file):
    app = create_app({**config, "API_KEYS_FILE": str(key_file)}, environ={})
    app.extensions["api_keys"].interval = 0  # look at every request
    return app


def test_a_changed_file_takes_effect_without_a_restart(app_watching, key_file):
    client = app_watching.test_client()
    ok = sample("fastchat_gateway_key_file_reloads_total", result="ok")
    assert client.get("/v1/nothing", headers=auth("sk-all")).status_code == 404  # let in, then no such route
    rewrite(key_file, '[[keys]]\nname = "new"\nkey = "sk-new"\n')
    assert client.get("/v1/nothing", headers=auth("sk-new")).status_code == 404
    assert client.get("/v1/nothing", headers=auth("sk-all")).status_code == 401
    assert sample("fastchat_gateway_key_file_reloads_total", result="ok") == ok + 1


def test_a_broken_or_removed_file_keeps_the_keys_in_use(app_watching, key_file, caplog):
    client = app_watching.test_client()
    errors = sample("fastchat_gateway_key_file_reloads_total", result="error")
    with caplog.at_level(logging.ERROR, logger="app.keys.store"):
        rewrite(key_file, '[[keys]]\nname = "new"\nmax_budget = 3\nkey = "sk-new"\n')
        assert client.get("/v1/nothing", headers=auth("sk-all")).status_code == 404
        assert client.get("/v1/nothing", headers=auth("sk-new")).status_code == 401
        key_file.unlink()
        assert client.get("/v1/nothing", headers=auth("sk-all")).status_code == 404
    assert sample("fastchat_gateway_key_file_reloads_total", result="error") == errors + 2
    assert "'max_budget' is not enforced" in caplog.text and "No such file" in caplog.text
    rewrite(key_file, '[[keys]]\nname = "new"\nkey = "sk-new"\n')
    assert client.get("/v1/nothing", headers=auth("sk-new")).status_code == 404


def test_the_file_is_looked_at_at_most_once_an_interval(config, key_file):
    app = create_app({**config, "API_KEYS_FILE": str(key_file)}, environ={})
    rewrite(key_file, '[[keys]]\nname = "new"\nkey = "sk-new"\n')
    assert app.test_client().get("/v1/nothing", headers=auth("sk-new")).status_code == 401  # not yet: within 1 s


def test_a_process_started_while_the_file_is_broken_keeps_the_last_good_keys(config, key_file):
    create_app({**config, "API_KEYS_FILE": str(key_file)}, environ={})  # as gunicorn's master reads it first
    rewrite(key_file, "[[keys]\n")
    later = create_app({**config, "API_KEYS_FILE": str(key_file)}, environ={}).test_client()
    assert later.get("/v1/nothing", headers=auth("sk-all")).status_code == 404


def test_a_file_being_written_is_read_once_left_alone(app_watching, key_file):
    client = app_watching.test_client()
    key_file.write_text("")  # truncated, as an editor or `cat >` does before writing
    assert client.get("/v1/nothing", headers=auth("sk-all")).status_code == 404  # not read yet
    key_file.write_text('[[keys]]\nname = "new"\nkey = "sk-new"\n')
    time.sleep(0.25)
    assert client.get("/v1/nothing", headers=auth("sk-new")).status_code == 404
    assert client.get("/v1/nothing", headers=auth("sk-all")).status_code == 401


def test_no_request_fails_while_the_file_changes(app_watching, key_file):
    """Requests in a loop on 4 threads while the file is replaced (written, then renamed over: README's advice),
    every 10 ms and then left alone for a moment, one key staying throughout; each rest is a re-read at least."""
    stop, failures, served = threading.Event(), [], []

    def ask():
        client = app_watching.test_client()
        while not stop.is_set():
            status = client.get("/v1/nothing", headers=auth("sk-all")).status_code
            (served if status == 404 else failures).append(status)

    reloads = sample("fastchat_gateway_key_file_reloads_total", result="ok")
    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for round in range(40):
        extra = "".join(f'[[keys]]\nname = "k{round}-{i}"\nkey = "sk-{round}-{i}"\n' for i in range(round % 5))
        new = key_file.with_suffix(".new")
        new.write_text('[[keys]]\nname = "all"\nkey = "sk-all"\n' + extra)
        os.replace(new, key_file)
        time.sleep(0.3 if round % 10 == 9 else 0.01)
    stop.set()
    for thread in threads:
        thread.join()
    assert not failures and len(served) > 40
    assert sample("fastchat_gateway_key_file_reloads_total", result="ok") - reloads >= 4  # one per rest at least


# ---------------------------------------------------------------------------------------------- key-digest
def test_key_digest_prints_what_the_file_takes(capsys, monkeypatch):
    assert cli.main(["key-digest", "sk-team"]) == 0
    assert capsys.readouterr().out == TEAM_DIGEST + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-team\n\n  sk-all  \n"))
    assert cli.main(["key-digest"]) == 0
    assert capsys.readouterr().out == f"{TEAM_DIGEST}\n{hashlib.sha256(b'sk-all').hexdigest()}\n"


def test_key_digest_without_a_key_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    with pytest.raises(SystemExit) as exit:
        cli.main(["key-digest"])
    assert exit.value.code == 2 and "no key given" in capsys.readouterr().err


def test_the_main_command_mentions_key_digest(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "key-digest" in capsys.readouterr().out
