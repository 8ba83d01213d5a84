"""bench.accuracy.paired_validation: classifier folders of one seed compared on their validation reviews, per path."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config

from bench.accuracy import paired_validation
from scratchformer import ScratchformerForSequenceClassification


def test_the_paired_difference_counts_only_the_reviews_the_two_classify_differently():
    first = np.array([True, True, False, False])
    other = np.array([True, False, True, True])  # gains reviews 3 and 4, loses review 2
    difference, error = paired_validation.paired_difference(first, other)
    assert difference == pytest.approx(25.0)
    assert error == pytest.approx(100 * np.sqrt(3 - 1 / 4) / 4)
    assert paired_validation.paired_difference(first, first) == (0.0, 0.0)


def classifier_folder(path, tokenizer, seed: int, weight_seed: int):
    torch.manual_seed(weight_seed)
    config = tiny_config(vocab_size=len(tokenizer), ngram_buckets=997, classifier_head_tokens=16)
    model = ScratchformerForSequenceClassification(config)
    model.fit_ngram_log_count_ratios([[5, 6, 7], [8, 9]], [0, 1])
    with torch.no_grad():
        model.ngram_logits.weight.normal_()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "metrics.json").write_text(json.dumps({"seed": seed}))
    return path


def test_folders_of_one_seed_are_scored_per_path_and_paired(tmp_path, fake_aclimdb, tokenizer, capsys):
    a = classifier_folder(tmp_path / "a", tokenizer, seed=0, weight_seed=0)
    b = classifier_folder(tmp_path / "b", tokenizer, seed=0, weight_seed=1)
    report = paired_validation.main([str(a), str(a), str(b), "--data-source", str(fake_aclimdb)])
    assert report[str(a)] == {"difference": 0.0, "standard_error": 0.0}  # a folder against itself
    assert set(report) == {str(a), str(b)}
    printed = capsys.readouterr().out
    for path in ("model", "transformer path", "n-gram path"):
        assert f"{a}  {path}: " in printed

    validation = paired_validation.load_imdb(source=str(fake_aclimdb), seed=0)["validation"]
    predicted = paired_validation.path_predictions(b, list(validation["text"]), batch_size=3)
    model = ScratchformerForSequenceClassification.from_pretrained(b).eval()
    batch = tokenizer(validation["text"][0], return_tensors="pt")
    with torch.no_grad():
        joint, ngram = model(**batch).logits, model.ngram_logits(batch["input_ids"], batch["attention_mask"])
    assert predicted["model"][0] == joint.argmax(-1).item()  # batching and padding change no prediction
    assert predicted["n-gram path"][0] == ngram.argmax(-1).item()
    assert predicted["transformer path"][0] == (joint - ngram).argmax(-1).item()


def test_folders_of_different_seeds_are_refused(tmp_path, fake_aclimdb, tokenizer):
    a = classifier_folder(tmp_path / "a", tokenizer, seed=0, weight_seed=0)
    b = classifier_folder(tmp_path / "b", tokenizer, seed=1, weight_seed=0)
    with pytest.raises(SystemExit, match=r"seeds \[0, 1\]"):
        paired_validation.main([str(a), str(b), "--data-source", str(fake_aclimdb)])
