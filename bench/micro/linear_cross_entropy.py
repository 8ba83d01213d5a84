"""The training loss's output layer + cross-entropy, forward and backward: plain against the chunked pass.

Usage: python -m bench.micro.linear_cross_entropy [--rows 4096] [--hidden 128,256] [--vocab 16000]
                                                  [--chunk-rows 64,128,256,512,1024] [--pairs 7] [--json PATH]

Plain is what transformers computes: logits = h @ W^T, then cross_entropy (ForCausalLMLoss), then backward.
Chunked is scratchformer.linear_cross_entropy with softmax chunks of `chunk-rows` rows (the package's default is
CHUNK_ELEMENTS / vocab). Rows are 4096 (batch 16 x 256 tokens, the `cpu-small` LM step) with 1 in 50 labels ignored.
Each pair times plain, chunked, chunked, plain (ABBA: two of bench.harness.abba_ratios' alternating pairs), each
sample 2 calls after 3 warm-up calls; the speedup is the median over pairs of plain's time / chunked's time.
"""

import argparse
import json
import statistics
from pathlib import Path

import torch

import scratchformer.linear_cross_entropy as chunked
from bench.harness import abba_ratios


def compare(rows: int, hidden: int, vocab: int, chunk_rows: int, pairs: int) -> dict:
    """Median ms of a forward + backward for both ways, and the median per-pair speedup (plain / chunked)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(hidden, vocab, bias=False)
    h = torch.randn(rows, hidden, requires_grad=True)
    labels = torch.randint(0, vocab, (rows,))
    labels[::50] = -100

    def plain():
        torch.nn.functional.cross_entropy(layer(h), labels).backward()

    def fused():
        chunked.linear_cross_entropy(h, layer, labels)[0].backward()

    chunked.CHUNK_ELEMENTS = chunk_rows * vocab
    times, ratios = {"plain": [], "chunked": []}, []
    for _ in range(pairs):
        # plain, chunked, chunked, plain: two pairs of the ABBA protocol
        _, plain_s, chunked_s = abba_ratios(plain, fused, calls=2, pairs=2, warmup_calls=3)
        times["plain"] += [seconds / 2 * 1e3 for seconds in plain_s]
        times["chunked"] += [seconds / 2 * 1e3 for seconds in chunked_s]
        ratios.append(sum(plain_s) / sum(chunked_s))
    return {"plain_ms": statistics.median(times["plain"]), "chunked_ms": statistics.median(times["chunked"]),
            "speedup": statistics.median(ratios)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--hidden", default="128,256")
    parser.add_argument("--vocab", type=int, default=16000)
    parser.add_argument("--chunk-rows", default="64,128,256,512,1024")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    default_elements, results = chunked.CHUNK_ELEMENTS, []
    print(f"{'hidden':>6} {'chunk':>6} {'plain ms':>9} {'chunked ms':>11} {'speedup':>8}")
    try:
        for hidden in map(int, args.hidden.split(",")):
            for chunk_rows in map(int, args.chunk_rows.split(",")):
                r = compare(args.rows, hidden, args.vocab, chunk_rows, args.pairs)
                results.append({"hidden": hidden, "chunk_rows": chunk_rows, **r})
                print(f"{hidden:6d} {chunk_rows:6d} {r['plain_ms']:9.1f} {r['chunked_ms']:11.1f} {r['speedup']:8.2f}",
                      flush=True)
    finally:
        chunked.CHUNK_ELEMENTS = default_elements
    if args.json:
        args.json.write_text(json.dumps({"rows": args.rows, "vocab": args.vocab, "threads": torch.get_num_threads(),
                                         "results": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
