"""`fastchat-gateway` (app/cli.py): FastChat's openai_api_server flags -> the environment gunicorn runs with."""
import os
import shlex
from pathlib import Path

import pytest

import app
from app import cli
from app.config import load_config
from app.settings import SETTINGS

REPO_ROOT = Path(app.__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    """No gateway variable of the developer's or CI's environment may change what a test sees."""
    for name in cli.gateway_variables(os.environ):
        monkeypatch.delenv(name)


class Served(Exception):
    """Raised by the fake cli.serve, which does not return while gunicorn runs."""


class ServeCalls(list):
    Served = Served


@pytest.fixture
def serves(monkeypatch):
    """Calls of cli.serve (gunicorn in this process), captured instead of running gunicorn in the test runner."""
    calls = ServeCalls()

    def fake_serve(config, env):
        calls.append((config, dict(env)))
        raise Served

    monkeypatch.setattr(cli, "serve", fake_serve)
    return calls


def env_for(*argv, base=None):
    return cli.build_env(cli.parse_args(list(argv)), {} if base is None else base)


def usage_error(capsys, *argv) -> str:
    """main(argv) must stop with argparse's exit status 2; returns its stderr."""
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    assert exc.value.code == 2
    return capsys.readouterr().err


def print_env(capsys, *argv) -> dict:
    assert cli.main(["--print-env", *argv]) == 0
    out = capsys.readouterr().out
    return dict(line.split("=", 1) for line in shlex.split(out, comments=True))


# --- defaults: FastChat's ---------------------------------------------------------------------------------------
def test_no_flags_give_fastchats_defaults():
    env = env_for()
    assert env == {"BIND": "localhost:8000"}  # FastChat: --host localhost --port 8000
    config = load_config(env)
    assert config["CONTROLLER_ADDRESS"] == "http://localhost:21001"  # FastChat's --controller-address default
    assert config["WORKER_ADDRESSES"] == ()
    assert config["API_KEYS"] == ()  # no --api-keys: no authentication
    assert config["CORS_ALLOWED_ORIGINS"] == ()  # the documented deviation: CORS off
    assert config["CORS_ALLOW_CREDENTIALS"] is False


def test_parser_defaults_and_help_name_fastchats_values(capsys):
    args = cli.parse_args([])
    assert (args.host, args.port, args.controller_address, args.api_keys) == (None, None, None, None)
    assert args.allow_credentials is False and args.ssl is False
    assert cli.FASTCHAT_HOST == "localhost" and cli.FASTCHAT_PORT == 8000
    assert cli.FASTCHAT_CONTROLLER == "http://localhost:21001"
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("(default: localhost)", "(default: 8000)", "(default: http://localhost:21001)",
                 "CORS is off unless --allowed-origins is given; FastChat allowed every origin by default"):
        assert text in out


def test_setting_options_are_made_from_the_settings(capsys):
    assert SETTINGS["CONTROLLER_ADDRESS"].default == cli.FASTCHAT_CONTROLLER  # so the help shows FastChat's
    flagged = {setting.flag: setting for setting in SETTINGS.values() if setting.flag}
    assert set(flagged) == {"--controller-address", "--worker-addresses", "--api-keys", "--workers", "--threads",
                            "--worker-class", "--log-level"}
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag, setting in flagged.items():
        assert f"{flag} {setting.name} " in out  # the option's metavar is its variable
        assert f"env {setting.name} (default: {setting.default_text()}" in out
        assert " ".join(setting.help.replace("`", "").split()) in out


def test_default_config_is_the_repos_gunicorn_conf():
    assert cli.DEFAULT_CONFIG == REPO_ROOT / "gunicorn.conf.py"
    assert cli.DEFAULT_CONFIG.is_file()
    assert cli.REPO_ROOT == REPO_ROOT and (REPO_ROOT / "wsgi.py").is_file()
    assert cli.parse_args([]).config == cli.DEFAULT_CONFIG


# --- every flag -> its variable ----------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, expected", [
    (["--host", "0.0.0.0"], {"BIND": "0.0.0.0:8000"}),
    (["--port", "9000"], {"BIND": "localhost:9000"}),
    (["--host", "127.0.0.1", "--port", "65535"], {"BIND": "127.0.0.1:65535"}),
    (["--host", "::1", "--port", "1"], {"BIND": "[::1]:1"}),
    (["--host", "[::]"], {"BIND": "[::]:8000"}),
    (["--controller-address", "http://ctl:21001"], {"CONTROLLER_ADDRESS": "http://ctl:21001"}),
    (["--worker-addresses", "http://w1:21002,http://w2:21002"],
     {"WORKER_ADDRESSES": "http://w1:21002,http://w2:21002"}),
    (["--api-keys", "k1,k2"], {"API_KEYS": "k1,k2"}),
    (["--api-keys", ""], {"API_KEYS": ""}),
    (["--workers", "3"], {"WEB_CONCURRENCY": "3"}),
    (["--threads", "8"], {"GUNICORN_THREADS": "8"}),
    (["--worker-class", "gevent"], {"GUNICORN_WORKER_CLASS": "gevent"}),
    (["--log-level", "DEBUG"], {"LOG_LEVEL": "debug"}),
    (["--log-level", "critical"], {"LOG_LEVEL": "critical"}),
    (["--allowed-origins", '["*"]'], {"CORS_ALLOWED_ORIGINS": "*", "CORS_ALLOWED_METHODS": "*",
                                      "CORS_ALLOWED_HEADERS": "*", "CORS_ALLOW_CREDENTIALS": "false"}),
    (["--allowed-origins", '["https://a.example", " https://b.example "]', "--allowed-methods", '["GET", "POST"]',
      "--allowed-headers", '["Authorization"]', "--allow-credentials"],
     {"CORS_ALLOWED_ORIGINS": "https://a.example,https://b.example", "CORS_ALLOWED_METHODS": "GET,POST",
      "CORS_ALLOWED_HEADERS": "Authorization", "CORS_ALLOW_CREDENTIALS": "true"}),
    (["--allowed-origins", "[]"], {"CORS_ALLOWED_ORIGINS": "", "CORS_ALLOWED_METHODS": "*",
                                   "CORS_ALLOWED_HEADERS": "*", "CORS_ALLOW_CREDENTIALS": "false"}),
    (["--allowed-methods", '["GET"]'], {"CORS_ALLOWED_METHODS": "GET"}),
    (["--allowed-headers", '["X-A", "X-B"]'], {"CORS_ALLOWED_HEADERS": "X-A,X-B"}),
    (["--allow-credentials"], {"CORS_ALLOW_CREDENTIALS": "true"}),
])
def test_flag_sets_its_variable(argv, expected):
    env = env_for(*argv)
    if "BIND" not in expected:
        expected = {"BIND": "localhost:8000", **expected}
    assert env == expected


def test_the_app_reads_what_the_cli_writes():
    env = env_for("--worker-addresses", "http://w1:21002", "--api-keys", "k1,k2",
                  "--allowed-origins", '["https://a.example"]', "--allowed-methods", '["GET", "POST"]',
                  "--allow-credentials")
    config = load_config(env)
    assert config["WORKER_ADDRESSES"] == ("http://w1:21002",)
    assert config["API_KEYS"] == ("k1", "k2")
    assert config["CORS_ALLOWED_ORIGINS"] == ("https://a.example",)
    assert config["CORS_ALLOWED_METHODS"] == ("GET", "POST")
    assert config["CORS_ALLOWED_HEADERS"] == ("*",)
    assert config["CORS_ALLOW_CREDENTIALS"] is True


def test_empty_allowed_origins_leaves_cors_off():
    assert load_config(env_for("--allowed-origins", "[]"))["CORS_ALLOWED_ORIGINS"] == ()


# --- flags not given leave the environment alone ----------------------------------------------------------------
def test_environment_is_kept_without_flags():
    base = {"BIND": "0.0.0.0:9000", "CONTROLLER_ADDRESS": "http://ctl:1", "API_KEYS": "env-key",
            "WEB_CONCURRENCY": "4", "GUNICORN_THREADS": "2", "GUNICORN_WORKER_CLASS": "gevent", "LOG_LEVEL": "debug",
            "CORS_ALLOWED_ORIGINS": "https://env.example", "CORS_ALLOWED_METHODS": "GET",
            "CORS_ALLOWED_HEADERS": "X-Env", "CORS_ALLOW_CREDENTIALS": "true",
            "SSL_KEYFILE": "key.pem", "SSL_CERTFILE": "cert.pem", "PATH": "/usr/bin"}
    assert env_for(base=base) == base


def test_flags_override_the_environment():
    base = {"BIND": "0.0.0.0:9000", "API_KEYS": "env-key", "WEB_CONCURRENCY": "4", "LOG_LEVEL": "debug",
            "CORS_ALLOWED_ORIGINS": "https://env.example", "CORS_ALLOWED_METHODS": "GET"}
    env = env_for("--port", "8001", "--api-keys", "", "--workers", "1", "--log-level", "error",
                  "--allowed-origins", '["*"]', base=base)
    assert env["BIND"] == "localhost:8001"  # FastChat's host default, not the environment's
    assert env["API_KEYS"] == "" and env["WEB_CONCURRENCY"] == "1" and env["LOG_LEVEL"] == "error"
    assert env["CORS_ALLOWED_ORIGINS"] == "*" and env["CORS_ALLOWED_METHODS"] == "*"  # FastChat's default


def test_cors_flag_without_origins_keeps_environment_origins(capsys):
    base = {"CORS_ALLOWED_ORIGINS": "https://env.example"}
    assert env_for("--allowed-headers", '["X-A"]', base=base) == {
        "BIND": "localhost:8000", "CORS_ALLOWED_ORIGINS": "https://env.example", "CORS_ALLOWED_HEADERS": "X-A"}


def test_cors_flags_without_any_origin_warn(capsys, monkeypatch):
    for flags in (["--allowed-methods", '["GET"]'], ["--allowed-headers", '["X-A"]'], ["--allow-credentials"]):
        assert cli.main(["--print-env", *flags]) == 0
        assert "CORS stays off without --allowed-origins" in capsys.readouterr().err
    assert cli.main(["--print-env", "--allowed-origins", '["*"]']) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "https://env.example")
    assert cli.main(["--print-env", "--allow-credentials"]) == 0
    assert capsys.readouterr().err == ""


def test_unrelated_variables_pass_through_but_are_not_printed(capsys, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/certs/ca.crt")  # OpenSSL's, not ours
    monkeypatch.setenv("WORKER_READ_TIMEOUT", "12")
    monkeypatch.setenv("GUNICORN_TIMEOUT", "90")
    assert env_for(base=dict(os.environ))["PATH"] == os.environ["PATH"]
    printed = print_env(capsys)
    assert printed == {"BIND": "localhost:8000", "WORKER_READ_TIMEOUT": "12", "GUNICORN_TIMEOUT": "90"}


# --- controller or workers ---------------------------------------------------------------------------------------
def test_worker_addresses_and_controller_address_conflict(capsys):
    err = usage_error(capsys, "--worker-addresses", "http://w:1", "--controller-address", "http://c:2")
    assert "--worker-addresses" in err and "--controller-address" in err


def test_worker_addresses_flag_replaces_environment_controller():
    env = env_for("--worker-addresses", "http://w:1", base={"CONTROLLER_ADDRESS": "http://c:2"})
    assert "CONTROLLER_ADDRESS" not in env
    assert load_config(env)["WORKER_ADDRESSES"] == ("http://w:1",)  # no "not both" error


def test_controller_address_flag_replaces_environment_workers():
    env = env_for("--controller-address", "http://c:2", base={"WORKER_ADDRESSES": "http://w:1"})
    assert "WORKER_ADDRESSES" not in env
    assert load_config(env)["CONTROLLER_ADDRESS"] == "http://c:2"


@pytest.mark.parametrize("argv, flag", [
    (["--controller-address", "localhost:21001"], "--controller-address"),
    (["--worker-addresses", "http://w:1,w2:2"], "--worker-addresses"),
])
def test_addresses_must_be_urls(capsys, argv, flag):
    err = usage_error(capsys, *argv)
    assert f"argument {flag}" in err and "http://" in err


# --- JSON lists --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--allowed-origins", "--allowed-methods", "--allowed-headers"])
@pytest.mark.parametrize("value, message", [
    ("*", "invalid JSON"),
    ("[*]", "invalid JSON"),
    ("['*']", "invalid JSON"),  # single quotes are not JSON
    ('["*"', "invalid JSON"),
    ('"*"', "not a JSON list of strings"),
    ('{"*": 1}', "not a JSON list of strings"),
    ("[1]", "not a JSON list of strings"),
    ('["a,b"]', "contains a comma"),
    ('[""]', "empty or contains a comma"),
])
def test_malformed_json_list_is_a_usage_error(capsys, flag, value, message):
    err = usage_error(capsys, flag, value)
    assert f"argument {flag}" in err and message in err


@pytest.mark.parametrize("flag", ["--allowed-methods", "--allowed-headers"])
def test_empty_methods_or_headers_are_refused(capsys, flag):
    # The app reads an empty variable as its default list, so "none" cannot be expressed.
    assert "names no" in usage_error(capsys, flag, "[]")


# --- --ssl -------------------------------------------------------------------------------------------------------
def test_ssl_without_environment_is_a_usage_error(capsys):
    err = usage_error(capsys, "--ssl")
    assert "SSL_KEYFILE" in err and "SSL_CERTFILE" in err


def test_ssl_names_the_missing_variable(capsys, monkeypatch, tmp_path):
    (tmp_path / "cert.pem").write_text("cert")
    monkeypatch.setenv("SSL_CERTFILE", str(tmp_path / "cert.pem"))
    err = usage_error(capsys, "--ssl", "--print-env")
    assert "SSL_KEYFILE" in err and "SSL_CERTFILE" not in err.split("error:")[1]


def test_ssl_hints_at_openssls_similar_variable(capsys, monkeypatch):
    monkeypatch.setenv("SSL_KEYFILE", "key.pem")
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/certs/ca.crt")
    assert "OpenSSL's CA bundle" in usage_error(capsys, "--ssl")


def test_ssl_file_must_exist(capsys, monkeypatch, tmp_path):
    (tmp_path / "key.pem").write_text("key")
    monkeypatch.setenv("SSL_KEYFILE", str(tmp_path / "key.pem"))
    monkeypatch.setenv("SSL_CERTFILE", str(tmp_path / "missing.pem"))
    assert "SSL_CERTFILE" in usage_error(capsys, "--ssl")


def test_ssl_paths_are_made_absolute(capsys, monkeypatch, tmp_path):
    # gunicorn runs with --chdir REPO_ROOT, so a path relative to the caller's directory must be resolved first.
    (tmp_path / "key.pem").write_text("key")
    (tmp_path / "cert.pem").write_text("cert")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSL_KEYFILE", "key.pem")
    monkeypatch.setenv("SSL_CERTFILE", "cert.pem")
    printed = print_env(capsys, "--ssl")
    assert printed["SSL_KEYFILE"] == str(tmp_path.resolve() / "key.pem")
    assert printed["SSL_CERTFILE"] == str(tmp_path.resolve() / "cert.pem")


# --- validation --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, text", [
    (["--port", "0"], "argument --port"),
    (["--port", "65536"], "argument --port"),
    (["--port", "http"], "argument --port"),
    (["--host", ""], "argument --host"),
    (["--workers", "0"], "argument --workers"),
    (["--workers", "two"], "argument --workers"),
    (["--threads", "-1"], "argument --threads"),
    (["--log-level", "verbose"], "argument --log-level"),
    (["--config", "/nonexistent/gunicorn.conf.py"], "argument --config"),
    (["--no-such-flag"], "unrecognized arguments"),
])
def test_invalid_values_are_usage_errors(capsys, argv, text, serves):
    assert text in usage_error(capsys, *argv)
    assert serves == []


# --- --print-env and serving -------------------------------------------------------------------------------------
def test_print_env_prints_quoted_lines_and_does_not_serve(capsys, serves):
    printed = print_env(capsys, "--api-keys", "k 1,it's", "--host", "127.0.0.1", "--port", "8123",
                        "--allowed-origins", '["*"]', "--workers", "1")
    assert printed == {"API_KEYS": "k 1,it's", "BIND": "127.0.0.1:8123", "CORS_ALLOWED_ORIGINS": "*",
                       "CORS_ALLOWED_METHODS": "*", "CORS_ALLOWED_HEADERS": "*", "CORS_ALLOW_CREDENTIALS": "false",
                       "WEB_CONCURRENCY": "1"}
    assert serves == []


def test_main_serves_gunicorn_with_the_config_and_environment(monkeypatch, serves):
    monkeypatch.setenv("WORKER_READ_TIMEOUT", "12")
    monkeypatch.setenv("CONTROLLER_ADDRESS", "http://env-ctl:1")
    with pytest.raises(serves.Served):
        cli.main(["--host", "127.0.0.1", "--port", "8123", "--worker-addresses", "http://w:1",
                  "--api-keys", "k1,k2", "--workers", "1", "--threads", "4", "--log-level", "warning"])
    [(config, env)] = serves
    assert config == REPO_ROOT / "gunicorn.conf.py"
    assert env["BIND"] == "127.0.0.1:8123"
    assert env["WORKER_ADDRESSES"] == "http://w:1" and "CONTROLLER_ADDRESS" not in env
    assert env["API_KEYS"] == "k1,k2"
    assert (env["WEB_CONCURRENCY"], env["GUNICORN_THREADS"], env["LOG_LEVEL"]) == ("1", "4", "warning")
    assert env["WORKER_READ_TIMEOUT"] == "12" and env["PATH"] == os.environ["PATH"]
    assert os.environ["CONTROLLER_ADDRESS"] == "http://env-ctl:1"  # not changed before serving


def test_main_uses_the_given_config_file(tmp_path, monkeypatch, serves):
    config = tmp_path / "other.conf.py"
    config.write_text("workers = 1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(serves.Served):
        cli.main(["--config", "other.conf.py"])
    [(given, _)] = serves
    assert given == config.resolve()


# --- gunicorn in this process ------------------------------------------------------------------------------------
def gateway_server(monkeypatch, tmp_path, config, **env):
    """cli.GatewayServer(config) as serve() makes it, with `env` as the gateway's variables, started in tmp_path."""
    monkeypatch.chdir(tmp_path)  # the previous directory is restored after the test
    monkeypatch.syspath_prepend(str(REPO_ROOT))  # restored too: GatewayServer puts the repository on sys.path
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # no temporary directory of gunicorn.conf.py's
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)  # gunicorn's own, not a setting of ours
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cli.GatewayServer(config)


def test_gateway_server_loads_gunicorn_conf_from_the_repository(monkeypatch, tmp_path):
    server = gateway_server(monkeypatch, tmp_path, cli.DEFAULT_CONFIG, BIND="127.0.0.1:8123", WEB_CONCURRENCY="3",
                            GUNICORN_THREADS="5", LOG_LEVEL="warning")
    assert os.getcwd() == str(REPO_ROOT)  # as --chdir REPO_ROOT
    cfg = server.cfg
    assert (cfg.bind, cfg.workers, cfg.threads, cfg.loglevel) == (["127.0.0.1:8123"], 3, 5, "warning")
    assert cfg.wsgi_app == "wsgi:app" and cfg.control_socket_disable is True
    assert cfg.graceful_timeout == 300 and callable(cfg.on_starting)  # the hooks are gunicorn.conf.py's


def test_gateway_server_takes_gunicorn_cmd_args_over_the_config(monkeypatch, tmp_path):
    server = gateway_server(monkeypatch, tmp_path, cli.DEFAULT_CONFIG, GUNICORN_THREADS="5",
                            GUNICORN_CMD_ARGS="--threads 9 --access-logformat '%(s)s'")
    assert (server.cfg.threads, server.cfg.access_log_format) == (9, "%(s)s")
    assert server.cfg.workers == SETTINGS["WEB_CONCURRENCY"].default  # the rest stays gunicorn.conf.py's


def test_gateway_server_loads_a_given_config_and_the_repos_wsgi_app(monkeypatch, tmp_path):
    config = tmp_path / "other.conf.py"
    config.write_text("workers = 1\n")
    server = gateway_server(monkeypatch, tmp_path, config)
    assert os.getcwd() == str(REPO_ROOT)
    assert server.cfg.workers == 1 and server.cfg.threads == 1  # gunicorn's defaults for the rest
    app = server.load()  # wsgi:app, imported from the repository although started elsewhere
    assert "/health" in {rule.rule for rule in app.url_map.iter_rules()}


def test_console_script_is_declared():
    setup_cfg = (REPO_ROOT / "setup.cfg").read_text()
    assert "fastchat-gateway = app.cli:main" in setup_cfg
