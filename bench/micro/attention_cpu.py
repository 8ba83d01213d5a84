"""torch's CPU SDPA kernel next to the written-out attention, at short lengths, with and without torch.set_num_threads.

Usage: python -m bench.micro.attention_cpu [--lengths 8,16,32,64,128] [--batch-heads 256] [--head-dim 32]
                                           [--seconds 0.3] [--json PATH]

For each key length L it times, on [B*H, L, D] queries/keys/values with a padding mask:
    sdpa     torch.nn.functional.scaled_dot_product_attention (on CPU: a flash kernel)
    eager    scratchformer's eager_attention_forward (scores -> mask -> softmax -> weighted sum)
forward only and forward + backward, in microseconds per call (bench.harness.seconds_per_call: the mean over about
--seconds of calls, after 3 warm-up calls). It runs twice, each in a fresh process: as torch
starts, and after torch.set_num_threads(torch.get_num_threads()) - which on the 2-core dev machine is not a no-op
(see bench/LOG.md, "Attention on CPU").
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from bench.harness import seconds_per_call
from scratchformer.modeling_scratchformer import eager_attention_forward
from training import resume

ROOT = Path(__file__).resolve().parents[2]


def measure(lengths: list[int], batch_heads: int, head_dim: int, seconds: float) -> list[dict]:
    """Both attentions at each length, in this process."""
    heads = 4
    batch = max(1, batch_heads // heads)
    module = torch.nn.Module().train()
    rows = []
    for length in lengths:
        q, k, v = (torch.randn(batch, length, heads, head_dim).transpose(1, 2).requires_grad_() for _ in range(3))
        allowed = torch.ones(batch, 1, length, length, dtype=torch.bool)
        allowed[: batch // 2, ..., length - length // 4 :] = False  # half the rows padded by a quarter
        additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
        attentions = {  # SDPA returns [B, H, L, D]; the eager function [B, L, H, D], as transformers' backends do
            "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed),
            "eager": lambda: eager_attention_forward(module, q, k, v, additive, scaling=head_dim**-0.5)[0],
        }
        row = {"length": length}
        for name, attend in attentions.items():
            with torch.no_grad():
                row[f"{name}_forward_us"] = seconds_per_call(attend, seconds=seconds) * 1e6
            grad = torch.randn_like(attend())
            row[f"{name}_train_us"] = seconds_per_call(lambda: attend().backward(grad), seconds=seconds) * 1e6
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="8,16,32,64,128")
    parser.add_argument("--batch-heads", type=int, default=256)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", choices=["default", "set_num_threads"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    lengths = [int(n) for n in args.lengths.split(",")]
    if args.worker:  # one fresh process per thread setting: set_num_threads leaves its mark on the process
        if args.worker == "set_num_threads":
            torch.set_num_threads(torch.get_num_threads())
        print(json.dumps(measure(lengths, args.batch_heads, args.head_dim, args.seconds)))
        return 0

    results = {"threads": torch.get_num_threads()}
    print(f"B*H={args.batch_heads}, D={args.head_dim}, {results['threads']} threads; microseconds per call")
    print(f"{'threads':16s} {'L':>4s}  {'fwd sdpa':>9s} {'fwd eager':>9s} {'ratio':>6s}  "
          f"{'train sdpa':>10s} {'train eager':>11s} {'ratio':>6s}")
    for worker in ("default", "set_num_threads"):
        command = [sys.executable, "-m", "bench.micro.attention_cpu", "--worker", worker, "--lengths", args.lengths,
                   "--batch-heads", str(args.batch_heads), "--head-dim", str(args.head_dim),
                   "--seconds", str(args.seconds)]
        rows = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout)
        results[worker] = rows
        for r in rows:
            print(f"{worker:16s} {r['length']:4d}  {r['sdpa_forward_us']:9.0f} {r['eager_forward_us']:9.0f} "
                  f"{r['sdpa_forward_us'] / r['eager_forward_us']:6.2f}  {r['sdpa_train_us']:10.0f} "
                  f"{r['eager_train_us']:11.0f} {r['sdpa_train_us'] / r['eager_train_us']:6.2f}")
    print("ratio = sdpa time / eager time (above 1: the written-out attention is faster)")
    if args.json:
        resume.write_json(Path(args.json), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
