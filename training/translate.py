"""Translation with the encoder-decoder: tokenizer -> seq2seq training -> exact match, chrF and BLEU, greedy and 4-beam.

    python -m training.translate [--preset cpu-small|gpu|tiny] [--output-dir runs/translate] [--resume]
                                 [--target-lang de|fr] [--data-source pairs.tsv | saved-dataset-dir | hub-name]
    python -m training.translate --train-file pairs.csv [--test-file test.csv] [--source-column en]
                                 [--target-column de] --output-dir runs/my-translator

No parallel corpus is reachable offline, so the default data is English number words -> German (or French) number
words from num2words ("seventy-nine" -> "neunundsiebzig"). Numbers go to train/validation/test by a hash of the
number, so no test number is ever seen in training. Any pairs of texts instead: the data flags every recipe takes
(training/sources.py: --train-file/--test-file in CSV, TSV, JSON Lines or Parquet, or --dataset, with
--source-column/--target-column), or --data-source: a TSV (source<TAB>target per line) or a `datasets` dataset with
`source`/`target` columns, split by a hash of the source.

Writes a Hub-ready folder: weights + code, tokenizer, generation config, metrics.json (exact_match, chrF, greedy
and beam), samples.json (greedy and 4-beam translations), training_curve.png, attention.png (cross-attention
alignment of one test example) and the model card.
"""

import argparse
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainingArguments, set_seed

from scratchformer import ScratchformerForConditionalGeneration

from . import cli, common, distributed, publishing, resume, sources
from .metrics import translation_metrics


@dataclass(frozen=True)
class TranslationPreset(cli.Preset):
    """A recipe preset plus how many number pairs each split gets."""

    train_samples: int = 60_000
    validation_samples: int = 500
    test_samples: int = 5_000
    max_number: int = 1_000_000
    generation_batch_size: int = 250


PRESETS = {
    "tiny": TranslationPreset(vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=64, max_length=48, epochs=1, batch_size=16, save_steps=10,
                              eval_batch_size=32, learning_rate=3e-3, dropout=0.0, train_samples=240,
                              validation_samples=16, test_samples=32, group_by_length=False),
    "cpu-small": TranslationPreset(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=512, max_length=48, epochs=3, batch_size=64, save_steps=250,
                                   eval_batch_size=250, learning_rate=2e-3, dropout=0.0, warmup=0.05,
                                   group_by_length=False),
    "gpu": TranslationPreset(vocab_size=2000, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                             intermediate_size=1024, max_length=48, epochs=3, batch_size=128, save_steps=500,
                             eval_batch_size=500, learning_rate=1e-3, train_samples=300_000, bf16=True),
}
LANGUAGES = ("de", "fr")
SPLIT_PERCENT = {"test": 5, "validation": 1}  # the rest is train
SMALL_NUMBERS = 10_000  # every held-out number below this is tested too (a uniform test sample holds few of them)
NUM_SAMPLES = 5
BEAMS = 4


def split_of(key: str) -> str:
    """Deterministic split of one item (a number, or a source text) by its hash: the same on every machine."""
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 100
    if bucket < SPLIT_PERCENT["test"]:
        return "test"
    return "validation" if bucket < SPLIT_PERCENT["test"] + SPLIT_PERCENT["validation"] else "train"


def sample_numbers(pool: list[int], count: int, rng: random.Random, log_uniform_share: float) -> list[int]:
    """Numbers from a pool: distinct and uniform (mostly long numbers) when log_uniform_share is 0; otherwise that
    share is drawn with a uniform number of digits, with replacement, so the few short numbers are seen often."""
    if not log_uniform_share:
        return sorted(rng.sample(pool, min(count, len(pool))))
    by_digits: dict[int, list[int]] = {}
    for number in pool:
        by_digits.setdefault(len(str(number)), []).append(number)
    digits = sorted(by_digits)
    return sorted(
        rng.choice(by_digits[rng.choice(digits)]) if rng.random() < log_uniform_share else rng.choice(pool)
        for _ in range(count)
    )


def number_words(preset: TranslationPreset, target_lang: str, seed: int, max_train_samples: int | None) -> datasets.DatasetDict:
    """English number words -> target-language number words, split by a hash of the number."""
    from num2words import num2words

    pools = {"train": [], "validation": [], "test": []}
    for number in range(preset.max_number + 1):
        pools[split_of(str(number))].append(number)
    rng = random.Random(seed)
    counts = {"train": max_train_samples or preset.train_samples, "validation": preset.validation_samples,
              "test": preset.test_samples}
    splits = {}
    for name, pool in pools.items():
        # Test is uniform over the numbers up to max_number (the honest measure); train also sees short numbers.
        numbers = sample_numbers(pool, counts[name], rng, log_uniform_share=0.3 if name == "train" else 0.0)
        splits[name] = datasets.Dataset.from_dict({
            "number": numbers,
            "source": [num2words(n, lang="en") for n in numbers],
            "target": [num2words(n, lang=target_lang) for n in numbers],
        })
    small = [n for n in pools["test"] if n < min(SMALL_NUMBERS, preset.max_number)]
    small = sorted(rng.sample(small, preset.test_samples)) if len(small) > preset.test_samples else small
    splits["test_small"] = datasets.Dataset.from_dict({
        "number": small,
        "source": [num2words(n, lang="en") for n in small],
        "target": [num2words(n, lang=target_lang) for n in small],
    })
    return datasets.DatasetDict(splits)


def parallel_text(source: str, seed: int, max_train_samples: int | None) -> datasets.DatasetDict:
    """A user's parallel text with `source`/`target` columns: a TSV file, a saved dataset folder or a Hub name.

    Without validation/test splits of its own, rows are split by a hash of their source text.
    """
    path = Path(source)
    if path.is_file():
        rows = [line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        bad = next((i + 1 for i, row in enumerate(rows) if len(row) != 2), None)
        if bad is not None:
            raise ValueError(f"{path}: line {bad} is not 'source<TAB>target'")
        if rows and rows[0] == ["source", "target"]:
            rows = rows[1:]
        data = datasets.Dataset.from_dict({"source": [r[0] for r in rows], "target": [r[1] for r in rows]})
    elif path.is_dir():
        data = datasets.load_from_disk(str(path))
    else:
        data = datasets.load_dataset(source)
    if isinstance(data, datasets.DatasetDict) and {"train", "validation", "test"} <= data.keys():
        data = datasets.DatasetDict({name: data[name] for name in ("train", "validation", "test")})
    else:
        whole = datasets.concatenate_datasets(list(data.values())) if isinstance(data, datasets.DatasetDict) else data
        data = datasets.DatasetDict({
            name: whole.filter(lambda row, name=name: split_of(row["source"]) == name)
            for name in ("train", "validation", "test")
        })
    for name, split in data.items():
        missing = {"source", "target"} - set(split.column_names)
        if missing:
            raise ValueError(f"{source}: split {name!r} has no column(s) {sorted(missing)} (need source and target)")
        if len(split) == 0:
            raise ValueError(f"{source}: split {name!r} is empty (too few distinct sources for a hash split?)")
        empty = next((i for i, row in enumerate(split) if not row["source"].strip() or not row["target"].strip()), None)
        if empty is not None:
            raise ValueError(f"{source}: row {empty} of split {name!r} has an empty source or target")
    if max_train_samples is not None and len(data["train"]) > max_train_samples:
        data["train"] = data["train"].shuffle(seed=seed).select(range(max_train_samples))
    return data


def read_data(args, preset: TranslationPreset) -> tuple[datasets.DatasetDict, dict]:
    """The pairs (the user's, or number words) and what metrics.json says of them."""
    if sources.given(args):
        source = sources.pairs(args)
        return source.splits, {"task": source.name, "eval_split": source.eval_split, **publishing.data_metrics(source)}
    if args.data_source:
        data = parallel_text(args.data_source, args.seed, args.max_train_samples)
    else:
        data = number_words(preset, args.target_lang, args.seed, args.max_train_samples)
    task = "number words en->" + args.target_lang if not args.data_source else args.data_source
    return data, {"task": task, "eval_split": "test", **data_facts(args.data_source, args.target_lang)}


def data_facts(data_source: str | None, target_lang: str) -> dict:
    """What metrics.json (and so the model card) says about the data: "dataset" (num2words, a Hub dataset id, or
    the name of a local file/folder, never its full path), "hub_dataset" when it came from the Hub, and "languages"
    ([source, target]) where they are known."""
    if not data_source:
        return {"dataset": "num2words", "languages": ["en", target_lang]}
    if Path(data_source).exists():  # parallel_text reads it as a TSV file or a saved dataset folder
        return {"dataset": Path(data_source).name}
    return {"dataset": data_source, "hub_dataset": data_source}


def translate(model, tokenizer, texts: list[str], batch_size: int, **generate_kwargs) -> list[str]:
    """Translate texts in batches of similar length (little padding), returned in the original order."""
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    outputs: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        inputs = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, truncation=True).to(model.device)
        with torch.no_grad():
            generated = model.generate(**inputs, do_sample=False, **generate_kwargs)
        for i, text in zip(batch, tokenizer.batch_decode(generated, skip_special_tokens=True)):
            outputs[i] = text.strip()
    return [outputs[i] for i in range(len(texts))]


def exact_match_by_digits(numbers, predictions: list[str], references: list[str]) -> dict[str, float]:
    """Exact match of the test numbers grouped by their number of digits."""
    groups: dict[int, list[bool]] = {}
    for number, prediction, reference in zip(numbers, predictions, references):
        groups.setdefault(len(str(number)), []).append(prediction == reference)
    return {f"{digits} digits ({len(hits)})": sum(hits) / len(hits) for digits, hits in sorted(groups.items())}


def plot_alignment(model, tokenizer, text: str, path: Path) -> None:
    """Heat-map of one translation's cross-attention (last decoder layer, mean over heads): source words on the
    x axis, the generated target subwords on the y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    inputs = tokenizer(text, return_tensors="pt", truncation=True).to(model.device)
    with torch.no_grad():
        generated = model.generate(**inputs, do_sample=False, num_beams=1)
    backend = model.config._attn_implementation
    model.set_attn_implementation("eager")  # only the written-out path returns attention weights
    with torch.no_grad():
        out = model(**inputs, decoder_input_ids=generated[:, :-1], output_attentions=True)
    model.set_attn_implementation(backend)
    weights = out.cross_attentions[-1][0].mean(0).float().cpu()  # [target, source subwords]
    # Subwords of one source word share a column: their attention adds up.
    word_ids = inputs.word_ids(0)
    columns = sorted({w for w in word_ids if w is not None})
    words = [tokenizer.decode([t for t, w in zip(inputs["input_ids"][0].tolist(), word_ids) if w == c]).strip()
             for c in columns]
    merged = torch.stack([weights[:, [i for i, w in enumerate(word_ids) if w == c]].sum(-1) for c in columns], dim=1)
    specials = [i for i, w in enumerate(word_ids) if w is None]
    if specials:
        merged = torch.cat([merged, weights[:, specials].sum(-1, keepdim=True)], dim=1)
        words.append(tokenizer.eos_token)
    targets = [tokenizer.decode([t]) for t in generated[0, 1:].tolist()]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 0.6 * len(words)), max(3.5, 1.5 + 0.35 * len(targets))))
    ax.imshow(merged, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(words)), words, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(targets)), targets, fontsize=8)
    ax.set_xlabel("source word")
    ax.set_ylabel("generated target subword")
    ax.set_title("cross-attention, last decoder layer, mean over heads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The translation recipe's own flag, beside the common ones."""
    parser.add_argument("--target-lang", choices=LANGUAGES, default="de", help="number words: German or French targets")


def main(argv=None):
    run = cli.start_run(__doc__.splitlines()[0], PRESETS, "runs/translate", argv, add_arguments, task="seq2seq")
    if run is None:  # --resume of a run that had finished
        return 0
    args, output, stopwatch = run
    preset = args.preset_values
    work = output / resume.WORK

    resume.enter_phase(output, "data")
    with resume.data_errors_exit(args, output):
        data, facts = read_data(args, preset)
    if "test" in data and args.max_test_samples is not None and len(data["test"]) > args.max_test_samples:
        data["test"] = data["test"].select(range(args.max_test_samples))
    # One tokenizer for both sides (trained on the train split only): encoder, decoder and output share embeddings.
    tokenizer = common.tokenizer_for(list(data["train"]["source"]) + list(data["train"]["target"]), work, preset,
                                     add_eos_token=True)
    encoded = data.map(
        lambda batch: tokenizer(batch["source"], text_target=batch["target"], truncation=True),
        batched=True,
        remove_columns=data["train"].column_names,
    )

    set_seed(args.seed)
    config = common.model_config(tokenizer, preset, is_encoder_decoder=True,
                                 decoder_start_token_id=tokenizer.bos_token_id)
    model = ScratchformerForConditionalGeneration(config)
    model.generation_config.max_length = preset.max_length  # decoder positions, start token included
    model.generation_config.num_beams = BEAMS
    model = distributed.shard(model, args, work / "train")

    metric = translation_metrics()

    def compute_metrics(prediction):
        predictions = [p.strip() for p in tokenizer.batch_decode(
            [[t for t in row if t >= 0] for row in prediction.predictions.tolist()], skip_special_tokens=True)]
        references = [r.strip() for r in tokenizer.batch_decode(
            [[t for t in row if t >= 0] for row in prediction.label_ids.tolist()], skip_special_tokens=True)]
        return metric.compute(predictions=predictions, references=references)

    resume.enter_phase(output, "train")
    trainer = resume.RecipeSeq2SeqTrainer(
        model=model,
        args=common.training_arguments(
            work / "train", preset, args.seed, preset.epochs, arguments_class=Seq2SeqTrainingArguments,
            eval_strategy="steps", eval_steps=preset.save_steps, predict_with_generate=True,
            generation_max_length=preset.max_length, generation_num_beams=1,  # greedy while training: fast
            **distributed.trainer_settings(args, preset),
        ),
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    resume.run_phase(trainer, work / "train", args.resume, stopwatch)
    distributed.continue_in_one_process(args)  # a --distributed run evaluates and publishes in one process

    resume.enter_phase(output, "evaluate")
    if trainer.is_world_process_zero():
        model = trainer.model
        split = facts["eval_split"]
        texts, references = list(data[split]["source"]), list(data[split]["target"])
        results = {}
        for name, beams in {"greedy": 1, f"beam{BEAMS}": BEAMS}.items():
            predictions = translate(model, tokenizer, texts, preset.generation_batch_size, num_beams=beams)
            scores = metric.compute(predictions=predictions, references=references)
            results[name] = {"predictions": predictions, **scores}
        beam = results[f"beam{BEAMS}"]
        metrics = {
            "exact_match": beam["exact_match"],
            "chrf": beam["chrf"],
            "bleu": beam["bleu"],
            "exact_match_greedy": results["greedy"]["exact_match"],
            "chrf_greedy": results["greedy"]["chrf"],
            "bleu_greedy": results["greedy"]["bleu"],
            f"exact_match_beam{BEAMS}": beam["exact_match"],
            f"chrf_beam{BEAMS}": beam["chrf"],
            f"bleu_beam{BEAMS}": beam["bleu"],
            **facts,
            **publishing.base_metrics(args, model, stopwatch.total(), data),
        }
        if "number" in data[split].column_names:  # where the errors are: accuracy per number of digits
            metrics["exact_match_by_digits"] = exact_match_by_digits(data["test"]["number"], beam["predictions"], references)
        if "test_small" in data:  # all held-out numbers below SMALL_NUMBERS, greedy and beam
            small_sources, small_references = list(data["test_small"]["source"]), list(data["test_small"]["target"])
            for name, beams in {"greedy": 1, f"beam{BEAMS}": BEAMS}.items():
                predictions = translate(model, tokenizer, small_sources, preset.generation_batch_size, num_beams=beams)
                score = metric.compute(predictions=predictions, references=small_references)["exact_match"]
                metrics[f"exact_match_below_{SMALL_NUMBERS}_{name}"] = score
            metrics[f"test_below_{SMALL_NUMBERS}_samples"] = len(small_sources)
            metrics["wall_time_s"] = round(stopwatch.total(), 1)
        spread = sorted({i * len(texts) // NUM_SAMPLES for i in range(NUM_SAMPLES)})  # short to long sources
        samples = [
            {"source": texts[i], "reference": references[i], "greedy": results["greedy"]["predictions"][i],
             f"beam{BEAMS}": beam["predictions"][i]}
            for i in spread
        ]
        publishing.finish(output, trainer, tokenizer, metrics, "eval_exact_match", "translation (encoder-decoder)",
                      texts[0], attention_plot=plot_alignment, extra_json={"samples.json": samples})
        print(f"{split} exact match greedy {metrics['exact_match_greedy']:.2%}, beam{BEAMS} {metrics['exact_match']:.2%} "
              f"(chrF {metrics['chrf_greedy']:.1f} / {metrics['chrf']:.1f}, BLEU {metrics['bleu_greedy']:.1f} / "
              f"{metrics['bleu']:.1f}) on {len(texts)} sources, "
              f"wall time {metrics['wall_time_s']:.0f} s  -> {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
