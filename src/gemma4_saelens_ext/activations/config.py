"""What ``gemma4-sae extract`` computes and where it writes (light: dataclasses only, read by the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from simple_parsing.helpers import choice

from gemma4_saelens_ext.errors import check_range
from gemma4_saelens_ext.io import check_out
from gemma4_saelens_ext.options import layer_field, precision_field, switch

__all__ = ["ExtractionConfig", "ExtractConfig"]


@dataclass
class ExtractionConfig:
    """What an extraction computes (shared by every rank; the merged file's metadata records it)."""

    model: str = "gemma-3-270m"
    """embedded name, local folder or Hub id"""
    precision: str = precision_field("nf4")
    """load precision"""
    layer: Union[int, str] = layer_field(12)
    """residual stream after this decoder layer: an int, blocks.L.hook_resid_post or model.layers.L"""
    pooling: str = choice("none", "last", "mean", "max", default="mean")
    """per-text pooling over tokens; none keeps every token (a lengths tensor records the split)"""
    batch_size: int = 8
    """texts per forward pass (length-sorted)"""
    max_length: Optional[int] = 512
    """tokens kept per text"""
    truncate: bool = switch(True)
    """load only layers 0..layer (activations are identical; --no-truncate loads all)"""

    def __post_init__(self) -> None:
        check_range("--batch-size", self.batch_size, low=1, integer=True)
        check_range("--max-length", self.max_length, low=1, integer=True)


@dataclass
class ExtractConfig:
    """``gemma4-sae extract``: layer activations for a list of texts, sharded over ranks under
    ``torchrun --nproc-per-node N`` and merged into one safetensors file in the input order."""

    texts: str
    """.txt (one per line), .jsonl/.json, .parquet or a dataset folder; one output row per input row (a null or
    empty text is refused with its line number)"""
    out: str
    """merged .safetensors output"""
    column: str = "text"
    """text field of jsonl/parquet/dataset inputs"""
    spec: ExtractionConfig = field(default_factory=ExtractionConfig)
    """what to compute"""
    keep_shards: bool = switch(False)
    """keep the per-rank shard files after merging"""
    progress: bool = switch(True)
    """show progress bars"""

    def __post_init__(self) -> None:
        check_out(self.out, kind="file")
