"""app/settings.py, the one declaration of every setting: README's tables are made from it and must not drift."""
from pathlib import Path

import pytest

from app import settings
from app.settings import APP, SERVER, SETTINGS, ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("reader", [APP, SERVER])
def test_readme_tables_are_the_generated_ones(reader):
    found = settings.readme_tables(README.read_text(encoding="utf-8"))
    assert reader in found, f"README.md lost its <!-- settings:{reader} --> markers"
    assert found[reader] == settings.markdown_table(reader), (
        "README.md's configuration table differs from app/settings.py: "
        "run `.venv/bin/python -m app.settings --update-readme README.md`")


def test_update_readme_rewrites_only_the_marked_tables():
    text = "intro\n<!-- settings:app -->\nstale table\n<!-- /settings:app -->\nmiddle\n" \
           "<!-- settings:server -->\n<!-- /settings:server -->\nend\n"
    updated = settings.update_readme(text)
    assert updated.startswith("intro\n<!-- settings:app -->\n| variable |") and "stale table" not in updated
    assert "middle\n" in updated and updated.endswith("<!-- /settings:server -->\nend\n")
    assert settings.readme_tables(updated) == {APP: settings.markdown_table(APP),
                                               SERVER: settings.markdown_table(SERVER)}


def test_every_setting_is_in_one_table_once():
    rows = [line for reader in (APP, SERVER) for line in settings.markdown_table(reader).splitlines()[2:]]
    assert [row.split("`")[1] for row in rows] == list(SETTINGS)


@pytest.mark.parametrize("setting", [s for s in SETTINGS.values() if not s.shown_default and not s.off_by_default],
                         ids=lambda s: s.name)
def test_documented_default_reads_back_as_the_default(setting):
    # What README and --help show as the default is what the setting's own parser makes of it.
    assert setting.read({setting.name: setting.default_text()}) == setting.default


@pytest.mark.parametrize("name, value, message", [
    ("GUNICORN_THREADS", "0", "invalid GUNICORN_THREADS='0': must be at least 1"),
    ("WEB_CONCURRENCY", "two", "invalid WEB_CONCURRENCY='two': must be an integer"),
    ("GUNICORN_LIMIT_REQUEST_LINE", "-1", "invalid GUNICORN_LIMIT_REQUEST_LINE='-1': must be at least 0"),
    ("LOG_LEVEL", "loud", "invalid LOG_LEVEL='loud': must be one of debug, info, warning, error, critical"),
    ("CORS_ALLOW_CREDENTIALS", "maybe", "invalid CORS_ALLOW_CREDENTIALS='maybe': must be true or false"),
])
def test_invalid_values_name_the_setting(name, value, message):
    with pytest.raises(ConfigError) as exc:
        SETTINGS[name].read({name: value})
    assert str(exc.value) == message


def test_blank_is_the_default():
    assert SETTINGS["GUNICORN_THREADS"].read({"GUNICORN_THREADS": "  "}) == 528
    assert SETTINGS["LOG_LEVEL"].read({"LOG_LEVEL": " DEBUG "}) == "debug"


def test_each_reader_reads_its_own():
    assert "BIND" in settings.read({}, SERVER) and "BIND" not in settings.read({}, APP)
    assert "MAX_N" in settings.read({}, APP) and "MAX_N" not in settings.read({}, SERVER)
