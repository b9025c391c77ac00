"""Prompt rendering against the golden vectors of the FastChat protocol doc §6.4 (data transcribed from §6.2-§6.6)."""
import json

import pytest

from app.serving.prompt import (
    STYLE_NUMBERINGS, Template, TemplateError, build_prompt, detect_numbering, merge_stop, parsed_template, render,
)

# §6.2, typed in independently of the module's tables so a wrong table entry fails a test.
HEAD_INTS = {
    "ADD_COLON_SINGLE": 1, "ADD_COLON_TWO": 2, "ADD_COLON_SPACE_SINGLE": 3, "NO_COLON_SINGLE": 4,
    "NO_COLON_TWO": 5, "ADD_NEW_LINE_SINGLE": 6, "LLAMA2": 7, "LLAMA3": 8, "CHATGLM": 9, "CHATML": 10,
    "CHATINTERN": 11, "DOLLY": 12, "RWKV": 13, "PHOENIX": 14, "ROBIN": 15, "FALCON_CHAT": 16, "CHATGLM3": 17,
    "DEEPSEEK_CHAT": 18, "METAMATH": 19, "YUAN2": 20, "GEMMA": 21, "CLLM": 22, "DEFAULT": 23,
}
V0236_INTS = {
    "ADD_COLON_SINGLE": 1, "ADD_COLON_TWO": 2, "ADD_COLON_SPACE_SINGLE": 3, "NO_COLON_SINGLE": 4,
    "NO_COLON_TWO": 5, "ADD_NEW_LINE_SINGLE": 6, "LLAMA2": 7, "CHATGLM": 8, "CHATML": 9, "CHATINTERN": 10,
    "DOLLY": 11, "RWKV": 12, "PHOENIX": 13, "ROBIN": 14, "FALCON_CHAT": 15, "CHATGLM3": 16, "DEEPSEEK_CHAT": 17,
    "METAMATH": 18, "YUAN2": 19,
}

# §6.4 synthetic template, system message "SYS"; turns R0 U1, R1 A1, R0 U2, then the open R1 slot.
SYNTHETIC = {
    "ADD_COLON_SINGLE": "[SYS]<S1>R0: U1<S1>R1: A1<S1>R0: U2<S1>R1:",
    "ADD_COLON_TWO": "[SYS]<S1>R0: U1<S1>R1: A1<S2>R0: U2<S1>R1:",
    "ADD_COLON_SPACE_SINGLE": "[SYS]<S1>R0: U1<S1>R1: A1<S1>R0: U2<S1>R1: ",
    "NO_COLON_SINGLE": "[SYS]R0U1<S1>R1A1<S1>R0U2<S1>R1",
    "NO_COLON_TWO": "[SYS]R0U1<S1>R1A1<S2>R0U2<S1>R1",
    "ADD_NEW_LINE_SINGLE": "[SYS]<S1>R0\nU1<S1>R1\nA1<S1>R0\nU2<S1>R1\n",
    "LLAMA2": "[SYS]U1 R1 A1<S2>R0 U2<S1>R1",
    "LLAMA3": "<|begin_of_text|>[SYS]<|start_header_id|>R0<|end_header_id|>\n\nU1<|eot_id|>"
              "<|start_header_id|>R1<|end_header_id|>\n\nA1<|eot_id|><|start_header_id|>R0<|end_header_id|>\n\n"
              "U2<|eot_id|><|start_header_id|>R1<|end_header_id|>\n\n",
    "CHATGLM": "[SYS]<S1>[Round 0]<S1>R0：U1<S1>R1：A1<S1>[Round 1]<S1>R0：U2<S1>R1：",
    "CHATML": "[SYS]<S1>\nR0\nU1<S1>\nR1\nA1<S1>\nR0\nU2<S1>\nR1\n",
    "CHATINTERN": "[SYS]<s>R0:U1<S1>\nR1:A1<S2>\n<s>R0:U2<S1>\nR1:",
    "DOLLY": "[SYS]R0:\nU1<S1>R1:\nA1<S2>\n\nR0:\nU2<S1>R1:\n",
    "RWKV": "[SYS]R0: U1\n\nR1: A1\n\nR0: U2\n\nR1:",
    "PHOENIX": "[SYS]R0: <s>U1</s>R1: <s>A1</s>R0: <s>U2</s>R1: <s>",
    "ROBIN": "[SYS]<S1>R0:\nU1<S1>R1:\nA1<S1>R0:\nU2<S1>R1:\n",
    "FALCON_CHAT": "[SYS]<S1>R0: U1<S1>R1: A1<S1>R0: U2<S1>R1:",
    "CHATGLM3": "[SYS]R0\nU1R1\nA1R0\nU2R1",
    "DEEPSEEK_CHAT": "[SYS]R0: U1<S1>R1: A1<S2>R0: U2<S1>R1:",
    "METAMATH": "[SYS]<S1>R0:\nU1<S1>R1: <S2>A1R0:\nU2<S1>R1: <S2>",
    "YUAN2": "[SYS]<S2>U1<n>A1<n>U2<S1>",
    "GEMMA": "<bos><start_of_turn>R0\nU1<S1><start_of_turn>R1\nA1<S1><start_of_turn>R0\nU2<S1><start_of_turn>R1\n",
    "CLLM": "[SYS]<S1>R0: U2<S1>R1:",
    "DEFAULT": "[SYS]\nR0: U1\nR1: A1\nR0: U2\nR1:",
}
# §6.4: with system message "" the rendered SP is "[]" (still non-empty), except for the styles that test the
# system message itself: LLAMA2 and FALCON_CHAT have their own vectors, LLAMA3/CHATGLM3/YUAN2 drop the system part.
SYNTHETIC_EMPTY_SYSTEM = {style: vector.replace("[SYS]", "[]") for style, vector in SYNTHETIC.items()} | {
    "LLAMA2": "[INST] U1 R1 A1<S2>R0 U2<S1>R1",
    "FALCON_CHAT": "R0: U1<S1>R1: A1<S1>R0: U2<S1>R1:",
    "LLAMA3": SYNTHETIC["LLAMA3"].replace("[SYS]", ""),
    "CHATGLM3": "R0\nU1R1\nA1R0\nU2R1",
    "YUAN2": "U1<n>A1<n>U2<S1>",
}
SYNTHETIC_TURNS = [(0, "U1"), (1, "A1"), (0, "U2")]


def synthetic_wire(sep_style: int, shape: str = "head", **overrides) -> dict:
    """The §6.4 synthetic template as a worker would send it: 13 keys at HEAD, 11 keys from 0.2.36."""
    conv = {"name": "synthetic", "system_template": "[{system_message}]", "system_message": "SYS",
            "system_message_vision": "", "roles": ["R0", "R1"], "messages": [], "offset": 0,
            "sep_style": sep_style, "sep": "<S1>", "sep2": "<S2>", "stop_str": None, "stop_token_ids": None,
            "max_image_size_mb": None}
    if shape == "0.2.36":
        del conv["system_message_vision"], conv["max_image_size_mb"]
    return conv | overrides


def head_template(style: str, **overrides) -> Template:
    return Template.from_wire(synthetic_wire(HEAD_INTS[style], **overrides))


# §6.5 wire JSON, verbatim (long lines kept so they compare 1:1 with the doc).
VICUNA = json.loads(r'''{"name": "vicuna_v1.1", "system_template": "{system_message}", "system_message": "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.", "system_message_vision": "", "roles": ["USER", "ASSISTANT"], "messages": [], "offset": 0, "sep_style": 2, "sep": " ", "sep2": "</s>", "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}''')
LLAMA_2 = json.loads(r'''{"name": "llama-2", "system_template": "[INST] <<SYS>>\n{system_message}\n<</SYS>>\n\n", "system_message": "", "system_message_vision": "", "roles": ["[INST]", "[/INST]"], "messages": [], "offset": 0, "sep_style": 7, "sep": " ", "sep2": " </s><s>", "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}''')
LLAMA_3 = json.loads(r'''{"name": "llama-3", "system_template": "<|start_header_id|>system<|end_header_id|>\n\n{system_message}<|eot_id|>", "system_message": "", "system_message_vision": "", "roles": ["user", "assistant"], "messages": [], "offset": 0, "sep_style": 8, "sep": "", "sep2": null, "stop_str": "<|eot_id|>", "stop_token_ids": [128001, 128009], "max_image_size_mb": null}''')
MISTRAL = json.loads(r'''{"name": "mistral", "system_template": "[INST] {system_message}\n", "system_message": "", "system_message_vision": "", "roles": ["[INST]", "[/INST]"], "messages": [], "offset": 0, "sep_style": 7, "sep": " ", "sep2": "</s>", "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}''')
QWEN = json.loads(r'''{"name": "qwen-7b-chat", "system_template": "<|im_start|>system\n{system_message}", "system_message": "You are a helpful assistant.", "system_message_vision": "", "roles": ["<|im_start|>user", "<|im_start|>assistant"], "messages": [], "offset": 0, "sep_style": 10, "sep": "<|im_end|>", "sep2": null, "stop_str": "<|endoftext|>", "stop_token_ids": [151643, 151644, 151645], "max_image_size_mb": null}''')
GEMMA = json.loads(r'''{"name": "gemma", "system_template": "{system_message}", "system_message": "", "system_message_vision": "", "roles": ["user", "model"], "messages": [], "offset": 0, "sep_style": 21, "sep": "<end_of_turn>\n", "sep2": null, "stop_str": "<end_of_turn>", "stop_token_ids": null, "max_image_size_mb": null}''')
CHATGLM3 = json.loads(r'''{"name": "chatglm3", "system_template": "<|system|>\n{system_message}", "system_message": "", "system_message_vision": "", "roles": ["<|user|>", "<|assistant|>"], "messages": [], "offset": 0, "sep_style": 17, "sep": "\n", "sep2": null, "stop_str": null, "stop_token_ids": [64795, 64797, 2], "max_image_size_mb": null}''')
ZERO_SHOT = json.loads(r'''{"name": "zero_shot", "system_template": "{system_message}", "system_message": "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.", "system_message_vision": "", "roles": ["Human", "Assistant"], "messages": [], "offset": 0, "sep_style": 1, "sep": "\n### ", "sep2": null, "stop_str": "###", "stop_token_ids": null, "max_image_size_mb": null}''')
API_BASED_DEFAULT = json.loads(r'''{"name": "api_based_default", "system_template": "{system_message}", "system_message": "", "system_message_vision": "", "roles": ["user", "assistant"], "messages": [], "offset": 0, "sep_style": 23, "sep": null, "sep2": null, "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}''')
# §6.6 rows (the doc shows no full JSON for these), in HEAD wire shape.
CHATGLM2 = VICUNA | {"name": "chatglm2", "system_message": "", "roles": ["问", "答"], "sep_style": 9,
                     "sep": "\n\n", "sep2": None}
YUAN2 = VICUNA | {"name": "yuan2", "system_message": "", "roles": ["user", "assistant"], "sep_style": 20,
                  "sep": "<sep>", "sep2": "\n", "stop_str": "<eod>", "stop_token_ids": [77185]}

VICUNA_SYSTEM = VICUNA["system_message"]
HISTORY = [(0, "Hi"), (1, "Hello!"), (0, "How are you?")]

# §6.4 real-template vectors: (wire, system message or None for the default, turns, prompt).
REAL_VECTORS = {
    "vicuna_v1.1": (VICUNA, None, HISTORY,
                    VICUNA_SYSTEM + " USER: Hi ASSISTANT: Hello!</s>USER: How are you? ASSISTANT:"),
    "vicuna_v1.1 with system": (VICUNA, "You are X.", HISTORY,
                                "You are X. USER: Hi ASSISTANT: Hello!</s>USER: How are you? ASSISTANT:"),
    # The doc abbreviates the default system message with "…"; §6.5 gives it in full.
    "vicuna_v1.1 empty assistant": (VICUNA, None, [(0, "Hi"), (1, ""), (0, "Again")],
                                    VICUNA_SYSTEM + " USER: Hi ASSISTANT:USER: Again ASSISTANT:"),
    "llama-2": (LLAMA_2, None, HISTORY, "[INST] Hi [/INST] Hello! </s><s>[INST] How are you? [/INST]"),
    "llama-2 with system": (LLAMA_2, "You are X.", HISTORY,
                            "[INST] <<SYS>>\nYou are X.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] How are you? [/INST]"),
    "mistral": (MISTRAL, None, HISTORY, "[INST] Hi [/INST] Hello!</s>[INST] How are you? [/INST]"),
    "mistral with system": (MISTRAL, "You are X.", HISTORY,
                            "[INST] You are X.\nHi [/INST] Hello!</s>[INST] How are you? [/INST]"),
    "llama-3": (LLAMA_3, None, HISTORY,
                "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "qwen-7b-chat with system": (QWEN, "You are X.", HISTORY,
                                 "<|im_start|>system\nYou are X.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                                 "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
                                 "<|im_start|>assistant\n"),
    "chatglm3 with system": (CHATGLM3, "You are X.", HISTORY,
                             "<|system|>\nYou are X.<|user|>\nHi<|assistant|>\nHello!<|user|>\nHow are you?<|assistant|>"),
    "chatglm2": (CHATGLM2, None, HISTORY, "[Round 1]\n\n问：Hi\n\n答：Hello!\n\n[Round 2]\n\n问：How are you?\n\n答："),
    "zero_shot": (ZERO_SHOT, None, HISTORY,
                  "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                  "helpful, detailed, and polite answers to the human's questions.\n### Human: Hi\n### Assistant: "
                  "Hello!\n### Human: How are you?\n### Assistant:"),
    "gemma": (GEMMA, None, HISTORY,
              "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
              "<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n"),
    "yuan2": (YUAN2, None, HISTORY, "Hi<n>Hello!<n>How are you?<sep>"),
    "api_based_default": (API_BASED_DEFAULT, None, HISTORY,
                          "\nuser: Hi\nassistant: Hello!\nuser: How are you?\nassistant:"),
}


def v0236_wire(conv: dict, sep_style: int) -> dict:
    """The same template as a 0.2.36 worker sends it: 11 keys and the old integer."""
    old = {k: v for k, v in conv.items() if k not in ("system_message_vision", "max_image_size_mb")}
    return old | {"sep_style": sep_style}


# --- golden vectors ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("style", SYNTHETIC)
def test_synthetic_vector_with_head_integer(style):
    assert render(head_template(style), None, SYNTHETIC_TURNS) == SYNTHETIC[style]


@pytest.mark.parametrize("style", V0236_INTS)
def test_synthetic_vector_with_0236_integer_matches_head(style):
    old = Template.from_wire(synthetic_wire(V0236_INTS[style], shape="0.2.36"))
    assert old.sep_style == style
    assert render(old, None, SYNTHETIC_TURNS) == render(head_template(style), None, SYNTHETIC_TURNS)


@pytest.mark.parametrize("style", SYNTHETIC_EMPTY_SYSTEM)
def test_synthetic_vector_with_empty_system_message(style):
    assert render(head_template(style), "", SYNTHETIC_TURNS) == SYNTHETIC_EMPTY_SYSTEM[style]


@pytest.mark.parametrize("style", SYNTHETIC_EMPTY_SYSTEM)
def test_empty_default_system_message_renders_like_an_empty_override(style):
    template = head_template(style, system_message="")
    assert render(template, None, SYNTHETIC_TURNS) == SYNTHETIC_EMPTY_SYSTEM[style]


@pytest.mark.parametrize("wire, system, turns, expected", REAL_VECTORS.values(), ids=REAL_VECTORS)
def test_real_template_vector(wire, system, turns, expected):
    assert render(Template.from_wire(wire), system, turns) == expected


# --- numbering ----------------------------------------------------------------------------------------------

def test_numberings_constant():
    assert STYLE_NUMBERINGS == ("head", "0.2.36")


@pytest.mark.parametrize("conv, expected", [
    (VICUNA, "head"),
    (v0236_wire(VICUNA, 2), "0.2.36"),
    (v0236_wire(QWEN, 9), "0.2.36"),
    ({k: v for k, v in VICUNA.items() if k != "max_image_size_mb"}, "head"),
    ({k: v for k, v in VICUNA.items() if k != "system_message_vision"}, "head"),
    (v0236_wire(VICUNA, 2) | {"extra": 1}, "head"),
], ids=["13 keys", "11 keys", "11 keys chatml", "vision key only", "image size key only", "unknown shape"])
def test_detect_numbering_by_keys(conv, expected):
    assert detect_numbering(conv) == expected


@pytest.mark.parametrize("name", ["llama-3", "gemma", "cllm", "api_based_default", "llava-chatml", "grok-2"])
def test_head_only_template_name_means_head_even_with_11_keys(name):
    assert detect_numbering(v0236_wire(VICUNA, 2) | {"name": name}) == "head"


def test_0236_chatml_detected_renders_as_chatml():
    expected = REAL_VECTORS["qwen-7b-chat with system"][3]
    template = Template.from_wire(v0236_wire(QWEN, 9))
    assert (template.sep_style, render(template, "You are X.", HISTORY)) == ("CHATML", expected)


def test_0236_chatml_forced_0236_renders_as_chatml():
    expected = REAL_VECTORS["qwen-7b-chat with system"][3]
    template = Template.from_wire(QWEN | {"sep_style": 9}, numbering="0.2.36")
    assert (template.sep_style, render(template, "You are X.", HISTORY)) == ("CHATML", expected)


def test_0236_chatml_forced_head_is_misread_as_chatglm():
    # The skew §6.2 warns about: the same integer means CHATGLM at HEAD.
    assert Template.from_wire(v0236_wire(QWEN, 9), numbering="head").sep_style == "CHATGLM"


def test_unknown_numbering_argument_is_rejected():
    with pytest.raises(ValueError, match="numbering"):
        Template.from_wire(VICUNA, numbering="0.2.35")


# --- from_wire ----------------------------------------------------------------------------------------------

def test_from_wire_converts_lists_to_tuples_and_style_to_name():
    template = Template.from_wire(LLAMA_3)
    assert template == Template(
        name="llama-3", system_template=LLAMA_3["system_template"], system_message="", roles=("user", "assistant"),
        messages=(), sep_style="LLAMA3", sep="", sep2=None, stop_str="<|eot_id|>", stop_token_ids=(128001, 128009))


def test_from_wire_keeps_a_stop_str_list_as_tuple():
    wire = VICUNA | {"stop_str": ["###", "</s>", "[UNK]"]}
    assert Template.from_wire(wire).stop_str == ("###", "</s>", "[UNK]")


def test_from_wire_keeps_builtin_messages():
    wire = synthetic_wire(1, messages=[["R0", "B1"], ["R1", None]])
    assert Template.from_wire(wire).messages == (("R0", "B1"), ("R1", None))


@pytest.mark.parametrize("key", ["name", "system_template", "system_message", "roles", "messages", "offset",
                                 "sep_style", "sep", "sep2", "stop_str", "stop_token_ids"])
def test_from_wire_missing_key(key):
    wire = {k: v for k, v in VICUNA.items() if k != key}
    with pytest.raises(TemplateError, match=f"missing key '{key}'"):
        Template.from_wire(wire, numbering="head")


@pytest.mark.parametrize("numbering, value", [
    ("0.2.36", 23), ("0.2.36", 20), ("head", 24), ("head", 0), ("head", -1), ("head", None), ("head", "10"),
    ("head", True), ("head", 2.0),
])
def test_from_wire_rejects_sep_style_not_in_numbering(numbering, value):
    with pytest.raises(TemplateError, match=rf"sep_style.*{value!r}.*{numbering}"):
        Template.from_wire(VICUNA | {"sep_style": value}, numbering=numbering)


@pytest.mark.parametrize("style, key", [
    ("CHATML", "sep"), ("ADD_COLON_TWO", "sep2"), ("LLAMA2", "sep2"), ("ADD_COLON_SINGLE", "sep"),
    ("YUAN2", "sep2"), ("CLLM", "sep"),
])
def test_from_wire_rejects_null_separator_the_style_uses(style, key):
    with pytest.raises(TemplateError, match=rf"{style} needs {key}\b"):
        Template.from_wire(synthetic_wire(HEAD_INTS[style], **{key: None}))


@pytest.mark.parametrize("style", ["DEFAULT", "LLAMA3", "CHATGLM3", "PHOENIX", "RWKV"])
def test_from_wire_accepts_null_separators_the_style_ignores(style):
    template = Template.from_wire(synthetic_wire(HEAD_INTS[style], sep=None, sep2=None))
    assert render(template, None, SYNTHETIC_TURNS)


@pytest.mark.parametrize("key, value", [
    ("name", None), ("system_message", 3), ("system_template", None), ("roles", ["only one"]),
    ("roles", "USER"), ("messages", [["R0"]]), ("messages", [["R0", ["text", ["img"]]]]), ("messages", None),
    ("sep", 1), ("stop_str", ["ok", 3]), ("stop_str", 5), ("stop_token_ids", [1, "2"]), ("stop_token_ids", 2),
])
def test_from_wire_rejects_wrong_types(key, value):
    with pytest.raises(TemplateError, match=key):
        Template.from_wire(VICUNA | {key: value})


@pytest.mark.parametrize("system_template", ["{other}", "{", "{0}"])
def test_from_wire_rejects_unformattable_system_template(system_template):
    with pytest.raises(TemplateError, match="system_template"):
        Template.from_wire(VICUNA | {"system_template": system_template})


@pytest.mark.parametrize("conv", [None, [], "vicuna"])
def test_from_wire_rejects_non_object(conv):
    with pytest.raises(TemplateError, match="JSON object"):
        Template.from_wire(conv)


def test_template_rejects_unknown_style_name():
    with pytest.raises(TemplateError, match="NOPE"):
        Template(name="x", system_template="", system_message="", roles=("a", "b"), messages=(),
                 sep_style="NOPE", sep="", sep2="", stop_str=None, stop_token_ids=None)


# --- rendering quirks ---------------------------------------------------------------------------------------

def test_yuan2_rstrip_removes_characters_not_the_suffix():
    assert render(Template.from_wire(YUAN2), None, [(0, "main")]) == "mai<sep>"


def test_gemma_ignores_the_system_message():
    template = Template.from_wire(GEMMA)
    assert render(template, "You are X.", HISTORY) == REAL_VECTORS["gemma"][3]


def test_cllm_renders_only_the_last_two_messages():
    assert render(head_template("CLLM"), None, [(0, "U1"), (1, "A1"), (0, "U2"), (1, "A2"), (0, "U3")]) \
        == "[SYS]<S1>R0: U3<S1>R1:"


def test_llama2_tags_consecutive_users_by_index_parity():
    assert render(head_template("LLAMA2"), None, [(0, "U1"), (0, "U2")]) == "[SYS]U1 R1 U2<S2>R0"


def test_chatglm_round_numbers_start_at_zero_for_other_names():
    wire = CHATGLM2 | {"name": "chatglm"}
    assert render(Template.from_wire(wire), None, [(0, "Hi")]) == "[Round 0]\n\n问：Hi\n\n答："


@pytest.mark.parametrize("style, expected", [
    ("ADD_COLON_TWO", "[SYS]<S1>R0: U1<S1>R1:R0: U2<S1>R1:"),
    ("NO_COLON_SINGLE", "[SYS]R0U1<S1>R1R0U2<S1>R1"),
    ("CHATML", "[SYS]<S1>\nR0\nU1<S1>\nR1\nR0\nU2<S1>\nR1\n"),
    ("CHATGLM", "[SYS]<S1>[Round 0]<S1>R0：U1<S1>R1：[Round 1]<S1>R0：U2<S1>R1："),
    ("LLAMA3", "<|begin_of_text|>[SYS]<|start_header_id|>R0<|end_header_id|>\n\nU1<|eot_id|>"
               "<|start_header_id|>R1<|end_header_id|>\n\n<|start_header_id|>R0<|end_header_id|>\n\nU2<|eot_id|>"
               "<|start_header_id|>R1<|end_header_id|>\n\n"),
])
def test_empty_string_in_history_renders_like_the_open_slot(style, expected):
    assert render(head_template(style), None, [(0, "U1"), (1, ""), (0, "U2")]) == expected


def test_builtin_messages_render_first_and_count_toward_parity():
    wire = synthetic_wire(HEAD_INTS["ADD_COLON_TWO"], messages=[["R0", "B1"]])
    assert render(Template.from_wire(wire), None, [(1, "A1")]) == "[SYS]<S1>R0: B1<S1>R1: A1<S2>R1:"


def test_rwkv_collapses_newlines_in_single_passes():
    assert render(head_template("RWKV"), None, [(0, "a\r\n\r\nb\n\n\nc")]) == "[SYS]R0: a\nb\n\nc\n\nR1:"


def test_llama3_strips_message_whitespace():
    assert render(head_template("LLAMA3"), "", [(0, "  U1 \n")]) == (
        "<|begin_of_text|><|start_header_id|>R0<|end_header_id|>\n\nU1<|eot_id|>"
        "<|start_header_id|>R1<|end_header_id|>\n\n")


def test_braces_in_the_system_message_are_literal():
    assert render(head_template("DEFAULT"), "{system_message} {x}", []) == "[{system_message} {x}]\nR1:"


def test_render_with_no_turns_is_just_the_open_slot():
    assert render(head_template("ADD_COLON_SINGLE"), None, []) == "[SYS]<S1>R1:"


def test_render_rejects_a_role_index_other_than_0_or_1():
    with pytest.raises(ValueError, match="role_index"):
        render(head_template("DEFAULT"), None, [(2, "x")])


# --- build_prompt -------------------------------------------------------------------------------------------

def test_build_prompt_maps_roles_to_the_template():
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "How are you?"}]
    assert build_prompt(Template.from_wire(VICUNA), messages) == REAL_VECTORS["vicuna_v1.1"][3]


def test_build_prompt_last_system_message_wins_wherever_it_stands():
    messages = [{"role": "system", "content": "First."}, {"role": "user", "content": "Hi"},
                {"role": "system", "content": "You are X."}]
    assert build_prompt(Template.from_wire(VICUNA), messages) == "You are X. USER: Hi ASSISTANT:"


def test_build_prompt_developer_sets_the_system_message():
    messages = [{"role": "developer", "content": "You are X."}, {"role": "user", "content": "Hi"}]
    assert build_prompt(Template.from_wire(VICUNA), messages) == "You are X. USER: Hi ASSISTANT:"


def test_build_prompt_empty_system_message_replaces_the_default():
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}]
    assert build_prompt(Template.from_wire(VICUNA), messages) == " USER: Hi ASSISTANT:"


def test_build_prompt_consecutive_users_alternate_separators():
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert build_prompt(Template.from_wire(VICUNA), messages) == VICUNA_SYSTEM + " USER: a USER: b</s>ASSISTANT:"


@pytest.mark.parametrize("role", ["tool", "function", None])
def test_build_prompt_rejects_other_roles(role):
    with pytest.raises(TemplateError, match="Unknown role"):
        build_prompt(Template.from_wire(VICUNA), [{"role": role, "content": "x"}])


def test_build_prompt_rejects_unflattened_content():
    with pytest.raises(TemplateError, match="content"):
        build_prompt(Template.from_wire(VICUNA), [{"role": "user", "content": [{"type": "text", "text": "x"}]}])


# --- merge_stop ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("request_stop, stop_str, expected", [
    (None, None, []),
    ([], None, []),
    (None, "###", ["###"]),
    (["X", "Y"], None, ["X", "Y"]),
    (["Y", "X"], "###", ["Y", "X", "###"]),
    (["###", "X"], "###", ["###", "X"]),
    (["X", "X", "Y"], None, ["X", "Y"]),
    (["X", ""], "", ["X"]),
    (None, ["</s>", "[UNK]", "</s>"], ["</s>", "[UNK]"]),
    (["[UNK]"], ["###", "</s>", "[UNK]"], ["[UNK]", "###", "</s>"]),
    (["X"], [], ["X"]),
], ids=["nothing", "empty request", "template only", "request only", "request first", "overlap",
        "request duplicates", "empty strings", "template list duplicates", "list overlap", "empty template list"])
def test_merge_stop(request_stop, stop_str, expected):
    wire = VICUNA | {"stop_str": stop_str}
    assert merge_stop(request_stop, Template.from_wire(wire)) == expected


# --- images (§2.7, §6.3 "Image tuples") ---------------------------------------------------------------------------

class _Image:
    def __init__(self, param: str):
        self.param = param


IMAGE_MESSAGES = [{"role": "user", "content": "U1", "images": [_Image("messages[0].content[1]")] * 2},
                  {"role": "assistant", "content": "A1"},
                  {"role": "user", "content": "U2", "images": [_Image("messages[2].content[0]")]}]


@pytest.mark.parametrize("style, expected", [
    ("ADD_COLON_SINGLE", "[SYS]<S1>R0: $$<image>$$$$<image>$$<image>\n<image>\nU1<S1>R1: A1<S1>"
                         "R0: $$<image>$$<image>\nU2<S1>R1:"),
    ("ADD_COLON_TWO", "[SYS]<S1>R0: $$<image>$$$$<image>$$<image>\n<image>\nU1<S1>R1: A1<S2>"
                      "R0: $$<image>$$<image>\nU2<S1>R1:"),
    ("CHATML", "[SYS]<S1>\nR0\n$$<image>$$$$<image>$$<image>\n<image>\nU1<S1>\nR1\nA1<S1>\n"
               "R0\n$$<image>$$<image>\nU2<S1>\nR1\n"),
    ("DEFAULT", "[SYS]\nR0: <image>\n<image>\nU1\nR1: A1\nR0: <image>\nU2\nR1:"),
])
def test_image_messages_render_as_fastchat_head_renders_them(style, expected):
    """The user text is "<image>\\n" per image + the text; the styles that place images put "$$<image>$$" per image
    before it, DEFAULT keeps the text only."""
    assert build_prompt(head_template(style), IMAGE_MESSAGES) == expected


@pytest.mark.parametrize("style", sorted(set(HEAD_INTS) - {"ADD_COLON_SINGLE", "ADD_COLON_TWO", "CHATML", "CLLM",
                                                           "DEFAULT"}))
def test_a_style_without_a_place_for_images_is_400_naming_the_first_image(style):
    from app.errors import ApiError

    with pytest.raises(ApiError) as caught:
        build_prompt(head_template(style), IMAGE_MESSAGES)
    assert (caught.value.status, caught.value.param) == (400, "messages[0].content[1]")
    assert caught.value.message.startswith(f"The conversation template 'synthetic' cannot place images (its "
                                           f"sep_style is {style})")


def test_messages_without_images_render_as_before_in_every_style():
    for style in HEAD_INTS:
        plain = [{k: v for k, v in m.items() if k != "images"} for m in IMAGE_MESSAGES]
        assert build_prompt(head_template(style), plain) == \
            render(head_template(style), None, [(0, "U1"), (1, "A1"), (0, "U2")])


def test_cllm_places_the_images_of_the_last_message_and_refuses_earlier_ones():
    from app.errors import ApiError

    assert build_prompt(head_template("CLLM"), IMAGE_MESSAGES[1:]) == "[SYS]<S1>R0: $$<image>$$<image>\nU2<S1>R1:"
    with pytest.raises(ApiError) as caught:
        build_prompt(head_template("CLLM"), IMAGE_MESSAGES)
    assert caught.value.param == "messages[0].content[1]"
    assert "renders only the last message" in caught.value.message


def test_parsed_template_parses_each_wire_dict_once_and_a_new_dict_again():
    conv = dict(VICUNA)
    first = parsed_template(conv)
    assert first == Template.from_wire(conv)
    assert parsed_template(conv) is first  # the same dict: the same Template, not parsed again
    assert parsed_template(conv, "0.2.36") == Template.from_wire(conv, "0.2.36")  # numbering is part of the key
    changed = conv | {"system_message": "Other."}  # a worker re-fetched after a restart sends a new dict
    assert parsed_template(changed).system_message == "Other."


def test_parsed_template_raises_for_a_bad_template_every_time():
    bad = {key: value for key, value in VICUNA.items() if key != "sep"}
    for _ in range(2):
        with pytest.raises(TemplateError, match="missing key 'sep'"):
            parsed_template(bad)
