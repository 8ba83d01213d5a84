"""training/sources.py: every file format and source reads to the same splits, columns are guessed or named, and bad
input stops with one error naming the file, the column or the value."""

import argparse
import json

import datasets
import pytest

from training import sources

LABELS = ["billing", "bug", "feature"]


def rows(n: int = 60, offset: int = 0) -> list[dict]:
    """Tickets whose label is in their wording; long, with odd characters."""
    return [{"id": i, "text": f"ticket {i} ünïcode ✓ «{LABELS[i % 3]}» " + "words " * (i % 7),
             "category": LABELS[i % 3]} for i in range(offset, offset + n)]


def write(path, records: list[dict]):
    """records in the format path's ending names."""
    import pandas as pd

    frame = pd.DataFrame(records)
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".json":
        path.write_text(json.dumps(records, ensure_ascii=False))
    elif suffix == ".parquet":
        frame.to_parquet(path)
    return path


def parse(*argv, task="classify"):
    parser = argparse.ArgumentParser()
    sources.add_arguments(parser, task)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train-samples", type=int)
    parser.add_argument("--max-test-samples", type=int)
    return parser.parse_args(argv)


def as_lists(data: datasets.DatasetDict) -> dict:
    return {split: {c: part[c] for c in part.column_names} for split, part in data.items()}


@pytest.mark.parametrize("suffix", [".tsv", ".json", ".jsonl", ".parquet"])
def test_every_format_reads_as_the_csv_does(tmp_path, suffix):
    expected, _ = sources.classification(parse("--train-file", str(write(tmp_path / "t.csv", rows())),
                                               "--test-file", str(write(tmp_path / "s.csv", rows(12, 100)))))
    got, labels = sources.classification(parse("--train-file", str(write(tmp_path / f"t{suffix}", rows())),
                                               "--test-file", str(write(tmp_path / f"s{suffix}", rows(12, 100)))))
    assert labels == LABELS and as_lists(got.splits) == as_lists(expected.splits)
    assert got.splits["train"].features["label"].names == LABELS and got.eval_split == "test"
    assert len(got.splits["validation"]) == 12 and got.name == f"t{suffix}"  # a fifth of 60, stratified
    assert sorted(got.splits["validation"]["label"]) == [0] * 4 + [1] * 4 + [2] * 4


def test_label_folders_and_saved_datasets_read_the_same_texts(tmp_path):
    for split, part in (("train", rows()), ("test", rows(12, 100))):
        for row in part:
            folder = tmp_path / "folders" / split / row["category"]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{row['id']}.txt").write_text(row["text"], encoding="utf-8")
    got, labels = sources.classification(parse("--train-file", str(tmp_path / "folders" / "train"),
                                               "--test-file", str(tmp_path / "folders" / "test")))
    assert labels == LABELS and sorted(got.splits["test"]["text"]) == sorted(r["text"] for r in rows(12, 100))
    # save_to_disk and a plain folder of CSV files through --dataset: splits as the dataset names them.
    whole = datasets.DatasetDict(train=datasets.Dataset.from_list(rows()), test=datasets.Dataset.from_list(rows(12, 100)))
    whole.save_to_disk(str(tmp_path / "saved"))
    saved, labels = sources.classification(parse("--dataset", str(tmp_path / "saved"), "--label-column", "category"))
    assert labels == LABELS and saved.name == "saved" and saved.hub_dataset is None
    assert sorted(saved.splits["test"]["text"]) == sorted(got.splits["test"]["text"])
    (tmp_path / "csvs").mkdir()
    write(tmp_path / "csvs" / "train.csv", rows())
    write(tmp_path / "csvs" / "test.csv", rows(12, 100))
    folder, _ = sources.classification(parse("--dataset", str(tmp_path / "csvs")))
    assert as_lists(folder.splits) == as_lists(saved.splits)


def test_integer_and_classlabel_labels_keep_their_order(tmp_path):
    numbered = [dict(r, category=[10, 2, 7][i % 3]) for i, r in enumerate(rows())]
    _, labels = sources.classification(parse("--train-file", str(write(tmp_path / "n.csv", numbered))))
    assert labels == ["2", "7", "10"]  # numbers sorted as numbers
    data = datasets.Dataset.from_list(rows()).cast_column("category", datasets.ClassLabel(names=["feature", "bug", "billing"]))
    datasets.DatasetDict(train=data).save_to_disk(str(tmp_path / "cl"))
    _, labels = sources.classification(parse("--dataset", str(tmp_path / "cl")))
    assert labels == ["feature", "bug", "billing"]  # the data's own names and ids


def test_lm_text_files_folders_and_columns(tmp_path):
    (tmp_path / "corpus.txt").write_text("first line\n\nsecond ünïcode line\nthird\n" * 20, encoding="utf-8")
    got = sources.corpus(parse("--train-file", str(tmp_path / "corpus.txt"), task="lm"))
    assert got.splits["train"].column_names == ["text"] and len(got.splits["train"]) + len(got.splits["validation"]) == 60
    assert any("20 of 80 train rows dropped" in note for note in got.notes)  # the blank lines
    (tmp_path / "novels").mkdir()
    for i in range(12):
        (tmp_path / "novels" / f"{i}.txt").write_text(f"Chapter {i}\n\nIt was a dark night.\n" * 50)
    novels = sources.corpus(parse("--train-file", str(tmp_path / "novels"), task="lm"))
    assert len(novels.splits["train"]) + len(novels.splits["validation"]) == 12  # a document per file
    assert novels.splits["train"][0]["text"].count("\n\n") == 50
    table = sources.corpus(parse("--train-file", str(write(tmp_path / "docs.jsonl", rows())), task="lm"))
    assert table.splits["train"].column_names == ["text"]


def test_seq2seq_pairs_guess_two_text_columns(tmp_path):
    pairs = [{"en": f"number {i}", "de": f"Nummer {i}"} for i in range(50)]
    got = sources.pairs(parse("--train-file", str(write(tmp_path / "p.csv", pairs)), task="seq2seq"))
    assert got.splits["train"].column_names == ["source", "target"] and got.splits["train"][0]["target"].startswith("Nummer")


def error_of(*argv, task="classify") -> str:
    load = {"classify": sources.classification, "lm": sources.corpus, "seq2seq": sources.pairs}[task]
    with pytest.raises(sources.DataError) as raised:
        load(parse(*argv, task=task))
    return str(raised.value)


def test_bad_input_gets_one_clear_error(tmp_path):
    train = str(write(tmp_path / "train.csv", rows()))
    assert "nope.csv: no such file" in error_of("--train-file", str(tmp_path / "nope.csv"))
    (tmp_path / "sheet.xlsx").write_bytes(b"PK")
    assert "unsupported file type '.xlsx'" in error_of("--train-file", str(tmp_path / "sheet.xlsx"))
    message = error_of("--train-file", train, "--label-column", "topic")
    assert "no column 'topic'" in message and "id, text, category" in message
    one = write(tmp_path / "one.csv", [dict(r, category="bug") for r in rows()])
    assert "one label only ('bug'" in error_of("--train-file", str(one))
    unseen = write(tmp_path / "unseen.csv", rows(10) + [{"id": 99, "text": "hello", "category": "outage"}])
    assert "label 'outage' of the test data never occurs in train" in error_of("--train-file", train, "--test-file",
                                                                                 str(unseen))
    blank = write(tmp_path / "blank.csv", [dict(r, text=" ") for r in rows()])
    assert "no non-empty text" in error_of("--train-file", str(blank))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 ok,a\nfine,b\n".encode("latin-1"))
    assert f"{latin} is not UTF-8 text: byte 0xe9 at offset 14" in error_of("--train-file", str(latin))
    listed = write(tmp_path / "multi.jsonl", [dict(r, category=[r["category"], "other"]) for r in rows()])
    assert "multi-label classification is not supported" in error_of("--train-file", str(listed))
    wide = write(tmp_path / "wide.csv", [{"title": r["text"], "summary": r["text"], "y": r["category"]} for r in rows()])
    assert "which column holds the text? Name it with --text-column; the columns are: title, summary, y" in error_of(
        "--train-file", str(wide))
    empty_target = write(tmp_path / "p.csv", [{"source": "a", "target": "b"}, {"source": "c", "target": ""}] * 10)
    assert "row 1 has an empty target (column 'target')" in error_of("--train-file", str(empty_target), task="seq2seq")
    (tmp_path / "plain.txt").write_text("no labels here\n")
    assert "plain.txt: a .txt file has no columns" in error_of("--train-file", str(tmp_path / "plain.txt"))


def test_empty_texts_are_dropped_and_counted(tmp_path):
    some = write(tmp_path / "some.csv", rows() + [{"id": 70, "text": "", "category": "bug"}] * 3)
    got, _ = sources.classification(parse("--train-file", str(some)))
    assert "3 of 63 train rows dropped: empty text" in got.notes
