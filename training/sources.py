"""Where a recipe's data comes from: the user's files or a `datasets` dataset, or by default IMDb / number words.

Every recipe takes the same flags (transformers' `run_glue.py` / `run_clm.py` / `run_translation.py` in this
project's dash style):

    --train-file F [--validation-file F] [--test-file F]    CSV, TSV, JSON, JSON Lines, Parquet; for the LM also a
                                                            .txt file (a document per line) or a folder of .txt
                                                            files (a document per file); for classification also
                                                            a folder of label-named sub-folders of .txt files
    --dataset NAME [--dataset-config C] [--dataset-split S] anything `datasets.load_dataset` takes (a Hub name when
                                                            online, a local folder or script), or a folder written
                                                            by `save_to_disk`
    --text-column, --label-column (classification), --source-column, --target-column (seq2seq)

Reading files is `datasets`' job (its csv/json/parquet/text builders, cached as Arrow on disk); this module checks
what it read, so that bad input stops with one error naming the file, the column or the value. Without a validation
split, one is carved from train (stratified by label for classification). Without a test split, the recipes report
validation only and say so.
"""

from __future__ import annotations

import argparse
import codecs
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from .data import _stratified_take

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
# File ending -> (datasets builder, its options).
FORMATS = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".txt": ("text", {}),
}
# What a split is called in datasets found in the wild.
SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "valid", "dev", "val"), "test": ("test",)}
# Columns tried in this order when the user names none.
TEXT_COLUMNS = ("text", "sentence", "content", "document", "review", "body", "question", "tweet", "comment")
LABEL_COLUMNS = ("label", "labels", "category", "class", "target", "sentiment", "intent", "topic", "y")
SOURCE_COLUMNS = ("source", "src", "input", "question")
TARGET_COLUMNS = ("target", "tgt", "output", "answer")
# A validation split carved from train: 10 % of it, at least 100 examples, at most 2,000 (and never over a fifth).
CARVED_SHARE, CARVED_MIN, CARVED_MAX = 0.1, 100, 2000


class DataError(ValueError):
    """Input data a recipe cannot use. The message names the file, the column or the value."""


@dataclass
class Source:
    """What was read: the splits (train, validation, and test where there is one), and what to say about them."""

    splits: datasets.DatasetDict
    name: str  # for metrics.json and the card: a file or folder name, or a `datasets` id
    hub_dataset: str | None = None  # the Hub id, when the data came from the Hub
    notes: list[str] = field(default_factory=list)  # what was done to the data (rows dropped, validation carved)

    @property
    def eval_split(self) -> str:
        """The split results are reported on: test, or validation when there is no test data."""
        return "test" if "test" in self.splits else "validation"


def add_arguments(parser: argparse.ArgumentParser, task: str) -> None:
    """The data flags of a recipe; task is "classify", "lm" or "seq2seq"."""
    group = parser.add_argument_group("your own data (without these, the recipe's default data)")
    group.add_argument("--train-file", help="CSV, TSV, JSON, JSON Lines or Parquet"
                       + {"lm": "; a .txt file (a document per line) or a folder of .txt files (a document per file)",
                          "classify": "; or a folder of label-named sub-folders of .txt files"}.get(task, ""))
    group.add_argument("--validation-file", help="as --train-file (default: carved from train)")
    group.add_argument("--test-file", help="as --train-file (default: none; results are then on validation)")
    group.add_argument("--dataset", help="a datasets.load_dataset name or local folder, or a save_to_disk folder")
    group.add_argument("--dataset-config", help="the dataset's configuration name")
    group.add_argument("--dataset-split", help="which splits to use: NAME (the train split) or "
                       "train=NAME,validation=NAME,test=NAME (default: train, validation/valid/dev, test)")
    if task == "seq2seq":
        group.add_argument("--source-column", help="default: source, or the first of two text columns")
        group.add_argument("--target-column", help="default: target, or the second of two text columns")
    else:
        group.add_argument("--text-column", help=f"default: the first of {', '.join(TEXT_COLUMNS[:4])}, ... present, "
                           "or the only text column")
    if task == "classify":
        group.add_argument("--label-column", help=f"default: the first of {', '.join(LABEL_COLUMNS[:4])}, ... present, "
                           "or the only other column")


def given(args) -> bool:
    """Whether the user named data of their own."""
    return bool(getattr(args, "train_file", None) or getattr(args, "dataset", None))


def check_flags(args) -> None:
    """Refuse flag combinations that cannot mean anything."""
    files = [getattr(args, f"{split}_file", None) for split in ("validation", "test")]
    if args.dataset and args.train_file:
        raise DataError("give --train-file or --dataset, not both")
    if any(files) and not args.train_file:
        raise DataError("--validation-file / --test-file need a --train-file")
    if (args.dataset_config or args.dataset_split) and not args.dataset:
        raise DataError("--dataset-config / --dataset-split need a --dataset")


# ---------------------------------------------------------------------------------------------------------- reading


def check_utf8(path: Path) -> None:
    """Raise DataError naming the file and the byte offset where it stops being UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise DataError(f"{path} is not UTF-8 text: byte 0x{chunk[error.start]:02x} at offset "
                                f"{offset + error.start} ({error.reason}); save it as UTF-8") from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as error:
            raise DataError(f"{path} is not UTF-8 text: it ends inside a character ({error.reason})") from None


def _text_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"{folder} holds no .txt files")
    return files


def _documents(files: list[Path], label: str | None = None) -> datasets.Dataset:
    """One row per file (its whole text), with its label when given."""
    for file in files:
        check_utf8(file)
    rows = {"text": [file.read_text(encoding="utf-8") for file in files]}
    if label is not None:
        rows["label"] = [label] * len(files)
    return datasets.Dataset.from_dict(rows)


def read_file(path: str, task: str) -> datasets.Dataset:
    """One split from a file or folder, as datasets reads it."""
    file = Path(path).expanduser()
    if not file.exists():
        raise DataError(f"{path}: no such file or folder")
    if file.is_dir():
        folders = sorted(p for p in file.iterdir() if p.is_dir() and not p.name.startswith("."))
        if task == "classify":
            if len(folders) < 2:
                raise DataError(f"{path}: a folder of training texts needs one sub-folder per label (e.g. {path}/pos, "
                                f"{path}/neg) holding .txt files; found {len(folders)} sub-folder(s)")
            return datasets.concatenate_datasets([_documents(_text_files(f), f.name) for f in folders])
        return _documents(_text_files(file))
    suffix = file.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; use one of {', '.join(FORMATS)}")
    if suffix == ".txt" and task != "lm":
        raise DataError(f"{path}: a .txt file has no columns; use CSV, TSV, JSON Lines or Parquet"
                        + (" or a folder of label-named sub-folders" if task == "classify" else ""))
    if suffix != ".parquet":
        check_utf8(file)
    builder, options = FORMATS[suffix]
    try:
        return datasets.load_dataset(builder, data_files={"train": str(file)}, split="train", **options)
    except Exception as error:  # noqa: BLE001 - a parser's error, said once with the file's name
        raise DataError(f"{path}: could not be read as {suffix[1:].upper()}: {type(error).__name__}: {error}") from None


def _split_choice(args, available: list[str]) -> dict[str, str]:
    """Which of a dataset's splits serve as train / validation / test."""
    if args.dataset_split:
        if "=" not in args.dataset_split:
            chosen = {"train": args.dataset_split}
        else:
            chosen = {}
            for item in args.dataset_split.split(","):
                role, _, name = item.partition("=")
                if role.strip() not in SPLITS or not name.strip():
                    raise DataError(f"--dataset-split {args.dataset_split!r}: expected train=NAME,validation=NAME,test=NAME")
                chosen[role.strip()] = name.strip()
        missing = [name for name in chosen.values() if name not in available]
        if missing:
            raise DataError(f"{args.dataset}: no split {missing[0]!r}; it has {', '.join(available)}")
        if "train" not in chosen:
            raise DataError(f"--dataset-split {args.dataset_split!r} names no train split")
        return chosen
    chosen = {role: next(n for n in names if n in available)
              for role, names in SPLIT_NAMES.items() if any(n in available for n in names)}
    if "train" not in chosen:
        if len(available) != 1:
            raise DataError(f"{args.dataset}: no 'train' split among {', '.join(available)}; choose with --dataset-split")
        chosen = {"train": available[0]}
    return chosen


def read_dataset(args) -> tuple[datasets.DatasetDict, str | None]:
    """The splits of --dataset, and its Hub id when it came from the Hub."""
    path = Path(args.dataset).expanduser()
    saved = path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists())
    try:
        data = datasets.load_from_disk(str(path)) if saved else datasets.load_dataset(args.dataset, args.dataset_config)
    except Exception as error:  # noqa: BLE001 - not found, offline, a bad script: said once
        raise DataError(f"--dataset {args.dataset}: could not be loaded: {type(error).__name__}: {error}") from None
    if isinstance(data, datasets.Dataset):
        data = datasets.DatasetDict(train=data)
    chosen = _split_choice(args, list(data))
    return datasets.DatasetDict({role: data[name] for role, name in chosen.items()}), (None if path.exists() else args.dataset)


def read(args, task: str) -> tuple[datasets.DatasetDict, str, str | None]:
    """The user's splits as read, their display name and Hub id."""
    check_flags(args)
    if args.dataset:
        data, hub = read_dataset(args)
        return data, args.dataset.rstrip("/").split("/")[-1] if hub is None else args.dataset, hub
    data = datasets.DatasetDict({split: read_file(getattr(args, f"{split}_file"), task)
                                 for split in SPLITS if getattr(args, f"{split}_file", None)})
    return data, display_name(Path(args.train_file)), None


def display_name(train: Path) -> str:
    """What the card calls a user's data: the train file's name, with its folder's when the name alone says nothing
    (data/train.csv rather than train.csv)."""
    train = train.expanduser().resolve()
    generic = train.stem.lower() in {"train", "training", "data", "dataset", "all", "corpus"}
    return f"{train.parent.name}/{train.name}" if generic and train.parent.name else train.name


# ---------------------------------------------------------------------------------------------------------- columns


def _string_columns(split: datasets.Dataset) -> list[str]:
    return [name for name, feature in split.features.items()
            if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")]


def choose_column(data: datasets.DatasetDict, given_name: str | None, kind: str, preferred: tuple[str, ...],
                  flag: str, candidates: list[str], source: str) -> str:
    """The column holding `kind`: the one named, else the first preferred name present, else the only candidate."""
    columns = data["train"].column_names
    if given_name is not None:
        for split, part in data.items():
            if given_name not in part.column_names:
                raise DataError(f"{source}: the {split} data has no column {given_name!r} ({flag}); its columns: "
                                f"{', '.join(part.column_names)}")
        return given_name
    for name in preferred:
        if name in columns:
            return name
    if len(candidates) == 1:
        return candidates[0]
    raise DataError(f"{source}: which column holds the {kind}? Name it with {flag}; the columns are: {', '.join(columns)}")


def _drop_empty(data: datasets.DatasetDict, columns: list[str], source: str, notes: list[str]) -> datasets.DatasetDict:
    """Rows whose text columns are missing or blank are dropped, and counted; a split with none left is an error."""
    kept = {}
    for split, part in data.items():
        big = part.data.nbytes > 20_000_000  # read by worker processes: the main one does not page a corpus in
        keep = part.filter(lambda rows: [all(isinstance(r, str) and r.strip() for r in values)
                                         for values in zip(*(rows[c] for c in columns))], batched=True,
                           num_proc=2 if big else None)
        dropped = len(part) - len(keep)
        if dropped:
            notes.append(f"{dropped} of {len(part)} {split} rows dropped: empty {' or '.join(columns)}")
            logger.warning("%s: %s", source, notes[-1])
        if len(keep) == 0:
            raise DataError(f"{source}: the {split} data has no non-empty {' / '.join(columns)} "
                            f"({len(part)} rows, all empty)")
        kept[split] = keep
    return datasets.DatasetDict(kept)


def _as_strings(data: datasets.DatasetDict, columns: list[str]) -> datasets.DatasetDict:
    """Text columns that hold numbers (a CSV column of codes) become strings; anything else is refused."""
    for split, part in data.items():
        for column in columns:
            feature = part.features[column]
            if isinstance(feature, datasets.Value) and feature.dtype not in ("string", "large_string"):
                data[split] = part = part.cast_column(column, datasets.Value("string"))
            elif not isinstance(feature, datasets.Value):
                raise DataError(f"column {column!r} of the {split} data holds {feature}, not text")
    return data


# ----------------------------------------------------------------------------------------------------------- labels


def _label_names(data: datasets.DatasetDict, column: str, source: str) -> list[str]:
    """The label set: the data's own ClassLabel names, or its distinct values sorted (numbers as numbers)."""
    feature = data["train"].features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    if not isinstance(feature, datasets.Value):  # a list per row: several labels
        raise DataError(f"{source}: column {column!r} holds lists ({feature}): multi-label classification is not "
                        "supported; give one label per row")
    values = set(data["train"].unique(column))
    if None in values:
        row = data["train"][column].index(None)
        raise DataError(f"{source}: train row {row} has no label (column {column!r})")
    if feature.dtype.startswith("float"):
        if any(float(v) != int(v) for v in values):
            raise DataError(f"{source}: column {column!r} holds non-integer numbers ({sorted(values)[:3]} ...): "
                            "regression is not supported; give class labels")
        values = {int(v) for v in values}
    return [str(v) for v in sorted(values)]


def encode_labels(data: datasets.DatasetDict, column: str, source: str) -> tuple[datasets.DatasetDict, list[str]]:
    """Columns text + label, label a ClassLabel of the train labels; a label seen only outside train is an error."""
    names = _label_names(data, column, source)
    if len(names) < 2:
        raise DataError(f"{source}: the train data has one label only ({names[0]!r} in column {column!r}); a "
                        "classifier needs two or more")
    index = {name: i for i, name in enumerate(names)}
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    encoded = {}
    for split, part in data.items():
        feature = part.features[column]
        to_name = feature.int2str if isinstance(feature, datasets.ClassLabel) else (
            (lambda v: str(int(v))) if isinstance(feature, datasets.Value) and feature.dtype.startswith("float") else str)
        unseen = sorted({to_name(v) for v in part.unique(column) if v is not None} - index.keys())
        if unseen:
            raise DataError(f"{source}: label {unseen[0]!r} of the {split} data never occurs in train (labels in "
                            f"train: {', '.join(names)})")
        if None in part.unique(column):
            raise DataError(f"{source}: {split} row {part[column].index(None)} has no label (column {column!r})")
        encoded[split] = part.map(lambda rows: {"label": [index[to_name(v)] for v in rows[column]]}, batched=True,
                                  remove_columns=[c for c in part.column_names if c != "text"], features=features)
    return datasets.DatasetDict(encoded), names


# ------------------------------------------------------------------------------------------------------ the splits


def carved_size(rows: int) -> int:
    """How many train rows a carved validation split takes."""
    return min(CARVED_MAX, max(CARVED_MIN, round(CARVED_SHARE * rows)), rows // 5)


def _subsample(part: datasets.Dataset, count: int | None, seed: int, stratify: bool) -> datasets.Dataset:
    if count is None or count >= len(part):
        return part
    if stratify:
        taken, _ = _stratified_take(part["label"], int(count), random.Random(seed))
        return part.select(taken)
    return part.shuffle(seed=seed).select(range(count))


def finish_splits(data: datasets.DatasetDict, args, stratify: bool, notes: list[str], source: str) -> datasets.DatasetDict:
    """Carve validation from train where there is none, then apply --max-train-samples / --max-test-samples."""
    if "validation" not in data:
        train = data["train"]
        size = carved_size(len(train))
        if size < 1:
            raise DataError(f"{source}: {len(train)} train rows are too few to carve a validation split from; give "
                            "--validation-file")
        if stratify:
            validation, rest = _stratified_take(train["label"], size, random.Random(args.seed))
        else:  # numpy, not lists: a corpus of millions of lines carves in constant Python memory
            taken = np.zeros(len(train), dtype=bool)
            taken[np.random.default_rng(args.seed).choice(len(train), size, replace=False)] = True
            validation, rest = np.flatnonzero(taken), np.flatnonzero(~taken)
        data["train"], data["validation"] = train.select(rest), train.select(validation)
        notes.append(f"validation: {size} of the {len(train)} train rows, carved"
                     + (" stratified by label" if stratify else "") + f" (seed {args.seed})")
    data["train"] = _subsample(data["train"], args.max_train_samples, args.seed, stratify)
    if "test" in data:
        data["test"] = _subsample(data["test"], args.max_test_samples, args.seed, stratify)
    return datasets.DatasetDict({split: data[split] for split in SPLITS if split in data})


def classification(args) -> tuple[Source, list[str]]:
    """The user's classification data: splits with columns text and label (a ClassLabel), and the label names."""
    data, name, hub = read(args, "classify")
    source = name
    strings = _string_columns(data["train"])
    text = choose_column(data, args.text_column, "text", TEXT_COLUMNS, "--text-column", strings, source)
    others = [c for c in data["train"].column_names if c != text]
    label = choose_column(data, args.label_column, "labels", LABEL_COLUMNS, "--label-column", others, source)
    if label == text:
        raise DataError(f"{source}: --text-column and --label-column name the same column {text!r}")
    data = datasets.DatasetDict({s: part.select_columns([text, label]).rename_columns({text: "__text"})
                                 .rename_columns({"__text": "text"}) for s, part in data.items()})
    data = _as_strings(data, ["text"])
    notes: list[str] = []
    data = _drop_empty(data, ["text"], source, notes)
    data, names = encode_labels(data, label, source)
    return Source(finish_splits(data, args, True, notes, source), name, hub, notes), names


def corpus(args) -> Source:
    """The user's text corpus for the LM: splits with one column, text, a document per row."""
    data, name, hub = read(args, "lm")
    text = choose_column(data, args.text_column, "text", TEXT_COLUMNS, "--text-column", _string_columns(data["train"]), name)
    data = datasets.DatasetDict({s: part.select_columns([text]).rename_column(text, "text") if text != "text"
                                 else part.select_columns(["text"]) for s, part in data.items()})
    data = _as_strings(data, ["text"])
    notes: list[str] = []
    data = _drop_empty(data, ["text"], name, notes)
    return Source(finish_splits(data, args, False, notes, name), name, hub, notes)


def unlabeled(path: str, text_column: str | None) -> datasets.Dataset:
    """--unlabeled-file: more text for pre-training, one column `text`, in the LM's formats (a .txt file is a document
    per line, a folder of .txt files a document per file, CSV/JSON/Parquet a document per row)."""
    part = read_file(path, "lm")
    data = datasets.DatasetDict({"train": part})
    named = text_column if text_column in part.column_names else None
    text = choose_column(data, named, "text", TEXT_COLUMNS, "--text-column", _string_columns(part), path)
    data = _as_strings(datasets.DatasetDict({"train": part.select_columns([text]).rename_column(text, "text")
                                             if text != "text" else part.select_columns(["text"])}), ["text"])
    return _drop_empty(data, ["text"], path, [])["train"]


def pairs(args) -> Source:
    """The user's seq2seq pairs: splits with columns source and target."""
    data, name, hub = read(args, "seq2seq")
    strings = _string_columns(data["train"])
    source = choose_column(data, args.source_column, "source texts", SOURCE_COLUMNS, "--source-column", strings[:1], name)
    target = choose_column(data, args.target_column, "target texts", TARGET_COLUMNS, "--target-column",
                           [c for c in strings if c != source][:1] if len(strings) == 2 else [], name)
    if source == target:
        raise DataError(f"{name}: --source-column and --target-column name the same column {source!r}")
    renamed = {}
    for split, part in data.items():
        part = part.select_columns([source, target])
        part = part.rename_columns({source: "__source", target: "__target"})
        renamed[split] = part.rename_columns({"__source": "source", "__target": "target"})
    data = _as_strings(datasets.DatasetDict(renamed), ["source", "target"])
    notes: list[str] = []
    for split, part in data.items():  # an empty target cannot be learnt nor scored: refuse it rather than drop it
        empty = next((i for i, t in enumerate(part["target"]) if t is None or not t.strip()), None)
        if empty is not None:
            raise DataError(f"{name}: {split} row {empty} has an empty target (column {target!r})")
    data = _drop_empty(data, ["source"], name, notes)
    return Source(finish_splits(data, args, False, notes, name), name, hub, notes)
