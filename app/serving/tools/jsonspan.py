"""Where a JSON object or array ends in text that arrives piece by piece, without parsing it.

Only brackets outside strings are counted, so the span is found in one pass; whether the span is valid JSON is
left to json.loads once it is complete. This is what lets calls and JSON replies stream without partial-JSON
parsing.
"""
from __future__ import annotations

_OPEN, _CLOSE = "{[", "}]"


class JsonSpan:
    """Feed text; `end` becomes the offset (in all text fed so far) just after the value's closing bracket.

    skip_to: None means the value must start at the first non-whitespace character (else `invalid` is set);
    a string such as "{" means any text before the first such character is skipped (and `start` records where
    the value begins).
    """

    def __init__(self, skip_to: str | None = None):
        self._skip_to = skip_to
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self.fed = 0
        self.start: int | None = None
        self.end: int | None = None
        self.invalid = False

    def feed(self, text: str) -> None:
        for offset, char in enumerate(text, start=self.fed):
            if self.end is not None or self.invalid:
                break
            if self.start is None:
                if char in (self._skip_to or _OPEN):
                    self.start, self._depth = offset, 1
                elif self._skip_to is None and not char.isspace():
                    self.invalid = True
                continue
            self._step(char, offset)
        self.fed += len(text)

    def _step(self, char: str, offset: int) -> None:
        if self._in_string:
            if self._escaped:
                self._escaped = False
            elif char == "\\":
                self._escaped = True
            elif char == '"':
                self._in_string = False
        elif char == '"':
            self._in_string = True
        elif char in _OPEN:
            self._depth += 1
        elif char in _CLOSE:
            self._depth -= 1
            if self._depth == 0:
                self.end = offset + 1
