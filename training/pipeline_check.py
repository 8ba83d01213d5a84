"""Accuracy of pipeline("text-classification") on a published IMDb classifier folder, beside the recipe's own figure.

    python -m training.pipeline_check runs/imdb-classify [--max-test-samples N] [--batch-size 64]

The folder is loaded as a user would (`pipeline(..., model=DIR, trust_remote_code=True)`, `truncation=True`); the
recipe's accuracy comes from the folder's metrics.json. The two should be equal: the saved model cuts long reviews
to head + tail itself, as the recipe did.
"""

import argparse
import json
import time
from pathlib import Path

from transformers import pipeline

from .data import load_imdb


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--max-test-samples", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-source", default=None)
    args = parser.parse_args(argv)
    metrics = json.loads((Path(args.model) / "metrics.json").read_text())
    test = load_imdb(source=args.data_source, seed=metrics.get("seed", 0), max_test_samples=args.max_test_samples)["test"]
    classify = pipeline("text-classification", model=args.model, trust_remote_code=True)
    began = time.time()
    predictions = classify(list(test["text"]), batch_size=args.batch_size, truncation=True)
    label2id = classify.model.config.label2id
    accuracy = sum(label2id[p["label"]] == y for p, y in zip(predictions, test["label"])) / len(test)
    report = {"pipeline_accuracy": accuracy, "recipe_accuracy": metrics.get("accuracy"), "test_samples": len(test),
              "pipeline_s": round(time.time() - began, 1)}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
