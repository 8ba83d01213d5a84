"""What the recipes share of data and model: IMDb as a source, text samples and sizes, the tokenizer phase, the
architecture a preset describes, and the Trainer arguments of every phase. (The command line is cli.py, resumption
resume.py, optimizers optimizers.py, the published folder publishing.py.)"""

from pathlib import Path

import pyarrow.compute as pc
import torch
from transformers import AutoTokenizer, TrainingArguments

from scratchformer import ScratchformerConfig, train_tokenizer

from . import sources
from .cli import Preset
from .data import load_imdb
from .resume import arrow_lengths, enter_phase, process_state, save_atomically

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



def text_bytes(split) -> int:
    """UTF-8 bytes of a split's texts."""
    return int(pc.sum(arrow_lengths(split, "text")).as_py() or 0)



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

