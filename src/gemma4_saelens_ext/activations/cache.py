"""Train from cached activations when the data is small: extract once, then let SAELens read the cache.

SAELens's live activation store re-runs the (nf4) forward pass every time it cycles through the dataset, so a
training budget of T tokens over a dataset of D < T tokens costs T/D forward passes over the same texts. Here the
dataset's sequences are run once through the same ``ActivationsStore`` (same tokenization, BOS, context chunking,
hook and ``stop_at_layer`` as live training) and written in SAELens's cached-activations format: a
``datasets.Dataset`` saved with ``save_to_disk`` with one ``Array2D(context_size, d_in)`` column named by the hook and
a ``token_ids`` column (so ``exclude_special_tokens`` still filters). Training then runs with
``use_cached_activations=True`` / ``cached_activations_path``, and SAELens cycles through the cache as it would cycle
through the dataset. (SAELens's own ``CacheActivationsRunner`` loads its model by name and cannot take our activation
source, hence this writer of its format.)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["dataset_sequences", "write_activation_cache", "should_cache"]


def dataset_sequences(source: Any, cfg: Any, max_tokens: int | None = None) -> torch.Tensor | None:
    """Every ``[context_size]`` token sequence of one pass over ``cfg.dataset_path``, as SAELens's store makes them;
    None as soon as the pass exceeds ``max_tokens`` (the dataset is not small: nothing to gain from a cache)."""
    from sae_lens.training.activations_store import ActivationsStore

    store = ActivationsStore.from_config(source, _live(cfg))
    seqs: list[torch.Tensor] = []
    n = 0
    for s in store._iterate_tokenized_sequences():  # one epoch of the store's own sequence iterator
        seqs.append(torch.as_tensor(s))
        n += len(s)
        if max_tokens is not None and n >= max_tokens:
            return None
    if not seqs:
        raise ValueError(f"{cfg.dataset_path} gave no sequence of {cfg.context_size} tokens to train on.")
    return torch.stack(seqs)


def should_cache(mode: str | bool, n_dataset_tokens: int, training_tokens: int) -> bool:
    """``auto``: cache when one pass over the dataset is smaller than the training budget (it would be re-run)."""
    if mode in (True, "true", "on"):
        return True
    if mode in (False, "false", "off", None):
        return False
    if mode != "auto":
        raise ValueError(f"model.cache_activations must be auto, true or false, not {mode!r}.")
    return n_dataset_tokens < training_tokens


def _live(cfg: Any) -> Any:
    import copy

    live = copy.copy(cfg)
    live.use_cached_activations = False
    live.cached_activations_path = None
    return live


@torch.no_grad()
def write_activation_cache(source: Any, cfg: Any, path: str | Path, sequences: torch.Tensor | None = None) -> dict[str, Any]:
    """Run the dataset once and save it in SAELens's cached-activations format at ``path`` (replaced if present).

    The row count is rounded up to a multiple of ``store_batch_size_prompts`` by repeating the first sequences (SAELens
    reads the cache in whole batches and skips a short tail), which is how live training wraps around anyway.
    """
    import shutil

    from datasets import Array2D, Dataset, Features, Sequence, Value
    from sae_lens.training.activations_store import ActivationsStore

    seqs = dataset_sequences(source, cfg) if sequences is None else sequences
    n_unique = len(seqs)
    bs = int(cfg.store_batch_size_prompts)
    if len(seqs) % bs:
        reps = -(-bs // len(seqs)) + 1
        seqs = torch.cat([seqs] * reps)[: -(-n_unique // bs) * bs]
    store = ActivationsStore.from_config(source, _live(cfg))
    acts = []
    for i in range(0, len(seqs), bs):
        batch = seqs[i : i + bs].to(source.cfg.device)
        acts.append(store.get_activations(batch).reshape(len(batch), -1, cfg.sae.d_in).to("cpu", torch.float32))
    a = torch.cat(acts)
    seqs = seqs[:, slice(*store.seqpos_slice)]
    ctx = a.shape[1]
    hook = cfg.hook_name
    features = Features(
        {hook: Array2D(shape=(ctx, cfg.sae.d_in), dtype="float32"), "token_ids": Sequence(Value("int32"), length=ctx)}
    )
    ds = Dataset.from_dict({hook: a.numpy(), "token_ids": seqs.to(torch.int32).numpy()}, features=features)
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    ds.save_to_disk(str(path))
    info = {"path": str(path), "sequences": n_unique, "rows": len(seqs), "tokens": n_unique * ctx, "context_size": ctx}
    logger.info("Cached activations of %d sequences (%d tokens) for %s at %s", n_unique, n_unique * ctx, hook, path)
    return info
