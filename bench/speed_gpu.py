"""Speed of scratchformer next to transformers' GPT-2 and BERT on one NVIDIA GPU (bf16 autocast training, fp32 weights).

Usage: python -m bench.speed_gpu [--sizes large,gpu] [--json PATH] [--quick] [--pairs N] [--sample-seconds S]
                                 [--no-compile] [--compile-backend B]

A one-off companion of bench/speed.py (the CPU benchmark), meant for a short run on a lent H200. It reuses that
module's batches, fused AdamW and generate() settings, bench/models.py's models (identical dimensions, SDPA attention,
dropout 0.1, exact GELU) and bench/harness.py's paired protocol (ABBA ours/theirs, plus theirs/theirs for the noise
floor; median of per-pair ratios): read their docstrings for those. What differs here:

    device      cuda when available, else cpu (only with --quick: a CPU smoke run that takes every code path but
                torch.compile's, which --compile-backend eager covers cheaply); models and batches are moved to it
    training    forward + loss under torch.autocast("cuda", dtype=torch.bfloat16), backward and the fused AdamW
                step outside it, fp32 weights: what Trainer(bf16=True) does. No autocast on CPU.
    decoding    greedy generate(), fp32 weights, no autocast, batch 1 and 8; compiled: a static cache and
                transformers' compiled decoding step (CompileConfig defaults: inductor, CUDA graphs)
    timing      every timed callable ends with torch.cuda.synchronize()
    compiled    torch.compile (default inductor) on all three models of a comparison, ours/theirs compiled on both
                sides (no compiled-vs-eager pairs: the time is short); compile_s is each model's first call
    memory      per training comparison and side: torch.cuda.max_memory_allocated over one warm step, after
                reset_peak_memory_stats; the step's peak over what was allocated before it, plus the bytes of the
                weights, AdamW state and batch (on CPU: bench.harness's profiled step peak instead)
    MFU         tokens/s x bench.speed.train_flops_per_token / 989e12 FLOP/s, the H200's dense bf16 peak as its
                datasheet gives it (a spec, not measured here; ~790 TFLOP/s was measured on random 8192^3 bf16
                products on such a machine). On CPU the same nominal peak: the numbers only check the code path.
    loss path   ours' LM loss on CUDA must take the plain output layer + transformers' loss, not the chunked CPU
                pass (scratchformer.linear_cross_entropy.fused_loss_applies False): recorded from a real step

Sizes (bench.models.GPU_SIZES): "large" is bench.speed's; "gpu" has training/lm.py's "gpu" preset dimensions (vocab
16000, hidden 512, 6 layers, 8 heads, MLP 2048, 512 tokens, batch 64) with learned positions on both sides (the
preset trains rotary ones; GPT-2 has none). Phases run eager for every size first, then compiled, and the JSON is
rewritten after each comparison, so a run cut short by a time limit still leaves what it measured ("complete":
false); a part that fails (training or decoding of one size and phase) is recorded under the size's "errors" and the
others still run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import transformers

import scratchformer.linear_cross_entropy as loss_paths
from bench import harness, models, speed
from bench.harness import Protocol, log, synced
from bench.models import DROPOUT, GPU_SIZES, QUICK_SIZES, SIDES, Size
from bench.speed import DECODE_BATCHES

H200_BF16_PEAK_FLOPS = 989e12  # dense bf16 tensor-core peak of the H200 SXM (datasheet; not measured)

# A GPU step is steady, and the lease is short: fewer and shorter samples than bench.speed's CPU protocol.
GPU_PROTOCOL = Protocol(pairs=4, sample_seconds=0.25, warmup_seconds=0.25, peak_seconds=0.0)
TASKS = (("cls", "train_cls"), ("lm", "train_lm"))


# ----------------------------------------------------------------------------------------------------------------
# bench.speed's building blocks on a device
# ----------------------------------------------------------------------------------------------------------------


class Autocast:
    """A model whose forward (and loss, computed inside it) runs under bf16 autocast, as Trainer(bf16=True) runs it;
    speed.training_step calls it, so backward and the optimizer step stay outside the autocast region."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.model, self.device = model, device

    def train(self, mode: bool = True) -> Autocast:
        self.model.train(mode)
        return self

    def __call__(self, **batch):
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            return self.model(**batch)


def on_device(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in tensors.items()}


def build(side: str, task: str, size: Size, device: torch.device, compile_backend: str | None = None):
    """models.build_model on the device, compiled with `compile_backend` when given."""
    model = models.build_model(side, task, size).to(device)
    return torch.compile(model, backend=compile_backend) if compile_backend else model


def train_step(
    model, batch: dict[str, torch.Tensor], device: torch.device
) -> tuple[Callable[[], None], torch.optim.Optimizer]:
    """speed.training_step with the fused AdamW, bf16 autocast on CUDA, synchronized."""
    optimizer = speed.make_optimizer(model)
    forward = Autocast(model, device) if device.type == "cuda" else model
    return synced(speed.training_step(forward, batch, optimizer), device), optimizer


def step_memory(
    model, step: Callable[[], None], optimizer: torch.optim.Optimizer, batch: dict, device: torch.device
) -> dict:
    """Bytes of one warm training step (the AdamW state exists): its peak over what was allocated before it
    (torch.cuda.max_memory_allocated after reset_peak_memory_stats), and the weights + AdamW state + batch."""
    resident = harness.resident_bytes(model, optimizer, batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        max_allocated = torch.cuda.max_memory_allocated(device)
        step_peak = max_allocated - before
    else:
        step_peak, max_allocated = harness.profiled_peak_bytes(step), None
    # max_allocated counts every model alive on the device (three per comparison); step_peak is this step's own.
    return {"resident_bytes": resident, "step_peak_bytes": step_peak, "total_bytes": resident + step_peak,
            "max_allocated_bytes": max_allocated}


def loss_path(step: Callable[[], None]) -> dict:
    """Whether ours' LM training forward took the chunked CPU loss (linear_cross_entropy): one step with a spy on
    the check linear_cross_entropy.output_logits_and_loss makes (fused_loss_applies)."""
    original, answers = loss_paths.fused_loss_applies, []

    def spy(*args, **kwargs) -> bool:
        answers.append(bool(original(*args, **kwargs)))
        return answers[-1]

    loss_paths.fused_loss_applies = spy
    try:
        step()
    finally:
        loss_paths.fused_loss_applies = original
    return {"fused_loss_applies": any(answers), "checks": len(answers),
            "path": "chunked linear_cross_entropy (CPU)" if any(answers) else "lm_head + transformers loss"}


def flops_per_token(size: Size) -> dict:
    """speed.train_flops_per_token of each side and task (ours' classifier runs its last block for one token only)."""
    return {side: {task: speed.train_flops_per_token(size, task, pooled_last_block=side == "ours" and task == "cls")
                   for task, _ in TASKS} for side in ("ours", "theirs")}


# ----------------------------------------------------------------------------------------------------------------
# Comparisons
# ----------------------------------------------------------------------------------------------------------------


class Run:
    """Results of one run, rewritten to --json after every comparison."""

    def __init__(self, results: dict, path: Path | None):
        self.results, self.path = results, path

    def add(self, name: str, key: str, value: dict) -> None:
        self.results["sizes"][name]["comparisons"][key] = value
        self.write()

    def write(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.results, indent=2) + "\n")


def timed_comparison(fns: list[Callable[[], None]], work: float, protocol: Protocol, compiled: bool) -> dict:
    """harness.compare of ours / theirs / theirs again; compiled: each one's first call timed first (its compile)."""
    compile_s = harness.compile_seconds(fns) if compiled else None
    result = harness.compare(*fns, work=work, protocol=protocol)
    if compile_s is not None:
        result["compile_s"] = compile_s
    return result


def bench_training(run: Run, name: str, size: Size, device: torch.device, protocol: Protocol,
                   compile_backend: str | None) -> None:
    """train_cls and train_lm (with "_compiled" when compiling): tokens/s, MFU and step memory of each side."""
    suffix = "_compiled" if compile_backend else ""
    tokens_per_step = size.batch_size * size.seq_len
    for task, key in TASKS:
        log(f"[{name}] {key}{suffix}: {'compiling, then ' if compile_backend else ''}training tokens/s")
        batch = on_device(speed.training_batch(size, task), device)
        built = [build(side, task, size, device, compile_backend) for side in SIDES]
        steps, optimizers = zip(*(train_step(model, batch, device) for model in built))
        if task == "lm" and not compile_backend:
            path = loss_path(steps[0])
            run.results["sizes"][name]["loss_path"] = {"device": device.type, **path}
            flag = path["fused_loss_applies"]
            log(f"[{name}] loss path of ours on {device.type}: fused_loss_applies={flag} ({path['path']})"
                + (" -- UNEXPECTED on CUDA" if flag and device.type == "cuda" else ""))
        result = timed_comparison(list(steps), tokens_per_step, protocol, bool(compile_backend))
        flops = run.results["sizes"][name]["flops_per_token"]
        result["mfu"] = {side: result[f"{side}_tokens_per_s"] * flops[side][task] / H200_BF16_PEAK_FLOPS
                         for side in ("ours", "theirs")}
        result["memory"] = {side: step_memory(built[i], steps[i], optimizers[i], batch, device)
                            for i, side in enumerate(("ours", "theirs"))}
        result["params"] = {"ours": models.count_params(built[0]), "theirs": models.count_params(built[1])}
        run.add(name, key + suffix, result)
        del built, steps, optimizers, batch
        release(device, compiled=bool(compile_backend))


def bench_decoding(run: Run, name: str, size: Size, device: torch.device, protocol: Protocol,
                   compile_backend: str | None) -> None:
    """Greedy generate() tokens/s at batch 1 and 8, eager or (compile_backend) with a static cache, compiled."""
    suffix = "_compiled" if compile_backend else ""
    built = [build(side, "lm", size, device) for side in SIDES]  # generate() compiles its own decoding step
    for batch_size in DECODE_BATCHES:
        key = f"decode_greedy_b{batch_size}{suffix}"
        log(f"[{name}] {key}: generate() tokens/s" + (" (static cache, compiled)" if compile_backend else ""))
        prompt = on_device(speed.decoding_prompt(size, batch_size), device)
        runs = [synced(speed.decoding(model, prompt, size, 1, compile_backend), device) for model in built]
        run.add(name, key, timed_comparison(runs, batch_size * size.new_tokens, protocol, bool(compile_backend)))
    del built
    release(device, compiled=bool(compile_backend))


def release(device: torch.device, compiled: bool) -> None:
    """Drop the finished comparison's compiled code and cached device memory before the next one."""
    if compiled:
        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def table(results: dict) -> str:
    """One row per comparison: tokens/s of each side, ratio and noise (with IQRs), MFU, step memory, compile time."""
    header = ("size", "metric", "ours tok/s", "theirs tok/s", "ours/theirs [IQR]", "noise [IQR]", "MFU ours/theirs",
              "step peak MiB ours/theirs", "compile s ours/theirs")
    rows = [header]
    for name, res in results["sizes"].items():
        for key, c in res["comparisons"].items():
            row = list(harness.timing_row(name, key, c, "")[:6])
            mfu = c.get("mfu")
            row.append(f"{100 * mfu['ours']:.1f}% / {100 * mfu['theirs']:.1f}%" if mfu else "")
            memory = c.get("memory")
            row.append(" / ".join(f"{memory[side]['step_peak_bytes'] / 2**20:.0f}" for side in ("ours", "theirs"))
                       if memory else "")
            seconds = c.get("compile_s")
            row.append(f"{seconds['ours']:.1f} / {seconds['theirs']:.1f}" if seconds else "")
            rows.append(tuple(row))
    lines = harness.columns(rows)
    for name, res in results["sizes"].items():
        path = res.get("loss_path")
        if path:
            lines.append(f"[{name}] ours' LM loss on {path['device']}: fused_loss_applies={path['fused_loss_applies']}"
                         f" ({path['path']})")
    lines.append(f"device: {results['device']['name']}; MFU against {H200_BF16_PEAK_FLOPS / 1e12:.0f} TFLOP/s "
                 f"(H200 dense bf16 datasheet peak, not measured); torch {results['torch']}, "
                 f"transformers {results['transformers']}")
    return "\n".join(lines)


def device_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"type": "cpu", "name": platform.processor() or platform.machine()}
    props = torch.cuda.get_device_properties(device)
    return {"type": "cuda", "name": torch.cuda.get_device_name(device),
            "capability": list(torch.cuda.get_device_capability(device)),
            "multiprocessors": props.multi_processor_count, "memory_bytes": props.total_memory,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def main(argv: list[str] | None = None) -> int:
    """Run the comparisons, print the table, write JSON (after every comparison, and complete at the end)."""
    parser = argparse.ArgumentParser(prog="python -m bench.speed_gpu", description=__doc__.splitlines()[0])
    harness.add_run_arguments(parser, GPU_SIZES, "large,gpu")  # --quick runs on CPU when there is no GPU
    parser.add_argument("--no-compile", action="store_true", help="eager comparisons only")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend (default inductor; 'eager' checks the code paths fast on CPU)")
    args = parser.parse_args(argv)

    names = [name.strip() for name in args.sizes.split(",") if name.strip()]
    sizes = {**GPU_SIZES, **QUICK_SIZES} if args.quick else GPU_SIZES
    unknown = [name for name in names if name not in sizes]
    if unknown or not names:
        parser.error(f"unknown size(s) {unknown}; choose from {sorted(sizes)}")
    if args.quick:  # speed's tiny models for its sizes; "gpu" has no tiny twin: the large one stands in
        sizes = {name: QUICK_SIZES.get(name, QUICK_SIZES["large"]) for name in names}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.quick:
        parser.error("no CUDA device: only --quick runs on CPU")
    protocol = harness.protocol_from_args(args, harness.QUICK_PROTOCOL if args.quick else GPU_PROTOCOL)
    compile_backend = None if args.no_compile else args.compile_backend

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    limits = torch._dynamo.config
    recompile_limit = getattr(limits, "recompile_limit", None)
    if recompile_limit is not None:  # the same forward() serves several models, sizes and modes
        limits.recompile_limit = max(recompile_limit, 64)
    torch.manual_seed(0)
    results: dict = {
        "command": "python -m bench.speed_gpu " + " ".join(argv if argv is not None else sys.argv[1:]),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_info(device),
        "autocast": "bf16" if device.type == "cuda" else None,
        "peak_flops": H200_BF16_PEAK_FLOPS,
        "peak_flops_source": "H200 SXM dense bf16 datasheet value, not measured",
        "dropout": {"hidden": DROPOUT, "attention": DROPOUT},
        "compile_backend": compile_backend,
        "protocol": asdict(protocol),
        "complete": False,
        "sizes": {name: {"dims": asdict(sizes[name]), "comparisons": {},
                         "flops_per_token": flops_per_token(sizes[name])} for name in names},
    }
    run = Run(results, args.json)
    log(f"device {results['device']['name']}; torch {torch.__version__}, transformers {transformers.__version__}")
    started = time.perf_counter()
    try:
        for backend in (None, compile_backend) if compile_backend else (None,):
            for name in names:
                for part, bench in (("training", bench_training), ("decoding", bench_decoding)):
                    try:
                        bench(run, name, sizes[name], device, protocol, backend)
                    except Exception:  # a one-off run: record the failure, go on with the other comparisons
                        where = f"{part}{'_compiled' if backend else ''}"
                        log(f"[{name}] {where} FAILED:\n{traceback.format_exc()}")
                        results["sizes"][name].setdefault("errors", {})[where] = traceback.format_exc()[-4000:]
                        run.write()
                        release(device, compiled=bool(backend))
    finally:
        transformers.logging.set_verbosity(verbosity)
        if recompile_limit is not None:
            limits.recompile_limit = recompile_limit
        results["seconds"] = time.perf_counter() - started
        run.write()
    errors = [f"{name}: {where}" for name, res in results["sizes"].items() for where in res.get("errors", {})]
    results["complete"] = not errors
    run.write()
    print(table(results))
    if errors:
        print("FAILED (see the log and the JSON's errors): " + ", ".join(errors))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
