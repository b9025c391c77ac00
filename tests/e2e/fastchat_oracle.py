"""Run INSIDE the FastChat virtualenv: print, as JSON, every conversation template fschat registers in the wire
form a model worker sends (/worker_get_conv_template) and the prompts FastChat's own Conversation.get_prompt
renders for a few conversations, with messages applied the way its openai_api_server applies them.

Usage: .venv-fastchat/bin/python tests/e2e/fastchat_oracle.py CONVERSATIONS.json > oracle.json
"""
import dataclasses
import json
import sys

from fastchat.conversation import conv_templates, get_conv_template


def render(name: str, messages: list) -> str:
    conv = get_conv_template(name)
    for message in messages:
        if message["role"] == "system":
            conv.set_system_message(message["content"])
        elif message["role"] == "user":
            conv.append_message(conv.roles[0], message["content"])
        else:
            conv.append_message(conv.roles[1], message["content"])
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def main() -> None:
    conversations = json.load(open(sys.argv[1]))
    templates = []
    for name, template in conv_templates.items():
        if template.sep_style is None:  # a worker cannot serve it: it crashes converting sep_style to int
            continue
        wire = dataclasses.asdict(template)
        wire["sep_style"] = int(template.sep_style)
        prompts = {}
        for case, messages in conversations.items():
            try:
                prompts[case] = render(name, messages)
            except Exception as exc:  # FastChat itself cannot render it: recorded, not hidden
                prompts[case] = {"error": f"{type(exc).__name__}: {exc}"}
        templates.append({"name": name, "wire": json.loads(json.dumps(wire)), "prompts": prompts})
    json.dump(templates, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
