#!/usr/bin/env python
"""Layer-25 nf4 extraction at Gemma 4 E2B's real shape (``gemma-4-e2b-shape``, 4.63B random parameters), side by side,
on the interleaved harness (``_harness.py``: each arm in its own persistent process, rounds interleaved, medians).

Arms (CPU):
  ours                  ``load_model(..., "nf4", truncate_after_layer=25)`` + ``Gemma4ActivationSource``
                        (layers 26-34 and the unembedding are not loaded; forward stopped after 25)
  plain                 HF ``AutoModelForCausalLM`` nf4, full forward with ``output_hidden_states=True``
  stock                 SAELens ``load_model("AutoModelForCausalLM", ...)`` nf4 (``HookedProxyLM``, every submodule
                        hooked, ``stop_at_layer`` as SAELens's store passes it)
  ours-nf4-fp32compute  ours at ``nf4-fp32compute`` (the same nf4 weights, fp32 matmul compute; opt-in fast path)
Every arm at nf4 uses the seed's compute dtype (fp16). Reported per arm: median, IQR and min-max of wall and CPU time
per round, tokens/s, the per-round throughput ratios, load seconds, RSS after load and peak RSS, and the layer-25
activations of the first batch against plain's. GPU (only with ``torch.cuda.is_available()``): ours vs stock on
``cuda:0`` with ``torch.cuda.max_memory_allocated``, and SAE training tokens/s through
``LanguageModelSAETrainingRunner`` (ours as ``override_model`` vs stock ``model_class_name``). Skipped, with a message,
when the machine lacks RAM or disk; the first run builds the 9.3 GB checkpoint and its derived copies (minutes).

    python benchmarks/bench_e2b_shape.py [--rounds 5] [--round-tokens 2048] [--batch 4] [--seq 64]

On 2 CPU cores a round of 2048 tokens takes about 1-4 minutes per arm (stock is the slowest): the default run
(5 rounds x 4 arms) takes roughly 40-80 minutes after the loads, more on a busy machine.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEED_RAM_GB, NEED_DISK_GB, L = 16.0, 12.0, 25
KINDS = ("ours", "plain", "stock", "ours-nf4-fp32compute")

TRAIN_CHILD = r'''
import json, sys, time, torch
kind, tokens = sys.argv[1], int(sys.argv[2])
from gemma4_saelens_ext.models.embedded import embedded_model_path
from gemma4_saelens_ext.models.precision import from_pretrained_kwargs
from gemma4_saelens_ext.training.config import load_training_config
from gemma4_saelens_ext.training.runner import build_runner
path = str(embedded_model_path("gemma-4-e2b-shape"))
runner_cfg = {"dataset_path": "builtin:roleplay-corpus", "context_size": 128, "training_tokens": tokens,
              "train_batch_size_tokens": 1024, "store_batch_size_prompts": 8, "n_batches_in_buffer": 16,
              "n_batches_for_norm_estimate": 2, "exclude_special_tokens": True, "device": "cuda",
              "output_path": None, "checkpoint_path": "/tmp/e2b_bench_ck"}
spec = load_training_config({"model": {"source": path, "precision": "nf4", "layer": L, "cache_activations": False},
                             "sae": {"d_in": 1536, "d_sae": 6144, "k": 16}, "runner": runner_cfg})
if kind == "ours":
    runner = build_runner(spec)
else:
    from sae_lens import LanguageModelSAETrainingRunner
    cfg = spec.runner_config()
    cfg.model_name, cfg.hook_name = path, f"model.layers.{L}"
    cfg.model_from_pretrained_kwargs = {**from_pretrained_kwargs("nf4"), "device_map": "cuda"}
    runner = LanguageModelSAETrainingRunner(cfg)
torch.cuda.reset_peak_memory_stats()
t = time.perf_counter()
runner.run()
dt = time.perf_counter() - t
print(json.dumps({"kind": kind, "train_tokens_per_s": tokens / dt, "cuda_max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20}))
'''


class Extraction:
    """One arm: a loaded model and its layer-25 extraction over fixed random token batches (BOS first)."""

    def __init__(self, kind: str, device: str = "cpu", batch: int = 4, seq: int = 64):
        import time

        import torch

        import _mem
        from gemma4_saelens_ext.models.embedded import embedded_model_path
        from gemma4_saelens_ext.models.precision import from_pretrained_kwargs

        path, t0 = str(embedded_model_path("gemma-4-e2b-shape")), time.perf_counter()
        self.cuda, self.tokens = device.startswith("cuda"), batch * seq
        if kind.startswith("ours"):
            from gemma4_saelens_ext.activations.source import Gemma4ActivationSource
            from gemma4_saelens_ext.models.load import load_model

            prec = kind.removeprefix("ours-") if kind != "ours" else "nf4"
            src, name = Gemma4ActivationSource(load_model(path, prec, truncate_after_layer=L, device=device),
                                               [f"blocks.{L}.hook_resid_post"]), f"blocks.{L}.hook_resid_post"
            model = src.model
            self.run = lambda ids: src.run_with_cache(ids, names_filter=[name], stop_at_layer=L + 1)[1][name]
        elif kind == "stock":
            from sae_lens.load_model import load_model as sl_load

            kw = {**from_pretrained_kwargs("nf4"), "device_map": device}
            model = sl_load("AutoModelForCausalLM", path, device=device, model_from_pretrained_kwargs=kw)
            self.run = lambda ids: model.run_with_cache(ids, names_filter=[f"model.layers.{L}"],
                                                        stop_at_layer=L + 1)[1][f"model.layers.{L}"]
        elif kind == "plain":
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(path, **from_pretrained_kwargs("nf4"), device_map=device)
            self.run = lambda ids: model(ids, output_hidden_states=True).hidden_states[L + 1]
        else:
            raise ValueError(f"unknown arm {kind!r}; use one of {', '.join(KINDS)}")
        from _harness import bnb_generic_if_emulating

        bnb_generic_if_emulating(model)
        self.info_ = {"load_s": time.perf_counter() - t0, "rss_after_load_mib": _mem.rss_mib(),
                      **{f"{k}_after_load_mib": v for k, v in _mem.rss_parts_mib().items()}}  # fmt: skip
        g = torch.Generator().manual_seed(0)
        self.batches = [torch.cat([torch.full((batch, 1), 2), torch.randint(4, 400, (batch, seq - 1), generator=g)], 1)
                        .to(device) for _ in range(4)]  # fmt: skip
        self.i = 0
        with torch.no_grad():
            self.first = self.run(self.batches[0]).float().cpu()  # warm-up (and the activations compared)

    def step(self) -> int:
        import torch

        with torch.no_grad():
            self.run(self.batches[self.i % len(self.batches)])
        if self.cuda:
            torch.cuda.synchronize()
        self.i += 1
        return self.tokens

    def info(self) -> dict:
        import torch

        import _mem

        out = {**self.info_, "peak_rss_mib": _mem.peak_rss_mib()}
        if self.cuda:
            out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        return out

    def save(self, path: str) -> None:
        from safetensors.torch import save_file

        save_file({"acts": self.first.contiguous()}, path)


def _rel(a, b) -> float:
    a, b = a[:, 1:].float(), b[:, 1:].float()  # BOS excluded (its residual dwarfs the rest)
    return float(((a - b) ** 2).sum().sqrt() / (b**2).sum().sqrt())


def _prepare() -> Path:
    """Build the checkpoint, the truncated copy and both nf4 quantized caches outside the timed runs."""
    from gemma4_saelens_ext.models.embedded import embedded_model_path
    from gemma4_saelens_ext.models.load import prepare_checkpoint

    path = embedded_model_path("gemma-4-e2b-shape")
    prepare_checkpoint(path, L)
    for prec in ("nf4", "nf4-fp32compute"):  # the first truncated nf4 CPU load caches its quantized layers
        warm = f"from gemma4_saelens_ext.models.load import load_model; load_model({str(path)!r}, {prec!r}, truncate_after_layer={L})"
        subprocess.run([sys.executable, "-c", warm], check=True, capture_output=True)
    return path


def _compare(device: str, kinds: list[str], a) -> None:
    import torch
    from safetensors.torch import load_file

    from _harness import Arm, header, run_rounds, summary

    from _harness import EMULATE_AVX2

    env = EMULATE_AVX2 if a.emulate_avx2 else {}
    arms = [Arm(k, f"{__file__}:Extraction", {"kind": k, "device": device, "batch": a.batch, "seq": a.seq}, env)
            for k in kinds]
    with tempfile.TemporaryDirectory() as tmp:
        res = run_rounds(arms, rounds=a.rounds, min_units=a.round_tokens, threads=a.threads, save_dir=tmp,
                         log=lambda m: print(m, file=sys.stderr))  # fmt: skip
        acts = {k: load_file(str(Path(tmp) / f"{k}.safetensors"))["acts"] for k in kinds}
    pairs = [(x, y) for x, y in (("ours", "plain"), ("ours", "stock"), ("ours-nf4-fp32compute", "stock"),
                                 ("ours-nf4-fp32compute", "ours"), ("plain", "stock")) if x in kinds and y in kinds]
    emu = " | EMULATED AVX2-only CPU (torch/oneDNN/MKL capped at AVX2, bnb generic path)" if a.emulate_avx2 else ""
    print("\n".join(header(res, f"gemma-4-e2b-shape L{L}, {device}, batches {a.batch}x{a.seq}{emu}") +
                    summary(res, pairs)))  # fmt: skip
    for k, r in res.info.items():
        extra = f", cuda max allocated {r['cuda_max_allocated_mib']:.0f} MiB" if "cuda_max_allocated_mib" in r else ""
        print(f"{device} {k}: load {r['load_s']:.0f} s, RSS after load {r['rss_after_load_mib']:.0f} MiB (anonymous "
              f"{r.get('RssAnon_after_load_mib', float('nan')):.0f}, file-backed {r.get('RssFile_after_load_mib', float('nan')):.0f}), "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB{extra}")
    if "ours" in res.info and "stock" in res.info:
        print(f"{device} peak RSS ours / stock: {res.info['ours']['peak_rss_mib'] / res.info['stock']['peak_rss_mib']:.2f}x "
              "(target <= 0.5x)")
    ref = "plain" if "plain" in acts else kinds[0]
    for k in kinds:
        if k != ref:
            print(f"{device} {k} vs {ref} layer-{L} activations: relative error {_rel(acts[k], acts[ref]):.2e}, "
                  f"identical: {bool(torch.equal(acts[k], acts[ref]))}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--round-tokens", type=int, default=2048, help="tokens per arm per round (at least)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="threads per worker (default: all CPUs)")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--train-tokens", type=int, default=65536, help="GPU part: SAE training budget per runner")
    ap.add_argument("--only-if-built", action="store_true", help="skip unless the checkpoint is already cached")
    ap.add_argument("--emulate-avx2", action="store_true", help="run the arms as on an AVX2-only CPU (see _harness)")
    a = ap.parse_args()

    import json

    import psutil
    import torch

    from gemma4_saelens_ext.models.embedded import cache_dir

    built = (cache_dir() / "models" / "gemma-4-e2b-shape" / ".complete").exists()
    ram, disk = psutil.virtual_memory().available / 1e9, shutil.disk_usage(cache_dir()).free / 1e9
    if a.only_if_built and not built:
        print("skipped: gemma-4-e2b-shape is not built yet (--only-if-built; run without it to build the 9.3 GB checkpoint)")
        return 0
    if ram < NEED_RAM_GB or (not built and disk < NEED_DISK_GB):
        print(f"skipped: needs {NEED_RAM_GB:.0f} GB available RAM (have {ram:.1f}; the arms' processes stay alive "
              f"together) and, for the first build, {NEED_DISK_GB:.0f} GB free disk at {cache_dir()} (have {disk:.1f})")
        return 0
    _prepare()
    _compare("cpu", a.kinds.split(","), a)
    if not torch.cuda.is_available():
        print("GPU part skipped: no CUDA device on this machine (accelerator-memory target not measured here)")
        return 0
    _compare("cuda:0", [k for k in ("ours", "stock") if k in a.kinds.split(",")], a)
    tr = {}
    for k in ("ours", "stock"):
        p = subprocess.run([sys.executable, "-c", f"L = {L}\n" + TRAIN_CHILD, k, str(a.train_tokens)],
                           capture_output=True, text=True, check=True)  # fmt: skip
        tr[k] = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"cuda SAE training {k:5s}: {tr[k]['train_tokens_per_s']:.0f} tokens/s, cuda max allocated "
              f"{tr[k]['cuda_max_allocated_mib']:.0f} MiB")
    print(f"cuda SAE training tokens/s ours / stock: {tr['ours']['train_tokens_per_s'] / tr['stock']['train_tokens_per_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
