"""Language model: tokenizer -> causal LM on the train texts -> test bits per byte -> the decoding that reads best.

    python -m training.lm [--preset cpu-small|cpu-best|gpu] [--output-dir runs/imdb-lm] [--resume]
    python -m training.lm --train-file corpus.txt [--test-file test.txt] --output-dir runs/my-lm

Without data flags it trains on IMDb's train reviews; with them on any text (training/sources.py: a .txt file is a
document per line, a folder of .txt files a document per file, CSV/JSON/Parquet a document per row). Documents are
joined with </s>; the corpus is tokenized with datasets.map (cached on disk) and read as memory-mapped token blocks.
Writes a Hub-ready folder: weights + code, tokenizer, generation_config.json (the chosen decoding, which
pipeline("text-generation") uses), metrics.json (bits per byte and perplexity on all test reviews, decoding
statistics, and the bits per byte of lzma and bz2 on the same text: a floor any LM must beat), samples.json,
training_curve.png, attention.png and the model card (README.md).
"""

import hashlib
import math
import os
import re
import time
from pathlib import Path

import datasets

import torch
import torch.nn.functional as F
from transformers import DataCollatorForLanguageModeling, pipeline, set_seed

from scratchformer import ScratchformerForCausalLM

from . import cli, common, distributed, optimizers, publishing, resume, sources
from .baselines import compressor_bits_per_byte

PRESETS = {
    "tiny": cli.Preset(vocab_size=400, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_length=32, epochs=1, batch_size=8, save_steps=4,
                          eval_batch_size=32, learning_rate=3e-3),
    # Rotary positions (RoPE): relative offsets generalise across the block, where GPT-2 learns one vector per slot.
    # Muon on the hidden matrices at 2e-2 (training/NOTES.md: 1.858 validation bits per byte against AdamW's 2.233
    # on the same 5,000 reviews); 0.75 epoch leaves room in 20 minutes for scoring all 25,000 test reviews.
    "cpu-small": cli.Preset(vocab_size=8000, epochs=0.75, dropout=0.0, optimizer="muon", learning_rate=2e-2,
                               position_embedding_type="rotary"),
    # 1.9x cpu-small's time per training step (measured: 1.63 s), for 2x its tokens: what 60 minutes on 2 cores buys
    # once all 25,000 test reviews are scored (about 12 minutes at this size).
    "cpu-best": cli.Preset(vocab_size=8000, hidden_size=192, num_hidden_layers=3, num_attention_heads=4,
                              intermediate_size=768, epochs=1.5, dropout=0.0, optimizer="muon", learning_rate=2e-2,
                              position_embedding_type="rotary"),
    "gpu": cli.Preset(vocab_size=16000, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                         intermediate_size=2048, max_length=512, epochs=3, batch_size=64, eval_batch_size=128,
                         learning_rate=3e-4, save_steps=500, bf16=True, position_embedding_type="rotary"),
}
# A user's corpus trains for at least MIN_STEPS and at most MAX_STEPS optimizer steps (IMDb's cpu-small: about 550).
MIN_STEPS, MAX_STEPS = 300, 1000
CURVE_BLOCKS = 128  # validation blocks evaluated at each save during training (the training curve)
NEW_TOKENS = 64  # continuations measured and shown: 64 new tokens after a review's first sentence
PROMPTS = 100  # reviews whose first sentence is continued, for the decoding statistics
# Decodings compared on validation prompts (see choose_decoding); the chosen one becomes generation_config.json.
# Greedy and 4-beam search are the reference points the issue asks for.
DECODINGS = {
    "greedy": {"do_sample": False},
    "beam4": {"do_sample": False, "num_beams": 4},
    "sample": {"do_sample": True, "temperature": 1.0, "top_k": 0},
    "top_p_0.9": {"do_sample": True, "temperature": 1.0, "top_p": 0.9, "top_k": 0},
    "top_p_0.8": {"do_sample": True, "temperature": 1.0, "top_p": 0.8, "top_k": 0},
    "t0.9_top_p_0.95": {"do_sample": True, "temperature": 0.9, "top_p": 0.95, "top_k": 0},
    "t0.8_top_p_0.95": {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "top_k": 0},
    "t0.8_top_k_40_rep1.2": {"do_sample": True, "temperature": 0.8, "top_k": 40, "repetition_penalty": 1.2},
    "top_p_0.9_no_repeat_3": {"do_sample": True, "top_p": 0.9, "top_k": 0, "no_repeat_ngram_size": 3},
}


LINE_BREAKS = re.compile(r"\s*\n\s*")


def collapse_line_breaks(text: str) -> str:
    """A review's paragraph breaks (<br /><br />, cleaned to newlines) as one newline each: the LM reads and writes
    single newlines, where runs of them are cheap tokens a small model learns to repeat forever."""
    return LINE_BREAKS.sub("\n", text.strip())


def tokenize(tokenizer, data, num_proc: int | None = None):
    """Each document's token ids ended by the end-of-text token </s> (how the LM reads documents), and its UTF-8
    size, through datasets.map, for a Dataset or each split of a DatasetDict. A split read from files is cached on disk beside them, under its fingerprint and
    the tokenizer's: a second run on the same data with the same tokenizer reads the cache."""
    eos = tokenizer.eos_token_id
    vocabulary = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]

    def encode(batch):
        return {"input_ids": [ids + [eos] for ids in tokenizer(batch["text"])["input_ids"]],
                "bytes": [len(text.encode("utf-8")) for text in batch["text"]]}

    def cache(part):
        if not part.cache_files:  # in memory (IMDb): nothing to cache beside
            return None
        return str(Path(part.cache_files[0]["filename"]).parent / f"tokenized-{part._fingerprint}-{vocabulary}.arrow")

    def run(part):
        return part.map(encode, batched=True, num_proc=num_proc, remove_columns=["text"], desc="tokenizing",
                        cache_file_name=cache(part))

    if isinstance(data, datasets.Dataset):
        return run(data)
    return datasets.DatasetDict({split: run(part) for split, part in data.items()})


def pack(batch: dict, block_size: int) -> dict[str, list[list[int]]]:
    """Pack a batch of documents' ids into equal blocks across document boundaries, as GPT-2 was trained (the rest
    of the batch, under one block, is left out)."""
    stream = [token for ids in batch["input_ids"] for token in ids]
    usable = len(stream) - len(stream) % block_size
    return {"input_ids": [stream[i : i + block_size] for i in range(0, usable, block_size)]}


def scored_windows(ids, block_size: int):
    """Windows of at most block_size tokens overlapping by one over a stream of token ids (any iterable, read once),
    so that every token but the first is predicted once."""
    step, buffer = block_size - 1, []
    for token in ids:
        buffer.append(token)
        if len(buffer) == block_size:
            yield buffer
            buffer = buffer[step:]
    if len(buffer) > 1:
        yield buffer


def batched(items, size: int):
    """Lists of `size` consecutive items (the last one shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def bits_per_byte(model, tokenizer, documents, block_size: int, batch_size: int) -> dict:
    """Total NLL of texts in bits per UTF-8 byte of the texts, a figure any tokenizer can be compared on; also per
    token (loss, perplexity). Every token of every document and its </s> is scored once, after a leading </s>.
    `documents`: a list of texts, or a split tokenized by `tokenize`, read in batches (memory does not grow with it)."""
    if not isinstance(documents, datasets.Dataset):
        documents = tokenize(tokenizer, datasets.Dataset.from_dict({"text": list(documents)}))
    seen = {"tokens": 0, "bytes": 0}  # counted while the stream is read: the split is read once

    def stream():
        yield tokenizer.eos_token_id
        for rows in documents.iter(batch_size=1000):
            seen["bytes"] += sum(rows["bytes"])
            for ids in rows["input_ids"]:
                seen["tokens"] += len(ids)
                yield from ids

    model.eval()
    nats = 0.0
    for batch in batched(scored_windows(stream(), block_size), batch_size):
        input_ids = torch.full((len(batch), max(map(len, batch))), tokenizer.pad_token_id)
        labels = torch.full_like(input_ids, -100)
        for row, window in enumerate(batch):
            input_ids[row, : len(window)] = labels[row, : len(window)] = torch.tensor(window)
        # Right padding needs no attention mask: causal attention never looks ahead at it.
        logits = model(input_ids=input_ids.to(model.device)).logits
        nats += F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(model.device),
                                ignore_index=-100, reduction="sum").item()
    tokens, size = seen["tokens"], seen["bytes"]
    return {"bits_per_byte": nats / math.log(2) / size, "loss": nats / tokens, "perplexity": math.exp(nats / tokens),
            "tokens": tokens, "bytes": size}


WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """The lower-cased words of a text (letters, with an inner apostrophe)."""
    return WORD.findall(text.lower())


def first_sentence(text: str, max_chars: int = 200) -> str:
    """A review's first sentence (up to its first . ! or ?), at most max_chars long: the prompt it is continued from."""
    match = re.match(r"\s*(.+?[.!?])(?=\s|$)", text, re.S)
    return (match.group(1) if match else text)[:max_chars]


def continuation_statistics(continuations: list[str], known_words: set[str]) -> dict[str, float]:
    """How a set of continuations reads: distinct-1/2 (distinct word uni/bigrams over all of them), the share of
    word 4-grams that repeat one earlier in the same continuation, the share of whitespace-only continuations, and
    the share of words found in the train split's word list."""
    unigrams, bigrams, fourgrams, repeats = [], [], 0, 0
    for text in continuations:
        tokens = words(text)
        unigrams += tokens
        bigrams += list(zip(tokens, tokens[1:]))
        seen = set()
        for gram in zip(tokens, tokens[1:], tokens[2:], tokens[3:]):
            repeats += gram in seen
            fourgrams += 1
            seen.add(gram)
    return {
        "distinct_1": len(set(unigrams)) / max(1, len(unigrams)),
        "distinct_2": len(set(bigrams)) / max(1, len(bigrams)),
        "repeated_4gram_share": repeats / max(1, fourgrams),
        "whitespace_only_share": sum(not text.strip() for text in continuations) / max(1, len(continuations)),
        "known_word_share": sum(w in known_words for w in unigrams) / max(1, len(unigrams)),
    }


@torch.no_grad()
def continue_prompts(model, tokenizer, prompts: list[str], settings: dict, seed: int, batch_size: int = 25) -> list[str]:
    """NEW_TOKENS-token continuations of each prompt with one decoding, batched with left padding, KV-cached."""
    model.eval()
    tokenizer.padding_side = "left"
    set_seed(seed)
    texts = []
    for first in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[first : first + batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=prompt_room(model)).to(model.device)
        out = model.generate(**batch, **length_settings(model), pad_token_id=tokenizer.pad_token_id, **settings)
        texts += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    tokenizer.padding_side = "right"
    return texts


def length_settings(model) -> dict[str, int]:
    """How long a continuation is: NEW_TOKENS new tokens (half the positions of a model with fewer, the tiny
    preset), at least a quarter of that before </s> may end it. Saved with the default decoding too."""
    longest = min(NEW_TOKENS, model.config.max_position_embeddings // 2)
    return {"max_new_tokens": longest, "min_new_tokens": longest // 4}


def prompt_room(model) -> int:
    """The most prompt tokens that leave room for a continuation within the model's positions."""
    return model.config.max_position_embeddings - length_settings(model)["max_new_tokens"]


def reference_continuations(tokenizer, texts: list[str]) -> tuple[list[str], list[str]]:
    """(prompts, what the reviews themselves say next): each review's first sentence and its next NEW_TOKENS tokens."""
    prompts = [first_sentence(text) for text in texts]
    follow = [tokenizer.decode(tokenizer(text[len(p) :])["input_ids"][:NEW_TOKENS]) for p, text in zip(prompts, texts)]
    return prompts, follow


def readable(stats: dict[str, float], reviews: dict[str, float]) -> bool:
    """Continuations that do not degenerate: no whitespace-only ones, no more repeated 4-grams than the reviews
    (+0.02), and at least 90 % of the reviews' distinct-2 (not narrowed to a few stock phrases)."""
    return (stats["whitespace_only_share"] == 0
            and stats["repeated_4gram_share"] <= reviews["repeated_4gram_share"] + 0.02
            and stats["distinct_2"] >= 0.9 * reviews["distinct_2"])


def choose_decoding(model, tokenizer, texts: list[str], known_words: set[str], seed: int) -> tuple[str, dict]:
    """The decoding that reads best on these (validation) reviews: of those whose continuations do not degenerate
    (readable), the one with the most real words (known_word_share); (name, statistics of every decoding)."""
    prompts, follow = reference_continuations(tokenizer, texts)
    table = {"reviews": continuation_statistics(follow, known_words)}
    for name, settings in DECODINGS.items():
        table[name] = continuation_statistics(continue_prompts(model, tokenizer, prompts, settings, seed), known_words)
        table[name]["readable"] = readable(table[name], table["reviews"])
    candidates = [name for name in DECODINGS if table[name]["readable"]] or ["sample"]
    return max(candidates, key=lambda name: table[name]["known_word_share"]), table


def pipeline_speed(model, tokenizer, prompts: list[str], batch_size: int = 25) -> float:
    """New tokens per second of pipeline("text-generation") with the saved default decoding, batched."""
    tokenizer.padding_side = "left"
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    start = time.perf_counter()
    outputs = generator(prompts, batch_size=batch_size, return_full_text=False, truncation=True,
                        tokenizer_encode_kwargs={"max_length": prompt_room(model)})
    seconds = time.perf_counter() - start
    tokenizer.padding_side = "right"
    return sum(len(tokenizer(o[0]["generated_text"])["input_ids"]) for o in outputs) / seconds


def read_data(args) -> sources.Source:
    """The user's text (training/sources.py), or IMDb's reviews with their line breaks collapsed."""
    if sources.given(args):
        return sources.corpus(args)
    imdb = common.imdb_source(args)
    imdb.splits = imdb.splits.map(lambda row: {"text": collapse_line_breaks(row["text"])}).select_columns(["text"])
    return imdb


PACK_BYTES = 4_000_000  # about this much text is packed at a time (IMDb: 1,000 reviews, datasets' default batch)


def prepare_data(args, preset: cli.Preset, work, data):
    """The tokenizer (trained on the train split), each split tokenized, and the train and validation texts packed
    into blocks."""
    tokenizer = common.tokenizer_for(common.text_sample(data["train"]), work, preset)
    # A big corpus is tokenized and packed by worker processes (the main one then never pages it in).
    big = sources.given(args) and common.text_bytes(data["train"]) > 20_000_000
    workers = min(4, os.cpu_count() or 1) if big else None
    ids = tokenize(tokenizer, data, num_proc=workers)
    mean_bytes = sum(ids["train"][:1000]["bytes"]) / min(1000, len(ids["train"]))
    packed = ids.map(pack, batched=True, fn_kwargs={"block_size": preset.max_length}, num_proc=workers,
                     batch_size=1000 if not sources.given(args) else max(1, min(1000, int(PACK_BYTES / mean_bytes))),
                     remove_columns=["input_ids", "bytes"], desc="packing")
    return tokenizer, ids, packed


def known_words(texts) -> set[str]:
    """The words of the texts (the train split's word list)."""
    return {w for text in texts for w in words(text)}


def decoding_report(model, tokenizer, data, seed: int, split: str = "test") -> tuple[dict, list[dict]]:
    """Choose the default decoding on validation texts, save it as the generation config, and measure greedy, 4-beam
    and it on the first sentences of PROMPTS texts of `split`; five unedited samples; pipeline tokens per second."""
    vocabulary = known_words(common.text_sample(data["train"]))
    best, validation_table = choose_decoding(model, tokenizer, data["validation"][:PROMPTS]["text"], vocabulary, seed)
    model.generation_config.update(**DECODINGS[best], **length_settings(model), pad_token_id=tokenizer.pad_token_id)
    prompts, follow = reference_continuations(tokenizer, data[split][:PROMPTS]["text"])
    test_table = {"reviews": continuation_statistics(follow, vocabulary)}
    shown = {}
    for name in dict.fromkeys(["greedy", "beam4", best]):
        shown[name] = continue_prompts(model, tokenizer, prompts, DECODINGS[name], seed)
        test_table[name] = continuation_statistics(shown[name], vocabulary)
    return {
        "default_decoding": best,
        "default_decoding_settings": DECODINGS[best],
        "decoding_validation": validation_table,
        "decoding_test": test_table,
        "pipeline_tokens_per_s": pipeline_speed(model, tokenizer, prompts),
    }, [{"prompt": p, **{name: texts[i] for name, texts in shown.items()}} for i, p in enumerate(prompts[:5])]


def main(argv=None):
    run = cli.start_run(__doc__.splitlines()[0], PRESETS, "runs/imdb-lm", argv, task="lm")
    if run is None:  # --resume of a run that had finished
        return 0
    args, output, stopwatch = run
    work = output / resume.WORK

    resume.enter_phase(output, "data")
    with resume.data_errors_exit(args, output):
        source = read_data(args)
    data = source.splits
    if sources.given(args):  # IMDb keeps its presets as they are
        args.preset_values = cli.sized_to_data(args, args.preset_values, common.text_bytes(data["train"]))
    tokenizer, ids, packed = prepare_data(args, args.preset_values, work, data)
    if sources.given(args):
        args.preset_values = cli.epochs_for_data(args, args.preset_values, len(packed["train"]), MIN_STEPS, MAX_STEPS)
    preset = args.preset_values

    set_seed(args.seed)  # weight initialisation happens before Trainer seeds anything
    model = ScratchformerForCausalLM(common.model_config(tokenizer, preset, is_decoder=True))
    model = distributed.shard(model, args, work / "train")
    resume.enter_phase(output, "train")
    trainer = resume.RecipeTrainer(
        model=model,
        args=common.training_arguments(work / "train", preset, args.seed, preset.epochs, prediction_loss_only=True,
                                       **distributed.trainer_settings(args, preset),
                                       **{"eval_strategy": "steps", "eval_steps": preset.save_steps,
                                          **cli.best_on_validation(args, preset, "eval_loss")}),
        train_dataset=packed["train"],
        # The curve's points: a quick look at a slice of validation; all of it is measured at the end.
        eval_dataset=packed["validation"].select(range(min(CURVE_BLOCKS, len(packed["validation"])))),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
        optimizers=(optimizers.optimizer_for(model, preset), None),
    )
    resume.run_phase(trainer, work / "train", args.resume, stopwatch)
    distributed.continue_in_one_process(args)  # a --distributed run evaluates and publishes in one process

    resume.enter_phase(output, "evaluate")
    if trainer.is_world_process_zero():
        split = source.eval_split
        measure = lambda split: bits_per_byte(trainer.model, tokenizer, ids[split], preset.max_length,
                                              preset.eval_batch_size)
        start = time.perf_counter()
        validation = measure("validation")
        test = measure(split) if split != "validation" else validation
        evaluation_s = time.perf_counter() - start
        compressors = floors(data[split], test["bytes"])
        decoding, shown = decoding_report(trainer.model, tokenizer, data, args.seed, split)
        metrics = {
            "bits_per_byte": test["bits_per_byte"],
            "eval_split": split,
            "compressors": compressors,
            **publishing.data_metrics(source),
            "examples": [first_sentence(text)[:80] for text in data[split][:2]["text"]],
            "perplexity": test["perplexity"],
            "test_loss": test["loss"],
            "test_tokens": test["tokens"],
            "test_bytes": test["bytes"],
            "validation_bits_per_byte": validation["bits_per_byte"],
            "bits_per_byte_s": round(evaluation_s, 1),  # seconds to score validation and test
            "validation_curve": validation_curve(trainer.state.log_history,
                                                 preset.batch_size * preset.max_length, validation),
            **decoding,
            **publishing.base_metrics(args, trainer.model, stopwatch.total(), data),
        }
        publishing.finish(output, trainer, tokenizer, metrics, "eval_loss", f"{source.name} causal language model",
                      data[split][0]["text"], extra_json={"samples.json": shown})
        print(f"{split} bits per byte {metrics['bits_per_byte']:.3f} (perplexity {metrics['perplexity']:.1f}; lzma "
              f"{compressors['lzma']:.3f}, bz2 {compressors['bz2']:.3f}) on {len(data[split])} documents, default "
              f"decoding {decoding['default_decoding']}, wall time {metrics['wall_time_s']:.0f} s  -> {output}")
    return 0


def floors(split, document_bytes: int) -> dict[str, float]:
    """Bits per byte of lzma and bz2 on the split's documents joined by newlines, per byte of the documents (the
    LM's denominator: it pays for its </s> separators as the compressors pay for the newlines)."""
    texts = (text for batch in split.iter(batch_size=1000) for text in batch["text"])
    joined_bytes = document_bytes + max(0, len(split) - 1)
    return {name: value * joined_bytes / document_bytes for name, value in compressor_bits_per_byte(texts).items()}


def validation_curve(log_history: list[dict], tokens_per_step: int, validation: dict) -> list[dict]:
    """Validation bits per byte at each evaluation during training (the Trainer's per-token eval_loss on the packed
    validation blocks, scaled by the validation split's tokens per byte), against steps and train tokens seen."""
    tokens_per_byte = validation["tokens"] / validation["bytes"]
    return [{"step": e["step"], "train_tokens": e["step"] * tokens_per_step,
             "bits_per_byte": e["eval_loss"] / math.log(2) * tokens_per_byte} for e in log_history if "eval_loss" in e]


if __name__ == "__main__":
    raise SystemExit(main())
