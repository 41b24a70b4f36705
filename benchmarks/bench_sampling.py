"""Batched vs one-prompt-at-a-time sampling: completions per second, side by side, same settings and seeds.

    python benchmarks/bench_sampling.py                         # embedded Gemma 3 270M, fp32, CPU
    python benchmarks/bench_sampling.py --precision nf4-bf16    # any preset
    python benchmarks/bench_sampling.py --model-dir DIR --random-weights --device cuda   # arch-only timing

Both runs sample the same 32 requests (one per built-in prompt) with the same per-completion seeds, so the script
also reports how many completions the two layouts share (seeded sampling is batch-layout independent up to float
rounding). ``--random-weights`` builds the model from DIR's config.json with random weights (plus DIR's tokenizer):
throughput depends on the architecture, not the weights, so a machine without the checkpoint can still time it.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from gemma4_saelens_ext.behavior.sampling import generate_completions, make_requests
from gemma4_saelens_ext.behavior.scenarios import load_scenarios


def load(args):
    if args.model_dir:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from gemma4_saelens_ext.models.precision import get_precision

        tok = AutoTokenizer.from_pretrained(args.model_dir)
        dtype = get_precision(args.precision).dtype
        if args.random_weights:
            cfg = AutoConfig.from_pretrained(args.model_dir)
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=dtype)
        return model.to(args.device).eval(), tok
    from gemma4_saelens_ext.models.load import load_model

    lm = load_model(args.model, args.precision)
    return lm.model, lm.tokenizer


def timed(model, tok, reqs, bs, args):
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = generate_completions(
        model, tok, reqs, max_new_tokens=args.max_new_tokens, temperature=1.0, batch_size=bs, progress=False
    )
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--model-dir", default=None, help="a HF folder (config + tokenizer [+ weights])")
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    model, tok = load(args)
    prompts = load_scenarios()[: args.prompts]
    reqs = make_requests([(q.id, q.text) for q in prompts], 1, args.seed)
    generate_completions(model, tok, reqs[:2], max_new_tokens=2, batch_size=2, progress=False)  # warm-up

    batched, tb = timed(model, tok, reqs, args.batch_size, args)
    single, ts = timed(model, tok, reqs, 1, args)
    same = sum(a.completion == b.completion for a, b in zip(sorted(batched, key=lambda c: c.key), sorted(single, key=lambda c: c.key)))
    toks_b = sum(c.n_new_tokens for c in batched)
    toks_s = sum(c.n_new_tokens for c in single)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()} threads"
    print(f"model={args.model_dir or args.model} precision={args.precision} device={dev} prompts={len(reqs)} "
          f"max_new_tokens={args.max_new_tokens} temperature=1.0 random_weights={args.random_weights}")
    print(f"{'mode':<22}{'seconds':>10}{'completions/s':>16}{'new tokens/s':>15}")
    print(f"{'batched (bs=%d)' % args.batch_size:<22}{tb:>10.2f}{len(reqs) / tb:>16.3f}{toks_b / tb:>15.1f}")
    print(f"{'one at a time (bs=1)':<22}{ts:>10.2f}{len(reqs) / ts:>16.3f}{toks_s / ts:>15.1f}")
    print(f"speed-up (completions/s ratio): {ts / tb:.2f}x   identical completions: {same}/{len(reqs)}")


if __name__ == "__main__":
    main()
