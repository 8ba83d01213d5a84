"""The output layer's matmul on CPU: h @ W^T (nn.Linear, MKL's sgemm) against (W @ h^T)^T, same products, against
oneDNN's matmul (scratchformer.cpu_kernels.cpu_rows_times_weight_t) and against the compiled product-and-sum that a compiled
batch-1 decoding step uses.

Usage: python -m bench.micro.output_layer_cpu [--rows 1,4,8,16,32,64,256,1024] [--hidden 128,256] [--vocab 16000]
                                             [--repeats 5] [--json PATH]

h is [rows, hidden] (a decoding step has one row per sequence), W is the [vocab, hidden] tied embedding table. Each
layout runs `repeats` rounds of timed calls (bench.harness.seconds_per_call, after 3 warm-up calls), alternating; the
median round is reported, forward only (no
gradients: what scratchformer.cpu_kernels.output_layer_logits changes). "compiled sum" is torch.compile (inductor) of
(h[:, None, :] * W).sum(-1), timed with its call overhead (one compiled call, as in a decoding step's graph it is one
kernel among others).
"""

import argparse
import json
import statistics
from pathlib import Path

import torch

from bench.harness import seconds_per_call
from scratchformer.cpu_kernels import cpu_rows_times_weight_t


def compare(rows: int, hidden: int, vocab: int, repeats: int) -> dict:
    """Median ms per call of each layout, measured in alternating rounds, and each one's speed-up over nn.Linear
    (`speedup`: weight first; `onednn_speedup`; `compiled_sum_speedup`: the compiled product-and-sum)."""
    weight, h = torch.randn(vocab, hidden), torch.randn(rows, hidden)
    torch._dynamo.reset()  # each shape compiles afresh (not counted against the recompile limit)
    product_sum = torch.compile(lambda h, w: (h.unsqueeze(-2) * w).sum(-1), dynamic=False)
    layouts = {
        "linear": lambda: torch.nn.functional.linear(h, weight),
        "weight_first": lambda: torch.mm(weight, h.t()).t(),
        "onednn": lambda: cpu_rows_times_weight_t(h, weight),
        "compiled_sum": lambda: product_sum(h, weight),
    }
    calls = min(2000, max(3, int(2e9 / (2 * rows * hidden * vocab))))  # about 2 GFLOP of work per round
    rounds = {name: [] for name in layouts}
    for _ in range(repeats):
        for name, fn in layouts.items():
            rounds[name].append(seconds_per_call(fn, calls) * 1e3)
    result = {name: statistics.median(times) for name, times in rounds.items()}
    result["speedup"] = result["linear"] / result["weight_first"]
    result["onednn_speedup"] = result["linear"] / result["onednn"]
    result["compiled_sum_speedup"] = result["linear"] / result["compiled_sum"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,4,8,16,32,64,256,1024")
    parser.add_argument("--hidden", default="128,256")
    parser.add_argument("--vocab", type=int, default=16000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results = []
    print(f"{'hidden':>6} {'rows':>5} {'linear ms':>10} {'W-first ms':>11} {'speedup':>8} {'oneDNN ms':>10} {'speedup':>8}"
          f" {'sum ms':>8} {'speedup':>8}")
    for hidden in map(int, args.hidden.split(",")):
        for rows in map(int, args.rows.split(",")):
            r = compare(rows, hidden, args.vocab, args.repeats)
            results.append({"hidden": hidden, "rows": rows, **r})
            print(f"{hidden:6d} {rows:5d} {r['linear']:10.3f} {r['weight_first']:11.3f} {r['speedup']:8.2f}"
                  f" {r['onednn']:10.3f} {r['onednn_speedup']:8.2f}"
                  f" {r['compiled_sum']:8.3f} {r['compiled_sum_speedup']:8.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"vocab": args.vocab, "threads": torch.get_num_threads(), "results": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
