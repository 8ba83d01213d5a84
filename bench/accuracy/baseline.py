"""Linear baselines, TF-IDF + logistic regression and NBSVM-bi, on IMDb's split (training.data.load_imdb) or on a
user's labelled texts (the recipes' data flags, training/sources.py).

NBSVM is from Wang & Manning, "Baselines and Bigrams: Simple, Good Sentiment and Topic Classification",
ACL 2012: binarized uni+bigram counts scaled by the naive-Bayes log-count ratio r, then an L2-regularized
linear SVM (C = 1) whose weights are interpolated with their mean magnitude (beta = 0.25); both models live in
training.baselines. The data are the IMDb reviews of Maas et al., ACL 2011. By default both models train on
train+validation (the full official 25,000-review train split; no hyperparameter is tuned on validation) and are
tested on all 25,000 test reviews.

Usage: python -m bench.accuracy.baseline [--source SOURCE] [--json PATH]
       python -m bench.accuracy.baseline --train-file train.csv --test-file test.csv [--text-column C] [--label-column C]
(with no test data, the baselines are tested on the validation split carved from train, and train on the rest)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import sklearn

from training import sources
from training.baselines import BASELINES, TOKEN_PATTERN, linear_baselines, nbsvm_bi, tfidf_lr  # noqa: F401
from training.data import load_imdb


def main(argv: list[str] | None = None) -> int:
    """Run the baselines, print a table, and optionally write the results as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy.baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="IMDb source: auto (default), npm, hf, or a path to aclImdb/")
    parser.add_argument("--cache-dir", default=None, help="IMDb cache folder (default: see training.data)")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    parser.add_argument("--train-on", choices=["train+validation", "train"], default="train+validation")
    parser.add_argument("--seed", type=int, default=0, help="validation split seed (for --train-on train)")
    parser.add_argument("--only", choices=sorted(BASELINES), action="append", help="run only these baselines")
    parser.add_argument("--max-train-samples", type=int, default=None, help="smoke runs: subsample train")
    parser.add_argument("--max-test-samples", type=int, default=None, help="smoke runs: subsample test")
    sources.add_arguments(parser, "classify")
    args = parser.parse_args(argv)

    if sources.given(args):
        try:
            source, _ = sources.classification(args)
        except sources.DataError as error:
            parser.exit(2, f"error: {error}\n")
        data, data_name, test_split = source.splits, source.name, source.eval_split
    else:
        data = load_imdb(
            args.source,
            cache_dir=args.cache_dir,
            seed=args.seed,
            max_train_samples=args.max_train_samples,
            max_test_samples=args.max_test_samples,
        )
        data_name, test_split = "imdb (Maas et al., ACL 2011)", "test"
    train_on = args.train_on if test_split == "test" else "train"  # never train on what is tested
    train_texts = list(data["train"]["text"])
    train_labels = list(data["train"]["label"])
    if train_on == "train+validation":
        train_texts += data["validation"]["text"]
        train_labels += data["validation"]["label"]
    y_train = np.asarray(train_labels)
    test_texts = list(data[test_split]["text"])
    y_test = np.asarray(data[test_split]["label"])
    print(f"{data_name}: training on {train_on} ({len(y_train)} texts), testing on {test_split} ({len(y_test)} texts)")

    results = []
    for name in args.only or list(BASELINES):
        scores = linear_baselines(train_texts, y_train, test_texts, y_test, names=[name])[name]
        seconds = scores["seconds"]
        row = {"model": name, "accuracy": scores["accuracy"], "f1": scores["f1"], "seconds": round(seconds, 1)}
        results.append(row)
        print(f"  {name}: done in {seconds:.1f} s", flush=True)

    print(f"\n{'model':<10} {'accuracy':>9} {'F1':>8} {'wall s':>7}")
    for row in results:
        print(f"{row['model']:<10} {100 * row['accuracy']:>8.2f}% {100 * row['f1']:>7.2f}% {row['seconds']:>7.1f}")
    if args.json is not None:
        report = {
            "dataset": data_name,
            "train_on": train_on,
            "test_split": test_split,
            "n_train": int(len(y_train)),
            "n_test": int(len(y_test)),
            "seed": args.seed,
            "results": results,
            "python": platform.python_version(),
            "sklearn": sklearn.__version__,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
