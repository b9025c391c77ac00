"""Build a tiny, random-weight Llama chat model that a real FastChat worker can serve.

Runs INSIDE the model-worker virtualenv made by ``harness/fastchat_venv.sh
model-worker DIR`` (it needs torch, transformers and tokenizers; none of these
are dependencies of fastchat-gateway).

    DIR/bin/python tests/interop/build_tiny_model.py OUTDIR

prints the model folder (``OUTDIR/tiny-vicuna-test``) as its last stdout line.
The folder name contains ``vicuna`` so FastChat picks its Vicuna adapter and
the ``vicuna_v1.1`` conversation template.  An existing complete folder is
reused.  Everything is deterministic: a fixed seed for the weights and a BPE
tokenizer trained on this interpreter's own stdlib sources read in sorted
order, so a rebuild with the same Python/torch/tokenizers versions gives
byte-identical files.  No network access is needed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

MODEL_DIR_NAME = "tiny-vicuna-test"
SEED = 1234
VOCAB_SIZE = 2048
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]  # ids 0, 1, 2, 3
# Text to train the tokenizer on: modules of this interpreter's stdlib.
STDLIB_FILES = ["os.py", "textwrap.py", "string.py"]
STDLIB_DIRS = ["json", "logging", "email"]

REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


def is_complete(folder: Path) -> bool:
    return (
        all((folder / f).is_file() for f in REQUIRED_FILES)
        and any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin"))
    )


def training_texts() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    paths = [stdlib / f for f in STDLIB_FILES]
    for d in STDLIB_DIRS:
        paths.extend(sorted((stdlib / d).glob("*.py")))
    texts = [p.read_text(encoding="utf-8") for p in paths]
    if sum(map(len, texts)) < 100_000:
        raise SystemExit(f"too little training text found under {stdlib}")
    return texts


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    # SentencePiece-like (Llama-style) metaspace BPE: every token decodes to
    # valid text, unknown characters map to <unk>.
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        limit_alphabet=200,
        show_progress=False,
    )
    tok.train_from_iterator(training_texts(), trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=512,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def build_model(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.eval()
    return model


def self_check(folder: Path) -> None:
    """Reload the saved folder the way FastChat's Vicuna adapter does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, use_fast=False)
    model = AutoModelForCausalLM.from_pretrained(folder, low_cpu_mem_usage=True)
    text = "def main():\n    return json.dumps({'a': 1})"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id, ids[:3]
    back = tok.decode(ids, skip_special_tokens=True)
    assert back == text, (back, text)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tok)), logits.shape


def build(outdir: Path) -> Path:
    folder = outdir / MODEL_DIR_NAME
    if is_complete(folder):
        return folder
    outdir.mkdir(parents=True, exist_ok=True)
    # Build into a scratch folder and rename, so an interrupted build never
    # leaves a folder that looks complete.
    scratch = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIR_NAME}-", dir=outdir))
    try:
        tokenizer = build_tokenizer()
        model = build_model(tokenizer)
        tokenizer.save_pretrained(scratch)
        model.save_pretrained(scratch, safe_serialization=True)
        self_check(scratch)
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(scratch, folder)
        folder.chmod(0o755)  # mkdtemp made it 0700
        for p in folder.iterdir():
            p.chmod(0o644)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)
    return folder


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file():
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    folder = build(args.outdir.resolve())
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    print(f"tiny model: {size / 1e6:.2f} MB, files digest {digest(folder)}", file=sys.stderr)
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
