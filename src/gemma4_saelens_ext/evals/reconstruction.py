"""Reconstruction quality of an SAE on a set of activations, and the LM loss with the SAE spliced in.

Formulas (x: activations [n, d], x_hat = SAE(x), f = latents [n, d_sae]):

* explained variance ``EV = 1 - sum_i ||x_i - x_hat_i||^2 / sum_i ||x_i - mean(x)||^2`` (one number over all
  samples; the same quantity as ``sae_lens.evals.ExplainedVarianceCalculator``, computed in float64);
* ``MSE = mean over samples and dimensions of (x - x_hat)^2`` (per element);
* ``L0 = mean_i #{j : f_ij != 0}``;
* ``alive = #{j : f_ij != 0 for some i}`` (on this eval set, so it depends on its size: the seed's 181/6144 was
  measured on 38 samples);
* LM loss: next-token cross-entropy of the model as is (``ce_clean``), with layer L's output replaced by the
  SAE reconstruction (``ce_spliced``) and by zeros (``ce_zero``); ``ce_loss_score = (ce_zero - ce_spliced) /
  (ce_zero - ce_clean)`` is SAELens's ``ce_loss_score`` (1 = lossless). SAELens's ``get_recons_loss`` needs a
  TransformerLens-style ``run_with_hooks`` model, so the splice is a forward hook on the HF decoder layer here;
* KL: ``KL(p_clean || p_spliced)`` and ``KL(p_clean || p_zero)`` averaged over the same predictions, and
  ``kl_div_score = (KL_zero - KL_spliced) / KL_zero`` (SAELens's ``kl_div_score``; 1 = lossless);
* :func:`core_metrics`: cosine similarity, L1, norms and shrinkage, activation-frequency shares (SAEBench's core
  metric names).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gemma4_saelens_ext.releases.sae_ops import explained_variance

logger = logging.getLogger(__name__)

__all__ = [
    "reconstruction_metrics", "core_metrics", "weight_cosines", "sae_reconstruction", "lm_loss_with_sae",
    "lm_loss_with_saes",
]


def reconstruction_metrics(x: Any, x_hat: Any, feats: Any) -> dict[str, float]:
    """EV, MSE, L0, alive and n for one set of activations (pure; see the module docstring for formulas)."""
    x = np.asarray(x, dtype=np.float64)
    x_hat = np.asarray(x_hat, dtype=np.float64)
    f = np.asarray(feats)
    if x.shape != x_hat.shape:
        raise ValueError(f"x {x.shape} and x_hat {x_hat.shape} differ in shape")
    if x.shape[0] == 0:
        raise ValueError("no activations to evaluate (empty split?)")
    resid = ((x - x_hat) ** 2).sum()
    try:
        ev = explained_variance(x, x_hat)
    except ValueError:  # constant activations: 1 when reconstructed exactly, else 0
        ev = 1.0 if resid == 0 else 0.0
    nz = f != 0
    return {
        "explained_variance": ev,
        "mse": float(resid / x.size),
        "l0": float(nz.sum(1).mean()),
        "alive": int(nz.any(0).sum()),
        "d_sae": int(f.shape[1]),
        "n_samples": int(x.shape[0]),
    }


def sae_reconstruction(sae: Any, x: Any, *, batch_size: int = 4096) -> tuple[dict[str, float], np.ndarray]:
    """Run ``x`` through the SAE; return (metrics, latents)."""
    from gemma4_saelens_ext.releases.sae_ops import encode_decode

    feats, recon = encode_decode(sae, x, batch_size=batch_size)
    return reconstruction_metrics(np.asarray(x, dtype=np.float32), recon, feats), feats


def core_metrics(x: Any, x_hat: Any, feats: Any) -> dict[str, float]:
    """The rest of SAEBench's core metrics on one set of activations (pure; float64): ``cossim`` (mean cosine of x
    and x_hat), ``l1`` (mean sum of |latents|), ``l2_norm_in`` / ``l2_norm_out`` (mean norms), ``l2_ratio`` (mean of
    ||x_hat|| / ||x||), ``relative_reconstruction_bias`` (mean ||x_hat||^2 / mean <x, x_hat>), ``frac_alive``,
    ``freq_over_1_percent`` / ``freq_over_10_percent`` (fraction of latents active on more than 1% / 10% of the
    samples) and ``normalized_freq_over_*`` (those latents' share of all activations)."""
    x = np.asarray(x, dtype=np.float64)
    x_hat = np.asarray(x_hat, dtype=np.float64)
    f = np.asarray(feats, dtype=np.float64)
    n_in, n_out = np.linalg.norm(x, axis=1), np.linalg.norm(x_hat, axis=1)
    dot = (x * x_hat).sum(1)
    cos = dot / np.maximum(n_in * n_out, 1e-30)
    freq = (f != 0).mean(0)
    total = freq.sum()
    return {
        "cossim": float(cos.mean()),
        "l1": float(np.abs(f).sum(1).mean()),
        "l2_norm_in": float(n_in.mean()),
        "l2_norm_out": float(n_out.mean()),
        "l2_ratio": float((n_out / np.where(n_in < 1e-4, 1.0, n_in)).mean()),
        "relative_reconstruction_bias": float((n_out**2).mean() / dot.mean()) if dot.mean() != 0 else float("nan"),
        "frac_alive": float((freq > 0).mean()),
        "freq_over_1_percent": float((freq > 0.01).mean()),
        "freq_over_10_percent": float((freq > 0.10).mean()),
        "normalized_freq_over_1_percent": float(freq[freq > 0.01].sum() / total) if total > 0 else 0.0,
        "normalized_freq_over_10_percent": float(freq[freq > 0.10].sum() / total) if total > 0 else 0.0,
    }


@torch.no_grad()
def weight_cosines(sae: Any, *, max_width: int = 16384, chunk: int = 1024) -> dict[str, float]:
    """``average_max_encoder_cosine_sim`` / ``average_max_decoder_cosine_sim``: for each latent, the largest cosine
    between its encoder column (decoder row) and any other latent's, averaged over latents (SAEBench's misc
    metrics). Wider SAEs than ``max_width`` are skipped (NaN): the cost is d_sae^2 * d_in."""
    d_sae = int(sae.cfg.d_sae)
    if d_sae > max_width or d_sae < 2:
        return {"average_max_encoder_cosine_sim": float("nan"), "average_max_decoder_cosine_sim": float("nan")}
    out = {}
    for key, w in (("encoder", sae.W_enc.detach().T), ("decoder", sae.W_dec.detach())):
        w = torch.nn.functional.normalize(w.float().cpu(), dim=1)
        best = []
        for i in range(0, d_sae, chunk):
            c = w[i : i + chunk] @ w.T
            c[torch.arange(c.shape[0]), torch.arange(i, i + c.shape[0])] = -2.0  # not itself
            best.append(c.max(1).values)
        out[f"average_max_{key}_cosine_sim"] = float(torch.cat(best).double().mean())
    return out


@torch.no_grad()
def lm_loss_with_sae(
    lm: Any, sae: Any, texts: Sequence[str], layer: int, *, batch_size: int = 4, max_length: int = 256
) -> dict[str, float]:
    """CE loss clean / SAE-spliced / zero-ablated at ``layer`` over ``texts`` (BOS and padding excluded), and the
    KL divergences; one SAE (:func:`lm_loss_with_saes` for several)."""
    return lm_loss_with_saes(lm, {"sae": sae}, texts, layer, batch_size=batch_size, max_length=max_length)["sae"]


def _kl_sum(log_p: torch.Tensor, logits: torch.Tensor, chunk: int = 256) -> float:
    """sum over rows of KL(p || softmax(logits)), p = exp(log_p) (rows: the valid positions; chunked, since a row
    is a vocabulary wide)."""
    total = 0.0
    for i in range(0, log_p.shape[0], chunk):
        lp = log_p[i : i + chunk]
        total += float((lp.exp() * (lp - torch.log_softmax(logits[i : i + chunk], dim=-1))).sum())
    return total


@torch.no_grad()
def lm_loss_with_saes(
    lm: Any, saes: dict[str, Any], texts: Sequence[str], layer: int, *, batch_size: int = 4, max_length: int = 256
) -> dict[str, dict[str, float]]:
    """Per SAE: CE loss clean / SAE-spliced / zero-ablated at ``layer`` over ``texts`` (predictions of every
    non-padding token after BOS), ``ce_loss_score``, and KL(clean || spliced), KL(clean || zero-ablated) with
    ``kl_div_score = (KL_zero - KL_spliced) / KL_zero`` (SAELens's definitions). The clean and zero-ablated passes
    run once for all SAEs."""
    from gemma4_saelens_ext.activations.source import layer_output_tensor

    if not texts:
        raise ValueError("lm_loss_with_sae: no texts")
    if getattr(lm, "truncated_after", None) is not None:
        raise ValueError("LM loss needs the full model; load it without truncate_after_layer.")
    tok, model = lm.tokenizer, lm.model
    mode: dict[str, Any] = {"m": "clean"}

    def hook(_m: Any, _i: Any, output: Any) -> Any:
        if mode["m"] == "clean":
            return None
        hs = layer_output_tensor(output)
        if mode["m"] == "zero":
            new = torch.zeros_like(hs)
        else:
            sae = saes[mode["m"]]
            dev, dt = sae.W_dec.device, sae.W_dec.dtype
            new = sae.decode(sae.encode(hs.to(device=dev, dtype=dt))).to(device=hs.device, dtype=hs.dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    modes = ["clean", "zero", *saes]
    ce = dict.fromkeys(modes, 0.0)
    kl = dict.fromkeys(modes[1:], 0.0)
    n_tok = 0
    handle = lm.layers[layer].register_forward_hook(hook)
    try:
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i : i + batch_size]), return_tensors="pt", padding=True, truncation=True,
                      max_length=max_length, padding_side="right")
            ids = enc["input_ids"].to(lm.device)
            am = enc["attention_mask"].to(lm.device)
            tgt = ids[:, 1:]
            valid = am[:, 1:].bool()
            n_tok += int(valid.sum())
            log_p = None
            for m in modes:
                mode["m"] = m
                logits = model(input_ids=ids, attention_mask=am, use_cache=False).logits[:, :-1].float()
                ce_tok = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")
                ce[m] += float(ce_tok[valid].sum())
                if m == "clean":
                    log_p = torch.log_softmax(logits[valid], dim=-1)
                else:
                    kl[m] += _kl_sum(log_p, logits[valid])
                del logits
    finally:
        handle.remove()
    mean = {k: v / max(n_tok, 1) for k, v in ce.items()}
    klm = {k: v / max(n_tok, 1) for k, v in kl.items()}
    clean, zero = mean["clean"], mean["zero"]
    out = {}
    for name in saes:
        spliced = mean[name]
        out[name] = {
            "ce_clean": clean,
            "ce_spliced": spliced,
            "ce_zero_ablation": zero,
            "ce_loss_increase": spliced - clean,
            "ce_loss_score": float((zero - spliced) / (zero - clean)) if abs(zero - clean) > 1e-12 else float("nan"),
            "kl_div_with_sae": klm[name],
            "kl_div_with_ablation": klm["zero"],
            "kl_div_score": float((klm["zero"] - klm[name]) / klm["zero"]) if klm["zero"] > 1e-12 else float("nan"),
            "n_tokens": n_tok,
        }
    return out
