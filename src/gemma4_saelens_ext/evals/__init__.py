"""Behavior evals for SAEs: one module per family, pure statistics apart from model I/O.

* :mod:`.stats` — Cohen's d over all latents, permutation nulls, bootstrap CIs, verdicts (pure)
* :mod:`.layout`, :mod:`.nulls` — the label layout, the null valid for it, and a generic grouped permutation test
* :mod:`.reconstruction` — EV / L0 / alive / MSE and LM loss with the SAE spliced in
* :mod:`.probes` — stratified k-fold logistic probes + lexical baseline + permutation null
* :mod:`.steering` — SAE-decoded direction, alpha sweep, monotonicity statistics
* :mod:`.stability` — d_max under re-sampling (seeds 101, 107, 113)
* :mod:`.top_latents` — top activating texts per latent
* :mod:`.portability` — the same texts at other precisions through one SAE, with the retrain rule
* :mod:`.hooks` — cheap evals every N steps during ``LanguageModelSAETrainingRunner`` training
* :mod:`.report`, :mod:`.suite` — report folder from a suite YAML (``python -m gemma4_saelens_ext.evals run``)
"""

from gemma4_saelens_ext.evals.dvalues import DValueResult, ReplicationResult, dvalue_analysis, replication_analysis
from gemma4_saelens_ext.evals.stats import cohens_d, permutation_null_d

__all__ = [
    "DValueResult", "ReplicationResult", "cohens_d", "dvalue_analysis", "replication_analysis", "permutation_null_d",
    "cross_validated_probe", "ProbeResult", "load_suite", "run_suite",
]


def __getattr__(name: str):  # lazy: probes pull in scikit-learn, the suite torch/transformers
    if name in ("cross_validated_probe", "ProbeResult"):
        from gemma4_saelens_ext.evals import probes

        return getattr(probes, name)
    if name in ("load_suite", "run_suite"):
        from gemma4_saelens_ext.evals import suite

        return getattr(suite, name)
    raise AttributeError(name)
