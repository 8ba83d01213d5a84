"""training.baselines: linear classifier baselines for any number of labels, and compressor floors for an LM."""

import bz2
import json
import lzma
import random
import re
import string

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.svm import LinearSVC

from training import baselines
from training.baselines import (
    TOKEN_PATTERN,
    UNICODE_TOKEN_PATTERN,
    compressor_bits_per_byte,
    linear_baselines,
    nbsvm_bi,
    tfidf_lr,
)

FILLER = ["the", "a", "movie", "film", "it", "was", "and", "this", "of", "plot", "actor", "scene", "!", "?", "it's"]


def labelled_texts(n: int, n_labels: int, seed: int, cue_rate: float = 0.25) -> tuple[list[str], np.ndarray]:
    """Texts of filler words plus a few cue words of their label ("cue2_x"), some cues of other labels as noise."""
    rng = random.Random(seed)
    cues = [[f"cue{k}{chr(97 + j)}" for j in range(6)] for k in range(n_labels)]
    texts, labels = [], []
    for i in range(n):
        label = i % n_labels
        words = [rng.choice(FILLER) for _ in range(rng.randint(6, 14))]
        words += [rng.choice(cues[label]) for _ in range(3)]
        words += [rng.choice(cues[rng.randrange(n_labels)]) for _ in range(int(rng.random() < cue_rate))]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.asarray(labels)


def old_nbsvm_bi(train_texts, train_labels, test_texts, alpha=1.0, beta=0.25):
    """The IMDb baseline script's NBSVM-bi before it moved to training.baselines, verbatim (scores and predictions)."""
    vectorizer = CountVectorizer(ngram_range=(1, 2), binary=True, token_pattern=TOKEN_PATTERN, dtype=np.float32)
    x_train = vectorizer.fit_transform(train_texts)
    p = alpha + np.asarray(x_train[train_labels == 1].sum(axis=0)).ravel()
    q = alpha + np.asarray(x_train[train_labels == 0].sum(axis=0)).ravel()
    ratio = (np.log(p / p.sum()) - np.log(q / q.sum())).astype(np.float32)
    scale = sp.diags(ratio)
    svm = LinearSVC(C=1.0, max_iter=5000)
    svm.fit(x_train @ scale, train_labels)
    w = svm.coef_.ravel()
    w = (1.0 - beta) * np.abs(w).mean() + beta * w
    scores = (vectorizer.transform(test_texts) @ scale) @ w + beta * svm.intercept_[0]
    return scores, (scores > 0).astype(int)


def test_binary_nbsvm_is_the_old_formula():
    # Noisy enough (many cross-label cues) that the predictions are not all right, so a change would show.
    train_texts, train_labels = labelled_texts(300, 2, seed=1, cue_rate=0.9)
    test_texts, _ = labelled_texts(200, 2, seed=2, cue_rate=0.9)
    test_texts += ["", "!!", "unseen words only", "cue1a cue0a cue0b"]
    # LinearSVC (random_state=None, as before) seeds liblinear from numpy's global RNG: same state, same result.
    np.random.seed(0)
    old_scores, old_pred = old_nbsvm_bi(train_texts, train_labels, test_texts)
    np.random.seed(0)
    pred = nbsvm_bi(train_texts, train_labels, test_texts)
    np.testing.assert_array_equal(pred, old_pred)
    assert pred.dtype == old_pred.dtype
    # The scores too, bit for bit.
    vectorizer = CountVectorizer(ngram_range=(1, 2), binary=True, token_pattern=TOKEN_PATTERN, dtype=np.float32)
    x_train = vectorizer.fit_transform(train_texts)
    np.random.seed(0)
    scores = baselines._nbsvm_scores(x_train, train_labels == 1, vectorizer.transform(test_texts), 1.0, 0.25)
    np.testing.assert_array_equal(scores, old_scores)


def test_binary_metrics_are_binary_f1():
    train_texts, train_labels = labelled_texts(200, 2, seed=3, cue_rate=0.9)
    test_texts, test_labels = labelled_texts(100, 2, seed=4, cue_rate=0.9)
    from sklearn.metrics import f1_score

    results = linear_baselines(train_texts, train_labels, test_texts, test_labels, names=["nbsvm-bi"])
    assert list(results) == ["nbsvm-bi"]
    pred = nbsvm_bi(train_texts, train_labels, test_texts)
    assert results["nbsvm-bi"]["f1"] == pytest.approx(f1_score(test_labels, pred))
    assert results["nbsvm-bi"]["seconds"] >= 0


@pytest.mark.parametrize("n_labels", [3, 5])
def test_multiclass_baselines_beat_chance(n_labels):
    train_texts, train_labels = labelled_texts(60 * n_labels, n_labels, seed=5)
    test_texts, test_labels = labelled_texts(30 * n_labels, n_labels, seed=6)
    for predict in (nbsvm_bi, tfidf_lr):
        pred = predict(train_texts, train_labels, test_texts)
        assert set(np.unique(pred)) == set(range(n_labels))
    results = linear_baselines(train_texts, train_labels, test_texts, test_labels)
    assert set(results) == {"nbsvm-bi", "tfidf-lr"}
    for name, scores in results.items():
        assert set(scores) == {"accuracy", "f1", "seconds"}
        assert scores["accuracy"] > 0.9, (name, scores)  # chance is 1 / n_labels
        assert scores["f1"] > 0.9, (name, scores)  # macro F1


def test_empty_vocabulary_falls_back():
    # Every word occurs once: min_df=2 leaves TF-IDF no term, so it refits with min_df=1.
    train_texts = ["alpha bravo", "charlie delta", "echo foxtrot", "golf hotel"]
    train_labels = np.array([0, 1, 0, 1])
    pred = tfidf_lr(train_texts, train_labels, ["alpha bravo", "golf hotel"])
    np.testing.assert_array_equal(pred, [0, 1])
    # No token at all (no word, no ! or ?): both predict the majority label of the train set.
    empty = ["...", "", "- - -", ", ;"]
    labels = np.array([2, 1, 2, 0])
    for predict in (nbsvm_bi, tfidf_lr):
        np.testing.assert_array_equal(predict(empty, labels, ["x", ""]), [2, 2])
    results = linear_baselines(empty, labels, ["...", "?"], np.array([2, 0]))
    assert results["tfidf-lr"]["accuracy"] == 0.5 and results["nbsvm-bi"]["accuracy"] == 0.5
    # A single train text (fewer texts than min_df).
    np.testing.assert_array_equal(tfidf_lr(["only one"], np.array([1]), ["x"]), [1])


def test_unicode_token_pattern_matches_ascii_pattern_on_ascii():
    rng = random.Random(0)
    alphabet = string.printable + "'" * 10
    ascii_re, unicode_re = re.compile(TOKEN_PATTERN), re.compile(UNICODE_TOKEN_PATTERN)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))).lower()
        assert ascii_re.findall(text) == unicode_re.findall(text), text
    assert unicode_re.findall("amélie's café, 東京!") == ["amélie's", "café", "東京", "!"]


def test_compressor_floors(monkeypatch):
    rng = random.Random(0)
    repetitive = ["the cat sat on the mat and the dog sat on the log"] * 2000
    noise = [bytes(rng.randrange(256) for _ in range(200)).decode("latin-1") for _ in range(500)]
    low, high = compressor_bits_per_byte(repetitive), compressor_bits_per_byte(iter(noise))
    for floors in (low, high):
        assert set(floors) == {"lzma", "bz2"}
        assert all(0 < value < 8 for value in floors.values()), floors
    assert low["lzma"] < high["lzma"] and low["bz2"] < high["bz2"]
    assert low["lzma"] < 0.1 and high["lzma"] > 4

    # Streaming in small pieces gives the sizes of one-shot compression of the joined bytes.
    raw = "\n".join(noise[:100] + repetitive[:300]).encode("utf-8")
    monkeypatch.setattr(baselines, "_CHUNK_BYTES", 1000)
    streamed = compressor_bits_per_byte(t for t in noise[:100] + repetitive[:300])
    assert streamed["lzma"] == 8 * len(lzma.compress(raw, preset=baselines.LZMA_PRESET)) / len(raw)
    assert streamed["bz2"] == 8 * len(bz2.compress(raw, baselines.BZ2_LEVEL)) / len(raw)

    with pytest.raises(ValueError):
        compressor_bits_per_byte([])


def test_bench_accuracy_baseline_takes_a_users_files(tmp_path):
    # python -m bench.accuracy.baseline --train-file ... --test-file ...: the recipes' data flags, any label set.
    import csv

    from bench.accuracy import baseline

    words = {"billing": "invoice refund charged", "bug": "crash error broken", "feature": "please add option"}
    for name, count in (("tickets", 90), ("tickets-test", 30)):
        with open(tmp_path / f"{name}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "topic"])
            for i in range(count):
                label = list(words)[i % 3]
                writer.writerow([f"ticket {i}: the app {words[label]} today", label])
    report = tmp_path / "report.json"
    assert baseline.main(["--train-file", str(tmp_path / "tickets.csv"), "--test-file", str(tmp_path / "tickets-test.csv"),
                          "--label-column", "topic", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["dataset"] == "tickets.csv" and result["n_test"] == 30 and result["test_split"] == "test"
    assert {r["model"] for r in result["results"]} == {"nbsvm-bi", "tfidf-lr"}
    assert all(r["accuracy"] > 0.9 for r in result["results"])
