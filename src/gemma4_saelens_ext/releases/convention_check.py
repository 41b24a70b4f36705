"""Which encode convention reconstructs real activations better: a check that catches a wrong one.

The same weights are run both ways on the same activations (see :mod:`.convention` for the two conventions), and
the explained variance of each is compared::

    EV = 1 - sum_i ||x_i - x_hat_i||^2 / sum_i ||x_i - mean(x)||^2      (over all rows; float64)

(the definition used by the eval suite's reconstruction family). The loaded convention *loses by a clear margin*
when ``EV_other - EV_loaded > margin``; :data:`DEFAULT_MARGIN` is 0.01 (one point of explained variance). Both
numbers come from the same rows, so the difference is paired: a wrong convention on an SAE whose ``b_dec`` is not
negligible moves the EV by far more than that (tens of points on the tests' real Gemma 3 activations), while when
``||b_dec||`` is tiny next to the activations the two conventions coincide and neither wins by the margin
(``clear=False``; the choice then hardly matters). The check warns (``logging``) when the loaded convention loses.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from gemma4_saelens_ext.releases.convention import NO_B_DEC_SUBTRACTION, SUBTRACT_B_DEC, convention_name
from gemma4_saelens_ext.releases.sae_ops import encode_decode, explained_variance

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MARGIN", "EncodeConventionCheck", "check_encode_convention", "explained_variance"]

DEFAULT_MARGIN = 0.01


@dataclass(frozen=True)
class EncodeConventionCheck:
    """Result of :func:`check_encode_convention` (``to_dict()`` is JSON-ready for a report)."""

    #: convention the SAE is loaded with: ``subtract_b_dec`` or ``no_b_dec_subtraction``
    loaded: str
    #: where that choice came from (``sae.cfg.metadata.encode_convention_source``; None if not recorded)
    loaded_source: str | None
    ev_subtract_b_dec: float
    ev_no_b_dec_subtraction: float
    #: the convention with the higher EV
    better: str
    #: |EV difference| > margin
    clear: bool
    #: the other convention beats the loaded one by more than ``margin`` (a warning was logged)
    loaded_loses: bool
    margin: float
    n_samples: int
    #: ||b_dec|| / mean_i ||x_i||: near 0, the two conventions coincide and the check cannot tell them apart
    b_dec_norm_ratio: float

    @property
    def ev_loaded(self) -> float:
        return self.ev_subtract_b_dec if self.loaded == SUBTRACT_B_DEC else self.ev_no_b_dec_subtraction

    @property
    def ev_other(self) -> float:
        return self.ev_no_b_dec_subtraction if self.loaded == SUBTRACT_B_DEC else self.ev_subtract_b_dec

    def summary(self) -> str:
        verdict = (
            f"the loaded convention LOSES by {self.ev_other - self.ev_loaded:.4f} EV (> margin {self.margin})"
            if self.loaded_loses
            else (f"the loaded convention wins by {self.ev_loaded - self.ev_other:.4f} EV" if self.clear
                  else f"no clear winner (|difference| <= margin {self.margin})")
        )
        return (
            f"encode convention {self.loaded} (source: {self.loaded_source}): EV {self.ev_subtract_b_dec:.4f} with "
            f"b_dec subtracted, {self.ev_no_b_dec_subtraction:.4f} without, on {self.n_samples} activations; {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}


def check_encode_convention(
    sae: Any, activations: Any, *, margin: float = DEFAULT_MARGIN, batch_size: int = 4096, warn: bool = True
) -> EncodeConventionCheck:
    """Explained variance of ``sae`` on ``activations`` ([..., d_in], at least 2 rows) with and without ``b_dec``
    subtracted before encoding; which reconstructs better; and whether the loaded convention loses by > ``margin``
    (then a warning is logged when ``warn``). Works for any SAELens SAE whose encode reads
    ``cfg.apply_b_dec_to_input`` (all of SAELens's architectures do).
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x = torch.as_tensor(np.asarray(activations) if not isinstance(activations, torch.Tensor) else activations)
    d_in = int(sae.cfg.d_in)
    if x.shape[-1] != d_in:
        raise ValueError(f"activations have width {x.shape[-1]} but the SAE expects d_in={d_in}")
    x = x.reshape(-1, d_in).to(device=sae.W_dec.device, dtype=sae.W_dec.dtype)
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 activation rows to compute explained variance, got {x.shape[0]}")
    ev = {flag: explained_variance(x.float().cpu(), encode_decode(sae, x, batch_size=batch_size, apply_b_dec_to_input=flag)[1])
          for flag in (True, False)}
    loaded = convention_name(bool(sae.cfg.apply_b_dec_to_input))
    better = SUBTRACT_B_DEC if ev[True] >= ev[False] else NO_B_DEC_SUBTRACTION
    diff = ev[True] - ev[False]
    loaded_loses = (diff if loaded == NO_B_DEC_SUBTRACTION else -diff) > margin
    meta = getattr(sae.cfg, "metadata", None)
    result = EncodeConventionCheck(
        loaded=loaded,
        loaded_source=meta.get("encode_convention_source") if meta is not None else None,
        ev_subtract_b_dec=ev[True],
        ev_no_b_dec_subtraction=ev[False],
        better=better,
        clear=abs(diff) > margin,
        loaded_loses=loaded_loses,
        margin=float(margin),
        n_samples=int(x.shape[0]),
        b_dec_norm_ratio=float(sae.b_dec.detach().double().norm() / x.double().norm(dim=-1).mean().clamp(min=1e-30)),
    )
    if loaded_loses and warn:
        logger.warning(
            "%s. The SAE's latents are probably computed with the wrong convention: reload it with "
            "apply_b_dec_to_input=%s (SAESpec/set_encode_convention).",
            result.summary(),
            better == SUBTRACT_B_DEC,
        )
    return result
