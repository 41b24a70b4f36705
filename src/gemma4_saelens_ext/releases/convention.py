"""The encode convention of a loaded SAE: whether ``b_dec`` is subtracted from the input before encoding.

Two conventions exist for the same weights (TopK shown; the decode is the same for both)::

    subtract_b_dec          z = topk(relu((x - b_dec) @ W_enc + b_enc))     SAELens's default
    no_b_dec_subtraction    z = topk(relu(x @ W_enc + b_enc))              a plain nn.Linear encoder
    x_hat = z @ W_dec + b_dec

A checkpoint trained under one and run under the other gives wrong latents, and nothing fails. So the converter
decides in this order, and records the choice in ``sae.cfg.metadata`` (``encode_convention``,
``encode_convention_source``):

1. ``override``: ``SAESpec(apply_b_dec_to_input=...)``, :func:`gemma4_saelens_ext.releases.set_encode_convention`,
   the loader's ``apply_b_dec_to_input=`` keyword, or ``load_upstream_sae(apply_b_dec_to_input=...)``;
2. ``cfg.json``: ``apply_b_dec_to_input`` in the release's ``cfg.json``;
3. ``checkpoint config``: the same flag in the ``config`` dict embedded in a trainer checkpoint;
4. ``release default``: for repos matching :data:`AUTHOR_RELEASE_PATTERNS` (``Solshine/gemma4_*behaviorSAE*``), the
   author's published encode, ``relu(x @ W_enc + b_enc)`` then top-k, no subtraction (the class documented on the
   author's Gemma 4 E2B BioRefusalAudit SAE card);
5. ``key-name default``: SAELens-style keys (``W_enc``) -> subtract, ``nn.Linear`` keys -> do not.

Sources 4 and 5 are guesses and are logged once per file as a warning. :func:`check_encode_convention`
(``convention_check.py``) measures which convention reconstructs real activations better.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "AUTHOR_RELEASE_PATTERNS",
    "SUBTRACT_B_DEC",
    "NO_B_DEC_SUBTRACTION",
    "EncodeConvention",
    "convention_name",
    "decide_encode_convention",
    "follows_author_convention",
    "loaded_from_release",
]

#: repos (or release names) whose author's published encode does not subtract b_dec; fnmatch, case-insensitive
AUTHOR_RELEASE_PATTERNS: tuple[str, ...] = ("Solshine/gemma4_*behaviorSAE*",)
SUBTRACT_B_DEC = "subtract_b_dec"
NO_B_DEC_SUBTRACTION = "no_b_dec_subtraction"
_FORMULA = {
    SUBTRACT_B_DEC: "z = topk(relu((x - b_dec) @ W_enc + b_enc))",
    NO_B_DEC_SUBTRACTION: "z = topk(relu(x @ W_enc + b_enc))",
}
#: metadata keys every SAE loaded by this plugin carries
METADATA_KEYS = ("encode_convention", "encode_convention_source")
_LOGGED: set[tuple[str, str]] = set()


def convention_name(apply_b_dec_to_input: bool) -> str:
    return SUBTRACT_B_DEC if apply_b_dec_to_input else NO_B_DEC_SUBTRACTION


@dataclass(frozen=True)
class EncodeConvention:
    """The decision: ``apply_b_dec_to_input`` and where it came from (one of the five sources above)."""

    apply_b_dec_to_input: bool
    source: str

    @property
    def name(self) -> str:
        return convention_name(self.apply_b_dec_to_input)

    def metadata(self) -> dict[str, str]:
        return {"encode_convention": self.name, "encode_convention_source": self.source}


def follows_author_convention(*names: str | None) -> bool:
    """True when a repo id or release name matches :data:`AUTHOR_RELEASE_PATTERNS` (a local folder's basename too)."""
    for name in names:
        if not name:
            continue
        candidates = {name.lower(), name.rstrip("/").split("/")[-1].lower()}
        for pattern in AUTHOR_RELEASE_PATTERNS:
            pat = pattern.lower()
            if any(fnmatch.fnmatchcase(c, pat) or fnmatch.fnmatchcase(c, pat.split("/")[-1]) for c in candidates):
                return True
    return False


def _warn_once(key: tuple[str, str], msg: str, *args: Any) -> None:
    if key in _LOGGED:
        return
    _LOGGED.add(key)
    logger.warning(msg, *args)


def decide_encode_convention(
    *,
    override: bool | None,
    cfg_json_flag: bool | None,
    embedded_flag: bool | None,
    repo: str | None,
    release: str | None,
    saelens_key_names: bool,
    source: str,
) -> EncodeConvention:
    """Apply the order in the module docstring. ``source`` names the file (for the one-time log line)."""
    if override is not None:
        return EncodeConvention(bool(override), "override")
    if cfg_json_flag is not None:
        return EncodeConvention(bool(cfg_json_flag), "cfg.json")
    if embedded_flag is not None:
        return EncodeConvention(bool(embedded_flag), "checkpoint config")
    hint = (
        "Override with SAESpec(apply_b_dec_to_input=...) or set_encode_convention(release, ...); verify on real "
        "activations with gemma4_saelens_ext.releases.check_encode_convention(sae, activations)."
    )
    if follows_author_convention(repo, release):
        _warn_once(
            (str(repo), source),
            "%s: cfg.json does not say whether b_dec is subtracted from the input; following the author's published "
            "encode for %s releases: %s (no b_dec subtraction). %s",
            source,
            "/".join(AUTHOR_RELEASE_PATTERNS),
            _FORMULA[NO_B_DEC_SUBTRACTION],
            hint,
        )
        return EncodeConvention(False, "release default")
    _warn_once(
        (str(repo), source),
        "%s: cfg.json does not say whether b_dec is subtracted from the input; using %s (the convention of "
        "%s-style keys). %s",
        source,
        "apply_b_dec_to_input=" + str(saelens_key_names),
        "SAELens" if saelens_key_names else "nn.Linear",
        hint,
    )
    return EncodeConvention(saelens_key_names, "key-name default")


def loaded_from_release(sae: Any) -> bool:
    """True for an SAE this plugin loaded or converted (``SAE.from_pretrained`` on a registered release,
    ``load_upstream_sae``), read from ``sae.cfg.metadata``; False for one trained in this process or saved by
    SAELens without release metadata."""
    meta = getattr(getattr(sae, "cfg", None), "metadata", None)
    if meta is None:
        return False
    get = meta.get if hasattr(meta, "get") else (lambda k, d=None: getattr(meta, k, d))
    return any(get(k) is not None for k in ("encode_convention_source", "release", "repo_id", "source_path"))
