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
