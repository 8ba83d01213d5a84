"""Our encoder-decoder next to transformers' BartForConditionalGeneration at identical dims, on the number-words task.

Usage: python -m bench.translate [--json PATH] [--quick] [--pairs N] [--threads N] [--budget-s S] [--test N]
                                 [--compile [--compile-backend B]]

    train      training tokens/s (forward + backward + fused AdamW step) on the same TRAIN_BATCHES real, randomly
               drawn batches of number pairs (one call = one step on each), source + target tokens (padding
               excluded), paired ABBA protocol of bench.harness (median of per-pair ratios, theirs-vs-theirs noise
               floor)
    train_compiled, train_compiled_vs_eager
               with --compile: the same steps with both models compiled (torch.compile, inductor), and ours compiled
               against BART eager, each with its first call's compile time (bench.harness.compare_compiled)
    beam4      4-beam generate() tokens/s on the same batch of test sources, exactly --new-tokens new tokens each
    accuracy   with --budget-s S: both models train for S seconds of wall clock each (same data, tokenizer, batches,
               optimizer), then greedy and 4-beam exact match on --test held-out test numbers; once per learning
               rate of --learning-rates (default: the preset's), so each side can be judged at its best rate

Identical dims: hidden, encoder/decoder layers, heads, MLP width, vocabulary (one shared tokenizer), positions,
tied embeddings, gelu, no dropout (the cpu-small preset trains without it). BART keeps its own design: post-norm
with an embedding LayerNorm and a final-logits bias; ours is the preset's pre-norm (bench.models.bart_config).
"""

import argparse
import itertools
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import DataCollatorForSeq2Seq

from bench.harness import QUICK_PROTOCOL, Protocol, compare, compare_compiled, use_threads
from bench.models import SIDES, build_seq2seq
from bench.speed import make_optimizer, training_step
from scratchformer import train_tokenizer
from training import common, resume, translate

PRESET = translate.PRESETS["cpu-small"]
TRAIN_BATCHES = 8


def data_and_tokenizer(preset, train_samples: int, test_samples: int, seed: int = 0):
    """The recipe's number pairs and a tokenizer trained on the train side."""
    preset = replace(preset, train_samples=train_samples, test_samples=test_samples)
    data = translate.number_words(preset, "de", seed, None)
    tokenizer = train_tokenizer(list(data["train"]["source"]) + list(data["train"]["target"]),
                                vocab_size=preset.vocab_size, model_max_length=preset.max_length, add_eos_token=True)
    return data, tokenizer


def batches(tokenizer, data, batch_size: int, seed: int):
    """Endless shuffled training batches (the same sequence for both models)."""
    encoded = data.map(lambda b: tokenizer(b["source"], text_target=b["target"], truncation=True), batched=True,
                       remove_columns=data.column_names)
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    epoch = 0
    while True:
        shuffled = encoded.shuffle(seed=seed + epoch)
        for start in range(0, len(shuffled) - batch_size + 1, batch_size):
            yield collator([shuffled[i] for i in range(start, start + batch_size)])
        epoch += 1


def with_decoder_inputs(model, batch):
    """Add the shifted decoder inputs (both models make them from labels the same way)."""
    return dict(batch, decoder_input_ids=model.prepare_decoder_input_ids_from_labels(batch["labels"]))


def real_tokens(batch) -> int:
    """Source + target tokens of a batch, padding excluded."""
    return int(batch["attention_mask"].sum() + (batch["labels"] != -100).sum())


def training_steps(model, train_batches):
    """One training step on each of the batches, as one callable."""
    optimizer = make_optimizer(model)
    steps = [training_step(model, with_decoder_inputs(model, batch), optimizer) for batch in train_batches]

    def run():
        for step in steps:
            step()
    return run


def speed(config, tokenizer, data, protocol: Protocol, new_tokens: int, compile_backend: str | None = None) -> dict:
    """Paired training and 4-beam decoding throughput, ours / theirs (with a `compile_backend`, training compiled too)."""
    models = [build_seq2seq(side, config) for side in SIDES]
    train_batches = list(itertools.islice(batches(tokenizer, data["train"], PRESET.batch_size, seed=0), TRAIN_BATCHES))
    tokens = sum(real_tokens(batch) for batch in train_batches)
    padded = sum(batch["input_ids"].numel() + batch["labels"].numel() for batch in train_batches)
    eager = [training_steps(m, train_batches) for m in models]
    results = {"train": compare(*eager, work=tokens, protocol=protocol)}
    results["train"]["padding_share"] = 1 - tokens / padded
    if compile_backend:
        compiled = [training_steps(torch.compile(build_seq2seq(side, config), backend=compile_backend),
                                   train_batches) for side in SIDES]
        compare_compiled(results, "train", eager, compiled, tokens, protocol)

    sources = tokenizer(list(data["test"]["source"][:8]), return_tensors="pt", padding=True)

    def beam(model):
        model.eval()

        def run():
            with torch.no_grad():
                model.generate(**sources, num_beams=4, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        return run

    results["beam4"] = compare(*(beam(m) for m in models), work=8 * new_tokens, protocol=protocol)
    return results


def accuracy_at_budget(config, tokenizer, data, budget_s: float, learning_rate: float) -> dict:
    """Train each model for budget_s seconds of wall clock, then exact match on the test numbers."""
    metric = translate.translation_metrics()
    results = {}
    for side in ("ours", "theirs"):
        model = build_seq2seq(side, config).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=PRESET.weight_decay, fused=True)
        steps, tokens, losses, start = 0, 0, [], time.perf_counter()
        for batch in batches(tokenizer, data["train"], PRESET.batch_size, seed=0):
            if time.perf_counter() - start > budget_s:
                break
            warmup = min(1.0, (steps + 1) / 100)  # short linear warm-up, then constant
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * warmup
            loss = model(**with_decoder_inputs(model, batch)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            steps += 1
            tokens += real_tokens(batch)
        trained_s = time.perf_counter() - start
        sources, references = list(data["test"]["source"]), list(data["test"]["target"])
        row = {"learning_rate": learning_rate, "steps": steps, "train_tokens_per_s": tokens / trained_s,
               "final_train_loss": sum(losses[-50:]) / len(losses[-50:])}
        for name, beams in (("greedy", 1), ("beam4", 4)):
            predictions = translate.translate(model, tokenizer, sources, PRESET.generation_batch_size, num_beams=beams,
                                              max_length=PRESET.max_length)
            row[name] = metric.compute(predictions=predictions, references=references)
            row[name]["example"] = {"source": sources[-1], "reference": references[-1], "prediction": predictions[-1]}
        results[side] = row
    return results


def at_best_rate(runs: list[dict], side: str) -> dict:
    """One side's result at the learning rate that suited it best (4-beam, then greedy exact match): a rate chosen
    for one architecture says little about the other."""
    return max((run[side] for run in runs), key=lambda row: (row["beam4"]["exact_match"], row["greedy"]["exact_match"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true", help="tiny protocol (smoke test)")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--budget-s", type=float, default=0.0, help="also train both for this long and compare accuracy")
    parser.add_argument("--train-samples", type=int, default=PRESET.train_samples)
    parser.add_argument("--test", type=int, default=1000, help="test numbers for the accuracy comparison")
    parser.add_argument("--compile", action="store_true", help="also compare compiled training (torch.compile)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend for --compile")
    parser.add_argument("--learning-rates", default=str(PRESET.learning_rate),
                        help="comma-separated peak learning rates for the accuracy comparison, each tried on both sides")
    args = parser.parse_args(argv)
    use_threads(args.threads)
    protocol = QUICK_PROTOCOL if args.quick else Protocol(pairs=args.pairs)
    data, tokenizer = data_and_tokenizer(PRESET, args.train_samples, args.test)
    config = common.model_config(tokenizer, PRESET, is_encoder_decoder=True, decoder_start_token_id=tokenizer.bos_token_id)
    results = {"threads": torch.get_num_threads(), "dims": {k: getattr(config, k) for k in (
        "vocab_size", "hidden_size", "encoder_layers", "decoder_layers", "num_attention_heads", "intermediate_size")}}
    results.update(speed(config, tokenizer, data, protocol, args.new_tokens, args.compile_backend if args.compile else None))
    for name in ("train", "train_compiled", "train_compiled_vs_eager", "beam4"):
        r = results.get(name)
        if r is None:
            continue
        compiled = f"; compile {r['compile_s']['ours']:.0f} s / {r['compile_s']['theirs']:.0f} s" if "compile_s" in r else ""
        print(f"{name:6s} ours/BART {r['ratio']:.3f} (IQR {r['ratio_iqr'][0]:.3f}-{r['ratio_iqr'][1]:.3f}; noise "
              f"{r['noise']:.3f}{compiled})  ours {r['ours_tokens_per_s']:.0f} tok/s, BART {r['theirs_tokens_per_s']:.0f} tok/s")
    print(f"       (training batches: {results['train']['padding_share']:.1%} of their positions are padding)")
    if args.budget_s:
        rates = [float(lr) for lr in args.learning_rates.split(",")]
        runs = [accuracy_at_budget(config, tokenizer, data, args.budget_s, lr) for lr in rates]
        for sides in runs:
            for side, row in sides.items():
                print(f"{side:6s} lr {row['learning_rate']:g}, {args.budget_s:.0f} s budget: {row['steps']} steps, "
                      f"loss {row['final_train_loss']:.3f}, exact match greedy {row['greedy']['exact_match']:.2%}, beam4 "
                      f"{row['beam4']['exact_match']:.2%}; {row['beam4']['example']}")
        results["accuracy_by_learning_rate"] = runs
        results["accuracy"] = {side: at_best_rate(runs, side) for side in ("ours", "theirs")}
        for side, row in results["accuracy"].items():
            print(f"{side:6s} at its best lr {row['learning_rate']:g}: exact match greedy "
                  f"{row['greedy']['exact_match']:.2%}, beam4 {row['beam4']['exact_match']:.2%}")
    if args.json:
        resume.write_json(Path(args.json), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
