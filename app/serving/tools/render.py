"""Chat messages with tools, tool calls and tool results, as the plain messages app.serving.prompt renders.

The output only has roles system, user and assistant with string content, so build_prompt frames it with the
worker's own template: earlier calls become the assistant's text in the format's syntax, role "tool" messages
become user turns (FastChat templates have no tool role), and the offered tools go where the format puts them.
"""
from __future__ import annotations

from app.serving.tools.formats import FIRST_USER, SYSTEM, ToolFormat


def render_messages(fmt: ToolFormat, messages: list[dict], tools: list[dict] | None, tool_choice="auto",
                    parallel_tool_calls: bool = True, default_system: str = "") -> list[dict]:
    """messages: validated chat messages (a "tool" message has tool_call_id; an assistant one may have
    tool_calls and null content). tool_choice: "none", "auto", "required" or {"type": "function", "function":
    {"name": ...}}; with "none" the tools are not offered, but earlier calls and results are still rendered.
    default_system: the template's own system message, which the tool text joins when the client sent none.
    """
    rendered, users = _history(fmt, messages)
    if tools and tool_choice != "none":
        _offer(fmt, rendered, users, fmt.tool_block(tools), instruction(tool_choice, parallel_tool_calls),
               default_system)
    return rendered


def instruction(tool_choice, parallel_tool_calls: bool = True) -> str:
    """tool_choice and parallel_tool_calls as a sentence for the model: best effort, since decoding is free."""
    parts = []
    if tool_choice == "required":
        parts.append("You must call one or more of the available functions in this reply.")
    elif isinstance(tool_choice, dict):
        parts.append(f'You must call the function "{tool_choice["function"]["name"]}" in this reply.')
    if not parallel_tool_calls:
        parts.append("Call at most one function in this reply.")
    return " ".join(parts)


def _history(fmt: ToolFormat, messages: list[dict]) -> tuple[list[dict], list[int]]:
    """The messages with calls echoed and results turned into user turns; also where the client's own user
    messages ended up. A results turn and an adjacent user message merge, so user and assistant still alternate
    (several templates tag turns by position)."""
    names = {call["id"]: call["function"]["name"]
             for message in messages if message["role"] == "assistant" for call in message.get("tool_calls") or ()}
    rendered: list[dict] = []
    users: list[int] = []
    results: list[dict] = []
    for position, message in enumerate(messages):
        role = message["role"]
        if role == "tool":
            results.append({"content": message["content"], "tool_call_id": message["tool_call_id"],
                            "name": names.get(message["tool_call_id"])})
            if position + 1 < len(messages) and messages[position + 1]["role"] == "tool":
                continue
            _add_user(rendered, fmt.result_turn(results), merge=True)
            results = []
        elif role == "user":
            _add_user(rendered, message["content"], merge=bool(rendered) and rendered[-1].get("results", False),
                      images=message.get("images") or [])
            users.append(len(rendered) - 1)
        elif role == "assistant" and message.get("tool_calls"):
            rendered.append({"role": "assistant", "content": fmt.call_echo(message.get("content"),
                                                                           message["tool_calls"])})
        else:
            rendered.append({"role": role, "content": message.get("content") or ""})
    # A user turn keeps the images of the user messages merged into it (app.serving.prompt places them).
    return [{"role": m["role"], "content": m["content"], **({"images": m["images"]} if m.get("images") else {})}
            for m in rendered], users


def _add_user(rendered: list[dict], text: str, merge: bool, images: list | None = None) -> None:
    if merge and rendered and rendered[-1]["role"] == "user":
        rendered[-1]["content"] += "\n\n" + text
        rendered[-1]["results"] = True
        rendered[-1]["images"] = [*rendered[-1].get("images", ()), *(images or ())]
    else:
        rendered.append({"role": "user", "content": text, "results": merge, "images": list(images or ())})


def _offer(fmt: ToolFormat, rendered: list[dict], users: list[int], block: str, instruction: str,
           default_system: str) -> None:
    if fmt.placement != SYSTEM:
        target = _user_target(rendered, users, fmt.placement)
        lead = block + (instruction + "\n\n" if instruction else "")
        rendered[target]["content"] = lead + rendered[target]["content"]
    # The last system (or developer) message is the one build_prompt keeps.
    systems = [i for i, m in enumerate(rendered) if m["role"] in ("system", "developer")]
    system = rendered[systems[-1]]["content"] if systems else default_system
    new_system = fmt.system_message(system)
    if fmt.placement == SYSTEM:
        new_system = "\n\n".join(part for part in (new_system, block, instruction) if part)
    if new_system != system:
        if systems:
            rendered[systems[-1]]["content"] = new_system
        else:
            rendered.insert(0, {"role": "system", "content": new_system})


def _user_target(rendered: list[dict], users: list[int], placement: str) -> int:
    """The index of the user message that carries the tools (a new first message if the client sent none)."""
    if users:
        return users[0] if placement == FIRST_USER else users[-1]
    rendered.insert(0, {"role": "user", "content": ""})
    return 0
