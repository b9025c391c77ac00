"""The one TOML shape of the gateway's operator files (API_KEYS_FILE, ROUTES_FILE): an array of tables, each
entry with the line of its `[[name]]` header for error messages."""
from __future__ import annotations

import re
import sys

from app.settings import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib


def array_of_tables(text: str, where: str, name: str) -> list[tuple[dict, int | None]]:
    """Each `[[name]]` table of `text` with its header's line (None when the headers cannot be told apart, e.g.
    an inline array). Raises ConfigError, prefixed with `where`, for bad TOML or any other top-level entry."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from None  # its message says the line and column
    unknown = sorted(set(document) - {name})
    if unknown:
        raise ConfigError(f"{where}: unknown top-level entry {unknown[0]!r}: the file holds only [[{name}]] tables")
    entries = document.get(name, [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError(f"{where}: `{name}` must be an array of tables, written as [[{name}]] sections")
    header = re.compile(rf"\s*\[\[\s*({name}|\"{name}\"|'{name}')\s*\]\]")
    lines = [number for number, line in enumerate(text.splitlines(), 1) if header.match(line)]
    if len(lines) != len(entries):
        return [(entry, None) for entry in entries]
    return list(zip(entries, lines))
