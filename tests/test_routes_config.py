"""ROUTES_FILE: what a routes file means, and the start-up error each mistake gets."""
import pytest
import requests

from app import create_app
from app.routes.check import check_shared_names
from app.routes.config import load_routes, parse_routes
from app.settings import ConfigError
from tests.fakes import CONTROLLER

WHERE = "invalid ROUTES_FILE='routes.toml'"


def parse(text, environ=None):
    return parse_routes(text, WHERE, environ or {})


def error(text, environ=None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text, environ)
    return str(caught.value)


def test_entries_of_one_model_are_its_base_urls_with_their_fields():
    table = parse('''
[[routes]]
model = "small"
base_url = "http://127.0.0.1:8000/v1/"
api_key = "up-key"
upstream_model = "Qwen/Qwen2.5-0.5B"
timeout = 30
weight = 3

[[routes]]
model = "small"
base_url = "https://b.example/v1"
api_key_env = "B_KEY"

[[routes]]
model = "other"
base_url = "http://127.0.0.1:9000"
''', {"B_KEY": "from-env"})
    assert table.models() == ["small", "other"]
    first, second = table.routes["small"]
    assert (first.base_url, first.upstream_model, first.api_key, first.timeout, first.weight) == (
        "http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-0.5B", "up-key", 30.0, 3.0)
    assert (second.base_url, second.upstream_model, second.api_key, second.timeout, second.weight) == (
        "https://b.example/v1", "small", "from-env", None, 1.0)
    assert table.routes["other"][0].api_key is None
    assert "up-key" not in repr(first)  # never in a log line


@pytest.mark.parametrize("entry, expected", [
    ('model = "m"\nbase_url = "http://h"\nseed = 1', "route 'm' (line 2): unknown field 'seed' (a route has model,"),
    ('model = "m"\napi_base = "http://h"', "route 'm' (line 2): unknown field 'api_base': this file calls it "
                                            "'base_url'"),
    ('base_url = "http://h"', "route #1 (line 2): needs a `model`"),
    ('model = " m"\nbase_url = "http://h"', "needs a `model`"),
    ('model = "m"', "route 'm' (line 2): needs a `base_url`"),
    ('model = "m"\nbase_url = "ftp://h"', "`base_url` must be an http:// or https:// URL"),
    ('model = "m"\nbase_url = "http://user:pw@h/v1"', "no query, fragment or credentials"),
    ('model = "m"\nbase_url = "http://h"\napi_key = "a"\napi_key_env = "B"', "not both"),
    ('model = "m"\nbase_url = "http://h"\napi_key_env = "MISSING"', "names MISSING, which is not set"),
    ('model = "m"\nbase_url = "http://h"\nweight = 0', "`weight` must be a positive number"),
    ('model = "m"\nbase_url = "http://h"\ntimeout = "30"', "`timeout` must be a positive number"),
    ('model = "m"\nbase_url = "http://h"\nupstream_model = ""', "needs a `upstream_model`"),
])
def test_each_mistake_is_named_with_its_entry_and_line(entry, expected):
    message = error(f"# routes\n[[routes]]\n{entry}\n")
    assert message.startswith(WHERE) and expected in message


def test_a_repeated_base_url_names_both_entries():
    message = error('[[routes]]\nmodel = "m"\nbase_url = "http://h/v1"\n\n[[routes]]\nmodel = "m"\n'
                    'base_url = "http://h/v1/"\n')
    assert "route 'm' (line 5): the same model and base_url as route 'm' (line 1)" in message


@pytest.mark.parametrize("text, expected", [
    ('[[route]]\nmodel = "m"', "unknown top-level entry 'route'"),
    ('routes = 1', "`routes` must be an array of tables"),
    ('[[routes]\nmodel = "m"', "line 1"),  # TOML's own message, with its line
])
def test_file_level_mistakes(text, expected):
    assert expected in error(text)


def test_an_upstream_key_is_never_quoted():
    assert "sk-upstream-secret" not in error('[[routes]]\nmodel = "m"\nbase_url = "http://h"\n'
                                             'api_key = "sk-upstream-secret"\napi_key_env = "X"\n')


def test_no_file_is_no_routes_and_a_missing_file_stops_the_start(tmp_path, config):
    assert load_routes("", {}).routes == {}
    with pytest.raises(ConfigError, match="invalid ROUTES_FILE=.*No such file"):
        create_app({**config, "ROUTES_FILE": str(tmp_path / "nope.toml")}, environ={})


def test_api_key_env_is_read_from_the_apps_environment(tmp_path, config):
    path = tmp_path / "routes.toml"
    path.write_text('[[routes]]\nmodel = "m"\nbase_url = "http://h"\napi_key_env = "UP_KEY"\n')
    app = create_app({**config, "ROUTES_FILE": str(path)}, environ={"UP_KEY": "k"})
    assert app.extensions["cluster"].relay.table.routes["m"][0].api_key == "k"
    with pytest.raises(ConfigError, match="UP_KEY"):
        create_app({**config, "ROUTES_FILE": str(path)}, environ={})


class TestSharedNames:
    """The master's start-up check against the FastChat side (gunicorn.conf.py on_starting)."""

    TABLE = parse_routes('[[routes]]\nmodel = "m"\nbase_url = "http://h"\n', WHERE, {})

    def settings(self, **changes):
        return {"ROUTES_FILE": "routes.toml", "WORKER_ADDRESSES": (), "CONTROLLER_ADDRESS": CONTROLLER, **changes}

    def test_a_name_the_controller_serves_too_stops_the_start(self, upstream):
        upstream.post(f"{CONTROLLER}/list_models", json={"models": ["m", "other"]})
        with pytest.raises(ConfigError, match=r"'m' also served by FastChat workers"):
            check_shared_names(self.settings(), self.TABLE)

    def test_distinct_names_pass(self, upstream):
        upstream.post(f"{CONTROLLER}/list_models", json={"models": ["other"]})
        check_shared_names(self.settings(), self.TABLE)

    def test_listed_workers_are_asked_without_a_controller(self, upstream):
        upstream.post("http://w1/worker_get_status", json={"model_names": ["m"], "speed": 1, "queue_length": 0})
        with pytest.raises(ConfigError, match="'m'"):
            check_shared_names(self.settings(WORKER_ADDRESSES=("http://w1",)), self.TABLE)

    def test_a_controller_that_cannot_be_asked_is_logged_and_the_start_goes_on(self, upstream, caplog):
        upstream.post(f"{CONTROLLER}/list_models", body=requests.ConnectionError())
        check_shared_names(self.settings(), self.TABLE)
        assert "not checked against the FastChat models" in caplog.text

    def test_no_routes_asks_nobody(self, upstream):
        check_shared_names(self.settings(), parse_routes("", WHERE, {}))
