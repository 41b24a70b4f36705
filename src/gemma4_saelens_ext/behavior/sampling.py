"""Seeded, batched sampling of completions from a plain HF causal LM and its tokenizer.

Each (prompt, sample) row gets its own seed and its own ``torch.Generator``; the token is drawn by Gumbel-max from
that generator inside a logits processor, and ``generate`` then runs greedily on the processed scores. So a row's
completion depends only on its seed and its logits, not on which other rows share the batch or on the global RNG:
resuming a build, changing ``batch_size`` or adding samples reproduces the same completions (up to floating-point
differences between padded batch shapes, which can flip a draw that lands within rounding of a boundary).
Batching uses left padding and the KV cache (``generate``'s default), which is where the speed comes from.

The unembedding gets a contiguous input (:func:`contiguous_unembedding`): ``generate`` hands it the prompt's last
position as a strided view (``hidden[:, -1:, :]``), which torch multiplies as a batched matmul at about half the
speed of the plain product, a fixed ~1 s per call on CPU with Gemma's 262k-row vocabulary.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from gemma4_saelens_ext.activations.batching import length_sorted_batches

__all__ = [
    "SampleRequest",
    "Completion",
    "sample_seed",
    "make_requests",
    "generate_completions",
    "generate_branches",
    "SeededSampler",
    "required_new_tokens",
    "check_max_new_tokens",
    "contiguous_unembedding",
]

log = logging.getLogger(__name__)


def sample_seed(base_seed: int, prompt_id: str, sample_index: int) -> int:
    """63-bit seed for one (prompt, sample): a hash, so it does not depend on prompt order or batch layout."""
    h = hashlib.sha256(f"{base_seed}|{prompt_id}|{sample_index}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") & ((1 << 63) - 1)


@dataclass(frozen=True)
class SampleRequest:
    key: str  # "{prompt_id}#{sample_index}" - the checkpoint key
    prompt_id: str
    prompt: str
    sample_index: int
    seed: int


@dataclass
class Completion:
    key: str
    prompt_id: str
    sample_index: int
    sample_seed: int
    completion: str
    n_new_tokens: int
    #: True when the model emitted EOS before max_new_tokens
    finished: bool


def make_requests(prompts: Sequence[tuple[str, str]], n_samples: int, base_seed: int) -> list[SampleRequest]:
    """Requests for ``n_samples`` completions of each (prompt_id, text)."""
    return [
        SampleRequest(f"{pid}#{i}", pid, text, i, sample_seed(base_seed, pid, i))
        for pid, text in prompts
        for i in range(n_samples)
    ]


class SeededSampler:
    """Logits processor: row r samples with its own generator (Gumbel-max) and returns a one-hot score row so
    ``generate(do_sample=False)`` picks exactly that token. temperature 0 means greedy."""

    def __init__(self, seeds: Sequence[int], temperature: float = 1.0):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}.")
        self.temperature = float(temperature)
        self.generators = []
        for s in seeds:
            g = torch.Generator(device="cpu")
            g.manual_seed(int(s))
            self.generators.append(g)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float()
        if torch.isnan(logits).any():
            raise FloatingPointError(
                "The model produced NaN logits while sampling, so every completion would be padding. This is the "
                "known float16 overflow of Gemma checkpoints (fp16 compute, e.g. precision 'nf4' on Gemma 3). Use "
                "precision 'nf4-bf16', 'bf16' or 'fp32' for this model."
            )
        if self.temperature == 0:
            choice = logits.argmax(dim=-1)
        else:
            vocab = logits.shape[-1]
            u = torch.stack([torch.rand(vocab, generator=g) for g in self.generators]).to(logits.device)
            gumbel = -torch.log(-torch.log(u.clamp_(1e-20, 1.0 - 1e-7)))
            choice = (logits / self.temperature + gumbel).argmax(dim=-1)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, choice.unsqueeze(1), 0.0)
        return out


def _pad_id(tokenizer: Any) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise ValueError("The tokenizer has neither a pad nor an eos token; set tokenizer.pad_token before sampling.")


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), tokenizer):
        e = getattr(src, "eos_token_id", None)
        if e is None:
            continue
        ids.update([e] if isinstance(e, int) else list(e))
    return sorted(ids)


@contextlib.contextmanager
def contiguous_unembedding(model: Any) -> Iterator[None]:
    """Make the unembedding's input contiguous while the block runs (see module docstring); no-op for a model
    without one. The logits are the same product; only the kernel differs (rounding-level differences)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        yield
        return
    handle = head.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


def _decode_continuation(tokenizer: Any, prompt_ids: list[int], new_ids: list[int]) -> str:
    # decode prompt+completion together and cut the prompt off, so leading spaces survive (SentencePiece drops them
    # when a continuation is decoded on its own)
    p = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    full = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    if full.startswith(p):
        return full[len(p) :]
    return tokenizer.decode(new_ids, skip_special_tokens=True)


def _check_sizes(max_new_tokens: int, batch_size: int) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")


class _Generator:
    """One model's ``generate`` set up for seeded rows: left padding, EOS cut, prompt-aware decoding."""

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int, temperature: float):
        from transformers import GenerationConfig

        self.model, self.tokenizer, self.temperature = model, tokenizer, temperature
        self.pad_id = _pad_id(tokenizer)
        self.eos = _eos_ids(model, tokenizer)
        self.device = next(model.parameters()).device
        self.cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.pad_id,
                                    eos_token_id=self.eos or None, num_beams=1)

    def run(self, ids: Sequence[list[int]], seeds: Sequence[int], cache: Any = None) -> list[tuple[str, int, bool]]:
        """(completion, new tokens, finished) per row; ``cache``: a KV cache of the rows' first tokens to start from."""
        from transformers import LogitsProcessorList

        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[self.pad_id] * (width - len(x)) + x for x in ids], device=self.device)
        attn = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.device)
        with contiguous_unembedding(self.model):
            gen = self.model.generate(input_ids=input_ids, attention_mask=attn, generation_config=self.cfg,
                                      logits_processor=LogitsProcessorList([SeededSampler(seeds, self.temperature)]),
                                      **({} if cache is None else {"cache": cache}))
        out = []
        for p_ids, row in zip(ids, gen[:, width:].tolist()):
            cut = next((i for i, t in enumerate(row) if t in self.eos), None)
            toks = row if cut is None else row[:cut]
            out.append((_decode_continuation(self.tokenizer, p_ids, toks), len(toks), cut is not None))
        return out


@torch.inference_mode()
def generate_completions(
    model: Any,
    tokenizer: Any,
    requests: Sequence[SampleRequest],
    *,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    batch_size: int = 16,
    on_batch: Callable[[list[Completion]], None] | None = None,
    progress: bool = True,
) -> list[Completion]:
    """Sample one completion per request, ``batch_size`` rows per ``generate`` call (left padding, KV cache).

    Requests are grouped by prompt length (``batching.length_sorted_batches``, ties broken by prompt id and sample
    index) so batches carry little padding; completions come back in that batch order, so match them to requests
    by ``key``. Each row is seeded by its own ``seed``, so a completion does not depend on the batching.
    ``on_batch`` is called after every batch (the builder appends to its JSONL checkpoint there), so an interrupted
    run loses at most one batch.
    """
    _check_sizes(max_new_tokens, batch_size)
    gen = _Generator(model, tokenizer, max_new_tokens, temperature)
    enc_cache: dict[str, list[int]] = {}

    def enc(text: str) -> list[int]:
        if text not in enc_cache:
            enc_cache[text] = tokenizer(text, add_special_tokens=True)["input_ids"]
        return enc_cache[text]

    batches = length_sorted_batches(requests, lambda r: (len(enc(r.prompt)), r.prompt_id, r.sample_index), batch_size)
    out: list[Completion] = []
    bar = tqdm(total=len(requests), desc="sampling", unit="completion", disable=not progress)
    try:
        for idx in batches:
            batch = [requests[i] for i in idx]
            rows = gen.run([enc(r.prompt) for r in batch], [r.seed for r in batch])
            done = [Completion(key=r.key, prompt_id=r.prompt_id, sample_index=r.sample_index, sample_seed=r.seed,
                               completion=text, n_new_tokens=n, finished=fin)
                    for r, (text, n, fin) in zip(batch, rows)]  # fmt: skip
            out.extend(done)
            if on_batch is not None:
                on_batch(done)
            bar.update(len(batch))
    finally:
        bar.close()
    return out


@torch.inference_mode()
def generate_branches(
    model: Any,
    tokenizer: Any,
    prompt: str,
    seeds: Sequence[int],
    *,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    prefill: Callable[[torch.Tensor, int], Any] | None = None,
) -> list[tuple[str, int, bool]]:
    """Sample one continuation of ``prompt`` per seed in one ``generate`` call; returns (completion, new tokens,
    finished) per seed, in order. Row ``r`` is ``seeds[r]``'s completion whichever rows share the call.

    ``prefill(ids, n_rows)`` may compute the prompt minus its last token (``ids``: ``[1, t - 1]``) once and return a
    KV cache with ``n_rows`` rows (e.g. run once up to a layer and branched there:
    :func:`gemma4_saelens_ext.activations.source.branched_prefill`); ``generate`` then starts from that cache.
    """
    _check_sizes(max_new_tokens, 1)
    gen = _Generator(model, tokenizer, max_new_tokens, temperature)
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    cache = None
    if prefill is not None and len(ids) > 1:
        cache = prefill(torch.tensor([ids[:-1]], device=gen.device), len(seeds))
    return gen.run([ids] * len(seeds), list(seeds), cache=cache)


def required_new_tokens(tokenizer: Any, keywords: Sequence[str], window: int = 30) -> int:
    """Tokens needed to write the first ``window`` characters of a typical answer naming one of these keywords.

    The keyword judge reads the first ``window`` characters, so a completion cut shorter than that can be left
    ambiguous for lack of text. For every keyword we tokenize a seed-style completion ("I'm a {kw}.'" followed by
    the next line of the game) cut to ``window`` characters, and take the largest count.
    """
    need = 1
    for kw in set(keywords) or {"answer"}:
        s = f"I'm a {kw}.'\nAnother player asks you: 'Why?'\n"
        s = (s * (window // len(s) + 1))[:window]
        need = max(need, len(tokenizer(s, add_special_tokens=False)["input_ids"]))
    return need


def check_max_new_tokens(max_new_tokens: int, tokenizer: Any, keywords: Sequence[str], window: int = 30) -> int:
    """Raise ValueError (naming the minimum) when ``max_new_tokens`` cannot cover the keyword judge's window."""
    need = required_new_tokens(tokenizer, keywords, window)
    if max_new_tokens < need:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} is too small: the keyword judge reads the first {window} characters of a "
            f"completion, which takes up to {need} tokens for these scenarios with this tokenizer. "
            f"Use --max-new-tokens {need} or more (about {math.ceil(need * 1.5)} leaves room for leading spaces)."
        )
    return need
