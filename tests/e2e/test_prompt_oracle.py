"""Our prompt rendering against FastChat's own (fschat 0.2.36, from .venv-fastchat) for every template it
registers, as a 0.2.36 worker would send it, with single-turn, multi-turn and system-message conversations."""
import pytest

from app.serving.prompt import Template, build_prompt, detect_numbering
from tests.e2e.oracle import CONVERSATIONS, fastchat_renderings


@pytest.fixture(scope="module")
def oracle(fastchat_venv):
    return fastchat_renderings(fastchat_venv)


def test_the_oracle_covers_the_0_2_36_registry(oracle):
    # 83 templates in fschat 0.2.36, of which 5 have no sep_style and cannot be served by a worker
    assert len(oracle) == 78
    assert {"vicuna_v1.1", "llama-2", "chatglm2", "qwen-7b-chat", "yuan2", "one_shot"} <= set(oracle)


def test_every_template_renders_exactly_as_fastchat_does(oracle):
    mismatches = []
    for name, entry in oracle.items():
        assert detect_numbering(entry["wire"]) == "0.2.36", name
        template = Template.from_wire(entry["wire"])
        for case, expected in entry["prompts"].items():
            assert not isinstance(expected, dict), f"FastChat failed on {name}/{case}: {expected}"
            got = build_prompt(template, CONVERSATIONS[case])
            if got != expected:
                mismatches.append(f"{name} / {case}:\n  ours:     {got!r}\n  fastchat: {expected!r}")
    assert not mismatches, "\n".join(mismatches)


# fschat 0.2.36 renders (text, images) messages only in ADD_COLON_TWO (docs/fastchat-protocol.md §9): every
# registered template of that style, with two image turns, as FastChat's get_prompt renders them. The texts carry
# HEAD's "<image>\n" prefixes, which our build_prompt adds.
IMAGE_SCRIPT = r'''
import dataclasses, json
from fastchat.conversation import SeparatorStyle, conv_templates, get_conv_template
out = []
for name, template in conv_templates.items():
    if template.sep_style != SeparatorStyle.ADD_COLON_TWO:
        continue
    conv = get_conv_template(name)
    wire = json.loads(json.dumps(dataclasses.asdict(conv)))
    wire["sep_style"] = int(conv.sep_style)
    conv.append_message(conv.roles[0], ("<image>\n<image>\nWhat is this?", ["a", "b"]))
    conv.append_message(conv.roles[1], "A cat.")
    conv.append_message(conv.roles[0], ("<image>\nAnd this?", ["c"]))
    conv.append_message(conv.roles[1], None)
    out.append({"name": name, "wire": wire, "prompt": conv.get_prompt()})
print(json.dumps(out))
'''


def test_image_messages_render_exactly_as_fastchat_does(fastchat_venv):
    import json
    import subprocess

    from app.images.parts import Image

    result = subprocess.run([str(fastchat_venv / "bin" / "python"), "-c", IMAGE_SCRIPT], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    cases = json.loads(result.stdout)
    assert "vicuna_v1.1" in {case["name"] for case in cases}
    image = Image("image/png", b"x")
    messages = [{"role": "user", "content": "What is this?", "images": [image, image]},
                {"role": "assistant", "content": "A cat."},
                {"role": "user", "content": "And this?", "images": [image]}]
    mismatches = [f"{case['name']}: ours {build_prompt(Template.from_wire(case['wire']), messages)!r}, fastchat "
                  f"{case['prompt']!r}" for case in cases
                  if build_prompt(Template.from_wire(case["wire"]), messages) != case["prompt"]]
    assert not mismatches, "\n".join(mismatches)
