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

Protocol (the project's rule for paired timings): after warm-up, ours and theirs run back to back in ABBA order
(pair i runs AB when i is even, BA when odd), each sample is at least --sample-seconds of work (the same number of
calls for both), and the reported ratio is the median of the per-pair throughput ratios. The same protocol run on
theirs against a second, identically seeded instance of theirs gives the noise floor printed next to each ratio.

Model FLOPs per trained token (PaLM appendix B style, recorded in bench/NOTES.md):
    6 * N + 12 * L * d * T
N = non-embedding matmul weights (per layer 4*d^2 for Q, K, V, O plus 2*d*f for the MLP) plus the output layer
(d*V LM head, tied or not, or d*num_labels classifier); the second term is QK^T and AV (2 * 2*T*d FLOPs per token
and layer, x3 for forward + backward) over the full T x T score matrix, also for causal models. Embedding
lookups, LayerNorm, softmax, GELU, dropout, BERT's pooler and the optimizer are not counted. The same count is
used for ours and theirs, so the MFU ratio equals the training-throughput ratio.

Peak memory: torch.profiler(profile_memory=True) records every torch CPU allocation and free during one warm
training step (the AdamW state already exists); the running sum of those events gives the step's peak on top of
what was alive before it. Adding the bytes of the weights, the AdamW state, the batch and the logits and gradient
tensors our loss keeps between steps gives the peak of the whole training state. This is deterministic, runs in-process,
and counts exactly the tensors the model code causes (not allocator caching or Python objects), which tracemalloc
cannot see and RSS blurs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification, CompileConfig, GPT2Config, GPT2LMHeadModel

from scratchformer import ScratchformerConfig, ScratchformerForCausalLM, ScratchformerForSequenceClassification
from scratchformer.linear_cross_entropy import kept_buffers

DROPOUT = 0.1  # embeddings, sublayer outputs and (unless --attention-dropout) attention weights
NUM_LABELS = 2
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
FIRST_ORDINARY_ID = 3  # random batches avoid the special ids


@dataclass(frozen=True)
class Size:
    """Dimensions of one benchmarked model pair and its workloads."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    seq_len: int  # training sequence length, also max_position_embeddings
    batch_size: int  # training batch
    prompt_len: int  # decoding prompt
    new_tokens: int  # decoding max_new_tokens = min_new_tokens


SIZES = {
    # The cpu-small preset of training/ (hidden 128, 2 layers, 4 heads, MLP 512, vocab 16000, 256 tokens).
    "small": Size(16000, 128, 2, 4, 512, 256, 16, prompt_len=32, new_tokens=64),
    "large": Size(16000, 256, 4, 4, 1024, 256, 8, prompt_len=32, new_tokens=64),
}
QUICK_SIZES = {  # --quick: same keys and code paths, tiny models
    "small": Size(500, 32, 1, 2, 64, 32, 4, prompt_len=8, new_tokens=4),
    "large": Size(500, 64, 2, 4, 128, 32, 4, prompt_len=8, new_tokens=4),
}
DECODE_BATCHES = (1, 8)
SIDES = ("ours", "theirs", "theirs")  # the third model is theirs again, for the noise floor


@dataclass(frozen=True)
class Protocol:
    """How long and how often to measure."""

    pairs: int = 8  # ABBA pairs per comparison (and per self-comparison)
    sample_seconds: float = 1.0  # minimum work per sample
    warmup_seconds: float = 1.0  # per callable, before calibration
    peak_seconds: float = 3.0  # matmul-peak measurement


QUICK_PROTOCOL = Protocol(pairs=2, sample_seconds=0.02, warmup_seconds=0.0, peak_seconds=0.2)


# ----------------------------------------------------------------------------------------------------------------
# Models at identical sizes
# ----------------------------------------------------------------------------------------------------------------


def scratchformer_config(size: Size, task: str, attention_dropout: float = DROPOUT) -> ScratchformerConfig:
    """Ours: post-norm + first-token pooling for classification (like BERT), pre-norm decoder for LM (like GPT-2)."""
    return ScratchformerConfig(
        vocab_size=size.vocab_size,
        hidden_size=size.hidden_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        intermediate_size=size.intermediate_size,
        hidden_act="gelu",
        max_position_embeddings=size.seq_len,
        position_embedding_type="learned",
        hidden_dropout_prob=DROPOUT,
        attention_probs_dropout_prob=attention_dropout,
        norm_placement="post" if task == "cls" else "pre",
        classifier_pooling="cls",
        tie_word_embeddings=True,
        num_labels=NUM_LABELS,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )


def gpt2_config(size: Size, attention_dropout: float = DROPOUT) -> GPT2Config:
    """GPT-2 at the same size; exact GELU instead of GPT-2's default tanh approximation, as ours uses."""
    return GPT2Config(
        vocab_size=size.vocab_size,
        n_embd=size.hidden_size,
        n_layer=size.num_layers,
        n_head=size.num_heads,
        n_inner=size.intermediate_size,
        n_positions=size.seq_len,
        activation_function="gelu",
        resid_pdrop=DROPOUT,
        embd_pdrop=DROPOUT,
        attn_pdrop=attention_dropout,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )


def bert_config(size: Size, attention_dropout: float = DROPOUT) -> BertConfig:
    """BERT at the same size (its token-type embeddings, embedding LayerNorm and pooler stay: they are its design)."""
    return BertConfig(
        vocab_size=size.vocab_size,
        hidden_size=size.hidden_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        intermediate_size=size.intermediate_size,
        hidden_act="gelu",
        max_position_embeddings=size.seq_len,
        hidden_dropout_prob=DROPOUT,
        attention_probs_dropout_prob=attention_dropout,
        num_labels=NUM_LABELS,
        pad_token_id=PAD_ID,
    )


def build_model(
    side: str, task: str, size: Size, seed: int = 0, attention_dropout: float = DROPOUT
) -> torch.nn.Module:
    """`side` is "ours" or "theirs"; `task` is "cls" or "lm". fp32, SDPA attention, identically seeded."""
    torch.manual_seed(seed)
    if side == "ours":
        cls = ScratchformerForSequenceClassification if task == "cls" else ScratchformerForCausalLM
        config = scratchformer_config(size, task, attention_dropout)
    elif task == "cls":
        cls, config = BertForSequenceClassification, bert_config(size, attention_dropout)
    else:
        cls, config = GPT2LMHeadModel, gpt2_config(size, attention_dropout)
    config._attn_implementation = "sdpa"
    model = cls(config).float()
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"{cls.__name__} did not take the sdpa attention backend")
    if task == "lm":  # generation: exactly new_tokens tokens, no early stop
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = PAD_ID
    return model


def count_params(model: torch.nn.Module) -> int:
    """Distinct parameters (tied weights once)."""
    return sum(p.numel() for p in model.parameters())


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
# Measurement
# ----------------------------------------------------------------------------------------------------------------


def use_threads(threads: int | None) -> None:
    """Run torch's CPU ops on `threads` threads (None: leave the default). torch.set_num_threads is called only to
    change the count: calling it with the count torch already uses is not a no-op here, it leaves CPU SDPA's flash
    kernel running at its one-thread speed (measured in NOTES.md, "Attention on CPU")."""
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)


def first_call_seconds(fn: Callable[[], None]) -> float:
    """Seconds of fn's first call: for a compiled model, tracing and code generation (torch.compile is lazy)."""
    return timed(fn, 1)


def timed(fn: Callable[[], None], calls: int) -> float:
    """Seconds taken by `calls` calls of fn."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - start


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


def abba_ratios(fn_a: Callable[[], None], fn_b: Callable[[], None], calls: int, pairs: int):
    """Per-pair throughput ratios a/b (same work, so time_b / time_a), pairs alternating AB, BA, AB, ..."""
    ratios, seconds_a, seconds_b = [], [], []
    for i in range(pairs):
        if i % 2 == 0:
            a, b = timed(fn_a, calls), timed(fn_b, calls)
        else:
            b, a = timed(fn_b, calls), timed(fn_a, calls)
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


def matmul_peak_flops(seconds: float, sizes: tuple[int, ...] = (1024, 2048)) -> float:
    """Best fp32 FLOP/s of large square matmuls (2 n^3 FLOPs each) on this machine, best of several runs."""
    best = 0.0
    for n in sizes:
        a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.mm(a, b, out=out)
        deadline = time.perf_counter() + seconds / len(sizes)
        while True:
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            elapsed = time.perf_counter() - start
            best = max(best, 2 * n**3 / elapsed)
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


def tensor_bytes(tensors) -> int:
    """Bytes held by distinct tensors."""
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


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


def resident_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> int:
    """Bytes alive across training steps: weights, buffers, AdamW state, the batch, and the logits and gradient our
    loss keeps for the next step (linear_cross_entropy.kept_buffers), which a warm step's profile no longer sees
    allocated."""
    state = optimizer.state.values()
    kept = [t for p in model.parameters() for t in kept_buffers(p).values()]
    return tensor_bytes([*model.parameters(), *model.buffers(), *(t for s in state for t in s.values()),
                         *batch.values(), *kept])


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


_START = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout), with the seconds since start."""
    print(f"[{time.perf_counter() - _START:7.1f} s] {message}", file=sys.stderr, flush=True)


def compare_compiled(
    details: dict, key: str, eager: list[Callable[[], None]], compiled: list[Callable[[], None]], work: float,
    protocol: Protocol,
) -> None:
    """details[key + "_compiled"]: ours compiled / theirs compiled; details[key + "_compiled_vs_eager"]: ours compiled /
    theirs eager; each with its compile time (the first call of each compiled model, timed before any warm-up)."""
    compile_seconds = dict(zip(("ours", "theirs", "theirs_again"), (first_call_seconds(fn) for fn in compiled)))
    details[f"{key}_compiled"] = {**compare(*compiled, work=work, protocol=protocol), "compile_s": compile_seconds}
    details[f"{key}_compiled_vs_eager"] = {
        **compare(compiled[0], eager[1], eager[2], work=work, protocol=protocol),
        "compile_s": {"ours": compile_seconds["ours"], "theirs": 0.0, "theirs_again": 0.0},
    }


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
            rows.append(_timing_row(name, label, d[key], TARGETS[key]))
            rows += _compiled_rows(name, label, d, key, key)
        for key in ("decode_greedy", "decode_beam4"):
            for b in DECODE_BATCHES:
                rows.append(_timing_row(name, f"{key} b{b} tok/s", d[f"{key}_b{b}"], TARGETS[key]))
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
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
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
            rows.append(_timing_row(name, f"  {what} (compile {seconds['ours']:.0f} s / {seconds['theirs']:.0f} s)",
                                    c, TARGETS.get(target_key + suffix, "")))
    return rows


def _timing_row(name: str, label: str, c: dict, target: str) -> tuple:
    return (
        name,
        label,
        f"{c['ours_tokens_per_s']:.0f}",
        f"{c['theirs_tokens_per_s']:.0f}",
        f"{c['ratio']:.3f} [{c['ratio_iqr'][0]:.3f}-{c['ratio_iqr'][1]:.3f}]",
        f"{c['noise']:.3f} [{c['noise_iqr'][0]:.3f}-{c['noise_iqr'][1]:.3f}]",
        target,
    )


def add_run_arguments(parser: argparse.ArgumentParser, sizes: dict[str, Size], default_sizes: str) -> None:
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
