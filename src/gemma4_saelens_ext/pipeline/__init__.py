"""End-to-end pipeline: the ``gemma4-sae demo`` command and data-parallel extraction on ``torch.distributed``."""
