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

The cache is written batch by batch into ``PATH.partial/`` (each batch atomically), so Ctrl-C while caching loses
at most the batch in flight: the rerun resumes there (``Activation cache: resuming, K of N batches already done``),
and a finished cache is reused by any rerun that would compute the same activations.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["dataset_sequences", "write_activation_cache", "should_cache", "CACHE_INFO"]

#: the file in a finished cache folder that records what it was computed from (a rerun reuses a matching cache)
CACHE_INFO = "gemma4_cache.json"


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


def _identity(source: Any, cfg: Any, seqs: torch.Tensor) -> str:
    """What a cache's content depends on: the sequences, the hook, the model and precision, the batch layout."""
    import hashlib

    lm = getattr(source, "lm", None)
    parts = [cfg.hook_name, int(cfg.sae.d_in), int(cfg.store_batch_size_prompts), str(cfg.seqpos_slice),
             getattr(lm, "source", type(source).__name__), getattr(lm, "precision", ""), list(seqs.shape)]
    h = hashlib.sha256(json.dumps(parts, default=str).encode())
    h.update(seqs.to(torch.int64).numpy().tobytes())
    return h.hexdigest()[:32]


def _reusable(path: Path, ident: str) -> dict[str, Any] | None:
    try:
        info = json.loads((path / CACHE_INFO).read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("identity") == ident else None


@torch.no_grad()
def write_activation_cache(
    source: Any, cfg: Any, path: str | Path, sequences: torch.Tensor | None = None, *, progress: bool = True
) -> dict[str, Any]:
    """Run the dataset once and save it in SAELens's cached-activations format at ``path``.

    The row count is rounded up to a multiple of ``store_batch_size_prompts`` by repeating the first sequences (SAELens
    reads the cache in whole batches and skips a short tail), which is how live training wraps around anyway.

    Never lost, never redone: each batch is written atomically to ``PATH.partial/`` as soon as it is computed, under
    an identity (a hash of the sequences, hook, model, precision and batch layout), so a run interrupted while caching
    resumes from the batches already there; the finished cache records the identity (``gemma4_cache.json``) and is
    reused as it is by a rerun that would compute the same thing. A tqdm bar counts the tokens; the free disk is
    checked first; ``path`` is locked while it is written. The summary says how many batches were resumed.
    """
    import shutil

    from datasets import Array2D, Dataset, Features, Sequence, Value
    from safetensors.torch import load_file, save_file
    from sae_lens.training.activations_store import ActivationsStore
    from tqdm.auto import tqdm

    from gemma4_saelens_ext.io import atomic_path, atomic_write_json, check_disk_space, output_lock

    seqs = dataset_sequences(source, cfg) if sequences is None else sequences
    n_unique = len(seqs)
    bs = int(cfg.store_batch_size_prompts)
    if len(seqs) % bs:
        reps = -(-bs // len(seqs)) + 1
        seqs = torch.cat([seqs] * reps)[: -(-n_unique // bs) * bs]
    path = Path(path)
    ident = _identity(source, cfg, seqs)
    hook, d_in, n_batches = cfg.hook_name, int(cfg.sae.d_in), len(seqs) // bs
    with output_lock(path, what="activation cache"):
        done_info = _reusable(path, ident)
        if done_info is not None:
            logger.info("Reusing the activation cache at %s (same sequences, hook, model and precision)", path)
            return {**done_info, "reused": True, "resumed_batches": n_batches}
        store = ActivationsStore.from_config(source, _live(cfg))
        ctx = len(range(cfg.context_size)[slice(*store.seqpos_slice)])
        check_disk_space(path, 2.2 * len(seqs) * ctx * d_in * 4, f"the activation cache ({len(seqs)} x {ctx} x {d_in})")
        partial = path.with_name(path.name + ".partial")
        meta = partial / "identity.json"
        if partial.exists() and (not meta.exists() or json.loads(meta.read_text()).get("identity") != ident):
            logger.info("Discarding the partial activation cache at %s: it was made for other settings", partial)
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        atomic_write_json(meta, {"identity": ident, "batches": n_batches})
        have = {i for i in range(n_batches) if (partial / f"batch_{i:06d}.safetensors").exists()}
        if have:
            logger.info("Activation cache: resuming, %d of %d batches already done in %s", len(have), n_batches,
                        partial)
        bar = tqdm(total=len(seqs) * ctx, initial=len(have) * bs * ctx, unit="tok", unit_scale=True,
                   desc=f"Caching activations ({hook})", disable=not progress)
        for i in range(n_batches):
            if i in have:
                continue
            batch = seqs[i * bs : (i + 1) * bs].to(source.cfg.device)
            a = store.get_activations(batch).reshape(len(batch), -1, d_in).to("cpu", torch.float32)
            if a.shape[1] != ctx:  # pragma: no cover - SAELens changed how it slices positions
                raise RuntimeError(f"activation cache: {a.shape[1]} positions per sequence, expected {ctx}")
            with atomic_path(partial / f"batch_{i:06d}.safetensors") as tmp:
                save_file({"acts": a.contiguous()}, str(tmp))
            bar.update(len(batch) * ctx)
        bar.close()
        a = torch.cat([load_file(str(partial / f"batch_{i:06d}.safetensors"))["acts"] for i in range(n_batches)])
        tokens = seqs[:, slice(*store.seqpos_slice)]
        features = Features(
            {hook: Array2D(shape=(ctx, d_in), dtype="float32"), "token_ids": Sequence(Value("int32"), length=ctx)}
        )
        ds = Dataset.from_dict({hook: a.numpy(), "token_ids": tokens.to(torch.int32).numpy()}, features=features)
        info = {"path": str(path), "sequences": n_unique, "rows": len(seqs), "tokens": n_unique * ctx,
                "context_size": ctx, "identity": ident, "batches": n_batches}
        tmp_dir = path.with_name(f".{path.name}.writing")
        shutil.rmtree(tmp_dir, ignore_errors=True)
        ds.save_to_disk(str(tmp_dir))
        atomic_write_json(tmp_dir / CACHE_INFO, info)
        if path.exists():
            shutil.rmtree(path)
        tmp_dir.rename(path)
        shutil.rmtree(partial)
    logger.info("Cached activations of %d sequences (%d tokens) for %s at %s (%d of %d batches resumed)", n_unique,
                n_unique * ctx, hook, path, len(have), n_batches)
    return {**info, "reused": False, "resumed_batches": len(have)}
