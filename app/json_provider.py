"""The app's JSON responses: Flask's own provider with the app's options (compact, UTF-8 as is, keys in their
order), its encoder built once. Flask's json.dumps(obj, **options) builds a new JSONEncoder for every response,
about half of what encoding a chat completion costs; the bytes are the same."""
from __future__ import annotations

import json
from typing import Any

from flask import Response
from flask.json.provider import DefaultJSONProvider


class GatewayJSONProvider(DefaultJSONProvider):
    compact = True
    ensure_ascii = False
    sort_keys = False

    def __init__(self, app):
        super().__init__(app)
        self._encoder = json.JSONEncoder(ensure_ascii=False, sort_keys=False, separators=(",", ":"),
                                         default=self.default)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if not (self.compact is True and self.ensure_ascii is False and self.sort_keys is False):
            return super().response(*args, **kwargs)  # options changed since: Flask's way
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(f"{self._encoder.encode(obj)}\n", mimetype=self.mimetype)
