"""Render vLLM's tool chat templates for cases.json into <format>.txt, the expected outputs the tests compare with.

Run by hand, not by the tests: `python tests/tools_oracle/generate.py DIR` where DIR holds the three templates
(hermes.jinja, llama3.jinja, mistral.jinja) read from vllm-project/vllm at the commits README.md names. The
environment is the one transformers' apply_chat_template builds (sandboxed, trim_blocks, lstrip_blocks, its
tojson), and assistant tool-call arguments are decoded to objects first, as vLLM does before rendering.
"""
import json
import sys
from pathlib import Path

from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = Path(__file__).parent
TEMPLATES = {"hermes": "hermes.jinja", "llama3_json": "llama3.jinja", "mistral": "mistral.jinja"}
TOKENS = {"hermes": ("", ""), "llama3_json": ("<|begin_of_text|>", "<|eot_id|>"), "mistral": ("<s>", "</s>")}


def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def raise_exception(message):
        raise ValueError(message)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def vllm_messages(messages: list[dict]) -> list[dict]:
    """vLLM decodes each assistant tool call's arguments string into an object before the template sees it."""
    out = []
    for message in messages:
        message = {key: value for key, value in message.items() if value is not None}
        if "tool_calls" in message:
            message["tool_calls"] = [{**call, "function": {**call["function"],
                                      "arguments": json.loads(call["function"]["arguments"])}}
                                     for call in message["tool_calls"]]
        out.append(message)
    return out


def main(template_dir: str) -> None:
    cases = json.loads((HERE / "cases.json").read_text())
    env = environment()
    for name, file in TEMPLATES.items():
        template = env.from_string((Path(template_dir) / file).read_text())
        bos, eos = TOKENS[name]
        text = template.render(messages=vllm_messages(cases["conversations"][name]), tools=cases["tools"],
                               bos_token=bos, eos_token=eos, add_generation_prompt=True,
                               date_string="26 Jul 2024")
        (HERE / f"{name}.txt").write_text(text)


if __name__ == "__main__":
    main(sys.argv[1])
