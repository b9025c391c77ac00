"""Write a tiny llama-architecture GGUF model that llama.cpp's llama-server loads and generates from.

Runs INSIDE .venv-llamacpp (made by harness/llamacpp_venv.sh; it needs the ``gguf`` package and numpy, neither a
dependency of fastchat-gateway):

    .venv-llamacpp/bin/python harness/llamacpp_tiny_model.py OUT.gguf

Fixed-seed random weights, 2 layers of width 64, and a SentencePiece-style ("llama") vocabulary made here: the
control tokens, the 256 byte-fallback tokens, printable ASCII, and a few hundred words and pieces of words.  The
output rows of the control and byte tokens are zero, so greedy decoding only ever picks a plain text token: the
model never ends on its own (finish_reason "length") and never emits a partial UTF-8 sequence.  A ChatML chat
template is stored, so /v1/chat/completions renders messages.  The same file is written every time (a few
hundred KiB); no network is needed.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, LlamaFileType, TokenType

SEED = 1234
N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_FF = 128
N_CTX_TRAIN = 512
NAME = "tiny-llamacpp-test"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

WORDS = """the of and to in is you that it he was for on are as with his they at be this have from or one had
by word but not what all were we when your can said there use an each which she do how their if will up other
about out many then them these so some her would make like him into time has look two more write go see number
no way could people my than first water been call who its now find long down day did get come made may part
hello hi world story once upon a there lived small model test gateway token stream chat reply answer question
tell me long short very good bad new old big red blue green cat dog tree house road river sun moon star""".split()
PIECES = ["ing", "ed", "er", "es", "ly", "th", "he", "in", "an", "re", "on", "at", "en", "nd", "ti", "or", "te"]


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    tokens: list[str] = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    normal: list[str] = ["\u2581"]
    normal += [chr(c) for c in range(33, 127)]  # printable ASCII (a space is "\u2581")
    normal += [p for p in PIECES if p not in normal]
    for word in WORDS:  # every prefix too: SentencePiece merges only pairs whose join is in the vocabulary
        for piece in (word, "\u2581" + word):
            for end in range(2, len(piece) + 1):
                if piece[:end] not in normal:
                    normal.append(piece[:end])
    tokens += normal
    types += [TokenType.NORMAL] * len(normal)
    # SentencePiece scores: longer pieces score higher, so merges prefer whole words.
    scores = [0.0] * (len(tokens) - len(normal)) + [float(len(p)) - i * 1e-4 for i, p in enumerate(normal)]
    return tokens, scores, [int(t) for t in types]


def build(out: Path) -> Path:
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    rng = np.random.default_rng(SEED)

    def rand(*shape: int, scale: float = 0.08) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tmp = out.with_name(out.name + ".tmp")
    writer = GGUFWriter(str(tmp), arch="llama")
    writer.add_name(NAME)
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(LlamaFileType.ALL_F32)

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(4)  # <|im_end|>, the ChatML turn's end
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    writer.add_tensor("token_embd.weight", rand(n_vocab, N_EMBD, scale=0.5))
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", rand(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", rand(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", rand(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", rand(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    output = rand(n_vocab, N_EMBD, scale=1.0)
    output[np.asarray(types) != int(TokenType.NORMAL)] = 0.0  # never a control or byte token
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUT.gguf", file=sys.stderr)
        return 2
    out = Path(argv[1]).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    print(build(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
