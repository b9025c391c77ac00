"""The app's JSON responses are byte for byte what Flask's own provider makes with the same options."""
from flask import Flask
from flask.json.provider import DefaultJSONProvider

from app.json_provider import GatewayJSONProvider

BODIES = [{"b": 1, "a": [1.5, None, True], "text": "wörd ✓ \u2028 \"quoted\"", "nested": {"z": {}, "y": []}},
          [], "plain", 10**30, float("-inf"), {"logprob": -1e-05}]


def flask_provider(app: Flask) -> DefaultJSONProvider:
    provider = DefaultJSONProvider(app)
    provider.compact, provider.ensure_ascii, provider.sort_keys = True, False, False
    return provider


def test_responses_match_flasks_provider_byte_for_byte():
    app = Flask(__name__)
    ours, flasks = GatewayJSONProvider(app), flask_provider(app)
    with app.app_context():
        for body in BODIES:
            mine, theirs = ours.response(body), flasks.response(body)
            assert mine.get_data() == theirs.get_data()
            assert mine.mimetype == theirs.mimetype == "application/json"


def test_changed_options_are_still_honoured():
    app = Flask(__name__)
    provider = GatewayJSONProvider(app)
    provider.sort_keys = True
    with app.app_context():
        assert provider.response({"b": 1, "a": 2}).get_data() == b'{"a":2,"b":1}\n'
