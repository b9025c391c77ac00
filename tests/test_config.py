import pytest

from app import create_app
from app.config import ConfigError, load_config


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
