"""Reading the accepted keys: API_KEYS, and API_KEYS_FILE in either of its two formats.

A file whose name ends in `.toml` is a key file with names and policy (README, API keys, per-key limits); any other is
the plain one: one key per line, `#` comments. Every problem is a ConfigError naming the file, where in it, and
what is wrong; no message ever quotes a key.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime, time, timezone

from app.keys.model import ApiKey, KeyLimits, KeyRing, key_digest
from app.settings import ConfigError
from app.toml_tables import array_of_tables

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,63}")  # one field of a log line, one metric label value
HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
LIMITS = ("requests_per_minute", "tokens_per_minute", "max_parallel_requests")
FIELDS = ("name", "key", "sha256", "models", "expires", *LIMITS)
# Other gateways' names for the same limits (LiteLLM's among them): pointed to ours rather than ignored.
SAME_AS = {"rpm": "requests_per_minute", "rpm_limit": "requests_per_minute", "tpm": "tokens_per_minute",
           "tpm_limit": "tokens_per_minute", "max_parallel": "max_parallel_requests",
           "parallel_requests": "max_parallel_requests"}
# Refused: a limit that is read but not applied would be a lie.
NOT_ENFORCED = frozenset({"max_budget", "budget_duration"})

# The last key ring read successfully, per (API_KEYS, API_KEYS_FILE), in this process. gunicorn's master reads the
# file before it forks (and again on SIGHUP), so a process that starts while the file is broken inherits the
# master's last good keys rather than failing to boot, which would stop the whole server.
_last_good: dict[tuple[tuple[str, ...], str], KeyRing] = {}


def load_ring(env_keys: Sequence[str], path: str, content: bytes | None = None) -> KeyRing:
    """The keys of API_KEYS (named key-1, key-2, ...) and of the file at `path` (if any; `content` when already
    read), checked together.

    Raises ConfigError when the file cannot be read or has a problem.
    """
    keys = [ApiKey(f"key-{number}", key_digest(secret))
            for number, secret in enumerate(dict.fromkeys(env_keys), 1)]
    if path:
        keys = _merge(keys, parse_key_file(path, read_file(path) if content is None else content), path)
    ring = KeyRing(tuple(keys), enabled=bool(env_keys) or bool(path))
    _last_good[(tuple(env_keys), path)] = ring
    return ring


def last_good(env_keys: Sequence[str], path: str) -> KeyRing | None:
    """The ring load_ring last returned for these settings in this process (or the master it was forked from)."""
    return _last_good.get((tuple(env_keys), path))


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ConfigError(f"invalid API_KEYS_FILE={path!r}: {exc.strerror}") from None


def parse_key_file(path: str, content: bytes) -> list[ApiKey]:
    """The keys of the file at `path` whose bytes are `content`, in the format its name says."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"invalid API_KEYS_FILE={path!r}: not UTF-8 text (byte {exc.start})") from None
    if path.lower().endswith(".toml"):
        return _toml_keys(text, path)
    return _plain_keys(text)


def _plain_keys(text: str) -> list[ApiKey]:
    """One key per line, named after its line (line-3); a key repeated keeps its first line, as before."""
    keys, seen = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        secret = line.strip()
        if secret and not secret.startswith("#") and (digest := key_digest(secret)) not in seen:
            seen.add(digest)
            keys.append(ApiKey(f"line-{number}", digest))
    return keys


def _merge(env: list[ApiKey], from_file: list[ApiKey], path: str) -> list[ApiKey]:
    """API_KEYS first. A plain file's key that API_KEYS also has is dropped, as before; in a TOML file a key of
    API_KEYS would have two policies, and a name of both would show two keys as one: both are errors."""
    if not path.lower().endswith(".toml"):
        in_env = {api_key.digest for api_key in env}
        return env + [api_key for api_key in from_file if api_key.digest not in in_env]
    env_names = {api_key.name: api_key for api_key in env}
    env_digests = {api_key.digest: api_key for api_key in env}
    for api_key in from_file:
        if api_key.name in env_names:
            raise ConfigError(f"invalid API_KEYS_FILE={path!r}: name {api_key.name!r} is also the name of the "
                              f"API_KEYS key {api_key.name}; choose another")
        if api_key.digest in env_digests:
            raise ConfigError(f"invalid API_KEYS_FILE={path!r}: key {api_key.name!r} is also in API_KEYS (as "
                              f"{env_digests[api_key.digest].name}); keep it in one place")
    return env + from_file


# ---------------------------------------------------------------------------------------------- the TOML format
def _toml_keys(text: str, path: str) -> list[ApiKey]:
    where = f"invalid API_KEYS_FILE={path!r}"
    keys: list[ApiKey] = []
    names: dict[str, str] = {}
    digests: dict[bytes, str] = {}
    for index, (entry, line) in enumerate(array_of_tables(text, where, "keys")):
        label = _label(index, entry, line)
        try:
            api_key = _toml_key(entry)
        except ValueError as exc:
            raise ConfigError(f"{where}: {label}: {exc}") from None
        if api_key.name in names:
            raise ConfigError(f"{where}: {label}: the name {api_key.name!r} is already used by {names[api_key.name]}")
        if api_key.digest in digests:
            raise ConfigError(f"{where}: {label}: the same key as {digests[api_key.digest]}")
        names[api_key.name] = digests[api_key.digest] = label
        keys.append(api_key)
    return keys


def _label(index: int, entry: dict, line: int | None) -> str:
    """Where a [[keys]] table is, for a message: `key 'team-a' (line 7)`."""
    name = entry.get("name")
    shown = f"key {name!r}" if isinstance(name, str) and NAME.fullmatch(name) else f"key #{index + 1}"
    return f"{shown} (line {line})" if line else shown


def _toml_key(entry: dict) -> ApiKey:
    for field in entry:
        if field in NOT_ENFORCED:
            raise ValueError(f"{field!r} is not enforced by this version of fastchat-gateway; remove it rather "
                             f"than rely on it")
        if field in SAME_AS:
            raise ValueError(f"unknown field {field!r}: this file calls it {SAME_AS[field]!r}")
        if field not in FIELDS:
            raise ValueError(f"unknown field {field!r} (a key has {', '.join(FIELDS)})")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError("needs a `name` of 1 to 64 letters, digits and . _ : @ / + - (starting with a letter or "
                         "digit): it is what logs and metrics show")
    return ApiKey(name, _digest(entry), _models(entry.get("models")), _expiry(entry.get("expires")),
                  _limits(entry))


def _limits(entry: dict) -> KeyLimits | None:
    """The key's limits, each a positive TOML integer; None when it has none."""
    for field in LIMITS:
        value = entry.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"`{field}` must be a whole number of at least 1, without quotes (leave it out for "
                             f"no limit; to refuse the key, remove it)")
    values = {field: entry[field] for field in LIMITS if field in entry}
    return KeyLimits(**values) if values else None


def _digest(entry: dict) -> bytes:
    if ("key" in entry) == ("sha256" in entry):
        raise ValueError("give the key either as `key = \"...\"` or as `sha256 = \"<hex digest>\"` "
                         "(`fastchat-gateway key-digest` prints it), not both or neither")
    if "sha256" in entry:
        digest = entry["sha256"]
        if not isinstance(digest, str) or not HEX_DIGEST.fullmatch(digest):
            raise ValueError("`sha256` must be the 64 hexadecimal digits of the key's SHA-256 digest "
                             "(`fastchat-gateway key-digest` prints it)")
        return bytes.fromhex(digest)
    secret = entry["key"]
    if not isinstance(secret, str) or not secret.strip():
        raise ValueError("`key` must be a non-empty string")
    if secret != secret.strip():
        raise ValueError("`key` starts or ends with white space, which a client cannot send")
    return key_digest(secret)


def _models(models) -> tuple[str, ...] | None:
    if models is None:
        return None
    if not isinstance(models, list) or not all(isinstance(model, str) and model.strip() for model in models):
        raise ValueError("`models` must be a list of model names or fnmatch patterns, such as "
                         "[\"llama-3-8b\", \"qwen2.5-*\"]")
    return tuple(models)


def _expiry(expires) -> datetime | None:
    """An offset date-time as given; a local date-time, or a date (at its midnight), in UTC."""
    if expires is None:
        return None
    if isinstance(expires, datetime):
        return expires if expires.tzinfo else expires.replace(tzinfo=timezone.utc)
    if isinstance(expires, date):
        return datetime.combine(expires, time(), tzinfo=timezone.utc)
    raise ValueError("`expires` must be a TOML date (2027-01-01, meaning its midnight UTC) or date-time "
                     "(2027-01-01T12:00:00Z), without quotes")
