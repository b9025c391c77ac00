"""Token-id inputs (clients such as LangChain pre-tokenize with tiktoken) decoded back to text, as FastChat does:
the worker then tokenizes the text with its own tokenizer. tiktoken is an optional extra; its encoding files come
from app.serving.encoding_files, installed once, so nothing is downloaded at run time."""
from __future__ import annotations

import os

from app.errors import invalid_request
from app.serving.encoding_files import DEFAULT_DIR


def decode_inputs(items: list, model: str, param: str) -> list[str]:
    """Each item as text: strings as they are, token-id lists decoded with tiktoken's encoding for `model`
    (cl100k_base for names tiktoken does not know). Raises 400 naming the problem when that is impossible."""
    if all(isinstance(item, str) for item in items):
        return items
    encoding = _encoding(model, param)
    texts = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
            continue
        try:
            texts.append(encoding.decode(item))
        except Exception:  # tiktoken raises KeyError or a Rust panic for ids outside the vocabulary
            raise invalid_request(f"'{param}' has token ids that are not in the {encoding.name} vocabulary.",
                                  param) from None
    return texts


def _encoding(model: str, param: str):
    # tiktoken reads its cache directory from the environment on every load: point it at the installed files
    # unless the operator chose a directory (tiktoken's own variables win).
    if not {"TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"} & os.environ.keys() and DEFAULT_DIR.is_dir():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(DEFAULT_DIR)
    try:
        import tiktoken
    except ImportError:
        raise invalid_request(f"'{param}' is given as token ids, which this server cannot decode: the optional "
                              "tiktoken package is not installed. Send text instead.", param) from None
    try:
        try:
            return tiktoken.encoding_for_model(model)
        except KeyError:
            return tiktoken.get_encoding("cl100k_base")
    except Exception as exc:  # offline: tiktoken fetches its BPE files on first use
        raise invalid_request(f"'{param}' is given as token ids, which this server cannot decode: the tiktoken "
                              f"encoding could not be loaded ({type(exc).__name__}; an offline server needs the "
                              "encoding files in TIKTOKEN_CACHE_DIR: `python -m app.serving.encoding_files` installs "
                              "them). Send text instead.", param) from None
