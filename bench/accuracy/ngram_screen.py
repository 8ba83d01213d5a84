"""Screen settings of the classifier's n-gram path alone, on held-out folds of the IMDb train split (never test).

    python -m bench.accuracy.ngram_screen --tokenizer runs/imdb-classify/work/tokenizer
                                          [--settings 3:1048576 3:4194304:2]

Each setting (order:buckets, or order:buckets:word_order to add word n-grams) builds the model's own hashed n-gram
features (NgramLogits.distinct_ngrams), then trains
only the path's weights as the recipe does (AdamW lr 1e-3, batch 32, 2 epochs, 6 % warm-up then linear decay) on
4/5 of the train reviews and scores the held-out fifth, for `--folds` of the five folds. The path alone costs about a
minute per fold at 1M buckets, against ~12 minutes for a recipe run: a cheap way to rank its settings.
"""

import argparse
import time

import numpy as np
import scipy.sparse as sp
import torch
from transformers import AutoTokenizer

from scratchformer import ScratchformerConfig
from scratchformer.ngram import NgramLogits
from training.data import load_imdb


def features(path: NgramLogits, reviews: list[list[int]]) -> sp.csr_matrix:
    """Binary (review, bucket) matrix of each review's distinct n-grams, hashed as the model hashes them."""
    columns = [path.distinct_ngrams(torch.tensor([ids]), None)[0] for ids in reviews]
    columns = [c[c >= 0].numpy() for c in columns]
    rows = np.repeat(np.arange(len(reviews)), [len(c) for c in columns])
    data = np.ones(len(rows), np.float32)
    return sp.csr_matrix((data, (rows, np.concatenate(columns))), shape=(len(reviews), path.buckets))


def as_torch(matrix: sp.csr_matrix) -> torch.Tensor:
    coo = matrix.tocoo()
    return torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data, coo.shape, check_invariants=False)


def held_out_correct(path, reviews, x, labels, train, held_out, epochs=2, batch=32, lr=1e-3) -> int:
    """Fit the path's ratios and weights on `train` rows; the number of `held_out` rows it then classifies right."""
    with torch.no_grad():
        path.weight.zero_()
    path.fit_log_count_ratios([reviews[i] for i in np.flatnonzero(train)], labels[train].tolist())
    x_train, y_train = x[train], labels[train]
    bias = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([path.weight, bias], lr=lr, weight_decay=0.01)
    steps = epochs * (len(y_train) // batch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, s / (0.06 * steps)) * max(0.0, (steps - s) / steps))
    targets = torch.tensor(y_train)
    for epoch in range(epochs):
        order = np.random.RandomState(epoch).permutation(len(y_train))
        for start in range(0, len(order) - batch + 1, batch):
            rows = order[start:start + batch]
            logits = torch.sparse.mm(as_torch(x_train[rows]), path.weight * path.log_count_ratio) + bias
            loss = torch.nn.functional.cross_entropy(logits, targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        logits = torch.sparse.mm(as_torch(x[held_out]), path.weight * path.log_count_ratio) + bias
    return int((logits.argmax(1).numpy() == labels[held_out]).sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="a recipe's tokenizer folder (trained on the train split)")
    parser.add_argument("--settings", nargs="+", default=["3:1048576", "3:4194304"],
                        help="order:buckets or order:buckets:word_order ...")
    parser.add_argument("--folds", type=int, default=2, help="how many of the five folds to hold out in turn")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data-source", default=None)
    parser.add_argument("--max-train-samples", type=int, default=None, help="smoke runs: subsample train")
    args = parser.parse_args(argv)
    train = load_imdb(source=args.data_source, seed=0, max_train_samples=args.max_train_samples)["train"]
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    reviews, labels = tokenizer(list(train["text"]))["input_ids"], np.array(train["label"])
    fold = np.random.RandomState(0).permutation(len(labels)) % 5
    results = []
    for setting in args.settings:
        order, buckets, word_order = (list(map(int, setting.split(":"))) + [0])[:3]
        began = time.time()
        torch.manual_seed(0)
        path = NgramLogits(ScratchformerConfig(ngram_buckets=buckets, ngram_order=order, ngram_word_order=word_order,
                                               num_labels=2, vocab_size=len(tokenizer)))
        if word_order:
            path.set_word_pieces(tokenizer)
        x = features(path, reviews)
        correct = sum(held_out_correct(path, reviews, x, labels, fold != f, fold == f, args.epochs, lr=args.lr)
                      for f in range(args.folds))
        scored = int(sum((fold == f).sum() for f in range(args.folds)))
        results.append({"order": order, "buckets": buckets, "word_order": word_order, "epochs": args.epochs, "lr": args.lr,
                        "accuracy": correct / scored, "held_out": scored, "seconds": round(time.time() - began)})
        print(results[-1], flush=True)
    return results


if __name__ == "__main__":
    main()
