"""Compare IMDb classifier folders of the same seed on the validation reviews they were chosen on (never test).

    python -m bench.accuracy.paired_validation runs/a runs/b [runs/c ...] [--batch-size 64]

Each folder's model scores the validation split its seed carved (metrics.json says the seed; every folder must share
it). Printed per folder: the accuracy of the model, and, where it has an n-gram path, of each path alone (the
Transformer's logits; the n-gram path's). Then each folder against the first, paired on the same reviews: the
difference and its standard error from the reviews the two classify differently (McNemar), the way to tell a few tenths of a
point from noise on IMDb's 1,250 validation reviews when two runs differ by one setting.
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from scratchformer import ScratchformerForSequenceClassification
from training.data import load_imdb


@torch.no_grad()
def path_predictions(folder: Path, texts: list[str], batch_size: int) -> dict[str, np.ndarray]:
    """Predicted labels of the model, and of each of its paths where it has an n-gram path."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = ScratchformerForSequenceClassification.from_pretrained(folder).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch with little padding
    joint, ngram = np.zeros(len(texts), np.int64), np.zeros(len(texts), np.int64)
    transformer = np.zeros(len(texts), np.int64)
    for first in range(0, len(order), batch_size):
        rows = order[first : first + batch_size]
        batch = tokenizer([texts[i] for i in rows], padding=True, return_tensors="pt")
        logits = model(**batch).logits
        joint[rows] = logits.argmax(-1).numpy()
        if model.ngram_logits is not None:
            ngram_logits = model.ngram_logits(batch["input_ids"], batch["attention_mask"])
            ngram[rows] = ngram_logits.argmax(-1).numpy()
            transformer[rows] = (logits - ngram_logits).argmax(-1).numpy()
    if model.ngram_logits is None:
        return {"model": joint}
    return {"model": joint, "transformer path": transformer, "n-gram path": ngram}


def paired_difference(first: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Accuracy of `other` minus `first` (points), and its standard error from the discordant reviews."""
    gained, lost = float(np.sum(~first & other)), float(np.sum(first & ~other))
    n = len(first)
    return 100 * (gained - lost) / n, 100 * math.sqrt(max(gained + lost - (gained - lost) ** 2 / n, 0.0)) / n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-source", default=None)
    args = parser.parse_args(argv)
    folders = [Path(folder) for folder in args.folders]
    seeds = {json.loads((folder / "metrics.json").read_text()).get("seed", 0) for folder in folders}
    if len(seeds) != 1:
        raise SystemExit(f"paired_validation: the folders come from seeds {sorted(seeds)}; their validation splits "
                         "differ, so they cannot be paired")
    validation = load_imdb(source=args.data_source, seed=seeds.pop())["validation"]
    labels = np.asarray(validation["label"])
    correct = {}
    for folder in folders:
        for path, predicted in path_predictions(folder, list(validation["text"]), args.batch_size).items():
            correct[folder, path] = predicted == labels
            print(f"{folder}  {path}: {100 * correct[folder, path].mean():.2f} %")
    report = {}
    for folder in folders[1:]:
        difference, error = paired_difference(correct[folders[0], "model"], correct[folder, "model"])
        report[str(folder)] = {"difference": round(difference, 2), "standard_error": round(error, 2)}
        print(f"{folder} - {folders[0]}: {difference:+.2f} ± {error:.2f} points ({len(labels)} reviews, paired)")
    return report


if __name__ == "__main__":
    main()
