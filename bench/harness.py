"""The one timer and measuring protocol of every speed run and micro-benchmark in bench/ (nothing here runs alone).

    timing      timed(fn, calls, warmup_calls): seconds of `calls` calls, after untimed warm-up calls; every figure in
                bench/ comes from it. first_call_seconds (a compiled model's first call: its compile time),
                seconds_per_call (a micro-benchmark's mean over a number of calls or a stretch of seconds), synced (a
                callable that waits for its CUDA kernels, so the timer sees the work, not its launch)
    threads     use_threads: torch.set_num_threads only to change the count (re-setting the same count slows CPU
                SDPA; bench/LOG.md, "Attention on CPU")
    protocol    Protocol (pairs, sample length, warm-up, matmul-peak seconds); warm_up_and_calibrate (first call, then
                warm-up, then the calls per sample that make the fastest callable work sample_seconds); abba_ratios
                (pairs alternating AB, BA, AB, ...: per-pair throughput ratios); quartiles; compare (ours / theirs as
                the median of per-pair ratios, and theirs / theirs again, the same protocol on two identically seeded
                instances of theirs: the noise floor); compare_compiled (the same for compiled models, with the first
                calls' compile time)
    MFU         matmul_peak_flops (best fp32 FLOP/s of large square matmuls), paired_mfu (each model sample next to
                a peak sample of the same length, ABBA; median of the per-pair ratios)
    memory      profiled_peak_bytes (torch.profiler's allocation events during one call: the running sum's peak),
                resident_bytes (weights, buffers, optimizer state, batch and the tensors our loss keeps between
                steps), tensor_bytes
    report      log (progress on stderr with seconds since start), columns (an aligned text table), timing_row,
                add_run_arguments / protocol_from_args (the options of every paired speed run)

The paired protocol, in words (the project's rule for paired timings): after warm-up, ours and theirs run back to
back in ABBA order (pair i runs AB when i is even, BA when odd), each sample is at least sample_seconds of work (the
same number of calls for both), and the reported ratio is the median of the per-pair throughput ratios. The same
protocol run on theirs against a second, identically seeded instance of theirs gives the noise floor printed next
to each ratio.

Peak memory: torch.profiler(profile_memory=True) records every torch CPU allocation and free during one call (a warm
training step: the optimizer state already exists); the running sum of those events gives the step's peak on top of
what was alive before it. Adding resident_bytes gives the peak of the whole training state. This is deterministic,
runs in-process, and counts exactly the tensors the model code causes (not allocator caching or Python objects),
which tracemalloc cannot see and RSS blurs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from scratchformer.linear_cross_entropy import kept_buffers

COMPARED = ("ours", "theirs", "theirs_again")  # the three callables of a paired comparison


@dataclass(frozen=True)
class Protocol:
    """How long and how often to measure."""

    pairs: int = 8  # ABBA pairs per comparison (and per self-comparison)
    sample_seconds: float = 1.0  # minimum work per sample
    warmup_seconds: float = 1.0  # per callable, before calibration
    peak_seconds: float = 3.0  # matmul-peak measurement


QUICK_PROTOCOL = Protocol(pairs=2, sample_seconds=0.02, warmup_seconds=0.0, peak_seconds=0.2)


# ----------------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------------


def use_threads(threads: int | None) -> None:
    """Run torch's CPU ops on `threads` threads (None: leave the default). torch.set_num_threads is called only to
    change the count: calling it with the count torch already uses is not a no-op here, it leaves CPU SDPA's flash
    kernel running at its one-thread speed (measured in bench/LOG.md, "Attention on CPU")."""
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)


def timed(fn: Callable[[], None], calls: int, warmup_calls: int = 0) -> float:
    """Seconds taken by `calls` calls of fn, after `warmup_calls` untimed ones."""
    for _ in range(warmup_calls):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - start


def first_call_seconds(fn: Callable[[], None]) -> float:
    """Seconds of fn's first call: for a compiled model, tracing and code generation (torch.compile is lazy)."""
    return timed(fn, 1)


def compile_seconds(fns: Iterable[Callable[[], None]]) -> dict[str, float]:
    """first_call_seconds of ours, theirs and theirs again, in that order (timed before any warm-up)."""
    return dict(zip(COMPARED, (first_call_seconds(fn) for fn in fns)))


def seconds_per_call(
    fn: Callable[[], None], calls: int | None = None, seconds: float | None = None, warmup_calls: int = 3
) -> float:
    """Mean seconds per call of fn after `warmup_calls` untimed calls: over `calls` calls, or (seconds) over the calls
    that fit in about that many seconds (the clock read after each call)."""
    for _ in range(warmup_calls):
        fn()
    if calls is not None:
        return timed(fn, calls) / calls
    if seconds is None:
        raise ValueError("seconds_per_call needs calls or seconds")
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def synced(fn: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """fn, then (on CUDA) a wait for its kernels: the timers then see the work, not its launch."""
    if device.type != "cuda":
        return fn

    def run() -> None:
        fn()
        torch.cuda.synchronize(device)

    return run


# ----------------------------------------------------------------------------------------------------------------
# The paired protocol
# ----------------------------------------------------------------------------------------------------------------


def warm_up_and_calibrate(fns: list[Callable[[], None]], protocol: Protocol) -> int:
    """Warm every callable up, then pick the calls per sample so that even the fastest one works sample_seconds."""
    fastest = math.inf
    for fn in fns:
        fn()  # first call: lazy initialisation, optimizer state, allocator growth
        deadline = time.perf_counter() + protocol.warmup_seconds
        while time.perf_counter() < deadline:
            fn()
        fastest = min(fastest, min(timed(fn, 1) for _ in range(2)))
    return max(1, math.ceil(protocol.sample_seconds / fastest))


def abba_ratios(fn_a: Callable[[], None], fn_b: Callable[[], None], calls: int, pairs: int, warmup_calls: int = 0):
    """Per-pair throughput ratios a/b (same work, so time_b / time_a), pairs alternating AB, BA, AB, ...; each sample
    is `calls` timed calls after `warmup_calls` untimed ones. Returns (ratios, seconds of a, seconds of b)."""
    ratios, seconds_a, seconds_b = [], [], []
    for i in range(pairs):
        if i % 2 == 0:
            a, b = timed(fn_a, calls, warmup_calls), timed(fn_b, calls, warmup_calls)
        else:
            b, a = timed(fn_b, calls, warmup_calls), timed(fn_a, calls, warmup_calls)
        ratios.append(b / a)
        seconds_a.append(a)
        seconds_b.append(b)
    return ratios, seconds_a, seconds_b


def quartiles(values: list[float]) -> tuple[float, float]:
    """First and third quartile (the values themselves when there are fewer than 4)."""
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def compare(
    ours: Callable[[], None],
    theirs: Callable[[], None],
    theirs_again: Callable[[], None],
    work: float,
    protocol: Protocol,
) -> dict:
    """Paired ours/theirs throughput ratio and the theirs/theirs noise floor; `work` = tokens per call."""
    calls = warm_up_and_calibrate([ours, theirs, theirs_again], protocol)
    ratios, s_ours, s_theirs = abba_ratios(ours, theirs, calls, protocol.pairs)
    self_ratios, _, _ = abba_ratios(theirs, theirs_again, calls, protocol.pairs)
    return {
        "ratio": statistics.median(ratios),
        "ratio_iqr": quartiles(ratios),
        "noise": statistics.median(self_ratios),
        "noise_iqr": quartiles(self_ratios),
        "ours_tokens_per_s": statistics.median(work * calls / s for s in s_ours),
        "theirs_tokens_per_s": statistics.median(work * calls / s for s in s_theirs),
        "calls_per_sample": calls,
        "pair_ratios": ratios,
        "self_pair_ratios": self_ratios,
    }


def compare_compiled(
    details: dict, key: str, eager: list[Callable[[], None]], compiled: list[Callable[[], None]], work: float,
    protocol: Protocol,
) -> None:
    """details[key + "_compiled"]: ours compiled / theirs compiled; details[key + "_compiled_vs_eager"]: ours compiled /
    theirs eager; each with its compile time (the first call of each compiled model, timed before any warm-up)."""
    seconds = compile_seconds(compiled)
    details[f"{key}_compiled"] = {**compare(*compiled, work=work, protocol=protocol), "compile_s": seconds}
    details[f"{key}_compiled_vs_eager"] = {
        **compare(compiled[0], eager[1], eager[2], work=work, protocol=protocol),
        "compile_s": {"ours": seconds["ours"], "theirs": 0.0, "theirs_again": 0.0},
    }


# ----------------------------------------------------------------------------------------------------------------
# MFU
# ----------------------------------------------------------------------------------------------------------------


def matmul_peak_flops(seconds: float, sizes: tuple[int, ...] = (1024, 2048)) -> float:
    """Best fp32 FLOP/s of large square matmuls (2 n^3 FLOPs each) on this machine, best of several runs."""
    best = 0.0
    for n in sizes:
        a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.mm(a, b, out=out)
        deadline = time.perf_counter() + seconds / len(sizes)
        while True:
            best = max(best, 2 * n**3 / timed(lambda: torch.mm(a, b, out=out), 1))
            if time.perf_counter() > deadline:
                break
    return best


def paired_mfu(step: Callable[[], None], flops_per_call: float, calls: int, protocol: Protocol,
               peak_sizes: tuple[int, ...] = (1024, 2048)) -> dict:
    """MFU in pairs: each sample of `calls` calls next to a matmul-peak sample of the same length, in ABBA order; the
    median of the per-pair (model FLOP/s) / (peak FLOP/s). The machine's drift during a run then cancels, as it does
    in the ours/theirs ratios, where a peak measured once at the start or the end does not."""
    ratios = []
    for i in range(protocol.pairs):
        if i % 2 == 0:
            model_flops = flops_per_call * calls / timed(step, calls)
            peak = matmul_peak_flops(protocol.sample_seconds, peak_sizes)
        else:
            peak = matmul_peak_flops(protocol.sample_seconds, peak_sizes)
            model_flops = flops_per_call * calls / timed(step, calls)
        ratios.append(model_flops / peak)
    return {"mfu": statistics.median(ratios), "mfu_iqr": quartiles(ratios), "pair_ratios": ratios}


# ----------------------------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------------------------


def tensor_bytes(tensors) -> int:
    """Bytes held by distinct tensors."""
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def resident_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> int:
    """Bytes alive across training steps: weights, buffers, AdamW state, the batch, and the logits and gradient our
    loss keeps for the next step (linear_cross_entropy.kept_buffers), which a warm step's profile no longer sees
    allocated."""
    state = optimizer.state.values()
    kept = [t for p in model.parameters() for t in kept_buffers(p).values()]
    return tensor_bytes([*model.parameters(), *model.buffers(), *(t for s in state for t in s.values()),
                         *batch.values(), *kept])


def profiled_peak_bytes(fn: Callable[[], None]) -> int:
    """Peak of live torch CPU allocations made during one call of fn (running sum of allocation/free events)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with quiet_stderr(), torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:  # frees of blocks allocated before the step are not reported, so live starts at 0
        live += event.nbytes()
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def quiet_stderr():
    """Silence the profiler's start/stop lines, which its C++ side writes straight to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


_START = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout), with the seconds since start."""
    print(f"[{time.perf_counter() - _START:7.1f} s] {message}", file=sys.stderr, flush=True)


def columns(rows: list[tuple]) -> list[str]:
    """Rows of cells as left-aligned text columns, the first row a header underlined with dashes."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def timing_row(name: str, label: str, c: dict, target: str) -> tuple:
    """One compare() result as table cells: size, label, both sides' tokens/s, ratio [IQR], noise [IQR], target."""
    return (
        name,
        label,
        f"{c['ours_tokens_per_s']:.0f}",
        f"{c['theirs_tokens_per_s']:.0f}",
        f"{c['ratio']:.3f} [{c['ratio_iqr'][0]:.3f}-{c['ratio_iqr'][1]:.3f}]",
        f"{c['noise']:.3f} [{c['noise_iqr'][0]:.3f}-{c['noise_iqr'][1]:.3f}]",
        target,
    )


def add_run_arguments(parser: argparse.ArgumentParser, sizes: dict, default_sizes: str) -> None:
    """The options bench.speed and bench.speed_gpu share: the JSON output, the sizes, smoke mode, the protocol."""
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    parser.add_argument("--sizes", default=default_sizes, help="comma-separated subset of: " + ",".join(sizes))
    parser.add_argument("--quick", action="store_true", help="tiny models, short samples (smoke test)")
    parser.add_argument("--pairs", type=int, default=None, help="ABBA pairs per comparison")
    parser.add_argument("--sample-seconds", type=float, default=None, help="minimum seconds of work per sample")


def protocol_from_args(args: argparse.Namespace, base: Protocol) -> Protocol:
    """`base` with the pairs and sample length that --pairs and --sample-seconds ask for, where given."""
    return replace(base, pairs=args.pairs or base.pairs,
                   sample_seconds=args.sample_seconds if args.sample_seconds is not None else base.sample_seconds)
