"""`python -m training.classify --init-from DIR`: a classifier started from a causal LM (training.lm's output) or a
masked LM, with that folder's architecture, weights and tokenizer; folders that cannot be a starting point are
refused with one error naming why."""

import json

import pytest
import torch
from conftest import refused_classify_run, run_recipe
from safetensors.torch import load_file
from transformers import AutoTokenizer

from scratchformer import ScratchformerConfig, ScratchformerForMaskedLM, ScratchformerForSequenceClassification
from training import classify

pytestmark = pytest.mark.slow  # whole recipe runs, servers or browsers: skipped by -m "not slow"


@pytest.fixture(scope="module")
def language_model(tmp_path_factory):
    """training.lm --preset tiny on 300 real IMDb reviews: a causal LM with 32 positions."""
    output = tmp_path_factory.mktemp("init") / "lm"
    run_recipe("lm", output, "--max-train-samples", "300", "--max-test-samples", "20")
    return output


@pytest.fixture(scope="module")
def masked_language_model(language_model, tmp_path_factory):
    """A masked LM with the LM's tokenizer (random weights: only the plumbing is under test)."""
    folder = tmp_path_factory.mktemp("init") / "mlm"
    tokenizer = AutoTokenizer.from_pretrained(language_model)
    torch.manual_seed(0)
    ScratchformerForMaskedLM(ScratchformerConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=64,
                                                 max_position_embeddings=48)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_the_classifier_starts_with_the_language_models_weights_and_architecture(language_model):
    tokenizer, start = classify.starting_point(str(language_model))
    preset = classify.PRESETS["tiny"]
    config = classify.initialised_config(start, preset, ["NEGATIVE", "POSITIVE"])
    model = ScratchformerForSequenceClassification.from_pretrained(language_model, config=config)
    saved_config = json.loads((language_model / "config.json").read_text())
    assert config.is_decoder and config.num_labels == 2 and config.architectures is None
    assert config.position_embedding_type == saved_config["position_embedding_type"]
    assert config.max_position_embeddings == saved_config["max_position_embeddings"] == 32
    saved = load_file(language_model / "model.safetensors")
    for name, tensor in model.state_dict().items():
        if name.startswith("model."):
            assert torch.equal(tensor, saved[name]), name
    assert len(tokenizer) == config.vocab_size


@pytest.mark.parametrize("start", ["language_model", "masked_language_model"])
def test_classify_init_from_a_folder_trains_on_real_reviews(start, request, tmp_path):
    folder = request.getfixturevalue(start)
    output = tmp_path / "classifier"
    run_recipe("classify", output, "--init-from", str(folder), "--max-train-samples", "300",
               "--max-test-samples", "50", "--set", "ngram_buckets=0",
               "--set", "pretrain=lm")  # a preset that pre-trains a causal LM, as cpu-best: the start replaces it
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["init_from"] == str(folder) and metrics["pretrained"] is False  # no masked-LM phase of its own
    assert AutoTokenizer.from_pretrained(output).get_vocab() == AutoTokenizer.from_pretrained(folder).get_vocab()
    config = json.loads((output / "config.json").read_text())
    expected = json.loads((folder / "config.json").read_text())
    for name in ("hidden_size", "num_hidden_layers", "position_embedding_type", "is_decoder", "vocab_size"):
        assert config[name] == expected[name], name
    # From a causal LM the classifier pools its last token (the only one that saw the whole text); else the preset's.
    assert config["classifier_pooling"] == ("last" if expected["is_decoder"] else "mean")
    assert metrics["preset_values"]["hidden_size"] == expected["hidden_size"]  # what was trained, not the preset
    # Inputs are cut to what the starting model's positions hold.
    assert config["classifier_head_tokens"] <= expected["max_position_embeddings"] // 2


def refusal(tmp_path, folder) -> str:
    output = tmp_path / "run"
    message = refused_classify_run(output, "--init-from", str(folder))
    assert not output.exists()
    return message


def test_folders_that_cannot_start_a_classifier_are_refused_with_the_reason(language_model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no config.json there" in refusal(tmp_path, empty)

    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert "a 'gpt2' model, not a scratchformer one" in refusal(tmp_path, gpt2)

    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_text((language_model / "config.json").read_text())
    assert "no tokenizer.json" in refusal(tmp_path, no_tokenizer)

    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    config = json.loads((language_model / "config.json").read_text())
    (mismatched / "config.json").write_text(json.dumps({**config, "vocab_size": config["vocab_size"] + 7}))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (mismatched / name).write_bytes((language_model / name).read_bytes())
    assert "do not belong together" in refusal(tmp_path, mismatched)
