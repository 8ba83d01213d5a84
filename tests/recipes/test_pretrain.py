"""`python -m training.classify --pretrain lm|mlm|electra [--unlabeled-file F]`: the Transformer is pre-trained on the train
texts (never validation's or test's) plus the unlabelled ones, then fine-tuned from those weights with the same
architecture; bad combinations and files are refused with one error naming them. (Its resumption after kills is
tests/recipes/test_chaos.py's.)"""

import json
from argparse import Namespace
from pathlib import Path

import datasets
import pytest
import torch
from conftest import refused_classify_run, run_recipe
from safetensors.torch import load_file
from transformers import pipeline
from transformers.trainer_utils import get_last_checkpoint

from training import classify

pytestmark = pytest.mark.slow  # whole recipe runs: skipped by -m "not slow"

ODD_TEXTS = ["Ünïcödé, emoji 🎬 and\ttabs: still a review", "x" * 5000, "مرحبا بالفيلم", "line one\nline two"]


def flags(pretrain, *assignments, distributed=None):
    """The command-line flags `classify.with_pretraining` reads: --pretrain, each --set, --distributed."""
    return Namespace(pretrain=pretrain, set=list(assignments), distributed=distributed)


def test_pretraining_reads_the_train_texts_and_the_unlabeled_file_never_validation(tmp_path):
    unlabeled = tmp_path / "more.jsonl"
    unlabeled.write_text("".join(json.dumps({"body": text, "id": i}) + "\n" for i, text in enumerate(ODD_TEXTS)))
    train = datasets.Dataset.from_dict({"text": ["a train review", "another"], "label": [0, 1]})
    args = Namespace(unlabeled_file=str(unlabeled), text_column=None)
    texts = classify.pretraining_texts(args, train)
    assert texts["text"] == ["a train review", "another", *ODD_TEXTS]  # the only text column, whatever its name
    assert classify.pretraining_texts(Namespace(unlabeled_file=None, text_column=None), train)["text"] == train["text"]


def test_the_pretrain_flag_sets_the_objective_and_a_causal_lm_reads_with_rotary_positions():
    preset = classify.PRESETS["cpu-small"]
    lm = classify.with_pretraining(flags("lm"), preset)
    assert (lm.pretrain, lm.pretrain_epochs, lm.position_embedding_type) == ("lm", 0.75, "rotary")
    assert lm.classifier_pooling == "last"  # a causal classifier reads its last token, which has seen the whole text
    assert classify.model_config(_tokenizer(), lm, ["a", "b"]).is_decoder
    kept = classify.with_pretraining(flags("lm", "position_embedding_type=learned", "classifier_pooling=mean"),
                                     classify.PRESETS["cpu-small"])
    assert (kept.position_embedding_type, kept.classifier_pooling) == ("learned", "mean")
    assert classify.with_pretraining(flags("mlm"), preset).classifier_pooling == "mean"
    tiny = classify.PRESETS["tiny"]  # masked-LM pre-training by default
    assert classify.with_pretraining(flags("none"), tiny).pretrain_epochs == 0
    assert classify.with_pretraining(flags(None), tiny) == tiny
    assert not classify.model_config(_tokenizer(), tiny, ["a", "b"]).is_decoder


def test_a_preset_that_pretrains_a_causal_lm_reads_causally_and_pretrain_none_gives_the_plain_encoder():
    preset = classify.PRESETS["cpu-best"]  # 4.3 epochs of causal LM first
    assert (preset.pretrain, preset.pretrain_epochs) == ("lm", 4.3)
    causal = classify.with_pretraining(flags(None), preset)
    assert (causal.pretrain_epochs, causal.position_embedding_type, causal.classifier_pooling) == (4.3, "rotary", "last")
    assert classify.model_config(_tokenizer(), causal, ["a", "b"]).is_decoder
    assert causal.pretrain_softmax == "adaptive"  # its 60 minutes: 0.57x the full softmax's step
    # Across processes the preset's LM falls back to the output layer DistributedConfig shards; the user's own
    # --set pretrain_softmax=adaptive stays, for check_pretraining_flags to refuse.
    assert classify.with_pretraining(flags(None, distributed="fsdp=2"), preset).pretrain_softmax == "full"
    chosen = flags(None, "pretrain_softmax=adaptive", distributed="fsdp=2")
    assert classify.with_pretraining(chosen, preset).pretrain_softmax == "adaptive"
    plain = classify.with_pretraining(flags("none"), preset)
    assert (plain.pretrain_epochs, plain.position_embedding_type, plain.classifier_pooling) == (0, "learned", "mean")
    assert not classify.model_config(_tokenizer(), plain, ["a", "b"]).is_decoder
    masked = classify.with_pretraining(flags("mlm"), preset)  # the preset's passes, masked
    assert (masked.pretrain, masked.pretrain_epochs, masked.classifier_pooling) == ("mlm", 4.3, "mean")


def _tokenizer():
    from scratchformer import train_tokenizer

    return train_tokenizer(["a small corpus of words for a tokenizer"] * 20, vocab_size=300)


def test_classify_pretrains_a_causal_lm_on_real_reviews_and_fine_tunes_from_it(tmp_path):
    unlabeled = tmp_path / "more.txt"
    unlabeled.write_text("\n".join(ODD_TEXTS) + "\n")
    output = tmp_path / "run"
    run_recipe("classify", output, "--pretrain", "lm", "--unlabeled-file", str(unlabeled),
               "--max-train-samples", "300", "--max-test-samples", "50")
    metrics = json.loads((output / "metrics.json").read_text())
    assert (metrics["pretrained"], metrics["pretrain"], metrics["unlabeled_file"]) == (True, "lm", str(unlabeled))
    config = json.loads((output / "config.json").read_text())
    assert config["is_decoder"] and config["position_embedding_type"] == "rotary"
    pretrained = output / "work" / "pretrain" / "final"
    lm_config = json.loads((pretrained / "config.json").read_text())
    assert lm_config["architectures"] == ["ScratchformerForCausalLM"]
    assert (pretrained / "tokenizer.json").is_file()  # a starting point for --init-from
    for name in ("hidden_size", "num_hidden_layers", "max_position_embeddings", "vocab_size", "is_decoder"):
        assert config[name] == lm_config[name], name
    assert_fine_tuned_from(output, pretrained)


def test_classify_pretrains_a_masked_lm_as_the_causal_one_is_pretrained_and_fine_tunes_from_it(tmp_path):
    output, pretrained, mlm_config, config = pretrained_run(tmp_path, "mlm")
    assert mlm_config["architectures"] == ["ScratchformerForMaskedLM"] and not mlm_config["is_decoder"]
    # The pre-training phase's settings (classify.PRETRAINING: no dropout), the fine-tuning's own (the preset's 0.1).
    assert (mlm_config["hidden_dropout_prob"], config["hidden_dropout_prob"]) == (0.0, 0.1)
    last = Path(get_last_checkpoint(output / "work" / "pretrain"))
    rates = [entry["learning_rate"] for entry in json.loads((last / "trainer_state.json").read_text())["log_history"]
             if "learning_rate" in entry]
    assert rates and max(rates) > 1e-2  # Muon's 2e-2 schedule, not the fine-tuning's 1e-3
    assert_fine_tuned_from(output, pretrained)


def test_the_gpu_preset_pretrains_a_causal_lm_and_keeps_the_ngram_path(tmp_path):
    """The gpu preset's combination (causal-LM pre-training, the n-gram path, last-token pooling), shrunk to CPU size
    on real reviews: what a lent GPU would run, minus the sizes and bf16."""
    preset = classify.with_pretraining(flags(None), classify.PRESETS["gpu"])
    assert (preset.pretrain, preset.classifier_pooling, preset.bf16) == ("lm", "last", True) and preset.ngram_buckets
    shrunk = dict(vocab_size=400, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  max_length=64, head_tokens=16, ngram_buckets=4096, pretrain_epochs=1, epochs=1, batch_size=8)
    output = tmp_path / "run"
    run_recipe("classify", output, "--preset", "gpu", *(f"--set={key}={value}" for key, value in shrunk.items()),
               "--max-train-samples", "120", "--max-test-samples", "40")
    metrics = json.loads((output / "metrics.json").read_text())
    assert (metrics["pretrained"], metrics["pretrain"]) == (True, "lm")
    config = json.loads((output / "config.json").read_text())
    assert config["is_decoder"] and config["classifier_pooling"] == "last" and config["ngram_buckets"] == 4096
    assert_fine_tuned_from(output, output / "work" / "pretrain" / "final")
    trained_with = torch.load(Path(get_last_checkpoint(output / "work" / "pretrain")) / "training_args.bin",
                              weights_only=False)
    assert trained_with.bf16 == torch.cuda.is_available()  # the preset's bf16 on a GPU; fp32 on CPUs (~100x faster)
    # A review longer than the positions: the saved model cuts it to head and tail itself.
    predicted = pipeline("text-classification", model=str(output))(["A wonderful, moving film.", "Dull. " * 300])
    assert len(predicted) == 2 and {row["label"] for row in predicted} <= set(config["label2id"])


def pretrained_run(tmp_path, objective: str, *flags):
    """(run folder, pre-trained folder, their two configs) of a small classify run on real reviews that pre-trains
    with `objective` first."""
    output = tmp_path / "run"
    run_recipe("classify", output, "--pretrain", objective, *flags, "--max-train-samples", "300",
               "--max-test-samples", "50")
    metrics = json.loads((output / "metrics.json").read_text())
    assert (metrics["pretrained"], metrics["pretrain"]) == (True, objective)
    pretrained = output / "work" / "pretrain" / "final"
    pretrained_config, config = (json.loads((folder / "config.json").read_text()) for folder in (pretrained, output))
    return output, pretrained, pretrained_config, config


def assert_fine_tuned_from(output, pretrained):
    """Fine-tuning started from the pre-trained model: its body moved away from those weights, but not far."""
    body, start = load_file(output / "model.safetensors"), load_file(pretrained / "model.safetensors")
    if not any(name.startswith("model.") for name in start):  # a bare ScratchformerModel's names lack the prefix
        start = {f"model.{name}": weight for name, weight in start.items()}
    shared = [name for name in body if name.startswith("model.layers.")]
    assert shared and all(name in start for name in shared)
    moved = [float((body[name] - start[name]).norm() / start[name].norm()) for name in shared if start[name].dim() == 2]
    assert 0 < max(moved) < 1.0


def refusal(tmp_path, *flags) -> str:
    output = tmp_path / "refused"
    message = refused_classify_run(output, *flags)
    assert not (output / "metrics.json").exists()
    return message


def test_classify_pretrains_with_replaced_token_detection_and_keeps_only_the_discriminator(tmp_path):
    output, pretrained, discriminator, config = pretrained_run(tmp_path, "electra")
    assert discriminator["architectures"] == ["ScratchformerModel"] and not discriminator["is_decoder"]
    assert not config["is_decoder"] and config["classifier_pooling"] == "mean"
    assert not any("generator" in name for name in load_file(pretrained / "model.safetensors"))
    # The checkpoints hold both models; the final folder is a starting point for --init-from like any other.
    assert any(name.startswith("generator.") for name in load_file(
        Path(get_last_checkpoint(output / "work" / "pretrain")) / "model.safetensors"))
    assert classify.starting_point(str(pretrained))[1].hidden_size == config["hidden_size"]
    assert_fine_tuned_from(output, pretrained)


def test_classify_pretrains_a_causal_lm_through_an_adaptive_softmax_and_keeps_only_the_transformer(tmp_path):
    output, pretrained, lm_config, config = pretrained_run(tmp_path, "lm", "--set", "pretrain_softmax=adaptive")
    assert lm_config["architectures"] == ["ScratchformerModel"] and lm_config["is_decoder"]
    assert config["is_decoder"] and config["classifier_pooling"] == "last"
    assert json.loads((output / "metrics.json").read_text())["preset_values"]["pretrain_softmax"] == "adaptive"
    assert not any(name.startswith("output.") for name in load_file(pretrained / "model.safetensors"))
    # The checkpoints hold the output layer and the frequency ranks; the final folder, the Transformer alone.
    checkpoint = load_file(Path(get_last_checkpoint(output / "work" / "pretrain")) / "model.safetensors")
    assert "rank" in checkpoint and any(name.startswith("output.tail.") for name in checkpoint)
    assert classify.starting_point(str(pretrained))[1].is_decoder
    assert_fine_tuned_from(output, pretrained)


def test_bad_pretraining_flags_are_refused_naming_the_problem(tmp_path):
    assert "no.txt: no such file or folder" in refusal(tmp_path, "--pretrain", "lm", "--unlabeled-file",
                                                       str(tmp_path / "no.txt"))
    folder = tmp_path / "model"
    folder.mkdir()
    assert "choose one of the two" in refusal(tmp_path, "--pretrain", "lm", "--init-from", str(folder))
