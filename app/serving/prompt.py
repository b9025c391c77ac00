"""Render chat prompts from a worker's FastChat conversation template exactly as FastChat's get_prompt does.

Built only from docs/fastchat-protocol.md (§2.7, §6, §9); the section numbers in comments refer to that document.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from app.errors import unsupported_parameter


class TemplateError(ValueError):
    """The worker's conversation template cannot be used (missing key, unknown sep_style, ...)."""


STYLE_NUMBERINGS = ("head", "0.2.36")

# §6.2: wire integer -> SeparatorStyle name. Position + 1 is the integer. 0.2.36 lacks LLAMA3, GEMMA, CLLM and
# DEFAULT, so every style from CHATGLM on is one lower there than at HEAD.
_HEAD_STYLES = (
    "ADD_COLON_SINGLE", "ADD_COLON_TWO", "ADD_COLON_SPACE_SINGLE", "NO_COLON_SINGLE", "NO_COLON_TWO",
    "ADD_NEW_LINE_SINGLE", "LLAMA2", "LLAMA3", "CHATGLM", "CHATML", "CHATINTERN", "DOLLY", "RWKV", "PHOENIX",
    "ROBIN", "FALCON_CHAT", "CHATGLM3", "DEEPSEEK_CHAT", "METAMATH", "YUAN2", "GEMMA", "CLLM", "DEFAULT",
)
_V0236_STYLES = tuple(name for name in _HEAD_STYLES if name not in {"LLAMA3", "GEMMA", "CLLM", "DEFAULT"})
_STYLE_TABLES = {
    "head": {number: name for number, name in enumerate(_HEAD_STYLES, start=1)},
    "0.2.36": {number: name for number, name in enumerate(_V0236_STYLES, start=1)},
}

# §6.1/§9: the keys the API server reads (all a 0.2.36 worker sends) and the two fields only HEAD adds.
_WIRE_KEYS = ("name", "system_template", "system_message", "roles", "messages", "offset",
              "sep_style", "sep", "sep2", "stop_str", "stop_token_ids")
_HEAD_ONLY_KEYS = frozenset({"system_message_vision", "max_image_size_mb"})
# §6.6: templates registered at HEAD but not in 0.2.36; a worker sending one of these names is a HEAD worker.
_HEAD_ONLY_NAMES = frozenset({
    "api_based_default", "claude-3-haiku-20240307", "claude-3-sonnet-20240229", "claude-3-5-sonnet-20240620-v2",
    "claude-3-5-sonnet-20240620", "claude-3-opus-20240229", "cllm", "gemini-1.5-pro", "gemini-1.5-pro-002-test-sp",
    "gemma", "gpt-4-turbo-2024-04-09", "gpt-mini", "grok-2", "grok-2-mini", "llama-3", "llava-chatml",
    "meta-llama-3.1", "meta-llama-3.1-sp", "yandexgpt",
})

# Separators each style concatenates; FastChat would crash on a null one (§6.3 "Null separators"). We refuse
# such a template up front instead of failing on whichever request first reaches the separator.
_NEEDED_SEPARATORS = {
    "ADD_COLON_SINGLE": ("sep",), "ADD_COLON_TWO": ("sep", "sep2"), "ADD_COLON_SPACE_SINGLE": ("sep",),
    "NO_COLON_SINGLE": ("sep",), "NO_COLON_TWO": ("sep", "sep2"), "ADD_NEW_LINE_SINGLE": ("sep",),
    "LLAMA2": ("sep", "sep2"), "LLAMA3": (), "CHATGLM": ("sep",), "CHATML": ("sep",),
    "CHATINTERN": ("sep", "sep2"), "DOLLY": ("sep", "sep2"), "RWKV": (), "PHOENIX": (), "ROBIN": ("sep",),
    "FALCON_CHAT": ("sep",), "CHATGLM3": (), "DEEPSEEK_CHAT": ("sep", "sep2"), "METAMATH": ("sep", "sep2"),
    "YUAN2": ("sep", "sep2"), "GEMMA": ("sep",), "CLLM": ("sep", "sep2"), "DEFAULT": (),
}


def detect_numbering(conv: dict) -> str:
    """Return "head" or "0.2.36" for a wire template (the dict under "conv" of /worker_get_conv_template).

    HEAD evidence wins: one of HEAD's extra keys, or a template name that exists only at HEAD. Otherwise a dict
    with exactly the 11 keys of 0.2.36 is "0.2.36". Anything else falls back to "head", the numbering of current
    FastChat workers (§6.2).
    """
    if not isinstance(conv, dict):
        raise TemplateError(f"conversation template must be a JSON object, got {type(conv).__name__}")
    if _HEAD_ONLY_KEYS & conv.keys() or conv.get("name") in _HEAD_ONLY_NAMES:
        return "head"
    return "0.2.36" if conv.keys() == set(_WIRE_KEYS) else "head"


@dataclass(frozen=True)
class Template:
    name: str
    system_template: str
    system_message: str
    roles: tuple[str, ...]
    messages: tuple[tuple[str, str | None], ...]
    sep_style: str
    sep: str | None
    sep2: str | None
    stop_str: str | tuple[str, ...] | None
    stop_token_ids: tuple[int, ...] | None

    def __post_init__(self) -> None:
        if self.sep_style not in _RENDERERS:
            raise TemplateError(f"template {self.name!r}: unknown sep_style {self.sep_style!r}")
        if len(self.roles) < 2:
            raise TemplateError(f"template {self.name!r}: roles needs a user and an assistant role")
        for key in _NEEDED_SEPARATORS[self.sep_style]:
            if getattr(self, key) is None:
                raise TemplateError(f"template {self.name!r}: sep_style {self.sep_style} needs {key}, which is null")
        _format_system(self, self.system_message)

    @classmethod
    def from_wire(cls, conv: dict, numbering: str = "auto") -> Template:
        """numbering: "auto" (use detect_numbering), "head" or "0.2.36". Raises TemplateError naming the problem
        (missing key, sep_style integer not valid in that numbering, a None sep where the style needs it, ...)."""
        if numbering == "auto":
            numbering = detect_numbering(conv)
        if numbering not in STYLE_NUMBERINGS:
            raise ValueError(f"numbering must be 'auto' or one of {STYLE_NUMBERINGS}, got {numbering!r}")
        if not isinstance(conv, dict):
            raise TemplateError(f"conversation template must be a JSON object, got {type(conv).__name__}")
        missing = [key for key in _WIRE_KEYS if key not in conv]
        if missing:
            raise TemplateError(f"conversation template is missing key {missing[0]!r}")
        return cls(
            name=_typed(conv, "name", str),
            system_template=_typed(conv, "system_template", str),
            system_message=_typed(conv, "system_message", str),
            roles=_roles(conv["roles"]),
            messages=_builtin_messages(conv["messages"]),
            sep_style=_style_name(conv["sep_style"], numbering),
            sep=_typed(conv, "sep", str, nullable=True),
            sep2=_typed(conv, "sep2", str, nullable=True),
            stop_str=_stop_str(conv["stop_str"]),
            stop_token_ids=_stop_token_ids(conv["stop_token_ids"]),
        )



# Wire dict identity -> (that dict, its Template). The entry holds the dict, so its id cannot be reused meanwhile.
_PARSED: dict[tuple[int, str], tuple[dict, Template]] = {}
_PARSED_LIMIT = 1024


def parsed_template(conv: dict, numbering: str = "auto") -> Template:
    """Template.from_wire(conv, numbering), parsed once per wire dict. app.upstream.worker caches each worker's
    template and hands out the same dict, never changed, until it forgets that worker (then a new dict comes), so
    parsing it again for every request (~3 % of a request's CPU) would only repeat the same work."""
    key = (id(conv), numbering)
    hit = _PARSED.get(key)
    if hit is not None and hit[0] is conv:
        return hit[1]
    template = Template.from_wire(conv, numbering)
    if len(_PARSED) >= _PARSED_LIMIT:  # workers come and go: forget everything now and then rather than grow
        _PARSED.clear()
    _PARSED[key] = (conv, template)
    return template

# --- wire parsing helpers -------------------------------------------------------------------------------------

def _typed(conv: dict, key: str, kind: type, nullable: bool = False):
    value = conv[key]
    if (value is None and nullable) or isinstance(value, kind):
        return value
    raise TemplateError(f"conversation template key {key!r} has the wrong type: {value!r}")


def _roles(value) -> tuple[str, ...]:
    # llama2-chinese carries a third, unused role; only two are required.
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(r, str) for r in value):
        raise TemplateError(f"conversation template key 'roles' must list at least two strings, got {value!r}")
    return tuple(value)


def _builtin_messages(value) -> tuple[tuple[str, str | None], ...]:
    if not isinstance(value, list):
        raise TemplateError(f"conversation template key 'messages' must be a list, got {value!r}")
    for item in value:
        # A worker's own (few-shot) messages are text: image tuples there would have no image data to send.
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                and (item[1] is None or isinstance(item[1], str))):
            raise TemplateError(f"conversation template key 'messages' has an unusable entry: {item!r}")
    return tuple((role, text) for role, text in value)


def _style_name(value, numbering: str) -> str:
    table = _STYLE_TABLES[numbering]
    if isinstance(value, bool) or not isinstance(value, int) or value not in table:
        raise TemplateError(f"conversation template key 'sep_style' has value {value!r}, which is not a separator "
                            f"style in the {numbering} numbering (expected an integer 1..{len(table)})")
    return table[value]


def _stop_str(value) -> str | tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise TemplateError(f"conversation template key 'stop_str' has the wrong type: {value!r}")


def _stop_token_ids(value) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return tuple(value)
    raise TemplateError(f"conversation template key 'stop_token_ids' has the wrong type: {value!r}")


def _format_system(template: Template, system_message: str) -> str:
    # FastChat uses str.format, so braces in the *template* are format syntax; braces in the message are not.
    try:
        return template.system_template.format(system_message=system_message)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise TemplateError(f"template {template.name!r}: system_template "
                            f"{template.system_template!r} cannot be formatted ({exc!r})") from None


# --- style renderers (§6.3) -----------------------------------------------------------------------------------
# Each takes (template, SP, system_message, msgs) and returns the prompt. A message is "present" when truthy;
# None and "" are both rendered as an open slot, because FastChat tests `if message:`.

Msgs = list[tuple[str, str | None]]


def _join(msgs: Msgs, present: Callable[[int, str, str], str], slot: Callable[[int, str], str]) -> str:
    return "".join(present(i, role, msg) if msg else slot(i, role) for i, (role, msg) in enumerate(msgs))


def _sep_i(t: Template, i: int) -> str:
    # The *_TWO family alternates sep/sep2 by index parity, not by stored role.
    return t.sep if i % 2 == 0 else t.sep2


def _add_colon_single(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    return sp + t.sep + _join(msgs, lambda i, r, m: f"{r}: {m}{t.sep}", lambda i, r: f"{r}:")


def _add_colon_two(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    return sp + t.sep + _join(msgs, lambda i, r, m: f"{r}: {m}{_sep_i(t, i)}", lambda i, r: f"{r}:")


def _add_colon_space_single(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    # The open slot keeps the trailing space after the colon.
    return sp + t.sep + _join(msgs, lambda i, r, m: f"{r}: {m}{t.sep}", lambda i, r: f"{r}: ")


def _no_colon_single(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    return sp + _join(msgs, lambda i, r, m: f"{r}{m}{t.sep}", lambda i, r: r)


def _no_colon_two(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    return sp + _join(msgs, lambda i, r, m: f"{r}{m}{_sep_i(t, i)}", lambda i, r: r)


def _add_new_line_single(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    prefix = sp + t.sep if sp else ""  # tests the rendered SP, not the system message
    return prefix + _join(msgs, lambda i, r, m: f"{r}\n{m}{t.sep}", lambda i, r: f"{r}\n")


def _llama2(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    # Tags come from index parity, not the stored role; message 0 is untagged because the prefix opened [INST].
    def present(i: int, role: str, msg: str) -> str:
        return msg + " " if i == 0 else f"{t.roles[i % 2]} {msg}{_sep_i(t, i)}"
    prefix = sp if system else "[INST] "
    return prefix + _join(msgs, present, lambda i, r: t.roles[i % 2])


def _llama3(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    def header(role: str) -> str:
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n"
    prefix = "<|begin_of_text|>" + (sp if system else "")
    return prefix + _join(msgs, lambda i, r, m: header(r) + m.strip() + "<|eot_id|>", lambda i, r: header(r))


def _chatglm(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    shift = 1 if t.name == "chatglm2" else 0  # chatglm2 counts rounds from 1, chatglm from 0

    def round_header(i: int) -> str:
        return f"[Round {i // 2 + shift}]{t.sep}" if i % 2 == 0 else ""
    prefix = sp + t.sep if sp else ""
    # U+FF1A FULLWIDTH COLON, as ChatGLM was trained with.
    return prefix + _join(msgs, lambda i, r, m: f"{round_header(i)}{r}\uff1a{m}{t.sep}",
                          lambda i, r: f"{round_header(i)}{r}\uff1a")


def _chatml(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    prefix = sp + t.sep + "\n" if sp else ""
    return prefix + _join(msgs, lambda i, r, m: f"{r}\n{m}{t.sep}\n", lambda i, r: f"{r}\n")


def _chatintern(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    def bos(i: int) -> str:
        return "<s>" if i % 2 == 0 else ""
    return sp + _join(msgs, lambda i, r, m: f"{bos(i)}{r}:{m}{_sep_i(t, i)}\n", lambda i, r: f"{bos(i)}{r}:")


def _dolly(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    def present(i: int, role: str, msg: str) -> str:
        return f"{role}:\n{msg}{_sep_i(t, i)}" + ("\n\n" if i % 2 else "")
    return sp + _join(msgs, present, lambda i, r: f"{r}:\n")


def _rwkv(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    def present(i: int, role: str, msg: str) -> str:
        # Two single str.replace passes, so "\n\n\n" only shrinks to "\n\n".
        return f"{role}: " + msg.replace("\r\n", "\n").replace("\n\n", "\n") + "\n\n"
    return sp + _join(msgs, present, lambda i, r: f"{r}:")


def _phoenix(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    return sp + _join(msgs, lambda i, r, m: f"{r}: <s>{m}</s>", lambda i, r: f"{r}: <s>")


def _robin(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    return sp + t.sep + _join(msgs, lambda i, r, m: f"{r}:\n{m}{t.sep}", lambda i, r: f"{r}:\n")


def _falcon_chat(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    prefix = sp + t.sep if system else ""  # tests the system message itself, not SP
    return prefix + _join(msgs, lambda i, r, m: f"{r}: {m}{t.sep}", lambda i, r: f"{r}:")


def _chatglm3(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    # No separators at all: the role tokens delimit the turns.
    return (sp if system else "") + _join(msgs, lambda i, r, m: f"{r}\n{m}", lambda i, r: r)


def _deepseek_chat(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    return sp + _join(msgs, lambda i, r, m: f"{r}: {m}{_sep_i(t, i)}", lambda i, r: f"{r}:")


def _metamath(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    # Odd (assistant) turns put sep2 (e.g. "Let's think step by step.") before the answer, not after it.
    def present(i: int, role: str, msg: str) -> str:
        return f"{role}:\n{msg}{t.sep}" if i % 2 == 0 else f"{role}: {t.sep2}{msg}"

    def slot(i: int, role: str) -> str:
        return f"{role}:\n" if i % 2 == 0 else f"{role}: {t.sep2}"
    prefix = sp + t.sep if sp else ""
    return prefix + _join(msgs, present, slot)


def _yuan2(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    prefix = sp + t.sep2 if system else ""
    body = prefix + _join(msgs, lambda i, r, m: m + "<n>", lambda i, r: "")  # roles are not rendered
    # FastChat's rstrip("<n>") strips a *set of characters*, so a last message "main" loses its "n" too.
    return body.rstrip("<n>") + t.sep


def _gemma(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    # FastChat ignores the system message entirely for GEMMA.
    return "<bos>" + _join(msgs, lambda i, r, m: f"<start_of_turn>{r}\n{m}{t.sep}",
                           lambda i, r: f"<start_of_turn>{r}\n")


def _cllm(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    # Only the last two messages survive, re-indexed from 0 for the sep/sep2 choice.
    return sp + t.sep + _join(msgs[-2:], lambda i, r, m: f"{r}: {m}{_sep_i(t, i)}", lambda i, r: f"{r}:")


def _default(t: Template, sp: str, system: str, msgs: Msgs) -> str:
    # The newline follows SP even when SP is empty; sep is never used (API-provider templates send null).
    return sp + "\n" + _join(msgs, lambda i, r, m: f"{r}: {m}\n", lambda i, r: f"{r}:")


_RENDERERS: dict[str, Callable[[Template, str, str, Msgs], str]] = {
    "ADD_COLON_SINGLE": _add_colon_single, "ADD_COLON_TWO": _add_colon_two,
    "ADD_COLON_SPACE_SINGLE": _add_colon_space_single, "NO_COLON_SINGLE": _no_colon_single,
    "NO_COLON_TWO": _no_colon_two, "ADD_NEW_LINE_SINGLE": _add_new_line_single, "LLAMA2": _llama2,
    "LLAMA3": _llama3, "CHATGLM": _chatglm, "CHATML": _chatml, "CHATINTERN": _chatintern, "DOLLY": _dolly,
    "RWKV": _rwkv, "PHOENIX": _phoenix, "ROBIN": _robin, "FALCON_CHAT": _falcon_chat, "CHATGLM3": _chatglm3,
    "DEEPSEEK_CHAT": _deepseek_chat, "METAMATH": _metamath, "YUAN2": _yuan2, "GEMMA": _gemma, "CLLM": _cllm,
    "DEFAULT": _default,
}


# --- images (§2.7, §6.3 "Image tuples") ------------------------------------------------------------------------

# What FastChat's server writes before a user message's text per image, and what its sglang worker splits the
# prompt on to put each image in its place.
IMAGE_TOKEN = "<image>\n"
# FastChat's IMAGE_PLACEHOLDER_STR, which get_prompt writes per image before a (text, images) message.
IMAGE_PLACEHOLDER = "$$<image>$$"
_PLACEHOLDER_STYLES = frozenset({"ADD_COLON_SINGLE", "ADD_COLON_TWO", "CHATML", "CLLM"})
_TEXT_ONLY_STYLES = frozenset({"DEFAULT"})

ImageTurn = tuple[str, Sequence]  # FastChat's (text, images) message


def _placed(template: Template, message: str | ImageTurn | None) -> str | None:
    """A (text, images) message as the style renders it. Raises a 400 naming the first image's part for a
    style that has no place for images (FastChat crashes there with a TypeError)."""
    if not isinstance(message, tuple):
        return message
    text, images = message
    if template.sep_style in _PLACEHOLDER_STYLES:
        return IMAGE_PLACEHOLDER * len(images) + text
    if template.sep_style in _TEXT_ONLY_STYLES:
        return text
    raise unsupported_parameter(
        getattr(images[0], "param", None) or "messages",
        f"The conversation template {template.name!r} cannot place images (its sep_style is "
        f"{template.sep_style}): FastChat renders images only in ADD_COLON_SINGLE, ADD_COLON_TWO, CHATML, CLLM "
        f"and DEFAULT templates.")


def _check_cllm_keeps_the_images(template: Template, turns: list) -> None:
    # CLLM renders only the last message: the images of earlier ones would be sent with no place in the prompt.
    dropped = next((text[1] for _, text in turns[:-1] if isinstance(text, tuple)), None)
    if dropped:
        raise unsupported_parameter(
            getattr(dropped[0], "param", None) or "messages",
            f"The conversation template {template.name!r} renders only the last message (its sep_style is CLLM), "
            f"so images in earlier messages cannot be placed.")


# --- public rendering API -------------------------------------------------------------------------------------

def render(template: Template, system_message: str | None, turns: list[tuple[int, str | ImageTurn]]) -> str:
    """turns: client turns as (role_index, text) with role_index 0 = roles[0] (user), 1 = roles[1] (assistant);
    a text may be a (text, images) tuple, rendered as FastChat renders such a message (IMAGE_PLACEHOLDER once per
    image before the text in the styles that place images).

    system_message None keeps the template's default. Renders the built-in messages, the turns and the open
    assistant slot (roles[1], None) with FastChat's get_prompt rules for template.sep_style (§6.3).
    """
    system = template.system_message if system_message is None else system_message
    if template.sep_style == "CLLM":
        _check_cllm_keeps_the_images(template, turns)
    msgs: Msgs = list(template.messages)
    for role_index, text in turns:
        if role_index not in (0, 1):
            raise ValueError(f"role_index must be 0 (user) or 1 (assistant), got {role_index!r}")
        msgs.append((template.roles[role_index], _placed(template, text)))
    msgs.append((template.roles[1], None))
    sp = _format_system(template, system)
    return _RENDERERS[template.sep_style](template, sp, system, msgs)


def build_prompt(template: Template, messages: list[dict]) -> str:
    """messages: validated OpenAI chat messages {"role": "system"|"developer"|"user"|"assistant", "content": str};
    a user message may have "images" (a non-empty list, app.images.parts).

    "system" and "developer" replace the system message (the last one wins wherever it stands, as in FastChat);
    "user" and "assistant" become turns for roles[0] and roles[1]; a user message with images becomes FastChat
    HEAD's (IMAGE_TOKEN * n + text, images) turn. Raises TemplateError for any other role.
    """
    system_message: str | None = None
    turns: list[tuple[int, str | ImageTurn]] = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if not isinstance(content, str):
            raise TemplateError(f"message content must be a string by now, got {type(content).__name__}")
        if role in ("system", "developer"):
            system_message = content
        elif role == "user" and message.get("images"):
            turns.append((0, (IMAGE_TOKEN * len(message["images"]) + content, message["images"])))
        elif role in ("user", "assistant"):
            turns.append((0 if role == "user" else 1, content))
        else:
            raise TemplateError(f"Unknown role: {role}")
    return render(template, system_message, turns)


def merge_stop(request_stop: list[str] | None, template: Template) -> list[str]:
    """Request stops first in their order, then the template's stop_str entries not already present.

    Duplicates and empty strings are removed. FastChat sends an unordered set; this order is deterministic.
    """
    if isinstance(request_stop, str):
        request_stop = [request_stop]
    template_stop = template.stop_str
    if isinstance(template_stop, str):
        template_stop = (template_stop,)
    merged = [*(request_stop or ()), *(template_stop or ())]
    return [stop for stop in dict.fromkeys(merged) if stop]
