"""Pipeline: the ``gemma4-sae demo`` job (dataset -> SAE -> eval report -> model card, resumable stages).

May import every room before it (models, activations, behavior, training, releases, evals) and the leaves.
"""
