"""@documented: what the OpenAPI document says about a view beyond its rule, methods and docstring.

app/openapi.py walks app.url_map: the rule and methods come from the route, the summary from the first line of the
view's docstring and the description from the rest; everything else is attached here, next to the view. Kept
apart from app/openapi.py so the views do not load apispec.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# The statuses a generation endpoint answers with besides 200, and the ones any upstream call may cause.
UPSTREAM_ERRORS = (500, 502, 503, 504)
GENERATION_ERRORS = (400, 401, 404, 413, 429, *UPSTREAM_ERRORS)

_ATTRIBUTE = "openapi"


@dataclass(frozen=True)
class OtherRule:
    """A second rule of the same view, documented as an operation of its own."""

    operation_id: str
    summary: str
    description: str = ""


@dataclass(frozen=True)
class ViewDoc:
    """tag: the operation's tag. response: the component of the 200 JSON body, or `content` for other media
    types (with neither, the operation has no 200: a route that always answers an error). request: the key of
    the request schema in app.extensions["schemas"]. stream: the component of the chunks sent as server-sent
    events when the request says `stream: true`, or a tuple of the components of named events (`event: <type>`
    then `data:`, no [DONE]: the Responses API). errors: the statuses besides 200, each
    documented by its shared response unless error_notes describes it. operation_id: the view's name in camelCase
    unless given. other_rules: by rule as app.url_map spells it."""

    tag: str
    response: str | None = None
    content: Mapping | None = None
    request: str | None = None
    stream: str | tuple[str, ...] | None = None
    errors: tuple[int, ...] = ()
    error_notes: Mapping[int, str] = field(default_factory=dict)
    operation_id: str | None = None
    other_rules: Mapping[str, OtherRule] = field(default_factory=dict)


def documented(tag: str, **details) -> Callable[[Callable], Callable]:
    """Attach a ViewDoc to the view (put it under the route decorators); details are ViewDoc's fields."""
    doc = ViewDoc(tag, **details)

    def attach(view: Callable) -> Callable:
        setattr(view, _ATTRIBUTE, doc)
        return view

    return attach


def view_doc(view: Callable) -> ViewDoc | None:
    return getattr(view, _ATTRIBUTE, None)
