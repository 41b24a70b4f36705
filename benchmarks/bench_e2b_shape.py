#!/usr/bin/env python
"""Layer-25 nf4 extraction at Gemma 4 E2B's real shape (``gemma-4-e2b-shape``, 4.63B random parameters), side by side.

CPU (always): peak RSS (VmHWM, see ``_mem.py``), RSS after load, load seconds and tokens/s of
  ours   - ``load_model(..., "nf4", truncate_after_layer=25)`` + ``Gemma4ActivationSource`` (forward stopped after 25);
  stock  - SAELens ``load_model("AutoModelForCausalLM", ...)`` with the nf4 kwargs and ``device_map="cpu"``
           (``HookedProxyLM``, every submodule hooked, ``stop_at_layer`` as SAELens's store passes it);
  plain  - HF ``AutoModelForCausalLM`` nf4 forward with ``output_hidden_states=True``.
GPU (only when ``torch.cuda.is_available()``): ``torch.cuda.max_memory_allocated`` and tokens/s of ours (lookup
tables on the CPU) vs stock (``device_map`` on the GPU), and SAE training tokens/s through
``LanguageModelSAETrainingRunner`` (ours as ``override_model`` vs stock ``model_class_name="AutoModelForCausalLM"``).
Each configuration runs in a fresh process. Skipped, with a message, when the machine lacks RAM or disk; the first run
builds the 9.3 GB checkpoint into the cache (minutes).

    python benchmarks/bench_e2b_shape.py [--batches 3] [--batch 4] [--seq 64]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEED_RAM_GB, NEED_DISK_GB, L = 14.0, 12.0, 25

TRAIN_CHILD = r'''
import json, sys, time, torch
kind, tokens = sys.argv[1], int(sys.argv[2])
from gemma4_saelens_ext.models.embedded import embedded_model_path
from gemma4_saelens_ext.models.precision import from_pretrained_kwargs
from gemma4_saelens_ext.training.config import load_training_config, resolve_dataset_path
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

CHILD = r'''
import json, sys, time, torch
sys.path.insert(0, HERE_DIR)
import _mem
kind, device, batches, batch, seq, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
from gemma4_saelens_ext.models.embedded import embedded_model_path
from gemma4_saelens_ext.models.precision import from_pretrained_kwargs
path = str(embedded_model_path("gemma-4-e2b-shape"))
cuda = device.startswith("cuda")
t0 = time.perf_counter()
if kind == "ours":
    from gemma4_saelens_ext.models.load import load_model
    from gemma4_saelens_ext.activations.source import Gemma4ActivationSource
    lm = load_model(path, "nf4", truncate_after_layer=L, device=device)
    model, name = Gemma4ActivationSource(lm, [f"blocks.{L}.hook_resid_post"]), f"blocks.{L}.hook_resid_post"
    run = lambda ids: model.run_with_cache(ids, names_filter=[name], stop_at_layer=L + 1)[1][name]
elif kind == "stock":
    from sae_lens.load_model import load_model as sl_load
    kw = {**from_pretrained_kwargs("nf4"), "device_map": device}
    model, name = sl_load("AutoModelForCausalLM", path, device=device, model_from_pretrained_kwargs=kw), f"model.layers.{L}"
    run = lambda ids: model.run_with_cache(ids, names_filter=[name], stop_at_layer=L + 1)[1][name]
else:
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, **from_pretrained_kwargs("nf4"), device_map=device)
    run = lambda ids: model(ids, output_hidden_states=True).hidden_states[L + 1]
load_s = time.perf_counter() - t0
rss_load = _mem.rss_mib()
parts_load = _mem.rss_parts_mib()
g = torch.Generator().manual_seed(0)
ids = [torch.cat([torch.full((batch, 1), 2), torch.randint(4, 400, (batch, seq - 1), generator=g)], 1).to(device) for _ in range(batches + 1)]
with torch.no_grad():
    first = run(ids[0]).float().cpu()
    if cuda: torch.cuda.synchronize()
    t = time.perf_counter()
    for x in ids[1:]:
        run(x)
    if cuda: torch.cuda.synchronize()
    dt = time.perf_counter() - t
res = {"kind": kind, "device": device, "load_s": load_s, "rss_after_load_mib": rss_load, "peak_rss_mib": _mem.peak_rss_mib(),
       "tokens_per_s": batches * batch * seq / dt, "anon_after_load_mib": parts_load.get("RssAnon"),
       "file_after_load_mib": parts_load.get("RssFile"), "anon_end_mib": _mem.rss_parts_mib().get("RssAnon")}
if cuda: res["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
from safetensors.torch import save_file
save_file({"acts": first.contiguous()}, out)
print(json.dumps(res))
'''


def _child(kind: str, device: str, a, out: Path) -> dict:
    code = f"L = {L}\nHERE_DIR = {str(HERE)!r}\n" + CHILD
    p = subprocess.run([sys.executable, "-c", code, kind, device, str(a.batches), str(a.batch), str(a.seq), str(out)],
                       capture_output=True, text=True)  # fmt: skip
    if p.returncode != 0:
        raise RuntimeError(f"{kind} on {device} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _train_child(kind: str, tokens: int) -> dict:
    p = subprocess.run([sys.executable, "-c", f"L = {L}\n" + TRAIN_CHILD, kind, str(tokens)], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"training {kind} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _rel(a, b) -> float:
    a, b = a[:, 1:].float(), b[:, 1:].float()  # BOS excluded (its residual dwarfs the rest)
    return float(((a - b) ** 2).sum().sqrt() / (b**2).sum().sqrt())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--kinds", default="ours,stock,plain")
    ap.add_argument("--train-tokens", type=int, default=65536, help="GPU part: SAE training budget per runner")
    ap.add_argument("--only-if-built", action="store_true", help="skip unless the checkpoint is already cached")
    a = ap.parse_args()

    import psutil
    import torch
    from safetensors.torch import load_file

    from gemma4_saelens_ext.models.embedded import cache_dir, embedded_model_path

    built = (cache_dir() / "models" / "gemma-4-e2b-shape" / ".complete").exists()
    ram = psutil.virtual_memory().available / 1e9
    disk = shutil.disk_usage(cache_dir()).free / 1e9
    if a.only_if_built and not built:
        print("skipped: gemma-4-e2b-shape is not built yet (--only-if-built; run without it to build the 9.3 GB checkpoint)")
        return 0
    if ram < NEED_RAM_GB or (not built and disk < NEED_DISK_GB):
        print(f"skipped: needs {NEED_RAM_GB:.0f} GB available RAM (have {ram:.1f}) and, for the first build, "
              f"{NEED_DISK_GB:.0f} GB free disk at {cache_dir()} (have {disk:.1f})")
        return 0
    from gemma4_saelens_ext.models.load import prepare_checkpoint

    path = embedded_model_path("gemma-4-e2b-shape")
    prepare_checkpoint(path, L)  # derive the truncated copy outside the timed runs
    # the first truncated nf4 CPU load also caches its quantized layers (gemma4_saelens_ext.models.quantized_cache): do it
    # here, untimed, so "ours" measures the steady state, as stock's checkpoint is simply there
    warm = f"from gemma4_saelens_ext.models.load import load_model; load_model({str(path)!r}, 'nf4', truncate_after_layer={L})"
    subprocess.run([sys.executable, "-c", warm], check=True, capture_output=True)
    print(f"# gemma-4-e2b-shape (4.63B) layer {L} nf4 extraction, {a.batches}x{a.batch}x{a.seq} tokens, "
          f"{platform.machine()} {torch.get_num_threads()} threads")
    devices = ["cpu"] + (["cuda:0"] if torch.cuda.is_available() else [])
    if len(devices) == 1:
        print("GPU part skipped: no CUDA device on this machine (accelerator-memory target not measured here)")
    import tempfile

    for device in devices:
        res, acts = {}, {}
        with tempfile.TemporaryDirectory() as tmp:
            for kind in a.kinds.split(","):
                out = Path(tmp) / f"{kind}.safetensors"
                res[kind] = _child(kind, device, a, out)
                acts[kind] = load_file(str(out))["acts"]
                r = res[kind]
                extra = f", cuda max allocated {r['cuda_max_allocated_mib']:.0f} MiB" if "cuda_max_allocated_mib" in r else ""
                print(f"{device} {kind:6s}: load {r['load_s']:.0f} s, RSS after load {r['rss_after_load_mib']:.0f} MiB "
                      f"(anonymous {r['anon_after_load_mib']:.0f}, file-backed {r['file_after_load_mib']:.0f}), "
                      f"peak RSS {r['peak_rss_mib']:.0f} MiB, anonymous at end {r['anon_end_mib']:.0f} MiB, "
                      f"{r['tokens_per_s']:.1f} tokens/s{extra}")
        ref = "plain" if "plain" in acts else None
        if "ours" in res and "stock" in res:
            o, s = res["ours"], res["stock"]
            print(f"{device} peak RSS ours / stock: {o['peak_rss_mib'] / s['peak_rss_mib']:.2f}x (target <= 0.5x); "
                  f"anonymous memory at end ours / stock: {o['anon_end_mib'] / s['anon_end_mib']:.2f}x; "
                  f"tokens/s ours / stock: {o['tokens_per_s'] / s['tokens_per_s']:.2f}x")
            if "cuda_max_allocated_mib" in o:
                print(f"{device} accelerator memory stock / ours: "
                      f"{s['cuda_max_allocated_mib'] / o['cuda_max_allocated_mib']:.2f}x "
                      f"(ours {o['cuda_max_allocated_mib'] / 1024:.2f} GiB; target <= 1.5 GB)")
        if ref:
            for kind in acts:
                if kind != ref:
                    print(f"{device} {kind} vs {ref} layer-{L} activations: relative error {_rel(acts[kind], acts[ref]):.2e}, "
                          f"identical: {bool(torch.equal(acts[kind], acts[ref]))}")
    if torch.cuda.is_available():
        tr = {k: _train_child(k, a.train_tokens) for k in ("ours", "stock")}
        for k, r in tr.items():
            print(f"cuda SAE training {k:5s}: {r['train_tokens_per_s']:.0f} tokens/s, cuda max allocated "
                  f"{r['cuda_max_allocated_mib']:.0f} MiB")
        print(f"cuda SAE training tokens/s ours / stock: "
              f"{tr['ours']['train_tokens_per_s'] / tr['stock']['train_tokens_per_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
