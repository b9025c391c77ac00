"""bench/profile_gateway.py's summary of py-spy's collapsed stacks."""
import pytest

from bench import profile_gateway as profile

STACKS = [
    "handle (gunicorn/workers/gthread.py:10);wsgi_app (flask/app.py:20);load (marshmallow/schema.py:30) 3",
    "handle (gunicorn/workers/gthread.py:10);wsgi_app (flask/app.py:21);_post (app/upstream/client.py:40) 5",
    # recursion: the function counts once for the stack, its package once for the running frame
    "handle (gunicorn/workers/gthread.py:10);dumps (json/encoder.py:5);dumps (json/encoder.py:9) 2",
    "",
    "not a stack line",
]


def test_shares_by_running_package_and_by_function_with_callees():
    summary = profile.summarize(STACKS)
    assert summary["samples"] == 10
    assert summary["by_package"] == {"app": 50.0, "marshmallow": 30.0, "json": 20.0}
    functions = summary["by_function"]
    assert functions["handle (gunicorn/workers/gthread.py)"] == 100.0
    assert functions["wsgi_app (flask/app.py)"] == 80.0  # two line numbers, one function
    assert functions["dumps (json/encoder.py)"] == 20.0  # not 40: recursion counted once
    assert list(functions)[0] == "handle (gunicorn/workers/gthread.py)"


@pytest.mark.parametrize("frame, name", [
    ("run (threading.py:5)", "threading"),
    ("_post (app/upstream/client.py:40)", "app"),
    ("iterencode (json/encoder.py:205)", "json"),
    ("<module> (gunicorn)", "gunicorn"),
])
def test_the_package_is_the_first_part_of_the_file(frame, name):
    assert profile.package(frame) == name


def test_no_samples_is_an_empty_summary():
    assert profile.summarize([]) == {"samples": 0, "by_package": {}, "by_function": {}}
