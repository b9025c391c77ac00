"""Which tool format a model gets: a per-model override, else the one its FastChat template implies, else none.

The override setting's value is "model=format,model2=format" (spaces ignored). A model may be an fnmatch pattern
("qwen2.5-*=hermes"); exact names win over patterns, earlier patterns over later ones. The format "none" turns
tool calling off for a model whose template would have one.
"""
from __future__ import annotations

from fnmatch import fnmatchcase

from app.errors import unsupported_parameter
from app.serving.prompt import Template
from app.serving.tools import hermes, llama3_json, mistral
from app.serving.tools.formats import ToolFormat

FORMATS: dict[str, ToolFormat] = {f.name: f for f in (hermes.FORMAT, llama3_json.FORMAT, mistral.FORMAT)}
NONE = "none"

# FastChat template names whose models were trained on a format. ChatML templates (roles <|im_start|>user and
# <|im_start|>assistant: Qwen, OpenHermes, Nous-Hermes, Yi, ...) are the Hermes family whatever their name.
_BY_TEMPLATE_NAME = {"llama-3": "llama3_json", "mistral": "mistral"}
_CHATML_ROLES = ("<|im_start|>user", "<|im_start|>assistant")


def parse_overrides(value: str | None) -> dict[str, str]:
    """The setting's text as {model or pattern: format}. Raises ValueError naming a bad entry (at startup)."""
    overrides: dict[str, str] = {}
    for entry in (value or "").split(","):
        if not entry.strip():
            continue
        model, sep, name = (part.strip() for part in entry.partition("="))
        if not sep or not model or name not in (*FORMATS, NONE):
            raise ValueError(f"tool format override {entry.strip()!r} must be model=format with format one of "
                             f"{', '.join((*FORMATS, NONE))}")
        overrides[model] = name
    return overrides


def format_for(model: str, template: Template, overrides: dict[str, str] | None = None) -> ToolFormat | None:
    """The model's tool format, or None when it has none."""
    name = _override(model, overrides or {})
    if name is None:
        name = _BY_TEMPLATE_NAME.get(template.name)
        if name is None and tuple(template.roles[:2]) == _CHATML_ROLES:
            name = hermes.FORMAT.name
    return FORMATS.get(name) if name else None


def require_format(model: str, template: Template, overrides: dict[str, str] | None = None) -> ToolFormat:
    """The format for a request that offers tools; a 400 naming `tools` when there is none (never dropped)."""
    fmt = format_for(model, template, overrides)
    if fmt is None:
        raise unsupported_parameter(
            "tools", f"The model `{model}` has no tool-call format (its conversation template is "
                     f"{template.name!r}), so tools cannot be offered to it. The operator can set one per model "
                     f"({', '.join(FORMATS)}).")
    return fmt


def _override(model: str, overrides: dict[str, str]) -> str | None:
    if model in overrides:
        return overrides[model]
    return next((name for pattern, name in overrides.items() if fnmatchcase(model, pattern)), None)
