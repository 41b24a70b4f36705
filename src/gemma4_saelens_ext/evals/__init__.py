"""Evals: behavior statistics for SAEs, the eval families and the suite that runs them.

* statistics (numpy / scipy / scikit-learn only, no model): :mod:`.stats` (Cohen's d, nulls, CIs), :mod:`.groups`
  (the prompt group as the unit of inference), :mod:`.layout` and :mod:`.nulls` (the label layout, the null
  valid for it, a generic grouped permutation test), :mod:`.dvalues`, :mod:`.probes`, :mod:`.trend`
* model and SAE I/O: :mod:`.saeio`, :mod:`.context` (the labelled splits and their activations)
* families (one job each): :mod:`.reconstruction`, :mod:`.steering`, :mod:`.stability`, :mod:`.top_latents`,
  :mod:`.portability`, the detection card (:mod:`.detection` statistics, :mod:`.readers`, :mod:`.detection_run`,
  :mod:`.detection_family`), registered in :mod:`.families`
* the suite: :mod:`.spec` (schema), :mod:`.suite_file` (read and check), :mod:`.suite` (orchestration),
  :mod:`.report`
* :mod:`.training_callback` — cheap evals every N steps of SAELens training (``train(..., callbacks=[hook])``)

May import every room before it (models, activations, behavior, training, releases) and the leaves; the statistics
modules import none of them, except the seeded sample of whole groups that datasets and evals share
(:func:`gemma4_saelens_ext.behavior.pools.take_whole_groups`, imported where it is used).
"""

from gemma4_saelens_ext import lazy_exports

_EXPORTS = {
    "dvalue_analysis": "dvalues", "DValueResult": "dvalues", "replication_analysis": "dvalues",
    "ReplicationResult": "dvalues", "cohens_d": "stats", "permutation_null_d": "stats",
    "cross_validated_probe": "probes", "ProbeResult": "probes", "load_suite": "suite_file", "run_suite": "suite",
    "SuiteResult": "suite",
    "SuiteConfig": "spec",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
