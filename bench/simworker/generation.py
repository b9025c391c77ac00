"""The simulated model: deterministic text, tokens, logprobs and embeddings. No HTTP here.

* Tokenizer rule (``/count_token``, ``usage``, ``token_num``): ``count(text) = 1 (BOS) + len(text.split())``, one
  token per whitespace-separated word plus a BOS token.
* Text: ``min(max_new_tokens, --tokens)`` tokens, each one word of WORDS picked by a hash of the prompt, of the
  request's ``seed`` and of the token index; the first token is the bare word, later ones carry one leading space.
  The text is a pure function of the payload: the same payload always yields the same text. A sampling request
  (temperature >= 1e-5, FastChat's greedy threshold) with another ``seed`` yields another text, as a sampled model
  does, so choices sent with different seeds differ; a greedy request ignores the seed, as greedy decoding does.
* ``finish_reason``: ``"length"`` when ``max_new_tokens`` tokens were produced, ``"stop"`` when the simulated model
  ended by itself (``--tokens`` < ``max_new_tokens``, like an EOS token) or a stop string matched.
* Frames hold the cumulative text, like FastChat's. A frame is due at decode step ``i`` when
  ``i % stream_interval == 0`` or at the last step; one whose text ends with a proper prefix of a stop string is
  withheld. ``usage.completion_tokens`` is the number of tokens so far (``usage_off_by_one``: the HF worker's
  0-based step index). The prompt is never truncated (the gateway checks the length, as FastChat's server does).
* ``logprobs`` (when the request's ``logprobs`` is not null): ``{"text_offset", "tokens", "token_logprobs",
  "top_logprobs"}``; with echo the lists start with the BOS token (``""``, logprob null) and the prompt's words.
  ``top_logprobs`` holds, per token, the ``logprobs`` (at most 20) likeliest tokens, likeliest first: the sampled
  token, then alternatives whose probabilities add up to less than the rest (the BOS entry stays ``{}``).
* Scripted replies (``scripted``): a prompt that offers tools or asks for a JSON object gets a tool call, an answer
  to the tool results or a JSON object instead of filler, cut into tokens of a few characters; such a reply has as
  many tokens as it needs (``--tokens`` bounds filler only), and is still cut at ``max_new_tokens``. A reply given
  as ``fallback`` (a vision worker's description of the images, ``vision``) is used the same way where no
  scripted reply is due.
"""
from __future__ import annotations

import hashlib
import math
import re
import struct

from bench.simworker import scripted as _scripted

WORDS = (
    "the quick brown fox jumps over lazy dog alpha beta gamma delta river "
    "mountain cloud silver garden lantern harbor meadow crystal shadow ember "
    "violet orbit signal canvas anchor breeze copper echo falcon glacier "
    "horizon island jungle kernel lemon marble nectar ocean pepper quartz "
    "ribbon saddle timber umbrella valley willow yonder zephyr amber bramble "
    "cedar dune fern grove hazel ivory jasper kelp lotus maple nova opal "
    "prism"
).split()
MAX_TOP_LOGPROBS = 20
GREEDY_TEMPERATURE = 1e-5
_M64 = (1 << 64) - 1
_PROMPT_PIECES = re.compile(r"\s*\S+")


def _mix(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash of an int."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _text_seed(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def count_tokens(text: str) -> int:
    """Simulated tokenizer: 1 (BOS) + number of whitespace-separated words."""
    return 1 + len(text.split())


def _logprob(seed: int, index: int) -> float:
    return -((_mix(seed ^ (0x5A5A5A5A + index)) % 3000) + 1) / 1000.0


def _top_logprobs(seed: int, index: int, piece: str, logprob: float, k: int) -> dict:
    """The k likeliest tokens at one position: the sampled `piece` with `logprob` first, then other words (with the
    same leading whitespace), each half as likely as the one before, the first half as likely as the sampled token
    or as the rest of the probability mass, whichever is smaller (so the probabilities never add up to over 1)."""
    if k <= 0:
        return {}
    word = piece.lstrip()
    lead = piece[:len(piece) - len(word)]
    probability = math.exp(logprob)
    share = min(probability, 1.0 - probability)
    candidates = {piece: logprob}
    h = _mix(seed ^ (0xA5A5A5A5 + index))
    while len(candidates) < k:
        h = _mix(h)
        alternative = lead + WORDS[h % len(WORDS)]
        if alternative not in candidates:
            share /= 2
            candidates[alternative] = round(math.log(share), 4)
    return candidates


class Generation:
    """One simulated decode of a gen-params payload (tokens: the worker's --tokens; stream_interval;
    usage_off_by_one; scripted False: filler even where a scripted reply is due, the ``disobey`` fault; fallback:
    the reply, cut like a scripted one, where no scripted reply is due, e.g. a vision worker's description)."""

    __slots__ = ("echo", "base", "stops", "max_stop", "max_new", "n", "seed", "text", "ntok", "finish_reason",
                 "interval", "prompt", "prompt_tokens", "off_by_one", "lp", "top_k", "script")

    def __init__(self, params: dict, tokens: int, stream_interval: int = 1, usage_off_by_one: bool = False,
                 scripted: bool = True, fallback: str | None = None):
        prompt = params.get("prompt", "")
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a string")
        max_new = int(params.get("max_new_tokens", 256))  # null/garbage -> TypeError/ValueError -> 500
        echo = params.get("echo", True)
        self.echo = True if echo is None else bool(echo)
        stop = params.get("stop")
        if isinstance(stop, str):
            self.stops = [stop] if stop else []
        elif isinstance(stop, (list, tuple)):
            self.stops = [s for s in stop if isinstance(s, str) and s]
        else:
            self.stops = []
        seed = _text_seed(prompt)
        if isinstance(params.get("seed"), int) and not _greedy(params.get("temperature")):
            seed = _mix(seed ^ (params["seed"] & _M64))
        self.prompt = prompt
        self.base = prompt if self.echo else ""
        self.max_stop = max((len(s) for s in self.stops), default=0)
        self.max_new = max_new
        script = _scripted.reply(prompt) if scripted else None
        if script is None:
            script = fallback
        self.script = _scripted.tokens(script) if script is not None else None
        self.n = max(0, min(max_new, tokens if self.script is None else len(self.script)))
        self.seed = seed
        self.text = ""  # generated text (after stop truncation)
        self.ntok = 0
        self.finish_reason = None
        self.interval = max(1, stream_interval)
        self.prompt_tokens = count_tokens(prompt)
        self.off_by_one = usage_off_by_one
        self.lp = None
        requested = params.get("logprobs")
        if requested is not None:
            self.top_k = max(0, min(requested, MAX_TOP_LOGPROBS)) if type(requested) is int else 0
            # Lists are shared by every frame (cumulative, as in FastChat).
            self.lp = {"text_offset": [], "tokens": [], "token_logprobs": [], "top_logprobs": []}
            if self.echo:
                self._add_lp("", None, 0)
                for j, piece in enumerate(_PROMPT_PIECES.findall(prompt)):
                    self._add_lp(piece, _logprob(seed, 100000 + j), 100000 + j)

    def _add_lp(self, token: str, value: float | None, index: int) -> None:
        lp = self.lp
        offsets = lp["text_offset"]
        offsets.append(offsets[-1] + len(lp["tokens"][-1]) if offsets else 0)
        lp["tokens"].append(token)
        lp["token_logprobs"].append(value)
        lp["top_logprobs"].append({} if value is None else _top_logprobs(self.seed, index, token, value, self.top_k))

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def step(self) -> bool:
        """Produce the next token. Returns True if a frame is due."""
        i = self.ntok
        if self.script is not None:
            piece = self.script[i]
        else:
            word = WORDS[_mix(self.seed + i) % len(WORDS)]
            piece = word if i == 0 else " " + word
        self.ntok = i + 1
        if self.lp is not None:
            self._add_lp(piece, _logprob(self.seed, i), i)
        old_len = len(self.text)
        self.text += piece
        emit = i % self.interval == 0 or i == self.n - 1
        if self.stops:
            start = max(0, old_len - self.max_stop + 1)
            for s in self.stops:
                pos = self.text.find(s, start)
                if pos != -1:
                    self.text = self.text[:pos]
                    self.finish_reason = "stop"
                    return True
            if self._partial_stop():
                emit = False
        if self.ntok >= self.n:
            self.finish_reason = "length" if self.ntok >= self.max_new else "stop"
        return emit

    def _partial_stop(self) -> bool:
        text = self.text
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    return True
        return False

    def run_to_end(self) -> None:
        while not self.done and self.ntok < self.n:
            self.step()
        if self.finish_reason is None:  # n == 0
            self.finish_reason = "length" if self.max_new <= 0 else "stop"

    def frame(self, final: bool = False) -> dict:
        done_tokens = self.ntok
        completion = done_tokens - 1 if self.off_by_one and done_tokens else done_tokens
        return {
            "text": self.base + self.text,
            "error_code": 0,
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                      "total_tokens": self.prompt_tokens + completion},
            "finish_reason": self.finish_reason if final else None,
            "logprobs": self.lp,
        }


def _greedy(temperature: object) -> bool:
    return isinstance(temperature, (int, float)) and temperature < GREEDY_TEMPERATURE


def embedding_row(text: str, dim: int) -> list[float]:
    """Deterministic unit vector (float32 values) derived from the text."""
    raw = hashlib.shake_256(text.encode("utf-8", "surrogatepass")).digest(4 * dim)
    vec = [(v / 2147483648.0) - 1.0 for v in struct.unpack(f"<{dim}I", raw)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return list(struct.unpack(f"<{dim}f", struct.pack(f"<{dim}f", *[v / norm for v in vec])))
