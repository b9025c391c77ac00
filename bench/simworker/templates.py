"""The conversation template the worker reports (/worker_get_conv_template), in HEAD or fschat 0.2.36 wire form.

The templates are kept in HEAD wire form (fastchat-protocol.md §6.5, verbatim). Everything about numbering (which
sep_style integer a style has in 0.2.36, which keys 0.2.36 sends) comes from the gateway's own tables in
app/serving/prompt.py, so the worker and the gateway cannot disagree about them.
"""
from __future__ import annotations

import json

from app.serving import prompt

_HEAD_TEMPLATES = r"""
{"name": "vicuna_v1.1", "system_template": "{system_message}", "system_message": "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.", "system_message_vision": "", "roles": ["USER", "ASSISTANT"], "messages": [], "offset": 0, "sep_style": 2, "sep": " ", "sep2": "</s>", "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}
{"name": "llama-2", "system_template": "[INST] <<SYS>>\n{system_message}\n<</SYS>>\n\n", "system_message": "", "system_message_vision": "", "roles": ["[INST]", "[/INST]"], "messages": [], "offset": 0, "sep_style": 7, "sep": " ", "sep2": " </s><s>", "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}
{"name": "llama-3", "system_template": "<|start_header_id|>system<|end_header_id|>\n\n{system_message}<|eot_id|>", "system_message": "", "system_message_vision": "", "roles": ["user", "assistant"], "messages": [], "offset": 0, "sep_style": 8, "sep": "", "sep2": null, "stop_str": "<|eot_id|>", "stop_token_ids": [128001, 128009], "max_image_size_mb": null}
{"name": "mistral", "system_template": "[INST] {system_message}\n", "system_message": "", "system_message_vision": "", "roles": ["[INST]", "[/INST]"], "messages": [], "offset": 0, "sep_style": 7, "sep": " ", "sep2": "</s>", "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}
{"name": "qwen-7b-chat", "system_template": "<|im_start|>system\n{system_message}", "system_message": "You are a helpful assistant.", "system_message_vision": "", "roles": ["<|im_start|>user", "<|im_start|>assistant"], "messages": [], "offset": 0, "sep_style": 10, "sep": "<|im_end|>", "sep2": null, "stop_str": "<|endoftext|>", "stop_token_ids": [151643, 151644, 151645], "max_image_size_mb": null}
{"name": "zephyr", "system_template": "<|system|>\n{system_message}", "system_message": "", "system_message_vision": "", "roles": ["<|user|>", "<|assistant|>"], "messages": [], "offset": 0, "sep_style": 10, "sep": "</s>", "sep2": null, "stop_str": "</s>", "stop_token_ids": [2], "max_image_size_mb": null}
{"name": "gemma", "system_template": "{system_message}", "system_message": "", "system_message_vision": "", "roles": ["user", "model"], "messages": [], "offset": 0, "sep_style": 21, "sep": "<end_of_turn>\n", "sep2": null, "stop_str": "<end_of_turn>", "stop_token_ids": null, "max_image_size_mb": null}
{"name": "chatglm3", "system_template": "<|system|>\n{system_message}", "system_message": "", "system_message_vision": "", "roles": ["<|user|>", "<|assistant|>"], "messages": [], "offset": 0, "sep_style": 17, "sep": "\n", "sep2": null, "stop_str": null, "stop_token_ids": [64795, 64797, 2], "max_image_size_mb": null}
{"name": "alpaca", "system_template": "{system_message}", "system_message": "Below is an instruction that describes a task. Write a response that appropriately completes the request.", "system_message_vision": "", "roles": ["### Instruction", "### Response"], "messages": [], "offset": 0, "sep_style": 2, "sep": "\n\n", "sep2": "</s>", "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}
{"name": "zero_shot", "system_template": "{system_message}", "system_message": "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.", "system_message_vision": "", "roles": ["Human", "Assistant"], "messages": [], "offset": 0, "sep_style": 1, "sep": "\n### ", "sep2": null, "stop_str": "###", "stop_token_ids": null, "max_image_size_mb": null}
{"name": "raw", "system_template": "{system_message}", "system_message": "", "system_message_vision": "", "roles": ["", ""], "messages": [], "offset": 0, "sep_style": 4, "sep": "", "sep2": null, "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}
{"name": "api_based_default", "system_template": "{system_message}", "system_message": "", "system_message_vision": "", "roles": ["user", "assistant"], "messages": [], "offset": 0, "sep_style": 23, "sep": null, "sep2": null, "stop_str": null, "stop_token_ids": null, "max_image_size_mb": null}
"""
TEMPLATES = {conv["name"]: conv for conv in map(json.loads, _HEAD_TEMPLATES.strip().splitlines())}
NUMBERINGS = prompt.STYLE_NUMBERINGS

# The gateway's sep_style tables (number -> name per numbering) are private to it because the app only ever reads
# numbers; the worker needs them the other way round, to write a style in the numbering it was asked for.
_STYLE_NAMES = prompt._STYLE_TABLES
_STYLE_NUMBERS = {numbering: {name: number for number, name in table.items()}
                  for numbering, table in _STYLE_NAMES.items()}


def conv_wire(name: str, numbering: str) -> dict:
    """The "conv" value of /worker_get_conv_template for a built-in template, in `numbering` ("head"/"0.2.36").

    Raises ValueError for an unknown template, or for one whose sep_style does not exist in that numbering.
    """
    if name not in TEMPLATES:
        raise ValueError(f"unknown conversation template {name!r}; built-in templates: "
                         + ", ".join(sorted(TEMPLATES)))
    conv = dict(TEMPLATES[name])
    if numbering != "head":
        style = _STYLE_NAMES["head"][conv["sep_style"]]
        if style not in _STYLE_NUMBERS[numbering]:
            raise ValueError(f"template {name!r} uses sep_style {style}, which does not exist in fschat {numbering}")
        # An older worker sends only the keys the API server reads, in this order (§6.1/§9).
        conv = {key: conv[key] for key in prompt._WIRE_KEYS} | {"sep_style": _STYLE_NUMBERS[numbering][style]}
    prompt.Template.from_wire(conv, numbering)  # the gateway must be able to use what the worker reports
    return conv
