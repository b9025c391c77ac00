"""`fastchat-gateway`: a drop-in replacement for `python -m fastchat.serve.openai_api_server`.

It accepts FastChat's API server flags, with the same defaults and meanings, plus the gateway's own options,
translates them into the environment variables declared in app/settings.py (read by the app and by
gunicorn.conf.py), and then runs gunicorn in this process through its custom-application API, loading
gunicorn.conf.py from the repository as `make run` (`gunicorn -c gunicorn.conf.py wsgi:app`) does.
A flag that is not given leaves its variable as it is in the environment, so environment-based configuration
keeps working; `--print-env` shows the result without starting anything.

`fastchat-gateway key-digest` is the one subcommand: it prints the SHA-256 digest of an API key, for a key file
that holds no secrets (app.keys).

The options that set one variable to their value (--controller-address, --workers, ...) are made from the settings
that name them as their `flag`, with the setting's parser, meaning and default; the rest translate FastChat's
forms (host and port, JSON lists, --ssl) and are written here.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from gunicorn import util
from gunicorn.app.base import Application

import app as _app_package
from app.keys.model import key_digest
from app.settings import SETTINGS, Setting

REPO_ROOT = Path(_app_package.__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "gunicorn.conf.py"

# FastChat's defaults (fastchat.serve.openai_api_server).
FASTCHAT_HOST = "localhost"
FASTCHAT_PORT = 8000
FASTCHAT_CONTROLLER = "http://localhost:21001"
FASTCHAT_CORS_DEFAULT = ["*"]  # origins, methods and headers

# The settings set by an option of their own (its value as given, checked by the setting's parser).
FLAG_SETTINGS: tuple[Setting, ...] = tuple(setting for setting in SETTINGS.values() if setting.flag)
FASTCHAT_FLAGS = ("--controller-address", "--api-keys")  # in the help's group of FastChat's options
# Only one way of finding workers: the option of one unsets the other's variable.
EXCLUSIVE = {"CONTROLLER_ADDRESS": "WORKER_ADDRESSES", "WORKER_ADDRESSES": "CONTROLLER_ADDRESS"}


def _epilog() -> str:
    mapped = [("--host/--port", "BIND=host:port (FastChat's localhost:8000 when neither is given and BIND is unset)")]
    for setting in FLAG_SETTINGS:
        other = EXCLUSIVE.get(setting.name)
        mapped.append((setting.flag, setting.name + (f" (and unsets {other})" if other else "")))
    mapped += [
        ("--allowed-origins", "CORS_ALLOWED_ORIGINS (JSON list -> comma-separated)"),
        ("--allowed-methods", "CORS_ALLOWED_METHODS (* when --allowed-origins is given without it, as in FastChat)"),
        ("--allowed-headers", "CORS_ALLOWED_HEADERS (* when --allowed-origins is given without it, as in FastChat)"),
        ("--allow-credentials", "CORS_ALLOW_CREDENTIALS=true (false when --allowed-origins is given without it)"),
        ("--ssl", "checks SSL_KEYFILE and SSL_CERTFILE (made absolute); gunicorn.conf.py serves TLS\n"
                  + " " * 25 + "whenever both are set, even without --ssl"),
    ]
    return ("Subcommand: fastchat-gateway key-digest [KEY] prints the SHA-256 digest of an API key, for "
            "`sha256 = \"...\"`\nin a .toml API_KEYS_FILE (see README, API keys, per-key limits).\n\n"
            "Every option is translated into an environment variable read by the app or gunicorn.conf.py (see "
            "README,\nConfiguration); an option not given leaves its variable as it is in the environment.\n\n"
            + "".join(f"  {flag:<22} {meaning}\n" for flag, meaning in mapped)
            + "\nDeviation from FastChat: CORS is off unless --allowed-origins is given; FastChat allowed every "
              "origin by default.\n")


class UsageError(ValueError):
    """Options that cannot run together, or with this environment; the message says which."""


# ---------------------------------------------------------------------------------------------- option types
def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {value!r}: must be an integer from 1 to 65535") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value!r}: must be from 1 to 65535")
    return port


def _host(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value.strip()


def _setting(setting: Setting):
    """The option type of `setting`: checked with its own parser, given as the variable's text (a name chosen
    from a list in its canonical case); empty only where the setting's default is empty."""

    def check(value: str) -> str:
        value = value.strip()
        if not value and setting.off_by_default:
            return value
        try:
            parsed = setting.parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"invalid value {value!r}: {exc}") from None
        return parsed if isinstance(parsed, str) else value

    return check


def _setting_help(setting: Setting) -> str:
    default = setting.default_text() + (f" {setting.unit}" if setting.unit else "")
    return f"{setting.help.replace('`', '')}; env {setting.name} (default: {default})"


def _json_list(what: str, *, allow_empty: bool):
    """An option type for FastChat's JSON lists (parsed with json.loads), e.g. '["*"]'."""

    def parse(value: str) -> list[str]:
        try:
            items = json.loads(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"invalid JSON {value!r} ({exc}): give a JSON list of strings such as '[\"*\"]'") from None
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise argparse.ArgumentTypeError(f"{value!r} is not a JSON list of strings such as '[\"*\"]'")
        items = [item.strip() for item in items]
        for item in items:
            if not item or "," in item:
                raise argparse.ArgumentTypeError(f"invalid {what} {item!r} in {value!r}: empty or contains a comma")
        if not items and not allow_empty:
            raise argparse.ArgumentTypeError(f"{value!r} names no {what}: give at least one, or '[\"*\"]' for any")
        return items

    return parse


def _config_file(value: str) -> Path:
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {value}")
    return path


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastchat-gateway",
        description="OpenAI-compatible API server for FastChat controller/worker clusters (Flask + gunicorn); "
                    "a drop-in replacement for `python -m fastchat.serve.openai_api_server`.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    fastchat = parser.add_argument_group("FastChat's openai_api_server options")
    # Defaults of None mean "not given", so that the environment is left alone; the help shows FastChat's.
    fastchat.add_argument("--host", type=_host, default=None, help=f"host name (default: {FASTCHAT_HOST})")
    fastchat.add_argument("--port", type=_port, default=None, help=f"port number (default: {FASTCHAT_PORT})")
    gateway = parser.add_argument_group("gateway options")
    for setting in FLAG_SETTINGS:  # FastChat's first, in its group, as its --help lists them
        (fastchat if setting.flag in FASTCHAT_FLAGS else gateway).add_argument(
            setting.flag, type=_setting(setting), default=None, metavar=setting.name, help=_setting_help(setting))
    fastchat.add_argument("--allow-credentials", action="store_true", default=False,
                          help="CORS: allow credentials")
    fastchat.add_argument("--allowed-origins", type=_json_list("origin", allow_empty=True), default=None,
                          help="CORS: JSON list of allowed origins, e.g. '[\"*\"]' (default: CORS off)")
    fastchat.add_argument("--allowed-methods", type=_json_list("method", allow_empty=False), default=None,
                          help="CORS: JSON list of allowed methods (default: '[\"*\"]')")
    fastchat.add_argument("--allowed-headers", type=_json_list("header", allow_empty=False), default=None,
                          help="CORS: JSON list of allowed headers (default: '[\"*\"]')")
    fastchat.add_argument("--ssl", action="store_true", default=False,
                          help="serve HTTPS with the key and certificate named by env SSL_KEYFILE and SSL_CERTFILE")

    gateway.add_argument("--config", type=_config_file, default=DEFAULT_CONFIG,
                         help=f"gunicorn config file (default: {DEFAULT_CONFIG})")
    gateway.add_argument("--print-env", action="store_true",
                         help="print the gateway's environment variables as it would run with them "
                              "(NAME=value lines, usable as a systemd EnvironmentFile) and exit")
    return parser


def parse_args(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None):
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if args.worker_addresses is not None and args.controller_address is not None:  # EXCLUSIVE
        parser.error("--worker-addresses (no controller) and --controller-address cannot be used together")
    return args


# ---------------------------------------------------------------------------------------------- environment
def _bind(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):  # an IPv6 address
        host = f"[{host}]"
    return f"{host}:{port}"


def build_env(args: argparse.Namespace, base_env: Mapping[str, str]) -> dict[str, str]:
    """The environment to run gunicorn with: `base_env` with the given options translated into variables.

    Raises UsageError when the options cannot run with `base_env` (--ssl without SSL_KEYFILE/SSL_CERTFILE).
    """
    env = dict(base_env)

    if args.host is not None or args.port is not None or not env.get("BIND", "").strip():
        env["BIND"] = _bind(args.host or FASTCHAT_HOST, args.port or FASTCHAT_PORT)

    for setting in FLAG_SETTINGS:
        value = getattr(args, _dest(setting))
        if value is not None:
            env[setting.name] = value
            if setting.name in EXCLUSIVE:
                env.pop(EXCLUSIVE[setting.name], None)  # the option wins over the environment's mode

    # CORS: off unless origins are given; with them, FastChat's defaults for the rest.
    if args.allowed_origins is not None:
        env["CORS_ALLOWED_ORIGINS"] = ",".join(args.allowed_origins)
    if args.allowed_methods is not None or args.allowed_origins is not None:
        env["CORS_ALLOWED_METHODS"] = ",".join(args.allowed_methods or FASTCHAT_CORS_DEFAULT)
    if args.allowed_headers is not None or args.allowed_origins is not None:
        env["CORS_ALLOWED_HEADERS"] = ",".join(args.allowed_headers or FASTCHAT_CORS_DEFAULT)
    if args.allow_credentials or args.allowed_origins is not None:
        env["CORS_ALLOW_CREDENTIALS"] = "true" if args.allow_credentials else "false"

    if args.ssl:
        missing = [name for name in ("SSL_KEYFILE", "SSL_CERTFILE") if not env.get(name, "").strip()]
        if missing:
            hint = ""
            if "SSL_CERTFILE" in missing and env.get("SSL_CERT_FILE"):
                hint = "; SSL_CERT_FILE (with an underscore) is OpenSSL's CA bundle, not the server certificate"
            raise UsageError(f"--ssl needs the environment variable{'s' if len(missing) > 1 else ''} "
                             f"{' and '.join(missing)} (paths of the TLS key and certificate, as in FastChat){hint}")
        for name in ("SSL_KEYFILE", "SSL_CERTFILE"):
            path = Path(env[name].strip()).expanduser()
            if not path.is_file():
                raise UsageError(f"--ssl: {name}={env[name]!r} is not a file")
            env[name] = str(path.resolve())  # gunicorn runs from REPO_ROOT
    return env


def _dest(setting: Setting) -> str:
    return setting.flag.lstrip("-").replace("-", "_")


def cors_warning(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """A warning when CORS options were given but CORS stays off (no allowed origins anywhere)."""
    given = args.allowed_methods is not None or args.allowed_headers is not None or args.allow_credentials
    if given and args.allowed_origins is None and not env.get("CORS_ALLOWED_ORIGINS", "").strip():
        return ("fastchat-gateway: warning: CORS stays off without --allowed-origins (or CORS_ALLOWED_ORIGINS); "
                "FastChat allowed every origin by default\n")
    return None


def gateway_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of `env` that configure the gateway (app settings and server settings), sorted.

    Not OpenSSL's SSL_CERT_FILE and SSL_CERT_DIR (CA bundles), often set and no setting of ours."""
    return {name: env[name] for name in sorted(env) if name in SETTINGS}


def format_env(variables: Mapping[str, str]) -> str:
    """NAME=value lines, quoted so that both sh and systemd's EnvironmentFile read them back."""
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in variables.items())


class GatewayServer(Application):
    """gunicorn with the settings of the config file (gunicorn.conf.py), run from the repository: what
    `gunicorn -c CONFIG --chdir REPO wsgi:app` runs, without its command line."""

    def __init__(self, config: Path):
        self.config_file = config
        super().__init__(prog="fastchat-gateway")

    def load_config(self):
        self.cfg.set("chdir", str(REPO_ROOT))
        self.chdir()  # wsgi.py and the app are imported from the repository, wherever the script was started
        self.load_config_from_file(str(self.config_file))
        # Then GUNICORN_CMD_ARGS over the file, as gunicorn's own command does.
        from_env = self.cfg.parser().parse_args(self.cfg.get_cmd_args_from_env())
        for name, value in vars(from_env).items():
            if value is not None and name != "args":
                self.cfg.set(name, value)

    def load(self):
        return util.import_app(self.cfg.wsgi_app or "wsgi:app")


def serve(config: Path, env: Mapping[str, str]) -> None:
    """Run gunicorn in this process with `env` as its environment, which gunicorn.conf.py and the workers read."""
    os.environ.clear()
    os.environ.update(env)
    GatewayServer(config).run()


# ---------------------------------------------------------------------------------------------- key-digest
def build_key_digest_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastchat-gateway key-digest",
        description="Print the SHA-256 digest of an API key, to write as `sha256 = \"<digest>\"` in a .toml "
                    "API_KEYS_FILE, so that the file holds no secret. The key is read from standard input (one "
                    "per line, each line's digest printed on its own; asked for without echo on a terminal) "
                    "unless given as an argument, which other users of the machine can see in the process list.")
    parser.add_argument("key", nargs="?", help="the key (default: read from standard input)")
    return parser


def key_digest_main(argv: Sequence[str]) -> int:
    parser = build_key_digest_parser()
    args = parser.parse_args(argv)
    if args.key is not None:
        keys = [args.key]
    elif sys.stdin.isatty():
        keys = [getpass.getpass("API key: ")]
    else:
        keys = sys.stdin.read().splitlines()
    # Surrounding white space is what a client cannot send (the gateway strips it from the header): dropped here.
    keys = [key.strip() for key in keys if key.strip()]
    if not keys:
        parser.error("no key given")
    sys.stdout.write("".join(key_digest(key).hex() + "\n" for key in keys))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["key-digest"]:
        return key_digest_main(argv[1:])
    parser = build_parser()
    args = parse_args(argv, parser)
    try:
        env = build_env(args, os.environ)
    except UsageError as exc:
        parser.error(str(exc))  # exits with status 2
    warning = cors_warning(args, env)
    if warning:
        sys.stderr.write(warning)
    if args.print_env:
        sys.stdout.write(format_env(gateway_variables(env)))
        sys.stdout.flush()
        return 0
    serve(args.config, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
