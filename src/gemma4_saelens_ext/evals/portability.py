"""Portability: the same texts' activations at other precisions through one SAE (the seed card's untested
recommendation). Per precision: EV, L0, alive, MSE; drops vs the training precision; verdict rule.

Verdict rule (parameters exposed): ``retrain`` when the relative EV drop
``(EV_train - EV_p) / |EV_train|`` exceeds ``max_ev_drop`` (default 0.20) or the relative alive shift
``|alive_p - alive_train| / max(alive_train, 1)`` exceeds ``max_alive_shift`` (default 0.50); else ``ok``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gemma4_saelens_ext.evals.reconstruction import reconstruction_metrics

logger = logging.getLogger(__name__)

__all__ = ["PortabilityRule", "portability_table", "run_portability"]


@dataclass(frozen=True)
class PortabilityRule:
    max_ev_drop: float = 0.20
    max_alive_shift: float = 0.50


def portability_table(
    metrics: Mapping[str, Mapping[str, Any]], training_precision: str, rule: PortabilityRule = PortabilityRule()
) -> list[dict[str, Any]]:
    """Rows (one per precision) with metrics, drops vs ``training_precision`` and the verdict (pure)."""
    if training_precision not in metrics or "explained_variance" not in metrics[training_precision]:
        raise ValueError(f"training precision {training_precision!r} has no metrics; include it in the precisions.")
    ref = metrics[training_precision]
    rows = []
    for prec, m in metrics.items():
        if "explained_variance" not in m:
            rows.append({"precision": prec, "verdict": "unavailable", "error": m.get("error", "")})
            continue
        ev_drop = (ref["explained_variance"] - m["explained_variance"]) / max(abs(ref["explained_variance"]), 1e-12)
        alive_shift = abs(m["alive"] - ref["alive"]) / max(ref["alive"], 1)
        retrain = ev_drop > rule.max_ev_drop or alive_shift > rule.max_alive_shift
        rows.append({
            "precision": prec,
            **{k: m[k] for k in ("explained_variance", "l0", "alive", "mse", "n_samples")},
            "ev_drop": float(ev_drop),
            "alive_shift": float(alive_shift),
            "l0_delta": float(m["l0"] - ref["l0"]),
            "mse_ratio": float(m["mse"] / ref["mse"]) if ref["mse"] > 0 else float("nan"),
            "is_training_precision": prec == training_precision,
            "verdict": "retrain" if retrain else "ok",
        })
    return rows


def run_portability(
    sae: Any,
    texts: Sequence[str],
    *,
    model_source: str,
    layer: int,
    precisions: Sequence[str],
    training_precision: str,
    pooling: str = "none",
    completion_start: Sequence[int] | None = None,
    rule: PortabilityRule = PortabilityRule(),
    batch_size: int = 8,
    cached: Mapping[str, np.ndarray] | None = None,
    drop_bos: bool = True,
) -> dict[str, Any]:
    """Load the model at each precision (truncated after ``layer``), take activations of the same texts, and
    score them with the SAE. A precision that cannot load here (e.g. bitsandbytes int8 without its kernels) is
    reported as unavailable with the error instead of aborting the run. ``cached`` maps precision -> acts
    (already token-level / pooled as requested).

    Each precision is loaded once: inside a model pool (:mod:`gemma4_saelens_ext.models.pool`, e.g. the demo's) a
    model the run already holds at that precision is reused, and a precision loaded here is let go after its
    activations (``keep_in_pool=False``), so at most one extra model is in memory at a time."""
    from gemma4_saelens_ext.evals.saeio import encode_decode
    from gemma4_saelens_ext.models.load import load_model
    from gemma4_saelens_ext.activations.source import activations

    precs = list(dict.fromkeys([training_precision, *precisions]))
    metrics: dict[str, dict[str, Any]] = {}
    for prec in precs:
        try:
            if cached is not None and prec in cached:
                x = np.asarray(cached[prec], dtype=np.float32)
            else:
                lm = load_model(model_source, prec, truncate_after_layer=layer, keep_in_pool=False)
                a = activations(lm, texts, layer, pooling=pooling, completion_start=completion_start, batch_size=batch_size)
                if pooling == "none":  # per-token; BOS (position 0) dropped: its norm would dominate EV
                    x = np.concatenate([t[1 if drop_bos else 0:].numpy() for t in a]).astype(np.float32)
                else:
                    x = a.numpy().astype(np.float32)
                del lm
                gc.collect()
            feats, recon = encode_decode(sae, x)
            metrics[prec] = reconstruction_metrics(x, recon, feats)
            logger.info("portability %s: %s", prec, metrics[prec])
        except Exception as e:  # noqa: BLE001 - one precision failing must not hide the others
            if prec == training_precision:
                raise
            logger.warning("portability: precision %s unavailable: %s", prec, e)
            metrics[prec] = {"error": f"{type(e).__name__}: {e}"}
    return {
        "training_precision": training_precision,
        "rule": {"max_ev_drop": rule.max_ev_drop, "max_alive_shift": rule.max_alive_shift},
        "pooling": pooling,
        "n_texts": len(texts),
        "rows": portability_table(metrics, training_precision, rule),
    }
