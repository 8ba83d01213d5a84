"""Perplexity of scratchformer's causal LM next to transformers' GPT2LMHeadModel for the same wall-clock budget.

Usage: python -m bench.lm_budget [--preset cpu-small] [--budget-s 480] [--json PATH] [--output-dir DIR]
                                 [--max-train-samples N] [--set KEY=VALUE ...]

Both models get the same IMDb train blocks, the same tokenizer (trained on the train split by the LM recipe's own
code), the same dimensions (hidden size, layers, heads, MLP width, vocabulary, block length), dropout, batch size,
learning rate, linear schedule and AdamW. What differs is the architecture each side chooses (ours: the preset's
positions, pre-norm; GPT-2: learned positions, pre-norm) and its speed.

Budget: both models first take training steps on real batches back to back (ABBA) to measure GPT-2's seconds per
step and the speed ratio; GPT-2 then trains for as many steps as fit in --budget-s, ours for that many times the
speed ratio, each with a complete warm-up + decay schedule (a faster model gets more steps). Test perplexity is measured on the same held-out test blocks (the LM preset's
test reviews) for both. Prints a table and, with --json, writes {"ours": {...}, "theirs": {...}, "ratio": ...}
where ratio = our perplexity / GPT-2's (lower is better; the issue's target is <= 0.95).
"""

import math
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import DataCollatorForLanguageModeling, GPT2Config, GPT2LMHeadModel, Trainer, set_seed

from scratchformer import ScratchformerForCausalLM
from training import common
from training.lm import PRESETS, prepare_data

CALIBRATION_PAIRS = 10  # back-to-back (ours, theirs) steps, alternating which goes first


def gpt2_like(tokenizer, preset: common.Preset) -> GPT2Config:
    """GPT-2 with the preset's dimensions and dropout; exact GELU as ours uses."""
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=preset.max_length,
        n_embd=preset.hidden_size,
        n_layer=preset.num_hidden_layers,
        n_head=preset.num_attention_heads,
        n_inner=preset.intermediate_size,
        activation_function="gelu",
        resid_pdrop=preset.dropout,
        embd_pdrop=preset.dropout,
        attn_pdrop=preset.attention_dropout,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def build(side: str, tokenizer, preset: common.Preset, seed: int):
    """A freshly initialised LM: "ours" (the LM recipe's model) or "theirs" (GPT-2), SDPA attention."""
    set_seed(seed)
    if side == "ours":
        model = ScratchformerForCausalLM(common.model_config(tokenizer, preset, is_decoder=True))
    else:
        model = GPT2LMHeadModel(gpt2_like(tokenizer, preset))
    model.set_attn_implementation("sdpa")
    return model


def calibrate(models: dict, batches: list[dict]) -> tuple[float, float]:
    """(GPT-2's median seconds per training step, median of per-pair speed ratios ours/theirs), timed in ABBA order.

    The ratio of back-to-back pairs, not two separate medians, sets the budgets: load from other processes shifts
    both sides of a pair alike, so it cancels in the ratio (bench/speed.py uses the same protocol)."""
    optimizers = {side: torch.optim.AdamW(m.parameters(), lr=1e-4) for side, m in models.items()}
    for side in models:  # warm-up, untimed
        step(models[side], optimizers[side], batches[0])
    theirs_times, ratios = [], []
    for index, batch in enumerate(batches):
        order = ("ours", "theirs") if index % 2 == 0 else ("theirs", "ours")
        seconds = {}
        for side in order:
            start = time.perf_counter()
            step(models[side], optimizers[side], batch)
            seconds[side] = time.perf_counter() - start
        theirs_times.append(seconds["theirs"])
        ratios.append(seconds["theirs"] / seconds["ours"])
    return statistics.median(theirs_times), statistics.median(ratios)


def step(model, optimizer, batch: dict) -> None:
    """One training step."""
    model.train()
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_and_evaluate(side: str, args, preset, tokenizer, packed, max_steps: int, work) -> dict:
    """Train one side for max_steps with the recipe's Trainer settings; its test perplexity and wall times."""
    model = build(side, tokenizer, preset, args.seed)
    trainer = Trainer(
        model=model,
        args=common.training_arguments(work / side, preset, args.seed, preset.epochs, max_steps=max_steps,
                                       save_strategy="no", disable_tqdm=True),
        train_dataset=packed["train"],
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
    )
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    test_loss = trainer.evaluate(packed["test"], metric_key_prefix="test")["test_loss"]
    return {
        "model": type(model).__name__,
        "num_parameters": model.num_parameters(),
        "steps": max_steps,
        "train_s": round(train_s, 1),
        "tokens_per_s": round(max_steps * preset.batch_size * preset.max_length / train_s, 1),
        "test_loss": test_loss,
        "perplexity": math.exp(test_loss),
    }


def add_arguments(parser) -> None:
    parser.add_argument("--budget-s", type=float, default=480.0, help="training seconds per model")
    parser.add_argument("--json", default=None, help="also write the results here")


def main(argv=None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], PRESETS, "runs/lm-budget", argv, add_arguments)
    preset = args.preset_values
    work = common.prepare_output_dir(args) / common.WORK
    data, tokenizer, packed = prepare_data(args, preset, work)

    collate = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    rows = packed["train"].select(range(min(len(packed["train"]), 2 * preset.batch_size)))
    batches = [collate([rows[i] for i in range(start, min(start + preset.batch_size, len(rows)))])
               for start in range(0, len(rows), preset.batch_size)]
    batches = (batches * CALIBRATION_PAIRS)[:CALIBRATION_PAIRS]
    theirs_s, speed_ratio = calibrate(
        {side: build(side, tokenizer, preset, args.seed) for side in ("ours", "theirs")}, batches
    )
    steps = {"theirs": max(1, int(args.budget_s / theirs_s))}
    steps["ours"] = max(1, round(steps["theirs"] * speed_ratio))
    print(f"GPT-2: {theirs_s:.3f} s per step; speed ours/GPT-2 {speed_ratio:.3f}; steps in {args.budget_s:.0f} s: "
          f"{steps}", flush=True)

    results = {side: train_and_evaluate(side, args, preset, tokenizer, packed, steps[side], work)
               for side in ("ours", "theirs")}
    report_speed = {"calibrated_theirs_s_per_step": round(theirs_s, 4), "calibrated_speed_ratio": round(speed_ratio, 4)}
    report = {
        "preset": args.preset,
        "preset_values": asdict(preset),
        "budget_s": args.budget_s,
        "train_blocks": len(packed["train"]),
        "test_tokens": len(packed["test"]) * preset.max_length,
        "hardware": common.hardware(),
        **report_speed,
        **results,
        "ratio": results["ours"]["perplexity"] / results["theirs"]["perplexity"],
    }
    print(f"{'':8}{'model':26}{'steps':>7}{'train s':>9}{'tokens/s':>10}{'perplexity':>12}")
    for side in ("ours", "theirs"):
        r = results[side]
        print(f"{side:8}{r['model']:26}{r['steps']:>7}{r['train_s']:>9.0f}{r['tokens_per_s']:>10.0f}{r['perplexity']:>12.2f}")
    print(f"perplexity ratio ours / GPT-2: {report['ratio']:.3f} (target <= 0.95)")
    if args.json:
        common.write_json(Path(args.json), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
