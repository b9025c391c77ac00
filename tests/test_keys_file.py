"""API_KEYS_FILE: the TOML format with names and policy, the plain format, and their errors."""
import hashlib
from datetime import datetime, timezone

import pytest

from app.config import ConfigError, load_config
from app.keys.files import load_ring
from app.keys.model import KeyLimits

DIGEST = hashlib.sha256(b"sk-hashed").hexdigest()


def ring(tmp_path, text, env=(), name="keys.toml"):
    path = tmp_path / name
    path.write_text(text)
    return load_ring(env, str(path))


def test_toml_keys_have_names_digests_models_and_expiry(tmp_path):
    keys = ring(tmp_path, f'''
[[keys]]
name = "team-a"
sha256 = "{DIGEST.upper()}"
models = ["llama-3", "qwen2.5-*"]

[[keys]]
name = "ci"
key = "sk-plain"
expires = 2027-01-01

[[keys]]
name = "late"
key = "sk-late"
expires = 2027-01-01T12:00:00+02:00
''').keys
    assert [k.name for k in keys] == ["team-a", "ci", "late"]
    assert keys[0].digest == hashlib.sha256(b"sk-hashed").digest()
    assert keys[1].digest == hashlib.sha256(b"sk-plain").digest()
    assert keys[0].may_use("llama-3") and keys[0].may_use("qwen2.5-7b") and not keys[0].may_use("llama-3-70b")
    assert keys[1].models is None and keys[1].may_use("anything")
    assert keys[1].expires == datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert keys[2].expires == datetime(2027, 1, 1, 10, tzinfo=timezone.utc)
    assert keys[1].expired(datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert not keys[1].expired(datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc))
    assert "sk-plain" not in repr(keys) and DIGEST not in repr(keys).lower()


def test_limits_are_read_and_a_key_without_any_has_none(tmp_path):
    keys = ring(tmp_path, '''
[[keys]]
name = "limited"
key = "sk-1"
requests_per_minute = 5
tokens_per_minute = 10000
max_parallel_requests = 2

[[keys]]
name = "rpm-only"
key = "sk-2"
requests_per_minute = 60

[[keys]]
name = "free"
key = "sk-3"
''').keys
    assert keys[0].limits == KeyLimits(requests_per_minute=5, tokens_per_minute=10000, max_parallel_requests=2)
    assert keys[1].limits == KeyLimits(requests_per_minute=60)
    assert keys[2].limits is None


def test_api_keys_and_a_plain_file_get_position_names_and_dedupe_as_before(tmp_path):
    keys = ring(tmp_path, "# team\nsk-a\n\nsk-env\nsk-b\nsk-a\n", env=("sk-env", "sk-x"), name="keys.txt").keys
    assert [k.name for k in keys] == ["key-1", "key-2", "line-2", "line-5"]


def test_an_empty_file_still_requires_keys(tmp_path):
    assert ring(tmp_path, "# none yet\n", name="keys.txt").enabled
    assert len(ring(tmp_path, "")) == 0 and ring(tmp_path, "").enabled
    assert not load_ring((), "").enabled


@pytest.mark.parametrize("text, problem", [
    ('[[keys]]\nname = "a"\nkey = "k"\nrpm = 5\n', "unknown field 'rpm': this file calls it 'requests_per_minute'"),
    ('[[keys]]\nname = "a"\nkey = "k"\ntpm_limit = 5\n', "this file calls it 'tokens_per_minute'"),
    ('[[keys]]\nname = "a"\nkey = "k"\nmax_parallel = 2\n', "this file calls it 'max_parallel_requests'"),
    ('[[keys]]\nname = "a"\nkey = "k"\nmax_budget = 10\n', "'max_budget' is not enforced by this version"),
    ('[[keys]]\nname = "a"\nkey = "k"\nrequests_per_minute = 0\n', "`requests_per_minute` must be a whole number"),
    ('[[keys]]\nname = "a"\nkey = "k"\ntokens_per_minute = "5"\n', "`tokens_per_minute` must be a whole number"),
    ('[[keys]]\nname = "a"\nkey = "k"\nmax_parallel_requests = 1.5\n', "`max_parallel_requests` must be"),
    ('[[keys]]\nname = "a"\nkey = "k"\nrequests_per_minute = true\n', "`requests_per_minute` must be"),
    ('[[keys]]\nname = "a"\nkey = "k"\ntokens_per_minute = -1\n', "without quotes"),
    ('[[keys]]\nname = "a"\nkey = "k"\ncolour = "red"\n', "unknown field 'colour'"),
    ('[[keys]]\nkey = "k"\n', "needs a `name`"),
    ('[[keys]]\nname = "has space"\nkey = "k"\n', "needs a `name`"),
    ('[[keys]]\nname = "a"\n', "either as `key"),
    (f'[[keys]]\nname = "a"\nkey = "k"\nsha256 = "{DIGEST}"\n', "not both"),
    ('[[keys]]\nname = "a"\nsha256 = "abc"\n', "64 hexadecimal digits"),
    ('[[keys]]\nname = "a"\nkey = " k"\n', "white space"),
    ('[[keys]]\nname = "a"\nkey = ""\n', "non-empty"),
    ('[[keys]]\nname = "a"\nkey = "k"\nmodels = "m"\n', "`models` must be a list"),
    ('[[keys]]\nname = "a"\nkey = "k"\nexpires = "2027-01-01"\n', "without quotes"),
    ('[[keys]]\nname = "a"\nkey = "k"\nexpires = 12:00:00\n', "`expires` must be"),
    ('name = "a"\n', "unknown top-level entry 'name'"),
    ('keys = "k"\n', "array of tables"),
    ('[[keys]\nname = "a"\n', "line 1"),
])
def test_a_bad_key_file_names_the_file_and_the_problem(tmp_path, text, problem):
    with pytest.raises(ConfigError) as info:
        ring(tmp_path, text)
    message = str(info.value)
    assert message.startswith(f"invalid API_KEYS_FILE='{tmp_path / 'keys.toml'}': ") and problem in message
    assert '"k"' not in message and "'k'" not in message  # never the key


def test_an_error_names_the_key_and_its_line(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'b' \(line 5\): the name 'b' is already used by key 'b' \(line 2\)"):
        ring(tmp_path, '\n[[keys]]\nname = "b"\nkey = "k1"\n[[keys]]\nname = "b"\nkey = "k2"\n')
    with pytest.raises(ConfigError, match=r"key 'c' \(line 4\): the same key as key 'b' \(line 1\)"):
        ring(tmp_path, f'[[keys]]\nname = "b"\nsha256 = "{DIGEST}"\n[[keys]]\nname = "c"\nkey = "sk-hashed"\n')
    with pytest.raises(ConfigError, match=r"key #1 \(line 1\): needs a `name`"):
        ring(tmp_path, '[[keys]]\nkey = "k1"\n')


def test_a_toml_key_may_not_repeat_api_keys(tmp_path):
    with pytest.raises(ConfigError, match="key 'a' is also in API_KEYS \\(as key-1\\)"):
        ring(tmp_path, '[[keys]]\nname = "a"\nkey = "sk-env"\n', env=("sk-env",))
    with pytest.raises(ConfigError, match="name 'key-1' is also the name of the API_KEYS key"):
        ring(tmp_path, '[[keys]]\nname = "key-1"\nkey = "other"\n', env=("sk-env",))


def test_load_config_fails_at_start_on_a_bad_or_missing_file(tmp_path):
    bad = tmp_path / "keys.toml"
    bad.write_text('[[keys]]\nname = "a"\n')
    with pytest.raises(ConfigError, match="API_KEYS_FILE"):
        load_config({"API_KEYS_FILE": str(bad)})
    with pytest.raises(ConfigError, match="No such file"):
        load_config({"API_KEYS_FILE": str(tmp_path / "missing.txt")})


def test_not_utf8_is_named(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_ring((), str(path))
