"""Residual-stream activations of a loaded Gemma model: for SAELens training and for analysis.

* :class:`Gemma4ActivationSource` is a SAELens ``HookedProxyLM`` whose hook points are the decoder layers, named
  both TransformerLens-style (``blocks.L.hook_resid_post``) and by HF module path (``model.layers.L``), so
  ``LanguageModelSAETrainingRunner(cfg, override_model=source)`` trains from it and stops the forward after L.
* :func:`activations` returns per-token or pooled activations for a list of texts (batched, padding-masked);
  :func:`extract_activations` (the public entry point) returns them as :class:`Activations`, with their layer;
  :func:`layer_batches` yields the same forward passes one batch at a time (the evals' one-pass extraction).
* :func:`steering_hook` adds ``alpha * direction`` to layer L's output while generating;
  :func:`steering_rows_hook` adds a different vector to each batch row, and :func:`branched_prefill` runs a prompt
  once up to layer L and branches it there into one row per vector (the steered rows share everything before L).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
from sae_lens.load_model import HookedProxyLM, StopForward, get_hook_fn
from tqdm.auto import tqdm
from transformer_lens.hook_points import HookPoint

from gemma4_saelens_ext.activations.batching import length_sorted_batches
from gemma4_saelens_ext.models.layers import hook_name
from gemma4_saelens_ext.models.load import LoadedModel

logger = logging.getLogger(__name__)

__all__ = [
    "Gemma4ActivationSource", "activations", "steering_hook", "steering_rows_hook", "branched_prefill",
    "layer_output_tensor", "layer_batches", "LayerBatch", "pool", "extract_activations", "Activations",
]

Pooling = Literal["none", "last", "mean", "max"]


def layer_output_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def _capture(layer_module: torch.nn.Module, stop: bool) -> Iterator[dict[str, torch.Tensor]]:
    store: dict[str, torch.Tensor] = {}

    def hook(_m: Any, _i: Any, output: Any) -> None:
        store["acts"] = layer_output_tensor(output)
        if stop:  # SAELens's own early-stop exception: later layers and the unembedding are skipped
            raise StopForward

    handle = layer_module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _forward_to_layer(lm: LoadedModel, layer: int, input_ids: torch.Tensor, attention_mask: torch.Tensor, stop: bool) -> torch.Tensor:
    with _capture(lm.layers[layer], stop) as store:
        try:
            lm.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except StopForward:
            pass
    return store["acts"]


@dataclass
class LayerBatch:
    """One forward pass of :func:`layer_batches`: layer-L activations of a length-sorted batch of texts."""

    #: positions of this batch's texts in the input list
    idx: list[int]
    #: ``[B, T, d]`` float32 on CPU (right-padded)
    acts: torch.Tensor
    #: ``[B, T]`` attention mask (bool)
    mask: torch.Tensor
    #: ``[B, T]`` True at BOS tokens
    bos: torch.Tensor
    #: ``[B, T, 2]`` character offsets of each token, when asked for
    offsets: torch.Tensor | None

    def span(self, row: int, completion_start: int | None = None, text_index: int | None = None) -> torch.Tensor:
        """Tokens a pool of row ``row`` covers: BOS and padding left out; with ``completion_start`` (a char
        offset) only tokens starting at or after it (the whole text, with a warning, when none does)."""
        keep = self.mask[row]
        sel = keep & ~self.bos[row]
        if completion_start is not None:
            span = sel & (self.offsets[row][:, 0] >= completion_start)
            if span.any():
                sel = span
            else:
                logger.warning("Text %d has no token at/after char %d; pooling over the whole text.",
                               self.idx[row] if text_index is None else text_index, completion_start)
        return sel if sel.any() else keep


def layer_batches(
    lm: LoadedModel, texts: Sequence[str], layer: int, *, batch_size: int = 8, max_length: int | None = 512,
    offsets: bool = False, stop_at_layer: bool = True, progress: bool = False,
) -> Iterator[LayerBatch]:
    """Layer-``layer`` activations of ``texts``, one length-sorted batch at a time (:func:`activations` and the
    evals' one-pass extraction both read these, so they see the same tensors)."""
    tok = lm.tokenizer
    for idx in tqdm(length_sorted_batches(texts, len, batch_size), desc=f"activations L{layer}", disable=not progress):
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=max_length is not None,
                  max_length=max_length, return_offsets_mapping=offsets, padding_side="right")
        acts = _forward_to_layer(lm, layer, enc["input_ids"].to(lm.device), enc["attention_mask"].to(lm.device),
                                 stop_at_layer).float().cpu()
        mask = enc["attention_mask"].bool()
        if not torch.isfinite(acts[mask]).all():
            logger.warning(
                "Non-finite layer-%d activations at precision %s: the residual stream overflowed (Gemma's BOS residual "
                "reaches ~1e5 > fp16 max 65504). Use bf16/fp32 or a quantized preset with the checkpoint's dtype.",
                layer,
                lm.precision,
            )
        yield LayerBatch(idx, acts, mask, enc["input_ids"] == tok.bos_token_id,
                         enc["offset_mapping"] if offsets else None)


def pool(a: torch.Tensor, pooling: str) -> torch.Tensor:
    """``[t, d]`` -> ``[d]``: the last token, the mean or the max over tokens."""
    if pooling == "last":
        return a[-1]
    return a.mean(0) if pooling == "mean" else a.max(0).values


@torch.no_grad()
def activations(
    lm: LoadedModel,
    texts: Sequence[str],
    layer: int | str,
    *,
    pooling: Pooling = "none",
    completion_start: Sequence[int] | None = None,
    batch_size: int = 8,
    max_length: int | None = 512,
    stop_at_layer: bool = True,
    progress: bool = False,
    token_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[torch.Tensor] | torch.Tensor:
    """Layer-``layer`` residual stream (the decoder block's output) for each text.

    BOS is added by the Gemma tokenizer, as in training, and left out of every pool (its norm dwarfs the rest).
    ``completion_start`` (char offsets, one per text) restricts pools to tokens that start at or after the offset,
    e.g. the completion of ``prompt + completion``. Texts are length-sorted into batches to cut padding; the output
    keeps the input order. ``pooling="none"`` returns one ``[n_tokens, d]`` tensor per text (BOS included).
    ``token_fn`` maps the selected tokens' ``[t, d]`` activations before pooling (e.g. an SAE's encoder: latents
    computed per token, then pooled over the completion).
    """
    if pooling not in ("none", "last", "mean", "max"):
        raise ValueError(f"Unknown pooling {pooling!r}; use one of none, last, mean, max.")
    if completion_start is not None and len(completion_start) != len(texts):
        raise ValueError("completion_start needs one offset per text.")
    L = lm.resolve_layer(layer)
    out: list[torch.Tensor | None] = [None] * len(texts)
    for b in layer_batches(lm, texts, L, batch_size=batch_size, max_length=max_length,
                           offsets=completion_start is not None, stop_at_layer=stop_at_layer, progress=progress):
        for row, i in enumerate(b.idx):
            if pooling == "none":
                out[i] = b.acts[row][b.mask[row]]
                continue
            a = b.acts[row][b.span(row, None if completion_start is None else completion_start[i])]
            out[i] = pool(token_fn(a) if token_fn is not None else a, pooling)
    if pooling == "none":
        return [t for t in out if t is not None]
    return torch.stack([t for t in out if t is not None])


@dataclass
class Activations:
    """What :func:`extract_activations` returns: layer-L residual-stream activations and where they came from."""

    #: ``[n_texts, d_model]`` float32 (pooled), or one ``[n_tokens, d_model]`` tensor per text (``pooling="none"``)
    acts: torch.Tensor | list[torch.Tensor]
    #: the decoder layer whose output was read
    layer: int
    #: the same layer as a SAELens hook name, ``blocks.L.hook_resid_post``
    hook_name: str
    #: ``none``, ``last``, ``mean`` or ``max``
    pooling: str
    #: the model's source (embedded name, folder or Hub id) and precision preset
    model: str
    precision: str


def extract_activations(
    model: LoadedModel,
    texts: Sequence[str],
    layer: int | str,
    *,
    pooling: Pooling = "mean",
    completion_start: Sequence[int] | None = None,
    batch_size: int = 8,
    max_length: int | None = 512,
    progress: bool = False,
) -> Activations:
    """Layer-``layer`` activations of ``texts`` (see :func:`activations`), with the layer, hook name, pooling and
    model recorded beside them. ``completion_start`` (char offsets, one per text) pools only the completion."""
    acts = activations(model, texts, layer, pooling=pooling, completion_start=completion_start,
                       batch_size=batch_size, max_length=max_length, progress=progress)
    L = model.resolve_layer(layer)
    return Activations(acts, L, hook_name(L), pooling, model.source, model.precision)


@contextlib.contextmanager
def steering_hook(lm: LoadedModel, layer: int | str, direction: torch.Tensor, alpha: float) -> Iterator[None]:
    """Add ``alpha * direction`` to layer L's output at every position (every row) while the context is open.

    ``alpha == 0`` registers no hook at all, so a steered run at 0 is bit-identical to an unsteered one.
    """
    if alpha == 0:
        lm.resolve_layer(layer)
        yield
        return
    with steering_rows_hook(lm, layer, (alpha * direction.detach().float().flatten())[None]):
        yield


@contextlib.contextmanager
def steering_rows_hook(lm: LoadedModel, layer: int | str, deltas: torch.Tensor) -> Iterator[None]:
    """Add ``deltas[r]`` (``[n_rows, d]``; one row broadcasts to all) to batch row ``r`` of layer L's output at every
    position while the context is open. A one-row layer output is first repeated to ``n_rows`` rows: that is where
    :func:`branched_prefill` branches. A zero row adds exactly nothing."""
    L = lm.resolve_layer(layer)
    d = deltas.detach().float()
    if d.ndim != 2 or d.shape[1] != lm.d_model:
        raise ValueError(f"steering deltas must be [n_rows, {lm.d_model}], got {tuple(d.shape)}")

    def hook(_m: Any, _i: Any, output: Any) -> Any:
        hs = layer_output_tensor(output)
        if hs.shape[0] == 1 and d.shape[0] > 1:
            hs = hs.expand(d.shape[0], *hs.shape[1:])
        elif d.shape[0] not in (1, hs.shape[0]):
            raise ValueError(f"{d.shape[0]} steering rows for a batch of {hs.shape[0]}")
        hs = hs + d.to(device=hs.device, dtype=hs.dtype)[:, None, :]
        return (hs, *output[1:]) if isinstance(output, tuple) else hs

    handle = lm.layers[L].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def branched_prefill(lm: LoadedModel, layer: int | str, input_ids: torch.Tensor, n_rows: int) -> Any:
    """The KV cache of one prompt (``input_ids``: ``[1, t]``) for ``n_rows`` rows that differ only after layer L.

    Run inside :func:`steering_rows_hook` (which branches the one row into ``n_rows`` at layer L's output): layers
    0..L see the prompt once; the later layers see each row. The cache entries of layers 0..L are then repeated to
    ``n_rows`` rows, so ``generate(cache=...)`` continues every row from it. Gemma 4 layers that reuse an earlier
    layer's keys and values (KV sharing) get them repeated to the row count as well.
    """
    L = lm.resolve_layer(layer)
    if input_ids.shape[0] != 1:
        raise ValueError(f"branched_prefill takes one prompt row, got {input_ids.shape[0]}")

    def widen_shared(_m: Any, args: Any, kwargs: dict) -> None:
        shared = kwargs.get("shared_kv_states")
        for k in list(shared.keys()) if shared is not None else []:
            if shared[k][0].shape[0] == 1 and n_rows > 1:
                shared[k] = tuple(t.expand(n_rows, *t.shape[1:]) for t in shared[k])

    handles = [m.register_forward_pre_hook(widen_shared, with_kwargs=True) for m in lm.layers[L + 1 :]]
    try:
        out = lm.model.get_decoder()(input_ids=input_ids, use_cache=True)
    finally:
        for h in handles:
            h.remove()
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    for cl in cache.layers:
        keys = getattr(cl, "keys", None)
        if isinstance(keys, torch.Tensor) and keys.numel() and keys.shape[0] == 1 and n_rows > 1:
            cl.batch_repeat_interleave(n_rows)
    return cache


class Gemma4ActivationSource(HookedProxyLM):
    """A SAELens ``HookedProxyLM`` over a :class:`LoadedModel` with residual-stream hook aliases.

    Only the requested layers get hook points (SAELens's default hooks every submodule). Each hook name may be
    ``blocks.L.hook_resid_post`` or the HF path; the activation cache is keyed by the name asked for, which is what
    SAELens's ``ActivationsStore`` reads back. ``stop_at_layer`` from the store ends the forward after L.
    """

    def __init__(self, lm: LoadedModel, hook_names: Sequence[str | int]):
        self.lm = lm
        self._requested = [str(h) if not isinstance(h, int) else hook_name(h) for h in hook_names]
        # resolve (and validate) before HookedProxyLM.__init__ calls setup()
        self._layer_of = {name: lm.resolve_layer(name) for name in self._requested}
        super().__init__(lm.model, lm.tokenizer, hook_names=None)
        self.cfg = _SourceCfg(lm)

    def setup(self) -> None:  # noqa: D102 - replaces HookedProxyLM.setup (which hooks every submodule)
        self.mod_dict = {}
        self.named_modules_dict = {}
        self.hook_dict: dict[str, HookPoint] = {}
        for name, layer in self._layer_of.items():
            module = self.lm.layers[layer]
            hp = HookPoint()
            hp.name = name  # type: ignore[assignment]
            module.register_forward_hook(get_hook_fn(hp))
            self.hook_dict[name] = hp
            self.mod_dict[name] = hp
            self.named_modules_dict[name] = module

    @property
    def n_layers(self) -> int:
        return self.lm.n_layers


class _SourceCfg:
    """The few ``HookedTransformer.cfg`` fields SAELens code reads off a model."""

    def __init__(self, lm: LoadedModel):
        self.d_model = lm.d_model
        self.n_layers = lm.n_layers
        self.model_name = lm.source
        self.device = lm.device
        self.default_prepend_bos = True
        self.tokenizer_prepends_bos = True
