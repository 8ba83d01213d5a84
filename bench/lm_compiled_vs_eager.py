"""The LM's one edge target alone: ours compiled against GPT-2 eager (and GPT-2 eager against itself, the noise
floor) at bench.speed's `large` size, with bench.models' models, bench.speed's batch and optimizer and bench.harness's
paired protocol. Three models instead of bench.speed's dozens, so it takes ~5 minutes rather than ~20: a second
reading of that one ratio.

Usage: python -m bench.lm_compiled_vs_eager [--size large] [--pairs N] [--sample-seconds S] [--json PATH]
"""

import argparse
import json
from pathlib import Path

import torch

from bench import harness, models, speed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lm_compiled_vs_eager", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="large", choices=sorted(models.SIZES))
    parser.add_argument("--quick", action="store_true", help="tiny model, short samples (smoke test)")
    parser.add_argument("--pairs", type=int, default=None)
    parser.add_argument("--sample-seconds", type=float, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    size = (models.QUICK_SIZES if args.quick else models.SIZES)[args.size]
    protocol = harness.protocol_from_args(args, harness.QUICK_PROTOCOL if args.quick else harness.Protocol())
    batch = speed.training_batch(size, "lm")
    ours = torch.compile(models.build_model("ours", "lm", size, attention_dropout=0.0))
    theirs = [models.build_model("theirs", "lm", size, attention_dropout=0.0) for _ in range(2)]
    steps = [speed.training_step(model, batch, speed.make_optimizer(model)) for model in (ours, *theirs)]
    compile_s = harness.first_call_seconds(steps[0])
    result = harness.compare(*steps, work=size.batch_size * size.seq_len, protocol=protocol)
    keys = ("ratio", "ratio_iqr", "noise", "noise_iqr", "ours_tokens_per_s", "theirs_tokens_per_s", "calls_per_sample")
    report = {"size": args.size, "compile_s": compile_s, **{key: result[key] for key in keys}}
    print(f"LM {args.size}: ours compiled / GPT-2 eager {report['ratio']:.3f} "
          f"[{report['ratio_iqr'][0]:.3f}-{report['ratio_iqr'][1]:.3f}], noise {report['noise']:.3f}; "
          f"{report['ours_tokens_per_s']:.0f} / {report['theirs_tokens_per_s']:.0f} tok/s; compile {compile_s:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
