"""Speed of scratchformer next to transformers' own GPT-2 and BERT at identical sizes (CPU, fp32, SDPA attention).

Usage: python -m bench.speed [--json PATH] [--sizes small,large] [--quick] [--pairs N] [--sample-seconds S]
                             [--threads N] [--attention-dropout P] [--compile [--compile-backend B]]

Per size, every ratio is ours / theirs (higher is better, except peak memory where lower is better):

    train_cls      training tokens/s (forward + backward + AdamW step):
                   ScratchformerForSequenceClassification vs BertForSequenceClassification
    train_lm       the same for ScratchformerForCausalLM vs GPT2LMHeadModel
    mfu            model FLOP utilisation of both training runs, ours and theirs, against a fp32 matmul peak
                   measured on this machine (best of several large square matmuls) at the start and the end
    mfu_paired     the same, each training sample paired with a peak sample taken next to it (ABBA order)
    decode_greedy  KV-cached greedy generate() tokens/s vs GPT-2, batch 1 and batch 8
    decode_beam4   4-beam generate() tokens/s vs GPT-2, batch 1 and batch 8
    peak_mem       peak memory of one training step (weights + AdamW state + step peak), cls and lm heads

With --compile, every training comparison and greedy decoding are also measured compiled (torch.compile, default
inductor backend, as TrainingArguments(torch_compile=True) does; decoding as generate() compiles it: a static cache
and transformers' compiled decoding step, with the CompileConfig defaults), in two more comparisons each:
    *_compiled            ours compiled / theirs compiled
    *_compiled_vs_eager   ours compiled / theirs eager (what most users run)
next to the eager / eager ratio above. The first call of each compiled model is timed on its own: its compile time.
Beam search is not compiled (transformers compiles greedy and sampling steps only).

Both sides get identical dimensions (hidden, layers, heads, MLP width, vocabulary, sequence length, batch), fp32,
the SDPA attention backend, exact ("gelu") activation, dropout 0.1 everywhere (--attention-dropout changes it on the
attention weights, for both sides: the recipes train with 0.0), train mode for training, the same
random token batches, and the fused AdamW that transformers' Trainer uses by default. Architecture is matched to
the reference: the classifier is post-norm with first-token pooling like BERT (which additionally keeps its own
design: token-type embeddings, an embedding LayerNorm and a tanh pooler), the LM is pre-norm with tied embeddings
like GPT-2 (whose attention fuses Q/K/V into one Conv1D).

Protocol, matmul peak and peak memory: bench/harness.py (paired ABBA samples of at least --sample-seconds, the median
of the per-pair ratios, the theirs-vs-theirs noise floor; torch.profiler's allocation events of one warm step plus
the bytes alive across steps). Models and sizes: bench/models.py.

Model FLOPs per trained token (PaLM appendix B style; bench/LOG.md, "FLOPs and MFU"):
    6 * N + 12 * L * d * T
N = non-embedding matmul weights (per layer 4*d^2 for Q, K, V, O plus 2*d*f for the MLP) plus the output layer
(d*V LM head, tied or not, or d*num_labels classifier); the second term is QK^T and AV (2 * 2*T*d FLOPs per token
and layer, x3 for forward + backward) over the full T x T score matrix, also for causal models. Embedding
lookups, LayerNorm, softmax, GELU, dropout, BERT's pooler and the optimizer are not counted. The same count is
used for ours and theirs, so the MFU ratio equals the training-throughput ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict

import torch
import transformers
from transformers import CompileConfig

from bench.harness import (
    QUICK_PROTOCOL,
    Protocol,
    add_run_arguments,
    columns,
    compare,
    compare_compiled,
    log,
    matmul_peak_flops,
    paired_mfu,
    profiled_peak_bytes,
    protocol_from_args,
    resident_bytes,
    timing_row,
    use_threads,
)
from bench.models import DROPOUT, NUM_LABELS, SIDES, QUICK_SIZES, SIZES, Size, build_model, count_params

FIRST_ORDINARY_ID = 3  # random batches avoid the special ids
DECODE_BATCHES = (1, 8)


# ----------------------------------------------------------------------------------------------------------------
# Workloads
# ----------------------------------------------------------------------------------------------------------------


def training_batch(size: Size, task: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids (no special tokens), no padding; LM labels are the ids, classification labels random classes."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(FIRST_ORDINARY_ID, size.vocab_size, (size.batch_size, size.seq_len), generator=generator)
    labels = ids.clone() if task == "lm" else torch.randint(0, NUM_LABELS, (size.batch_size,), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """Fused AdamW, transformers' Trainer default (optim="adamw_torch_fused")."""
    return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)


def training_step(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer
) -> Callable[[], None]:
    """One forward + backward + AdamW step on `batch`, as a callable (train mode, fresh gradients each step)."""
    model.train()

    def step() -> None:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def decoding_prompt(size: Size, batch: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """A fixed random prompt of prompt_len tokens per sequence."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(FIRST_ORDINARY_ID, size.vocab_size, (batch, size.prompt_len), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def decoding(
    model: torch.nn.Module, prompt: dict[str, torch.Tensor], size: Size, beams: int, compile_backend: str | None = None
) -> Callable[[], None]:
    """generate() with the KV cache: greedy (beams=1) or beam search, exactly new_tokens new tokens, eos disabled;
    with a `compile_backend`: a static cache and transformers' compiled decoding step (asked for on CPU; otherwise
    the CompileConfig defaults)."""
    model.eval()
    expected = (prompt["input_ids"].shape[0], size.prompt_len + size.new_tokens)
    compile_settings = {}
    if compile_backend:
        compile_config = CompileConfig(backend=compile_backend)
        compile_config._compile_all_devices = True  # transformers compiles decoding on GPUs only unless told
        compile_settings = {"cache_implementation": "static", "compile_config": compile_config}

    def run() -> None:
        out = model.generate(
            **prompt,
            max_new_tokens=size.new_tokens,
            min_new_tokens=size.new_tokens,
            num_beams=beams,
            do_sample=False,
            use_cache=True,
            **compile_settings,
        )
        if tuple(out.shape) != expected:
            raise RuntimeError(f"{type(model).__name__} generated shape {tuple(out.shape)}, expected {expected}")

    return run


def train_flops_per_token(size: Size, task: str, pooled_last_block: bool = False) -> float:
    """Model FLOPs per trained token: 6 x matmul weights + 12 * L * d * T for attention scores and weighted sums.
    `pooled_last_block`: the last block computes its output for one token per sequence (ours with first-token
    pooling): Q/K/V for every token, attention, output projection and MLP for that one token."""
    d, f, layers, length = size.hidden_size, size.intermediate_size, size.num_layers, size.seq_len
    output_layer = d * size.vocab_size if task == "lm" else d * NUM_LABELS
    block = 6 * (4 * d * d + 2 * d * f) + 12 * d * length
    if not pooled_last_block:
        return layers * block + 6 * output_layer
    last_block = 6 * 3 * d * d + (6 * (d * d + 2 * d * f) + 12 * d * length) / length
    return (layers - 1) * block + last_block + 6 * output_layer


# ----------------------------------------------------------------------------------------------------------------
# Memory of a training step
# ----------------------------------------------------------------------------------------------------------------


def training_memory(side: str, task: str, size: Size, attention_dropout: float = DROPOUT) -> dict:
    """Bytes: weights + AdamW state + batch (alive across steps) and the peak one warm step adds on top."""
    model = build_model(side, task, size, attention_dropout=attention_dropout)
    batch = training_batch(size, task)
    optimizer = make_optimizer(model)
    step = training_step(model, batch, optimizer)
    step()  # creates the AdamW state
    resident = resident_bytes(model, optimizer, batch)
    step_peak = profiled_peak_bytes(step)
    return {"resident_bytes": resident, "step_peak_bytes": step_peak, "total_bytes": resident + step_peak}


# ----------------------------------------------------------------------------------------------------------------
# One size
# ----------------------------------------------------------------------------------------------------------------


def bench_size(
    name: str, size: Size, protocol: Protocol, peak_flops: float, attention_dropout: float = DROPOUT,
    compile_backend: str | None = None, peak_sizes: tuple[int, ...] = (1024, 2048),
) -> dict:
    """All comparisons at one size; with a `compile_backend` also compiled (see the module docstring)."""
    result: dict = {"dims": asdict(size)}
    details: dict = {}
    tokens_per_step = size.batch_size * size.seq_len
    # Each side's own FLOPs: ours computes the cls-pooled classifier's last block for the first token only.
    flops = {side: {task: train_flops_per_token(size, task, pooled_last_block=side == "ours" and task == "cls")
                    for task in ("cls", "lm")} for side in ("ours", "theirs")}

    def measure_paired_mfu(key: str, task: str, side_steps: list[Callable[[], None]], suffix: str) -> None:
        calls = details[key + suffix]["calls_per_sample"]
        details[key + suffix]["mfu_paired"] = {
            side: paired_mfu(step, flops[side][task] * tokens_per_step, calls, protocol, peak_sizes)
            for side, step in zip(("ours", "theirs"), side_steps)}

    for task, key in (("cls", "train_cls"), ("lm", "train_lm")):
        log(f"[{name}] {key}: training tokens/s")
        models = [build_model(side, task, size, attention_dropout=attention_dropout) for side in SIDES]
        batch = training_batch(size, task)
        steps = [training_step(model, batch, make_optimizer(model)) for model in models]
        details[key] = compare(*steps, work=tokens_per_step, protocol=protocol)
        details[key]["params"] = {"ours": count_params(models[0]), "theirs": count_params(models[1])}
        log(f"[{name}] {key}: MFU, paired with matmul-peak samples")
        measure_paired_mfu(key, task, steps, "")
        if compile_backend:
            log(f"[{name}] {key}: compiling three models, then compiled tokens/s")
            compiled = [torch.compile(build_model(side, task, size, attention_dropout=attention_dropout),
                                      backend=compile_backend) for side in SIDES]
            compiled_steps = [training_step(model, batch, make_optimizer(model)) for model in compiled]
            compare_compiled(details, key, steps, compiled_steps, tokens_per_step, protocol)
            log(f"[{name}] {key}: compiled MFU, paired with matmul-peak samples")
            measure_paired_mfu(key, task, compiled_steps, "_compiled")
            del compiled, compiled_steps
        del models, steps
    result["train_cls"] = details["train_cls"]["ratio"]
    result["train_lm"] = details["train_lm"]["ratio"]
    for mfu_key, suffix in [("mfu", "")] + ([("mfu_compiled", "_compiled")] if compile_backend else []):
        result[mfu_key] = {
            key: {side: details[key + suffix][f"{side}_tokens_per_s"] * flops[side][task] / peak_flops
                  for side in ("ours", "theirs")}
            for task, key in (("cls", "train_cls"), ("lm", "train_lm"))
        }
        result[mfu_key + "_paired"] = {
            key: {side: details[key + suffix]["mfu_paired"][side]["mfu"] for side in ("ours", "theirs")}
            for key in ("train_cls", "train_lm")
        }
    if compile_backend:
        for key in ("train_cls", "train_lm"):
            result[f"{key}_compiled"] = details[f"{key}_compiled"]["ratio"]
            result[f"{key}_compiled_vs_eager"] = details[f"{key}_compiled_vs_eager"]["ratio"]
    result["flops_per_token"] = flops

    models = [build_model(side, "lm", size, attention_dropout=attention_dropout) for side in SIDES]
    for beams, key in ((1, "decode_greedy"), (4, "decode_beam4")):
        result[key] = {}
        for batch in DECODE_BATCHES:
            log(f"[{name}] {key} batch {batch}: generate() tokens/s")
            prompt = decoding_prompt(size, batch)
            runs = [decoding(model, prompt, size, beams) for model in models]
            details[f"{key}_b{batch}"] = compare(*runs, work=batch * size.new_tokens, protocol=protocol)
            result[key][f"batch{batch}"] = details[f"{key}_b{batch}"]["ratio"]
            if compile_backend and beams == 1:
                log(f"[{name}] {key} batch {batch}: compiled decoding (static cache)")
                compiled_runs = [decoding(model, prompt, size, beams, compile_backend) for model in models]
                compare_compiled(details, f"{key}_b{batch}", runs, compiled_runs, batch * size.new_tokens, protocol)
                for suffix, _ in COMPILED_ROWS:
                    result.setdefault(key + suffix, {})[f"batch{batch}"] = details[f"{key}_b{batch}{suffix}"]["ratio"]
    del models

    log(f"[{name}] peak_mem: profiled training-step memory")
    result["peak_mem"] = {}
    for task, key in (("cls", "train_cls"), ("lm", "train_lm")):
        memory = {who: training_memory(side, task, size, attention_dropout) for who, side in
                  (("ours", "ours"), ("theirs", "theirs"), ("theirs_again", "theirs"))}
        details[f"peak_mem_{task}"] = {
            **memory,
            "ratio": memory["ours"]["total_bytes"] / memory["theirs"]["total_bytes"],
            "noise": memory["theirs"]["total_bytes"] / memory["theirs_again"]["total_bytes"],
        }
        result["peak_mem"][task] = details[f"peak_mem_{task}"]["ratio"]

    result["noise"] = {
        "train_cls": details["train_cls"]["noise"],
        "train_lm": details["train_lm"]["noise"],
        "decode_greedy": {f"batch{b}": details[f"decode_greedy_b{b}"]["noise"] for b in DECODE_BATCHES},
        "decode_beam4": {f"batch{b}": details[f"decode_beam4_b{b}"]["noise"] for b in DECODE_BATCHES},
        "peak_mem": {task: details[f"peak_mem_{task}"]["noise"] for task in ("cls", "lm")},
    }
    result["details"] = details
    return result


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------

TARGETS = {"train_cls": ">= 1.15", "train_lm": ">= 1.15", "decode_greedy": ">= 1.2", "decode_beam4": ">= 1.0",
           "peak_mem": "<= 1.0", "train_cls_compiled": ">= 1.0", "train_lm_compiled": ">= 1.0",
           "train_cls_compiled_vs_eager": ">= 1.25", "train_lm_compiled_vs_eager": ">= 1.25",
           "decode_greedy_compiled": ">= 1.0", "decode_greedy_compiled_vs_eager": ">= 1.2"}
COMPILED_ROWS = (("_compiled", "compiled/compiled"), ("_compiled_vs_eager", "ours compiled/theirs eager"))


def table(results: dict) -> str:
    """Human-readable summary: one row per comparison, ratio with its pair IQR next to the noise floor."""
    rows = [("size", "metric", "ours", "theirs", "ours/theirs [IQR]", "noise: theirs/theirs [IQR]", "target")]
    for name, res in results["sizes"].items():
        d = res["details"]
        for key, label in (("train_cls", "train_cls tok/s"), ("train_lm", "train_lm tok/s")):
            rows.append(timing_row(name, label, d[key], TARGETS[key]))
            rows += _compiled_rows(name, label, d, key, key)
        for key in ("decode_greedy", "decode_beam4"):
            for b in DECODE_BATCHES:
                rows.append(timing_row(name, f"{key} b{b} tok/s", d[f"{key}_b{b}"], TARGETS[key]))
                rows += _compiled_rows(name, f"{key} b{b} tok/s", d, f"{key}_b{b}", key)
        for task in ("cls", "lm"):
            m = d[f"peak_mem_{task}"]
            ours, theirs = (f"{m[side]['total_bytes'] / 2**20:.1f} ({m[side]['step_peak_bytes'] / 2**20:.1f})"
                            for side in ("ours", "theirs"))
            rows.append((name, f"peak_mem {task} MiB (step)", ours, theirs, f"{m['ratio']:.3f}", f"{m['noise']:.3f}",
                         TARGETS["peak_mem"]))
        for mfu_key, suffix in (("mfu", ""), ("mfu_compiled", " compiled"), ("mfu_paired", " paired"),
                                ("mfu_compiled_paired", " compiled paired")):
            for key in res.get(mfu_key, {}):
                mfu = res[mfu_key][key]
                rows.append((name, f"mfu {key}{suffix}", f"{100 * mfu['ours']:.1f}%", f"{100 * mfu['theirs']:.1f}%",
                             f"{mfu['ours'] / mfu['theirs']:.3f}", "", ">= 75% (large)"))
    lines = columns(rows)
    lines.append(f"matmul peak (fp32, best square matmul): {results['matmul_peak_gflops']:.1f} GFLOP/s; "
                 f"{results['threads']} threads")
    return "\n".join(lines)


def _compiled_rows(name: str, label: str, details: dict, key: str, target_key: str) -> list[tuple]:
    """The --compile rows of one comparison (none without --compile), compile seconds in the label."""
    rows = []
    for suffix, what in COMPILED_ROWS:
        c = details.get(key + suffix)
        if c is not None:
            seconds = c["compile_s"]
            rows.append(timing_row(name, f"  {what} (compile {seconds['ours']:.0f} s / {seconds['theirs']:.0f} s)",
                                   c, TARGETS.get(target_key + suffix, "")))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the comparisons, print the table, optionally write JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.splitlines()[0])
    add_run_arguments(parser, SIZES, "small,large")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    parser.add_argument("--attention-dropout", type=float, default=DROPOUT,
                        help=f"dropout on the attention weights, both sides (default {DROPOUT}; the recipes use 0.0)")
    parser.add_argument("--compile", action="store_true",
                        help="also compare compiled models (torch.compile): training and greedy decoding")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend for --compile (default inductor; 'eager' checks the code paths fast)")
    args = parser.parse_args(argv)

    names = [name.strip() for name in args.sizes.split(",") if name.strip()]
    unknown = [name for name in names if name not in SIZES]
    if unknown or not names:
        parser.error(f"unknown size(s) {unknown}; choose from {sorted(SIZES)}")
    sizes = QUICK_SIZES if args.quick else SIZES
    protocol = protocol_from_args(args, QUICK_PROTOCOL if args.quick else Protocol())
    transformers.logging.set_verbosity_error()
    use_threads(args.threads)
    torch.manual_seed(0)

    log("measuring the fp32 matmul peak")
    peak_sizes = (256, 512) if args.quick else (1024, 2048)
    peak = matmul_peak_flops(protocol.peak_seconds, peak_sizes)
    results: dict = {
        "command": "python -m bench.speed " + " ".join(argv if argv is not None else sys.argv[1:]),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "dropout": {"hidden": DROPOUT, "attention": args.attention_dropout},
        "compile_backend": args.compile_backend if args.compile else None,
        "cpu_count": os.cpu_count(),
        "protocol": asdict(protocol),
        "sizes": {},
    }
    started = time.perf_counter()
    for name in names:
        results["sizes"][name] = bench_size(name, sizes[name], protocol, peak, args.attention_dropout,
                                            args.compile_backend if args.compile else None, peak_sizes)
    # The peak again at the end (the machine is shared): MFU uses the better of the two measurements.
    late_peak = matmul_peak_flops(protocol.peak_seconds, peak_sizes)
    if late_peak > peak:
        for res in results["sizes"].values():
            for sides in (*res["mfu"].values(), *res.get("mfu_compiled", {}).values()):
                for side in sides:
                    sides[side] *= peak / late_peak
        peak = late_peak
    results["matmul_peak_gflops"] = peak / 1e9
    results["seconds"] = time.perf_counter() - started

    print(table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
