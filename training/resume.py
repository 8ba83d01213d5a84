"""A recipe run's folder, phases and resumption: a killed run continues where it stopped and ends as an uninterrupted
one would (the chaos tests kill runs at random moments to prove it).

    output/              the Hub-ready folder, written last and whole (publish_staged)
    output/work/         what a resumed run needs: tokenizer, checkpoints, phase.txt, the stopwatch

Checkpoints count only once whole (CheckpointManifest); group_by_length batches do not depend on the interruption
(EpochSeededLengthGroupedSampler); saves are atomic (save_atomically, write_text).
"""

import json
import os
import shutil
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import torch
from accelerate import PartialState
from transformers import Seq2SeqTrainer, Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.utils import logging

from . import distributed, sources
from .optimizers import LayerwiseRates

logger = logging.get_logger("training")

def process_state() -> PartialState:
    """This process's place in the run; on a machine without GPU, several processes train on CPU with gloo."""
    return PartialState(cpu=not torch.cuda.is_available())



WORK = "work"  # sub-folder of the output folder with everything a resumed run needs; not published



PUBLISH = "publish"  # work/publish: the Hub-ready files, staged whole before they move to the top level



def write_text(path: Path, text: str) -> None:
    """Write a text file atomically: a kill leaves the old file or the new one, never a part."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)



def write_json(path: Path, data) -> None:
    """Write JSON atomically."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")



def save_atomically(save, path: Path) -> None:
    """Run save(tmp) then rename tmp to path, so an interrupted save never leaves a half-written folder."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)



def enter_phase(output: Path, phase: str) -> None:
    """Record which phase the run is in (work/phase.txt): where a killed run stopped, for its user and the chaos test."""
    if process_state().is_main_process:
        write_text(output / WORK / "phase.txt", phase + "\n")



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



def arrow_lengths(split, column: str):
    """Each row's length in a list column (items) or a string column (UTF-8 bytes), from Arrow's offsets alone:
    the values are not read, so a memory-mapped corpus is not paged in."""
    values = split.data.column(column)
    lengths = pc.binary_length(values) if pa.types.is_string(values.type) or pa.types.is_large_string(values.type) \
        else pc.list_value_length(values)
    if split._indices is not None:  # a filtered or carved split: its rows, in its order
        lengths = lengths.take(split._indices.column(0))
    return lengths



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



class RecipeTrainer(ExactResume, distributed.ShardedCheckpoints, LayerwiseRates, Trainer):
    """The recipes' Trainer (layer_lr_decay=...: a learning rate per layer, optimizers.LayerwiseRates)."""



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

