"""Tests of hub_card: card metadata and model-index from metrics.json, folder validation (no model, no network)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from hub_card import ModelFolderError, build_model_card, validate_model_dir, write_model_card
from scratchformer.configuration_scratchformer import AUTO_MAP

FULL_METRICS = {
    "accuracy": 0.8731, "f1": 0.8702, "eval_loss": 0.3125, "wall_time_s": 754.2, "preset": "small",
    "hardware": "2-core CPU", "command": "python -m training.train --preset small", "num_parameters": 999,
    "train_samples": 23750, "test_samples": 25000,
}
# What training/translate.py writes (beam4 is also reported under the plain keys).
TRANSLATION_METRICS = {
    "exact_match": 0.875, "chrf": 97.25, "exact_match_greedy": 0.8125, "chrf_greedy": 96.5,
    "exact_match_beam4": 0.875, "chrf_beam4": 97.25, "eval_split": "test", "task": "number words en->de",
    "dataset": "num2words", "languages": ["en", "de"], "preset": "cpu-small",
    "preset_values": {"max_number": 1000000}, "train_samples": 60000, "test_samples": 5000,
    "exact_match_below_10000_greedy": 0.99, "exact_match_below_10000_beam4": 0.995, "test_below_10000_samples": 519,
    "exact_match_by_digits": {"3 digits (7)": 0.8571, "6 digits (4450)": 1.0},
}
# Shapes written into the fake safetensors header: 10*4 + 4 + 2*4 = 52 weights.
FAKE_TENSORS = {"embed.weight": [10, 4], "norm.bias": [4], "classifier.weight": [2, 4]}


def write_safetensors_header(path: Path, tensors: dict[str, list[int]]) -> None:
    """A valid safetensors file of float32 zeros (header + data), written without torch or safetensors."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * offset)


def make_fake_model(folder: Path, architecture: str = "ScratchformerForSequenceClassification",
                    metrics: dict | None = None) -> Path:
    """A folder shaped like save_pretrained output (json + dummy code/weights), no core package needed."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": [architecture], "auto_map": dict(AUTO_MAP), "model_type": "scratchformer",
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "max_position_embeddings": 64, "vocab_size": 10, "position_embedding_type": "learned",
        "norm_placement": "pre", "tie_word_embeddings": True, "classifier_pooling": "mean",
    }
    if architecture.endswith("ForSequenceClassification"):
        config["id2label"] = {"0": "NEG", "1": "POS"}
    if architecture.endswith("ForConditionalGeneration"):
        config.update(is_encoder_decoder=True, encoder_layers=2, decoder_layers=3)
    (folder / "config.json").write_text(json.dumps(config))
    write_safetensors_header(folder / "model.safetensors", FAKE_TENSORS)
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text(json.dumps({"mask_token": "<mask>", "model_max_length": 64}))
    (folder / "configuration_scratchformer.py").write_text("class ScratchformerConfig: pass\n")
    (folder / "modeling_scratchformer.py").write_text(
        "from .configuration_scratchformer import ScratchformerConfig\n")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def model_index(card: ModelCard) -> dict[str, float]:
    """metric type -> value from the card's model-index, parsed back with huggingface_hub."""
    raw = card.data.to_dict()["model-index"]
    _, results = model_index_to_eval_results(raw)
    return {r.metric_type: r.metric_value for r in results}


def test_card_metadata_round_trips(tmp_path):
    folder = make_fake_model(tmp_path / "cls", metrics=FULL_METRICS)
    card = build_model_card(folder, "someone/imdb-cls")
    # ModelCard.validate() posts to the live Hub (/api/validate-yaml): not usable offline. Parse it back instead.
    path = write_model_card(folder, "someone/imdb-cls")
    on_disk = metadata_load(path)
    assert on_disk == card.data.to_dict()
    reloaded = ModelCard.load(path)
    assert reloaded.data.to_dict() == on_disk
    assert on_disk["library_name"] == "transformers"
    assert on_disk["pipeline_tag"] == "text-classification"
    assert on_disk["license"] == "apache-2.0"
    assert on_disk["datasets"] == ["stanfordnlp/imdb"]
    assert on_disk["tags"] == ["scratchformer", "custom_code"]
    name, results = model_index_to_eval_results(on_disk["model-index"])
    assert name == "imdb-cls"
    assert {(r.task_type, r.dataset_type, r.dataset_split) for r in results} == {
        ("text-classification", "stanfordnlp/imdb", "test")}
    assert path.read_text().startswith("---\n")


def test_metrics_appear_in_model_index_with_their_values(tmp_path):
    card = build_model_card(make_fake_model(tmp_path / "cls", metrics=FULL_METRICS), "someone/imdb-cls")
    assert model_index(card) == {"accuracy": 0.8731, "f1": 0.8702, "loss": 0.3125}
    body = card.text
    assert "| Accuracy | 0.8731 |" in body and "| F1 | 0.8702 |" in body and "| Eval loss | 0.3125 |" in body
    for fact in ("`small`", "2-core CPU", "12 min 34 s", "python -m training.train --preset small", "23,750", "25,000"):
        assert fact in body
    # One count everywhere: metrics.json's num_parameters (model.num_parameters()) wins over the safetensors header.
    assert "| Parameters | 999 (999) |" in body
    assert "| Labels | 0 = NEG, 1 = POS |" in body


def test_missing_metric_is_left_out_not_invented(tmp_path):
    card = build_model_card(make_fake_model(tmp_path / "cls", metrics={"accuracy": 0.9, "f1": None}), "a/b")
    assert model_index(card) == {"accuracy": 0.9}
    metric_types = [m["type"] for r in card.data.to_dict()["model-index"][0]["results"] for m in r["metrics"]]
    assert metric_types == ["accuracy"]
    assert "F1" not in card.text and "Perplexity" not in card.text
    assert "## Training" not in card.text  # no preset / hardware / command / wall time recorded
    assert "Wall time" not in card.text


def test_no_metrics_json_means_no_model_index(tmp_path):
    card = build_model_card(make_fake_model(tmp_path / "cls"), "a/b")
    data = card.data.to_dict()
    assert "model-index" not in data
    assert "## Results" not in card.text and "## Training" not in card.text
    assert data["pipeline_tag"] == "text-classification"


def test_non_numeric_metric_values_are_ignored(tmp_path):
    metrics = {"accuracy": "n/a", "f1": True, "perplexity": float("nan"), "eval_loss": 1.5}
    card = build_model_card(make_fake_model(tmp_path / "lm", "ScratchformerForCausalLM", metrics), "a/lm")
    assert model_index(card) == {"loss": 1.5}


@pytest.mark.parametrize("architecture, tag, auto_class, pipe", [
    ("ScratchformerForSequenceClassification", "text-classification", "AutoModelForSequenceClassification",
     'pipeline("text-classification"'),
    ("ScratchformerForCausalLM", "text-generation", "AutoModelForCausalLM", 'pipeline("text-generation"'),
    ("ScratchformerForMaskedLM", "fill-mask", "AutoModelForMaskedLM", 'pipeline("fill-mask"'),
])
def test_pipeline_tag_and_usage_follow_the_head(tmp_path, architecture, tag, auto_class, pipe):
    metrics = {"perplexity": 42.5} if tag != "text-classification" else {"accuracy": 0.5}
    card = build_model_card(make_fake_model(tmp_path / "m", architecture, metrics), "org/my-model")
    assert card.data.pipeline_tag == tag
    assert card.data.eval_results[0].task_type == tag
    assert 'repo = "org/my-model"' in card.text
    assert f"{auto_class}.from_pretrained(repo, trust_remote_code=True)" in card.text
    assert "AutoTokenizer.from_pretrained(repo, trust_remote_code=True)" in card.text
    assert pipe in card.text
    assert "Maas" in card.text and "@inproceedings" in card.text and "2011" in card.text


def test_write_model_card_replaces_readme_atomically(tmp_path):
    folder = make_fake_model(tmp_path / "cls", metrics={"accuracy": 0.75})
    (folder / "README.md").write_text("old card")
    path = write_model_card(folder, "a/b")
    assert path == folder / "README.md"
    assert "old card" not in path.read_text() and "0.75" in path.read_text()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".README")] == []


def test_valid_folder_passes(tmp_path):
    assert validate_model_dir(make_fake_model(tmp_path / "ok"))["model_type"] == "scratchformer"


def test_validation_lists_everything_missing(tmp_path):
    folder = make_fake_model(tmp_path / "broken")
    for name in ("model.safetensors", "tokenizer.json", "configuration_scratchformer.py"):
        (folder / name).unlink()
    with pytest.raises(ModelFolderError) as info:
        validate_model_dir(folder)
    message = str(info.value)
    for name in ("model.safetensors", "tokenizer.json", "configuration_scratchformer.py"):
        assert name in message
    assert len(info.value.problems) == 3


def test_validation_checks_model_type_auto_map_and_sibling_imports(tmp_path):
    folder = make_fake_model(tmp_path / "broken")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "bert"
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_scratchformer.py").write_text("from .attention_utils import attend\n")
    with pytest.raises(ModelFolderError) as info:
        validate_model_dir(folder)
    assert any("model_type" in p for p in info.value.problems)
    assert any("attention_utils.py" in p for p in info.value.problems)

    del config["auto_map"]
    config["model_type"] = "scratchformer"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="auto_map"):
        validate_model_dir(folder)


def test_publish_cli_refuses_an_incomplete_folder_before_any_upload(tmp_path):
    folder = make_fake_model(tmp_path / "broken")
    (folder / "tokenizer_config.json").unlink()
    (folder / "modeling_scratchformer.py").unlink()
    # A closed local port as endpoint: if validation did not stop it first, the upload would fail loudly here.
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "dummy", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-m", "hub_card.publish", str(folder), "a/b"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "tokenizer_config.json" in result.stderr and "modeling_scratchformer.py" in result.stderr
    assert not (folder / "README.md").exists()  # nothing written before validation passes


def translation_results(card: ModelCard) -> dict[str, tuple]:
    """metric name -> (task type, dataset type, dataset config, split, metric type, value, args) from the model-index."""
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    return {r.metric_name: (r.task_type, r.dataset_type, r.dataset_config, r.dataset_split, r.metric_type,
                            r.metric_value, r.metric_args) for r in results}


def test_translation_card_metadata_and_model_index(tmp_path):
    folder = make_fake_model(tmp_path / "mt", "ScratchformerForConditionalGeneration", TRANSLATION_METRICS)
    path = write_model_card(folder, "someone/numbers-en-de")
    data = metadata_load(path)
    assert data == build_model_card(folder, "someone/numbers-en-de").data.to_dict()
    assert data["pipeline_tag"] == "translation"
    assert data["language"] == ["en", "de"]
    assert "datasets" not in data  # num2words output is not a Hub dataset
    card = ModelCard.load(path)
    dataset = ("translation", "num2words", "en-de", "test")
    # Greedy and 4-beam, each with how it was decoded; the plain exact_match/chrf (= beam4) are not repeated.
    assert translation_results(card) == {
        "Exact match (greedy)": (*dataset, "exact_match", 0.8125, {"num_beams": 1}),
        "Exact match (4-beam)": (*dataset, "exact_match", 0.875, {"num_beams": 4}),
        "chrF (greedy)": (*dataset, "chrf", 96.5, {"num_beams": 1}),
        "chrF (4-beam)": (*dataset, "chrf", 97.25, {"num_beams": 4}),
    }


def test_translation_card_body_describes_the_seq2seq_model(tmp_path):
    folder = make_fake_model(tmp_path / "mt", "ScratchformerForConditionalGeneration", TRANSLATION_METRICS)
    text = build_model_card(folder, "org/numbers").text
    assert "translates English number words into German number words" in text
    assert "| Encoder layers | 2 |" in text and "| Decoder layers | 3 |" in text and "| Layers |" not in text
    assert "| Exact match (greedy) | 0.8125 |" in text and "| chrF (4-beam) | 97.25 |" in text
    assert "5,000 held-out numbers" in text and "below 10,000 (519 of them)" in text and "3 digits (7): 0.8571" in text
    assert "from transformers import AutoTokenizer, AutoModelForSeq2SeqLM\n" in text
    assert "AutoModelForSeq2SeqLM.from_pretrained(repo, trust_remote_code=True)" in text
    assert "AutoTokenizer.from_pretrained(repo, trust_remote_code=True)" in text
    assert "model.generate(**inputs, num_beams=4)" in text and "pipeline(" not in text  # no translation pipeline in v5
    assert "synthetic" in text and "not a general translator" in text and "0 to 1,000,000" in text
    assert "Attention Is All You Need" in text and "Vaswani" in text and "num2words" in text
    for imdb in ("IMDb", "imdb", "Maas", "movie", "review"):
        assert imdb not in str(build_model_card(folder, "org/numbers")), imdb


def test_translation_card_from_an_older_metrics_json_without_dataset_keys(tmp_path):
    metrics = {"exact_match": 0.5, "chrf": 80.0, "task": "number words en->fr"}
    card = build_model_card(make_fake_model(tmp_path / "mt", "ScratchformerForConditionalGeneration", metrics), "a/b")
    assert card.data.language == ["en", "fr"]
    assert "into French number words" in card.text and "num2words" in card.text
    # Without greedy / beam keys the plain ones are reported.
    assert {name: value[4:6] for name, value in translation_results(card).items()} == {
        "Exact match": ("exact_match", 0.5), "chrF": ("chrf", 80.0)}


def test_translation_card_of_a_users_parallel_text(tmp_path):
    metrics = {"exact_match_greedy": 0.25, "task": "/home/me/pairs.tsv", "dataset": "pairs.tsv", "train_samples": 200}
    folder = make_fake_model(tmp_path / "mt", "ScratchformerForConditionalGeneration", metrics)
    (folder / "samples.json").write_text(json.dumps([{"source": "red cat", "reference": "cat red"}]))
    card = build_model_card(folder, "a/b")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "translation" and "datasets" not in data and "language" not in data
    assert translation_results(card)["Exact match (greedy)"][1] == "pairs.tsv"
    assert "`pairs.tsv` (200 training pairs)" in card.text and 'tokenizer(["red cat"]' in card.text
    assert "num2words" not in card.text and "Vaswani" in card.text

    metrics.update(dataset="someone/parallel", hub_dataset="someone/parallel", languages=["en", "fr"])
    (folder / "metrics.json").write_text(json.dumps(metrics))
    data = build_model_card(folder, "a/b").data.to_dict()
    assert data["datasets"] == ["someone/parallel"] and data["language"] == ["en", "fr"]


def test_validation_accepts_a_translation_folder_and_checks_its_auto_class(tmp_path):
    folder = make_fake_model(tmp_path / "mt", "ScratchformerForConditionalGeneration", TRANSLATION_METRICS)
    assert validate_model_dir(folder)["architectures"] == ["ScratchformerForConditionalGeneration"]
    config = json.loads((folder / "config.json").read_text())
    # Still named by auto_map, but not under the Auto class the card's usage snippet calls.
    config["auto_map"]["AutoModel"] = config["auto_map"].pop("AutoModelForSeq2SeqLM")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="AutoModelForSeq2SeqLM"):  # the card's snippet could not load it
        validate_model_dir(folder)


def test_a_language_models_card_shows_its_decoding_statistics_and_samples_verbatim(tmp_path):
    stats = {"distinct_1": 0.3, "distinct_2": 0.8, "repeated_4gram_share": 0.0, "whitespace_only_share": 0.0,
             "known_word_share": 0.95}
    metrics = {"bits_per_byte": 1.69, "perplexity": 106.6, "default_decoding": "top_p_0.9",
               "default_decoding_settings": {"do_sample": True, "top_p": 0.9}, "pipeline_tokens_per_s": 1091.9,
               "decoding_test": {"reviews": stats, "greedy": {**stats, "repeated_4gram_share": 0.47},
                                 "top_p_0.9": stats}}
    folder = make_fake_model(tmp_path / "lm", "ScratchformerForCausalLM", metrics)
    (folder / "samples.json").write_text(json.dumps([
        {"prompt": "***SPOILER*** A <b>film</b>.", "greedy": "loop loop", "top_p_0.9": " It was _great_.\nTruly."},
    ]))
    card = build_model_card(folder, "a/lm")
    assert model_index(card)["bits_per_byte"] == 1.69
    assert "`top_p_0.9` (default) | 0.300 | 0.800 | 0.000 | 0.000 | 0.950 |" in card.text
    assert "| `greedy` | 0.300 | 0.800 | 0.470 |" in card.text and "1,092 new tokens/s" in card.text
    # the prompt's asterisks and tags stay text, not bold or HTML; the sample's newline is shown, not lost
    assert r"> **\*\*\*SPOILER\*\*\* A \<b\>film\</b\>.** It was \_great\_. ⏎ Truly." in card.text
    assert "loop loop" not in card.text  # only the default decoding's samples are shown


def test_a_classifiers_card_says_how_it_reads_long_inputs_and_its_ngram_path(tmp_path):
    folder = make_fake_model(tmp_path / "m", metrics={"accuracy": 0.9})
    plain = build_model_card(folder, "org/m").text
    assert "n-gram path" not in plain and "Long inputs" not in plain
    config = json.loads((folder / "config.json").read_text())
    config.update(classifier_head_tokens=16, ngram_buckets=4096, ngram_order=3)
    (folder / "config.json").write_text(json.dumps(config))
    text = build_model_card(folder, "org/m").text
    assert "| Long inputs | first 16 and last 48 tokens (cut by the model) |" in text
    assert "token 1- to 3-grams of the whole input, hashed into 4,096 rows" in text
    config["ngram_word_order"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    assert "token 1- to 3-grams and word 1- to 2-grams of the whole input" in build_model_card(folder, "org/m").text


TICKET_LABELS = ["billing", "bug", "feature", "other", "outage"]
# What training/classify.py writes for a user's CSV without test data (validation carved from train).
TICKET_METRICS = {
    "accuracy": 0.8125, "f1": 0.7904, "eval_split": "validation", "dataset": "tickets.csv", "labels": TICKET_LABELS,
    "train_samples": 3600, "validation_samples": 400, "test_samples": 0, "num_parameters": 123456,
    "wall_time_s": 95.0, "examples": ["The app crashes when I log in", "Please refund my last invoice"],
    "baselines": {"nbsvm-bi": {"accuracy": 0.91, "f1": 0.9, "seconds": 40.1},
                  "tfidf-lr": {"accuracy": 0.8875, "f1": 0.8711, "seconds": 3.5}},
    "data_notes": ["3 of 3603 train rows dropped: empty text"],
}


def assert_no_imdb_wording(card: ModelCard) -> None:
    text = str(card).lower()
    for word in ("imdb", "movie", "review", "maas", "sentiment", "negative / positive"):
        assert word not in text, word


def ticket_classifier(folder: Path, metrics: dict = TICKET_METRICS) -> Path:
    folder = make_fake_model(folder, metrics=metrics)
    config = json.loads((folder / "config.json").read_text())
    config.update(id2label=dict(enumerate(TICKET_LABELS)), classifier_head_tokens=16, ngram_buckets=4096,
                  ngram_order=3)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_classifier_card_of_a_users_data_speaks_of_its_labels_split_and_baselines(tmp_path):
    folder = ticket_classifier(tmp_path / "tickets")
    card = build_model_card(folder, "org/tickets")
    assert_no_imdb_wording(card)
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "text-classification"
    assert "datasets" not in data and "language" not in data  # a local file, of unknown language
    _, results = model_index_to_eval_results(data["model-index"])
    assert {(r.dataset_name, r.dataset_type, r.dataset_split) for r in results} == {
        ("tickets.csv", "tickets.csv", "validation")}
    text = card.text
    assert "a text classifier with 5 labels (`billing`, `bug`, `feature`, `other`, `outage`)" in text
    assert "trained on the labelled texts `tickets.csv` (3,600 training examples)" in text
    assert "| Labels | 0 = billing, 1 = bug, 2 = feature, 3 = other, 4 = outage |" in text
    # Validation, carved from train, no test set: said with the results and among the limitations.
    assert "Measured on the `validation` split: 400 examples held out from the training data of `tickets.csv`" in text
    assert "which has no test set" in text and "There was no test set" in text
    assert "- Evaluation examples: 400 (`validation`)" in text and "Evaluation examples: 0" not in text
    assert "F1 is the macro average over the 5 labels." in text
    assert "3 of 3603 train rows dropped: empty text" in text
    # The linear baselines, beside the model's own scores.
    assert "### Linear baselines on the same split" in text
    assert "| this model | 0.8125 | 0.7904 | 1 min 35 s (whole run) |" in text
    assert "naive-Bayes weighted linear SVM (Wang & Manning, 2012) | 0.9100 | 0.9000 | 40.1 s |" in text
    assert "| TF-IDF word 1-2-grams, logistic regression | 0.8875 | 0.8711 | 3.5 s |" in text
    # Usage: the data's own example, passed whole (the model keeps the first and last tokens itself).
    assert 'tokenizer("The app crashes when I log in", return_tensors="pt")\n' in text
    assert 'classifier("The app crashes when I log in"))' in text and "truncation=True)" not in text
    assert "always answers with one of its 5 labels" in text
    assert "cut by the model itself: the Transformer reads their first 16 and last 48 tokens, and the n-gram path " \
           "reads the whole text" in text and "must be truncated" not in text
    assert "Vaswani" in text and "The training data is `tickets.csv`" in text


def test_a_seeds_card_shows_the_commands_figures_over_seeds_beside_its_own(tmp_path):
    """training.seeds writes "over_seeds" into each seed's metrics.json: the card then says what the command gives
    over seeds (mean ± sd, each seed), and which seed this model is."""
    over_seeds = {"seed": 2, "recipe": "classify", "seeds": [0, 1, 2], "every_seed_beats_nbsvm_bi": True, "figures": {
        "accuracy": {"per_seed": {"0": 0.9134, "1": 0.9171, "2": 0.9169}, "mean": 0.9158, "std": 0.0021},
        "nbsvm-bi": {"per_seed": {"0": 0.9124, "1": 0.9126, "2": 0.913}, "mean": 0.9127, "std": 0.0003},
        "wall_time_s": {"per_seed": {"0": 894.0, "1": 911.0, "2": 703.0}, "mean": 836.0, "std": 117.0}}}
    text = build_model_card(ticket_classifier(tmp_path / "seed-2", {**TICKET_METRICS, "over_seeds": over_seeds})).text
    assert "### Over seeds" in text and "(seeds 0, 1, 2; this model is seed 2)" in text
    assert "| Accuracy | 0.9158 ± 0.0021 | 0.9134, 0.9171, 0.9169 |" in text
    assert "| NBSVM-bi, same runs | 0.9127 ± 0.0003 | 0.9124, 0.9126, 0.9130 |" in text
    assert "Every seed beat NBSVM-bi of its own run." in text and "836" not in text  # wall time stays out
    assert text.index("### Over seeds") < text.index("### Linear baselines on the same split")
    assert "### Over seeds" not in build_model_card(ticket_classifier(tmp_path / "one-run")).text


def test_a_users_hub_dataset_is_the_cards_dataset(tmp_path):
    metrics = {**TICKET_METRICS, "dataset": "someone/tickets", "hub_dataset": "someone/tickets", "eval_split": "test",
               "test_samples": 500}
    card = build_model_card(ticket_classifier(tmp_path / "tickets", metrics), "org/tickets")
    assert_no_imdb_wording(card)
    data = card.data.to_dict()
    assert data["datasets"] == ["someone/tickets"]
    _, results = model_index_to_eval_results(data["model-index"])
    assert {(r.dataset_type, r.dataset_split) for r in results} == {("someone/tickets", "test")}
    assert "Measured on the `test` split of [someone/tickets](https://huggingface.co/datasets/someone/tickets) " \
           "(500 examples)." in card.text
    assert "no test set" not in card.text and "- Evaluation examples: 500\n" in card.text


def test_a_language_models_card_of_a_users_texts_shows_the_compressors(tmp_path):
    stats = {"distinct_1": 0.3, "distinct_2": 0.8, "repeated_4gram_share": 0.0, "whitespace_only_share": 0.0,
             "known_word_share": 0.95}
    metrics = {"bits_per_byte": 1.69, "perplexity": 30.5, "dataset": "novels", "eval_split": "test",
               "train_samples": 900, "test_samples": 100, "compressors": {"lzma": 2.1, "bz2": 2.3},
               "examples": ["It was a dark and stormy night"], "default_decoding": "greedy",
               "default_decoding_settings": {"do_sample": False}, "decoding_test": {"texts": stats, "greedy": stats}}
    card = build_model_card(make_fake_model(tmp_path / "lm", "ScratchformerForCausalLM", metrics), "org/novels-lm")
    assert_no_imdb_wording(card)
    assert "datasets" not in card.data.to_dict()
    text = card.text
    assert "a causal (left-to-right) language model of the texts of `novels`" in text
    assert "trained on the texts `novels` (900 training texts)" in text
    assert "Measured on the `test` split of `novels` (100 texts)." in text
    assert "### General-purpose compressors on the same text" in text
    assert "| this model | 1.690 |\n| `lzma` | 2.100 |\n| `bz2` | 2.300 |" in text
    assert 'tokenizer("It was a dark and stormy night", return_tensors="pt")' in text
    assert 'generator("It was a dark and stormy night")' in text
    assert "| the texts themselves | 0.300 |" in text and "first sentence of test texts" in text
    assert "Generated text is like its training text" in text


def test_model_name_titles_the_card_and_names_the_example_repo(tmp_path):
    # A recipe stages its files in OUT/work/publish.tmp, then moves them to OUT.
    staged = ticket_classifier(tmp_path / "tickets-run" / "work" / "publish.tmp")
    path = write_model_card(staged, model_name="tickets-run")
    card = ModelCard.load(path)
    assert card.text.startswith("\n# tickets-run\n") and "**tickets-run** is" in card.text
    assert 'repo = "your-username/tickets-run"' in card.text and "publish" not in card.text
    assert model_index_to_eval_results(card.data.to_dict()["model-index"])[0] == "tickets-run"
    # Without model_name a staging folder is still named after its output folder; a repo id names both.
    assert "# tickets-run\n" in build_model_card(staged).text
    card = build_model_card(staged, "someone/tickets-classifier")
    assert "# tickets-classifier\n" in card.text and 'repo = "someone/tickets-classifier"' in card.text
    card = build_model_card(staged, "someone/tickets-classifier", model_name="Tickets")
    assert "# Tickets\n" in card.text and 'repo = "someone/tickets-classifier"' in card.text


def test_the_parameter_count_is_metrics_jsons_and_the_header_count_leaves_out_buffers(tmp_path):
    folder = ticket_classifier(tmp_path / "tickets")
    assert "| Parameters | 123,456 (123.5K), of which 20,480 (20.5K) in the n-gram table (4,096 buckets × 5 " \
           "labels) |" in build_model_card(folder, "a/b").text
    # Without num_parameters the header is counted, less the saved buffers (ratios and word pieces are no weights).
    metrics = {k: v for k, v in TICKET_METRICS.items() if k != "num_parameters"}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    write_safetensors_header(folder / "model.safetensors", {
        **FAKE_TENSORS, "ngram_logits.weight": [8, 5], "ngram_logits.log_count_ratio": [8, 5],
        "ngram_logits.word_pieces": [10, 4]})
    assert "| Parameters | 92 (92)," in build_model_card(folder, "a/b").text  # 52 + 8 x 5


def test_an_imdb_classifier_without_head_tokens_is_truncated_by_the_tokenizer(tmp_path):
    text = build_model_card(make_fake_model(tmp_path / "m", metrics={"accuracy": 0.9, "dataset": "IMDb"}), "a/b").text
    assert 'classifier("A moving story with wonderful acting.", truncation=True)' in text
    assert "Inputs longer than 64 tokens must be truncated" in text and "cut by the model itself" not in text
    assert "a sentiment classifier for English movie reviews" in text and "Two classes only" in text
