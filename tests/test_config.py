import runpy
from pathlib import Path

import pytest

from app import create_app
from app.config import ConfigError, load_config, load_server_config
from app.settings import SETTINGS


def test_defaults_without_environment():
    config = load_config({})
    assert config["CONTROLLER_ADDRESS"] == "http://localhost:21001"
    assert config["API_KEYS"] == ()
    assert config["ERROR_STATUS_MODE"] == "openai"


def test_environment_is_parsed():
    config = load_config({"API_KEYS": " k1, k2 ,,", "WORKER_READ_TIMEOUT": "12.5",
                          "CONTROLLER_ADDRESS": "http://ctl:21001/", "MAX_N": "4"})
    assert config["API_KEYS"] == ("k1", "k2")
    assert config["WORKER_READ_TIMEOUT"] == 12.5
    assert config["CONTROLLER_ADDRESS"] == "http://ctl:21001"
    assert config["MAX_N"] == 4


def test_empty_api_keys_disables_auth():
    assert load_config({"API_KEYS": ""})["API_KEYS"] == ()


@pytest.mark.parametrize("name, value", [
    ("WORKER_READ_TIMEOUT", "soon"),
    ("WORKER_READ_TIMEOUT", "0"),
    ("CONTROLLER_CONNECT_TIMEOUT", "-1"),
    ("CONTROLLER_ADDRESS", "localhost:21001"),
    ("MAX_N", "2.5"),
    ("ERROR_STATUS_MODE", "teapot"),
    ("SEP_STYLE_NUMBERING", "0.2.35"),
])
def test_invalid_setting_is_named(name, value):
    with pytest.raises(ConfigError, match=name):
        load_config({name: value})


def test_create_app_fails_fast_on_invalid_setting():
    with pytest.raises(ConfigError, match="CONTEXT_OVERFLOW"):
        create_app(environ={"CONTEXT_OVERFLOW": "ignore"})


def test_overrides_win_over_environment():
    app = create_app({"MODEL_LIST_TTL": 0}, environ={"MODEL_LIST_TTL": "30"})
    assert app.config["MODEL_LIST_TTL"] == 0


# --- the server's settings: load_server_config and gunicorn.conf.py ----------------------------------------------
GUNICORN_CONF = Path(__file__).resolve().parents[1] / "gunicorn.conf.py"


def run_gunicorn_conf(monkeypatch, tmp_path, **env) -> dict:
    """gunicorn.conf.py's module globals as gunicorn would load them with `env` (and no other gateway variable)."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # no temporary directory of its own
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(GUNICORN_CONF))


def test_server_defaults():
    config = load_server_config({})
    assert config["BIND"] == ("127.0.0.1:8000",)
    assert config["GUNICORN_THREADS"] == 528 and config["GUNICORN_GRACEFUL_TIMEOUT"] == 300
    assert config["GUNICORN_CONTROL_SOCKET"] == ""


def test_server_settings_need_both_tls_files():
    with pytest.raises(ConfigError, match="set both SSL_KEYFILE and SSL_CERTFILE, or neither"):
        load_server_config({"SSL_CERTFILE": "cert.pem"})
    assert load_server_config({"SSL_KEYFILE": "k", "SSL_CERTFILE": "c"})["SSL_KEYFILE"] == "k"


def test_gunicorn_conf_takes_its_values_from_the_settings(monkeypatch, tmp_path):
    conf = run_gunicorn_conf(monkeypatch, tmp_path, BIND="127.0.0.1:1, [::1]:2", WEB_CONCURRENCY="3",
                             GUNICORN_THREADS="7", GUNICORN_LIMIT_REQUEST_LINE="0", LOG_LEVEL="WARNING",
                             SSL_KEYFILE="key.pem", SSL_CERTFILE="cert.pem")
    assert conf["bind"] == ["127.0.0.1:1", "[::1]:2"]
    assert (conf["workers"], conf["threads"], conf["limit_request_line"]) == (3, 7, 0)
    assert conf["loglevel"] == "warning" and conf["logconfig_dict"]["root"]["level"] == "WARNING"
    assert (conf["keyfile"], conf["certfile"]) == ("key.pem", "cert.pem")
    assert conf["accesslog"] is None and conf["worker_class"] == "app.server_worker.ThreadWorker" and conf["keepalive"] == 75


def test_gunicorn_conf_control_socket_is_off_unless_given_a_path(monkeypatch, tmp_path):
    conf = run_gunicorn_conf(monkeypatch, tmp_path)
    assert conf["control_socket_disable"] is True and "control_socket" not in conf
    conf = run_gunicorn_conf(monkeypatch, tmp_path, GUNICORN_CONTROL_SOCKET=str(tmp_path / "gw.ctl"))
    assert conf["control_socket_disable"] is False and conf["control_socket"] == str(tmp_path / "gw.ctl")


@pytest.mark.parametrize("name, value", [("WEB_CONCURRENCY", "0"), ("GUNICORN_TIMEOUT", "soon"),
                                         ("LOG_LEVEL", "verbose"), ("SSL_KEYFILE", "key.pem")])
def test_gunicorn_conf_exits_naming_an_invalid_setting(monkeypatch, tmp_path, capsys, name, value):
    with pytest.raises(SystemExit) as exc:
        run_gunicorn_conf(monkeypatch, tmp_path, **{name: value})
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("fastchat-gateway: ") and name in err
