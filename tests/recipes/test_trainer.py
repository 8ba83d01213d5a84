"""Trainer trains every head, checkpoints, and resuming from a checkpoint reaches the same weights."""

import pytest
import torch
from conftest import sentiment_corpus, tiny_config
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding, Trainer, TrainingArguments

from scratchformer import ScratchformerForCausalLM, ScratchformerForMaskedLM, ScratchformerForSequenceClassification


def make_trainer(head, tokenizer, output_dir, max_steps=40, **args):
    texts, labels = sentiment_corpus(64)
    data = Dataset.from_dict({"text": texts, "label": labels})
    data = data.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])
    if head is ScratchformerForSequenceClassification:
        collator = DataCollatorWithPadding(tokenizer)
    else:
        data = data.remove_columns(["label"])
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=head is ScratchformerForMaskedLM, mlm_probability=0.3)
    torch.manual_seed(0)
    model = head(tiny_config(vocab_size=len(tokenizer), hidden_dropout_prob=0.1))
    arguments = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        warmup_steps=0.1,
        logging_steps=5,
        save_steps=20,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        **args,
    )
    return Trainer(model=model, args=arguments, train_dataset=data, data_collator=collator, processing_class=tokenizer)


def logged_losses(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("head", [ScratchformerForSequenceClassification, ScratchformerForCausalLM, ScratchformerForMaskedLM])
def test_trainer_lowers_the_loss_and_saves_checkpoints(head, tokenizer, tmp_path):
    trainer = make_trainer(head, tokenizer, tmp_path)
    trainer.train()
    losses = logged_losses(trainer)
    assert losses[-1] < 0.7 * losses[0], losses
    assert (tmp_path / "checkpoint-20" / "model.safetensors").exists()
    assert (tmp_path / "checkpoint-40" / "trainer_state.json").exists()


def test_resuming_from_a_checkpoint_reaches_the_same_weights(tokenizer, tmp_path):
    straight = make_trainer(ScratchformerForSequenceClassification, tokenizer, tmp_path / "straight")
    straight.train()
    # A run "killed" after its first checkpoint: only checkpoint-20 survives, training restarts from it.
    resumed = make_trainer(ScratchformerForSequenceClassification, tokenizer, tmp_path / "straight")
    resumed.train(resume_from_checkpoint=str(tmp_path / "straight" / "checkpoint-20"))
    assert resumed.state.global_step == 40
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
